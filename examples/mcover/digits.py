"""M-cover experiment E3: routed MLP copies on scikit-learn's digits against equally tuned ensembles.

Question: does training M = 8 copies of a small MLP through permutation-routed models
(perceptrons.nn.RoutedMLP) give lower test error, per copy, as an ensemble or at the centre (the
model with the mean parameters), or flatter minima, than the usual ways of training M copies?
Research note: shared/research/mcover.md (the project notes beside the repository), sections 1.5, 2 and 4 ("E3").

Data: sklearn.datasets.load_digits (1797 8x8 images, ships with scikit-learn), pixels / 16 in
[0, 1], float32, 10 classes. Each seed s draws, with np.random.default_rng(s), a stratified split
into 400 training, 300 validation (used only for tuning) and 1097 test images; every arm sees the
same split, initialisation (torch.manual_seed(s)) and per-stream shuffles at a given seed, so arm
differences are paired by seed.

Model and training (identical for every arm): 64-128-128-10 MLP, relu, cross-entropy on logits,
M = 8 copies (streams), float32, one torch thread. Each stream gets its own shuffle of the 400
training images every epoch, minibatch 32 (the last batch of an epoch has 16), the same number of
epochs, SGD with momentum 0.9. The loss is the sum over streams of each stream's batch-mean
cross-entropy, so each copy's gradient is that of a single model trained on its own.

Arms:
  independent            RoutedMLP with Q = identity: M independent models (bit for bit).
  deep-ensemble          the mean of independent's copies' softmax probabilities. Eight separately
                         built models with their own inits, shuffles and momentum buffers have the
                         same law as the Q = identity RoutedMLP (its parameters, optimizer state and
                         gradients are separable by copy, and the loss is scaled per copy), so the
                         deep ensemble is not trained again: it is independent's ensemble column.
  routed-{layer,unit}-*  RoutedMLP, routing='layer' (whole layers) or 'unit' (rows of W with their
                         bias), Q = ring_gaussian(8, sigma) for sigma in {0.5, 1, 2} or uniform(8),
                         mode='annealed' (a fresh cover every step), per='batch', sampler='auto'
                         (ring rotations: the marginals are Q exactly).
  routed-unit-sigma1-identical  as routed-unit-sigma1 with init='identical' (all copies start from
                         one draw, so hidden units are aligned; research note 3.6, subtlety 7).
  rsgd                   replicated SGD (Baldassi, Pittorino, Zecchina, PNAS 2020) on the Q = identity
                         RoutedMLP: loss sum_a L(W_a) + g/2 sum_a ||W_a - W_c||^2 with W_c the
                         (detached) mean of the copies, added as p.grad += g (p - mean_a p);
                         g_t = g0 (1 + grate)^t with grate chosen so that g ends at 100 g0.
  easgd                  synchronous elastic averaging SGD (Zhang, Choromanska, LeCun 2015), period 1:
                         with d_i = x_i - x_c taken before the step, x_i <- SGD step(x_i) - alpha d_i and
                         x_c <- x_c + alpha sum_i d_i, alpha = lr * rho; x_c starts at the copies' mean
                         and is the arm's centre. (With momentum this is the EAMSGD-like variant:
                         momentum acts on the workers' gradients only.)

Tuning, equal for all arms: 6 configurations each, learning rate {0.03, 0.1, 0.3} x a second knob
with two values: weight decay {0, 5e-4} for independent and the routed arms, g0 {1e-3, 1e-2} for
rsgd, rho {0.1, 0.3} for easgd. Each configuration runs on the tuning seeds
stats.TUNING_SEED_OFFSET + {0, 1}; the one with the lowest mean validation ensemble error wins
(ties: lower validation ensemble cross-entropy). The chosen configuration then runs on the
evaluation seeds 0..9; every seed is reported, none is selected. Because the ensemble criterion can
favour diverse but individually worse copies (or copies with no usable centre), each arm is also
evaluated at the configurations with the lowest validation per-copy and centre errors (the
"metric-matched" table; no extra tuning runs, at most 2 x 10 extra evaluation runs per arm).

Metrics on the test set per run: per-copy error (mean over copies, and the s.d. over copies),
ensemble error (argmax of the mean of the copies' softmax probabilities), majority-vote error, centre
error, mean pairwise disagreement of the copies' predicted classes, final training cross-entropy
(per copy and centre), and flatness: the mean increase of the training cross-entropy when every
parameter tensor p becomes p + eps |p| N(0, 1) (relative Gaussian noise, Pittorino et al., ICLR 2021)
for eps in {0.1, 0.3}, 5 draws, averaged over copies (and for the centre). Each arm is compared with
independent by stats.difference (paired by seed) and stats.verdict (|mean| > 2 s.e.); metric-matched
centre errors are also compared with EASGD's centre, the strongest centre baseline.

Run (from the repository root; about 20 minutes on one core, 384 training runs of ~3 s):
    python examples/mcover/digits.py                 # writes examples/mcover/results/digits.{json,md,png}
    python examples/mcover/digits.py --quick         # smoke test (< 1 min) into a scratch folder
Options: --seeds N (evaluation seeds, default 10), --epochs N (default 60), --tuning-seeds N
(default 2), --arms a,b,... (a subset), --out DIR.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import common
from perceptrons.mcover import stats
from perceptrons.nn import RoutedMLP
from perceptrons.routing import identity, ring_gaussian, uniform

M = 8
HIDDEN = 128
HIDDEN_LAYERS = 2
N_CLASSES = 10
N_TRAIN, N_VAL = 400, 300
BATCH = 32
MOMENTUM = 0.9
LEARNING_RATES = (0.03, 0.1, 0.3)
WEIGHT_DECAYS = (0.0, 5e-4)
RSGD_G0 = (1e-3, 1e-2)
RSGD_GROWTH = 100.0           # g ends at RSGD_GROWTH * g0
EASGD_RHO = (0.1, 0.3)        # alpha = lr * rho; M * alpha <= 0.72 < 1 keeps the centre update stable
FLAT_EPS = (0.1, 0.3)
FLAT_DRAWS = 5
DEFAULT_EPOCHS = 60
QUICK = dict(seeds=2, epochs=5, tuning_seeds=1,
             arms=("independent", "routed-layer-sigma1", "routed-unit-sigma1", "rsgd", "easgd"))
RUN_KEYS = ("copy_err", "copy_err_sd", "ens_err", "vote_err", "centre_err", "disagreement", "train_loss",
            "centre_train_loss", "flat_copy_0.1", "flat_copy_0.3", "flat_centre_0.1", "flat_centre_0.3")
COMPARED = (("copy_err", "per-copy"), ("ens_err", "ensemble"), ("centre_err", "centre"))
SECONDARY_TUNING = ("copy_err", "centre_err")   # also evaluated at the config best for these


# ----------------------------------------------------------------------------------------- arms

@dataclass(frozen=True)
class Arm:
    name: str
    method: str                         # 'routed' (RoutedMLP, incl. Q = I), 'rsgd' or 'easgd'
    routing: str = "layer"
    q_name: str = "identity"            # 'identity', 'uniform' or 'sigma<value>'
    init: str = "independent"
    knob: str = "weight_decay"          # the second tuned knob
    knob_values: Sequence[float] = WEIGHT_DECAYS

    def Q(self) -> np.ndarray:
        if self.q_name == "identity":
            return identity(M)
        if self.q_name == "uniform":
            return uniform(M)
        return ring_gaussian(M, float(self.q_name[len("sigma"):]))

    def grid(self) -> List[dict]:
        return [{"lr": lr, self.knob: k} for lr, k in itertools.product(LEARNING_RATES, self.knob_values)]


def all_arms() -> Dict[str, Arm]:
    arms = [Arm("independent", "routed")]
    for routing in ("layer", "unit"):
        for q in ("sigma0.5", "sigma1", "sigma2", "uniform"):
            arms.append(Arm(f"routed-{routing}-{q}", "routed", routing, q))
    arms.append(Arm("routed-unit-sigma1-identical", "routed", "unit", "sigma1", init="identical"))
    arms.append(Arm("rsgd", "rsgd", knob="g0", knob_values=RSGD_G0))
    arms.append(Arm("easgd", "easgd", knob="rho", knob_values=EASGD_RHO))
    return {a.name: a for a in arms}


# ----------------------------------------------------------------------------------------- data

def load_data():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y.astype(np.int64)


def stratified_split(y: np.ndarray, seed: int):
    """Index arrays (train, val, test) with N_TRAIN / N_VAL images, class proportions kept per split."""
    rng = np.random.default_rng(seed)
    n = len(y)
    parts = {"train": [], "val": []}
    rest = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_tr = int(round(N_TRAIN * len(idx) / n))
        n_va = int(round(N_VAL * len(idx) / n))
        parts["train"].append(idx[:n_tr])
        parts["val"].append(idx[n_tr:n_tr + n_va])
        rest.append(idx[n_tr + n_va:])
    train, val = (np.concatenate(parts[k]) for k in ("train", "val"))
    rest = np.concatenate(rest)
    # Rounding per class can miss the totals by a few images: move them to or from the test remainder.
    train, rest = _fix_size(train, rest, N_TRAIN, rng)
    val, rest = _fix_size(val, rest, N_VAL, rng)
    return rng.permutation(train), rng.permutation(val), np.sort(rest)


def _fix_size(part: np.ndarray, rest: np.ndarray, size: int, rng) -> tuple:
    if len(part) > size:
        extra = rng.choice(len(part), len(part) - size, replace=False)
        return np.delete(part, extra), np.concatenate([rest, part[extra]])
    if len(part) < size:
        take = rng.choice(len(rest), size - len(part), replace=False)
        return np.concatenate([part, rest[take]]), np.delete(rest, take)
    return part, rest


@dataclass
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def make_split(X: np.ndarray, y: np.ndarray, seed: int) -> Split:
    tr, va, te = stratified_split(y, seed)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    return Split(t(X[tr]), t(y[tr]), t(X[va]), t(y[va]), t(X[te]), t(y[te]))


# ------------------------------------------------------------------------------------- training

def build_model(arm: Arm, seed: int) -> RoutedMLP:
    torch.manual_seed(seed)             # same initial copies for every arm at a seed (paired design)
    routing = arm.routing if arm.method == "routed" else "layer"
    return RoutedMLP(M, 64, N_CLASSES, HIDDEN, HIDDEN_LAYERS, activation="relu", routing=routing, Q=arm.Q(),
                     sampler="auto", per="batch", mode="annealed", seed=seed, init=arm.init)


def stream_batches(n: int, epochs: int, seed: int):
    """Per epoch, an independent shuffle of range(n) per stream; yields (M, B) index tensors."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.argsort(torch.rand(M, n, generator=gen), dim=1)
        for start in range(0, n, BATCH):
            yield order[:, start:start + BATCH]


def train(arm: Arm, config: dict, split: Split, epochs: int, seed: int):
    """Trains the arm's M copies; returns (model, centre parameters or None = mean of the copies)."""
    model = build_model(arm, seed)
    model.train()
    params = list(model.parameters())
    wd = config.get("weight_decay", 0.0)
    opt = torch.optim.SGD(params, lr=config["lr"], momentum=MOMENTUM, weight_decay=wd)
    n = len(split.y_train)
    total_steps = epochs * -(-n // BATCH)
    grate = RSGD_GROWTH ** (1.0 / max(total_steps - 1, 1)) - 1.0
    alpha = config["lr"] * config.get("rho", 0.0)
    centre = [p.detach().mean(0).clone() for p in params] if arm.method == "easgd" else None
    for step, idx in enumerate(stream_batches(n, epochs, seed)):
        logits = model(split.x_train[idx])                      # (M, B, C), one batch per stream
        loss = F.cross_entropy(logits.reshape(-1, N_CLASSES), split.y_train[idx].reshape(-1),
                               reduction="sum") / idx.shape[1]  # sum over streams of batch means
        opt.zero_grad(set_to_none=False)
        loss.backward()
        if arm.method == "rsgd":
            add_replica_coupling(params, config["g0"] * (1.0 + grate) ** step)
        if arm.method == "easgd":
            pull = [(p.detach() - c) for p, c in zip(params, centre)]   # x_i - x_c before the step
        opt.step()
        if arm.method == "easgd":
            elastic_update(params, centre, pull, alpha)
    model.eval()
    return model, centre


@torch.no_grad()
def add_replica_coupling(params, g: float):
    """Gradient of g/2 sum_a ||W_a - W_c||^2 with W_c = mean_a W_a held fixed (rSGD)."""
    for p in params:
        p.grad.add_(p - p.mean(0, keepdim=True), alpha=g)


@torch.no_grad()
def elastic_update(params, centre, pull, alpha: float):
    """Synchronous EASGD: workers move towards the centre, the centre towards the workers' sum."""
    for p, c, d in zip(params, centre, pull):
        p.sub_(d, alpha=alpha)
        c.add_(d.sum(0), alpha=alpha)


# ----------------------------------------------------------------------------------- evaluation

def split_params(model: RoutedMLP, centre: Optional[list]):
    """(weights, biases) of the copies (leading axis M) and of the centre (leading axis 1)."""
    ws = [w.detach() for w in model.weights]
    bs = [b.detach() for b in model.biases]
    if centre is None:                                  # centre = mean of the copies' parameters
        cw, cb = [w.mean(0, keepdim=True) for w in ws], [b.mean(0, keepdim=True) for b in bs]
    else:                                               # model.parameters() order: weights, then biases
        L = len(ws)
        cw, cb = [c.unsqueeze(0) for c in centre[:L]], [c.unsqueeze(0) for c in centre[L:]]
    return (ws, bs), (cw, cb)


def mlp_logits(weights, biases, x: torch.Tensor) -> torch.Tensor:
    """K stacked MLPs (weights[l] (K, out, in)) on x (N, in): logits (K, N, C). The same function
    as RoutedMLP's unrouted eval forward (checked against it in evaluate_run)."""
    h = x.unsqueeze(0)
    for l, (w, b) in enumerate(zip(weights, biases)):
        h = torch.baddbmm(b.unsqueeze(1), h.expand(w.shape[0], -1, -1), w.transpose(1, 2))
        if l < len(weights) - 1:
            h = torch.relu(h)
    return h


def per_model_loss(weights, biases, x, y) -> torch.Tensor:
    logits = mlp_logits(weights, biases, x)
    K = logits.shape[0]
    return F.cross_entropy(logits.reshape(-1, N_CLASSES), y.repeat(K), reduction="none").view(K, -1).mean(1)


def flatness(weights, biases, x, y, eps: float, gen: torch.Generator) -> float:
    """Mean over models and FLAT_DRAWS draws of L(p + eps |p| N(0,1)) - L(p), L the training CE."""
    base = per_model_loss(weights, biases, x, y)
    noisy = lambda p: p + eps * p.abs() * torch.randn(p.shape, generator=gen)
    rises = [per_model_loss([noisy(w) for w in weights], [noisy(b) for b in biases], x, y) - base
             for _ in range(FLAT_DRAWS)]
    return float(torch.stack(rises).mean())


def error(logits_or_classes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    pred = logits_or_classes.argmax(-1) if logits_or_classes.is_floating_point() else logits_or_classes
    return (pred != y).double().mean(-1)


def majority_vote(classes: torch.Tensor) -> torch.Tensor:
    """(M, N) class indices -> (N,) most frequent class, ties to the lowest (as RoutedMLP.predict)."""
    return F.one_hot(classes, N_CLASSES).sum(0).argmax(-1)


def disagreement(classes: torch.Tensor) -> float:
    """Mean over pairs of copies a < b of the fraction of images where their classes differ."""
    same = (classes.unsqueeze(0) == classes.unsqueeze(1)).double().mean(-1)    # (M, M)
    k = classes.shape[0]
    return float((1.0 - same).sum() / (k * (k - 1)))


@torch.no_grad()
def ensemble_metrics(copies, centre, x, y) -> dict:
    logits = mlp_logits(*copies, x)                                  # (M, N, C)
    probs = torch.softmax(logits, -1).mean(0)
    classes = logits.argmax(-1)
    copy_errs = error(logits, y)
    return {"copy_err": float(copy_errs.mean()), "copy_err_sd": float(copy_errs.std()),
            "copy_errs": copy_errs.tolist(), "ens_err": float(error(probs, y)),
            "ens_nll": float(F.nll_loss(torch.log(probs), y)), "vote_err": float(error(majority_vote(classes), y)),
            "centre_err": float(error(mlp_logits(*centre, x)[0], y)), "disagreement": disagreement(classes)}


@torch.no_grad()
def evaluate_run(model: RoutedMLP, centre_params, split: Split, seed: int, full: bool) -> dict:
    copies, centre = split_params(model, centre_params)
    # The evaluator must be the model's own unrouted forward; a cheap guard against drift.
    torch.testing.assert_close(mlp_logits(*copies, split.x_val[:8]), model(split.x_val[:8]))
    out = {"val_" + k: v for k, v in ensemble_metrics(copies, centre, split.x_val, split.y_val).items()
           if k != "copy_errs"}
    if not full:
        return out
    out.update(ensemble_metrics(copies, centre, split.x_test, split.y_test))
    out["train_loss"] = float(per_model_loss(*copies, split.x_train, split.y_train).mean())
    out["centre_train_loss"] = float(per_model_loss(*centre, split.x_train, split.y_train).mean())
    gen = torch.Generator().manual_seed(10_000 + seed)
    for eps in FLAT_EPS:
        out[f"flat_copy_{eps}"] = flatness(*copies, split.x_train, split.y_train, eps, gen)
        out[f"flat_centre_{eps}"] = flatness(*centre, split.x_train, split.y_train, eps, gen)
    return out


def run_once(arm: Arm, config: dict, X, y, seed: int, epochs: int, full: bool) -> dict:
    split = make_split(X, y, seed)
    t0 = time.perf_counter()
    model, centre = train(arm, config, split, epochs, seed)
    train_s = time.perf_counter() - t0
    return {"seed": seed, "train_s": train_s, **evaluate_run(model, centre, split, seed, full)}


# ------------------------------------------------------------------------------ tuning + evaluation

def tune(arm: Arm, X, y, tuning_seeds, epochs) -> list:
    """Every grid configuration on every tuning seed: the tuning table (validation metrics, mean over seeds)."""
    table = []
    for config in arm.grid():
        runs = [run_once(arm, config, X, y, s, epochs, full=False) for s in tuning_seeds]
        row = {"config": config, "runs": runs}
        for k in ("val_ens_err", "val_ens_nll", "val_copy_err", "val_vote_err", "val_centre_err"):
            row[k] = float(np.mean([r[k] for r in runs]))
        table.append(row)
    return table


def best_config(table: list, metric: str) -> dict:
    """The configuration with the lowest mean validation `metric`; validation errors are counts out of 300,
    so ties are common: broken by the validation ensemble cross-entropy, then by grid order."""
    best = min(range(len(table)), key=lambda i: (table[i]["val_" + metric], table[i]["val_ens_nll"], i))
    return table[best]["config"]


def run_arm(arm: Arm, X, y, eval_seeds, tuning_seeds, epochs, log) -> dict:
    """Tunes the arm, evaluates the ensemble-chosen configuration (the primary result) and, as a check on
    the tuning criterion, the configurations that minimise the validation per-copy and centre errors."""
    t0 = time.perf_counter()
    table = tune(arm, X, y, tuning_seeds, epochs)
    config = best_config(table, "ens_err")
    log(f"  {arm.name}: tuned in {time.perf_counter() - t0:.0f} s, chose {config}")
    evaluated = {config_text(config): [run_once(arm, config, X, y, s, epochs, full=True) for s in eval_seeds]}
    runs = evaluated[config_text(config)]
    summary = stats.summarise(runs, RUN_KEYS)
    by_metric = {}
    for metric in SECONDARY_TUNING:
        cfg = best_config(table, metric)
        key = config_text(cfg)
        if key not in evaluated:
            evaluated[key] = [run_once(arm, cfg, X, y, s, epochs, full=True) for s in eval_seeds]
        by_metric[metric] = {"chosen": cfg, "same_as_ensemble_choice": cfg == config,
                             "runs": None if cfg == config else evaluated[key],
                             "summary": stats.summarise(evaluated[key], RUN_KEYS)}
    log(f"  {arm.name}: copy {stats.fmt(summary['copy_err'])}  ens {stats.fmt(summary['ens_err'])}  "
        f"centre {stats.fmt(summary['centre_err'])}; metric-matched copy "
        f"{stats.fmt(by_metric['copy_err']['summary']['copy_err'])} centre "
        f"{stats.fmt(by_metric['centre_err']['summary']['centre_err'])}  ({time.perf_counter() - t0:.0f} s)")
    return {"arm": arm.name, "method": arm.method, "routing": arm.routing if arm.method == "routed" else None,
            "Q": arm.q_name, "lambda2": stats.lambda2_of(arm.Q()), "init": arm.init,
            "grid": arm.grid(), "tuning": table, "chosen": config, "runs": runs, "summary": summary,
            "tuned_by_metric": by_metric}


def metric_runs(res: dict, metric: Optional[str]) -> list:
    """The evaluation runs of the configuration tuned for `metric` (None: the primary, ensemble-tuned one)."""
    if metric is None or res["tuned_by_metric"][metric]["same_as_ensemble_choice"]:
        return res["runs"]
    return res["tuned_by_metric"][metric]["runs"]


def paired(res: dict, base: dict, key: str, tuned_for: Optional[str] = None) -> dict:
    d = stats.difference([r[key] for r in metric_runs(res, tuned_for)], [r[key] for r in metric_runs(base, tuned_for)],
                         paired=True)
    return {**d, "verdict": stats.verdict(d, lower_is_better=True, z=2.0)}


def comparisons(results: Dict[str, dict]) -> Dict[str, dict]:
    """Primary: every arm minus independent on per-copy / ensemble / centre error, all at the ensemble-tuned
    configurations. Metric-matched: per-copy error minus independent's and centre error minus independent's
    and minus EASGD's (the strongest centre baseline), each arm at its own configuration tuned for that metric."""
    base, easgd = results.get("independent"), results.get("easgd")
    out = {"vs_independent": {}, "metric_matched": {}}
    for name, res in results.items():
        if base is not None and name != "independent":
            out["vs_independent"][name] = {key: paired(res, base, key) for key, _ in COMPARED}
        mm = {}
        if base is not None and name != "independent":
            mm["copy_err_vs_independent"] = paired(res, base, "copy_err", "copy_err")
            mm["centre_err_vs_independent"] = paired(res, base, "centre_err", "centre_err")
        if easgd is not None and name != "easgd":
            mm["centre_err_vs_easgd"] = paired(res, easgd, "centre_err", "centre_err")
        if mm:
            out["metric_matched"][name] = mm
    return out


# ------------------------------------------------------------------------------------- reports

def config_text(config: dict) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in config.items())


def results_tables(results: Dict[str, dict], comps: Dict[str, dict]) -> str:
    f = lambda s, k, d=3: stats.fmt(s[k], d)
    rows, flat_rows = [], []
    for name, res in results.items():
        s = res["summary"]
        rows.append([name, f"{res['lambda2']:.3f}", config_text(res["chosen"]), f(s, "copy_err"),
                     f(s, "copy_err_sd"), f(s, "ens_err"), f(s, "vote_err"), f(s, "centre_err"),
                     f(s, "disagreement")])
        flat_rows.append([name, f(s, "train_loss", 4), f(s, "flat_copy_0.1", 4), f(s, "flat_copy_0.3", 4),
                          f(s, "centre_train_loss", 3), f(s, "flat_centre_0.1", 3), f(s, "flat_centre_0.3", 3)])
        if name == "independent":
            rows.append(["deep-ensemble (= independent's ensemble)", "1.000", config_text(res["chosen"]), "", "",
                         f(s, "ens_err"), f(s, "vote_err"), "", ""])
    out = ["### Test error (mean ± s.e. over evaluation seeds)", "",
           stats.markdown_table(["arm", "λ2(Q)", "chosen config", "per-copy", "s.d. over copies", "ensemble",
                                 "vote", "centre", "disagreement"], rows), "",
           "### Training loss and flatness (increase of the training cross-entropy under relative Gaussian "
           "weight noise ε|p|N(0,1), 5 draws)", "",
           stats.markdown_table(["arm", "train CE (copy)", "Δ copy ε=0.1", "Δ copy ε=0.3", "train CE (centre)",
                                 "Δ centre ε=0.1", "Δ centre ε=0.3"], flat_rows)]
    primary = comps.get("vs_independent", {})
    if primary:
        crow = [[name] + [f"{stats.fmt(c[k])} ({c[k]['verdict']})" for k, _ in COMPARED]
                for name, c in primary.items()]
        out += ["", "### Difference from independent (arm − independent, paired by seed; verdict at 2 s.e.; "
                "ensemble-tuned configurations)", "", stats.markdown_table(["arm"] + [l for _, l in COMPARED], crow)]
    out += ["", metric_matched_table(results, comps.get("metric_matched", {}))]
    return "\n".join(out)


def metric_matched_table(results: Dict[str, dict], mm: Dict[str, dict]) -> str:
    """Per-copy and centre test error when each arm is tuned for that metric on the validation set."""
    cmp = lambda name, key: (f"{stats.fmt(mm[name][key])} ({mm[name][key]['verdict']})"
                             if key in mm.get(name, {}) else "")
    rows = []
    for name, res in results.items():
        bm = res["tuned_by_metric"]
        rows.append([name, config_text(bm["copy_err"]["chosen"]), stats.fmt(bm["copy_err"]["summary"]["copy_err"]),
                     cmp(name, "copy_err_vs_independent"), config_text(bm["centre_err"]["chosen"]),
                     stats.fmt(bm["centre_err"]["summary"]["centre_err"]), cmp(name, "centre_err_vs_independent"),
                     cmp(name, "centre_err_vs_easgd")])
    return "\n".join([
        "### Metric-matched tuning (each arm at the configuration with the lowest validation per-copy or "
        "centre error; a check on the ensemble tuning criterion; differences paired by seed, verdict at 2 s.e.)", "",
        stats.markdown_table(["arm", "config (per-copy)", "per-copy", "− independent", "config (centre)", "centre",
                              "− independent", "− easgd"], rows)])


def tuning_table(results: Dict[str, dict]) -> str:
    rows = []
    for name, res in results.items():
        for row in res["tuning"]:
            mark = "**chosen**" if row["config"] == res["chosen"] else ""
            rows.append([name, config_text(row["config"]), f"{row['val_ens_err']:.4f}", f"{row['val_ens_nll']:.4f}",
                         f"{row['val_copy_err']:.4f}", f"{row['val_centre_err']:.4f}", mark])
    return stats.markdown_table(["arm", "config", "val ensemble err", "val ensemble NLL", "val per-copy err",
                                 "val centre err", ""], rows)


def write_markdown(path: str, meta: dict, results, comps) -> None:
    head = [f"# M-cover E3: routed MLP copies on digits", "",
            f"Produced by `{meta['command']}` in {meta['wall_s']:.0f} s (1 torch thread). "
            f"{meta['n_eval_seeds']} evaluation seeds, {meta['n_tuning_seeds']} tuning seeds, "
            f"{meta['epochs']} epochs, M = {M}, 64-{HIDDEN}-{HIDDEN}-10 relu MLP, {N_TRAIN} training / "
            f"{N_VAL} validation / rest test images per seed. Ensemble = mean of softmax probabilities. "
            f"Tuning: 6 configurations per arm, chosen by mean validation ensemble error (primary); the "
            f"metric-matched table re-runs the evaluation seeds at the configurations best for per-copy and "
            f"centre validation error. Flatness of a centre that does not fit the training set (train CE ~ 1-3) "
            f"can be negative and means nothing. "
            f"Design and arms: the docstring of `examples/mcover/digits.py`.", ""]
    body = [results_tables(results, comps), "", "### Tuning (mean over tuning seeds, validation set)", "",
            tuning_table(results), ""]
    with open(path, "w") as fh:
        fh.write("\n".join(head + body))


def plot(path: str, results: Dict[str, dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(results)
    s = [results[n]["summary"] for n in names]
    by = lambda metric: [results[n]["tuned_by_metric"][metric]["summary"][metric] for n in names]
    pos = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [2, 1.2]})
    bars = [([x["copy_err"] for x in s], "per copy", {}), ([x["ens_err"] for x in s], "ensemble (mean prob.)", {}),
            ([x["vote_err"] for x in s], "majority vote", {}),
            (by("copy_err"), "per copy, config tuned for per-copy error", {"hatch": "//", "fill": False,
                                                                           "edgecolor": "C0"})]
    width = 0.2
    for i, (ms, label, kw) in enumerate(bars):
        ax1.bar(pos + (i - 1.5) * width, [m["mean"] for m in ms], width, yerr=[m["se"] for m in ms], capsize=2,
                label=label, **kw)
    if "independent" in results:
        ax1.axhline(results["independent"]["summary"]["copy_err"]["mean"], color="C0", lw=0.8, ls="--")
        ax1.axhline(results["independent"]["summary"]["ens_err"]["mean"], color="C1", lw=0.8, ls="--")
    ax1.set_title("test error, configs tuned for ensemble error (dashed: independent)", fontsize=10)
    ax1.set_ylabel("test error (mean ± s.e. over seeds)")
    ax1.legend(fontsize=8, loc="upper left")
    for i, (ms, label) in enumerate((([x["centre_err"] for x in s], "config tuned for ensemble error"),
                                     (by("centre_err"), "config tuned for centre error"))):
        ax2.bar(pos + (i - 0.5) * 0.38, [m["mean"] for m in ms], 0.38, yerr=[m["se"] for m in ms], capsize=2,
                label=label, color=("C3", "C4")[i])
    ax2.set_yscale("log")
    ax2.set_title("centre (mean parameters; EASGD: x_c), log scale", fontsize=10)
    ax2.set_ylabel("centre test error (mean ± s.e.)")
    ax2.legend(fontsize=8, loc="upper right")
    for ax in (ax1, ax2):
        ax.set_xticks(pos)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3, which="both")
    n = s[0]["copy_err"]["n"]
    fig.suptitle(f"M-cover E3, digits ({N_TRAIN} training images), M = {M}, {n} evaluation seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ CLI

def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=positive_int, default=None, help="evaluation seeds 0..N-1 (default 10; >= 2)")
    p.add_argument("--epochs", type=positive_int, default=None, help=f"epochs per run (default {DEFAULT_EPOCHS})")
    p.add_argument("--tuning-seeds", type=positive_int, default=None, help="tuning seeds per config (default 2)")
    p.add_argument("--arms", default=None, help="comma-separated subset of: " + ", ".join(all_arms()))
    p.add_argument("--quick", action="store_true", help="smoke test: 2 seeds, 5 epochs, 5 arms, 1 tuning seed")
    p.add_argument("--out", default=None, help="output folder (default examples/mcover/results; "
                                               "with --quick a folder under the system's temp dir)")
    a = p.parse_args(argv)
    quick = QUICK if a.quick else {}
    a.seeds = a.seeds or quick.get("seeds", 10)
    a.epochs = a.epochs or quick.get("epochs", DEFAULT_EPOCHS)
    a.tuning_seeds = a.tuning_seeds or quick.get("tuning_seeds", 2)
    if a.seeds < 2:
        p.error("--seeds: at least 2 evaluation seeds are needed for a standard error")
    known = all_arms()
    if a.arms is None:
        a.arms = list(quick.get("arms", known))
    else:
        a.arms = [s.strip() for s in a.arms.split(",") if s.strip()]
        bad = [s for s in a.arms if s not in known]
        if bad or not a.arms:
            p.error(f"--arms: unknown arm(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(known)}")
    a.out = common.out_dir(a)
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)       # two experiments can share the two cores
    t0 = time.perf_counter()
    log = lambda msg: print(msg, flush=True)
    X, y = load_data()
    eval_seeds = stats.seeds(args.seeds)
    tuning_seeds = stats.seeds(args.tuning_seeds, offset=stats.TUNING_SEED_OFFSET)
    arms = all_arms()
    log(f"digits E3: {len(args.arms)} arms, {args.epochs} epochs, seeds {eval_seeds}, tuning seeds {tuning_seeds}")
    results = {name: run_arm(arms[name], X, y, eval_seeds, tuning_seeds, args.epochs, log) for name in args.arms}
    comps = comparisons(results)
    wall = time.perf_counter() - t0
    command = "python examples/mcover/digits.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"command": command.strip(), "wall_s": wall, "epochs": args.epochs, "n_eval_seeds": args.seeds,
            "n_tuning_seeds": args.tuning_seeds}
    config = {**meta, "M": M, "widths": [64, HIDDEN, HIDDEN, N_CLASSES], "activation": "relu",
              "n_train": N_TRAIN, "n_val": N_VAL, "batch": BATCH, "momentum": MOMENTUM, "optimizer": "SGD",
              "learning_rates": LEARNING_RATES, "weight_decays": WEIGHT_DECAYS, "rsgd_g0": RSGD_G0,
              "rsgd_growth": RSGD_GROWTH, "easgd_rho": EASGD_RHO, "flat_eps": FLAT_EPS, "flat_draws": FLAT_DRAWS,
              "eval_seeds": eval_seeds, "tuning_seeds": tuning_seeds, "ensemble": "mean of softmax probabilities",
              "tuning_criterion": "mean validation ensemble error over tuning seeds (ties: ensemble NLL)",
              "routing": {"mode": "annealed", "per": "batch", "sampler": "auto"},
              "deep_ensemble": "independent's ensemble (same law as separately trained models; not re-run)"}
    os.makedirs(args.out, exist_ok=True)
    stats.write_json(os.path.join(args.out, "digits.json"),
                     {"experiment": "mcover E3 digits", "config": config, "arms": results, "comparisons": comps})
    write_markdown(os.path.join(args.out, "digits.md"), meta, results, comps)
    plot(os.path.join(args.out, "digits.png"), results)
    log(results_tables(results, comps))
    log(f"wrote {args.out}/digits.{{json,md,png}} in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
