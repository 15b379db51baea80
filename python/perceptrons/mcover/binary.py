"""Binary perceptron and binary committee machine trained on the M-cover (experiments 1 and 2).

Every arm keeps M copies of real hidden states H (M, K, N) with binary weights w = sign(H) (sign(0) =
+1) and trains them with the same online rule, the clipped least-action perceptron rule of
`kernels.routed.committee_epoch` (learning rate eta, stability margin kappa * sqrt(N), hidden states
clipped to [-h_max, h_max] when h_max > 0). The arms differ only in how the copies interact:

- ``independent``: Q = I, the copies never meet (they differ by their initial H).
- ``routed``: for every pattern, stream m evaluates the model whose blocks (a single weight with
  granularity 'edge', a hidden unit's row with 'unit') come from copy pi(m), pi drawn from the mixing
  kernel Q (ring Gaussian of width sigma, or uniform), and the update goes back to those copies.
  ``quenched``: one cover, fixed per pattern; ``annealed``: a fresh cover every epoch.
- ``replicated``: independent updates plus, after every chunk of patterns, an elastic pull of each
  copy's hidden state towards the centre of the copies' hidden states,
  H_a += gamma_t (mean_b H_b - H_a), with gamma_t growing geometrically from gamma0 to gamma_end
  (at most 1: full collapse) over the run (the replicated-SGD coupling of Baldassi et al., PNAS 113:E7655 (2016), in
  our own formulation: their code keeps the same ingredients, continuous hidden states, a centre
  and a growing coupling, but the exact update here is ours).

All streams see the patterns in the same shuffled order (a new shuffle every epoch). Training stops
after `epochs` epochs, or earlier at the first epoch with no update (for `replicated`: no update and
all copies equal, since the coupling would otherwise go on moving them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from ..kernels import routed as routed_kernels
from ..routing import Routing, ring_gaussian, uniform

ARM_KINDS = ("independent", "routed", "replicated")


@dataclass(frozen=True)
class Arm:
    """One way of training the M copies. `sigma` None with kind 'routed' means uniform Q."""
    kind: str
    granularity: str = "edge"
    mode: str = "quenched"
    sigma: Optional[float] = None
    gamma0: float = 0.0
    gamma_end: float = 0.0

    def __post_init__(self):
        if self.kind not in ARM_KINDS:
            raise ValueError(f"kind: expected one of {ARM_KINDS}, got {self.kind!r}")
        if self.kind == "routed":
            if self.granularity not in ("layer", "unit", "edge"):
                raise ValueError(f"granularity: expected 'layer', 'unit' or 'edge', got {self.granularity!r}")
            if self.mode not in ("quenched", "annealed"):
                raise ValueError(f"mode: expected 'quenched' or 'annealed', got {self.mode!r}")
            if self.sigma is not None and not self.sigma > 0:
                raise ValueError(f"sigma: expected a positive ring width or None (uniform Q), got {self.sigma}")
        if self.kind == "replicated" and not (0 < self.gamma0 <= self.gamma_end):
            raise ValueError(f"gamma0, gamma_end: expected 0 < gamma0 <= gamma_end, got {self.gamma0}, {self.gamma_end}")

    @property
    def name(self) -> str:
        if self.kind == "independent":
            return "independent"
        if self.kind == "replicated":
            return f"replicated-g{self.gamma_end:g}"
        q = "uniform" if self.sigma is None else f"sigma{self.sigma:g}"
        return f"{self.granularity}-{self.mode}-{q}"

    def mixing(self, M: int) -> np.ndarray:
        """The arm's Q for M copies (identity for the unrouted arms)."""
        if self.kind != "routed" or M == 1:
            return np.eye(M)
        return uniform(M) if self.sigma is None else ring_gaussian(M, self.sigma)

    def routing(self, M: int, seed: int) -> Routing:
        if self.kind != "routed":
            return Routing(M, None, granularity="layer", per="example", mode="quenched", seed=seed)
        return Routing(M, self.mixing(M), granularity=self.granularity, per="example", mode=self.mode,
                       seed=seed)


@dataclass(frozen=True)
class Rule:
    """The shared learning rule: identical for every arm of an experiment."""
    eta: float = 2.0
    margin: float = 0.5
    h_max: float = 0.0
    epochs: int = 200
    chunk: int = 16     # patterns between two elastic pulls (replicated arm)


@dataclass
class Problem:
    """Training patterns (P, N) and labels (P,) in {-1, +1}; teacher (N,) for teacher-student data."""
    patterns: np.ndarray
    labels: np.ndarray
    teacher: Optional[np.ndarray] = None
    test_patterns: Optional[np.ndarray] = None
    test_labels: Optional[np.ndarray] = None
    meta: Dict[str, float] = field(default_factory=dict)


def pm1(rng: np.random.Generator, shape) -> np.ndarray:
    return (2 * rng.integers(0, 2, size=shape, dtype=np.int8) - 1).astype(np.int8)


def signs(H: np.ndarray) -> np.ndarray:
    """sign(H) with sign(0) = +1, as int8 (the kernel's convention)."""
    return np.where(H >= 0, 1, -1).astype(np.int8)


def teacher_student(N: int, alpha: float, seed: int, n_test: int = 10000) -> Problem:
    """A random binary teacher t (N odd, so t.x is never 0) labelling P = round(alpha N) random +-1
    patterns; a test set of n_test fresh patterns for the vote metric."""
    if N < 1 or N % 2 == 0:
        raise ValueError(f"N: expected an odd number of inputs (no ties in t.x), got {N}")
    if not alpha > 0:
        raise ValueError(f"alpha: expected alpha = P/N > 0, got {alpha}")
    rng = np.random.default_rng([seed, 1])
    teacher = pm1(rng, N)
    P = max(1, int(round(alpha * N)))
    X = pm1(rng, (P, N))
    Xt = pm1(rng, (n_test, N))
    label = lambda A: np.where(A.astype(np.int32) @ teacher.astype(np.int32) > 0, 1, -1).astype(np.int8)
    return Problem(X, label(X), teacher, Xt, label(Xt), {"N": N, "alpha": alpha, "P": P})


def random_patterns(N: int, K: int, alpha: float, seed: int) -> Problem:
    """P = round(alpha K N) random +-1 patterns with random +-1 labels (the storage problem of a
    committee machine with K hidden units of N inputs each; alpha counts patterns per weight)."""
    if N < 1 or N % 2 == 0 or K < 1 or K % 2 == 0:
        raise ValueError(f"N, K: expected odd numbers (no ties in the units or the vote), got N = {N}, K = {K}")
    rng = np.random.default_rng([seed, 2])
    P = max(1, int(round(alpha * K * N)))
    return Problem(pm1(rng, (P, N)), pm1(rng, P), meta={"N": N, "K": K, "alpha": alpha, "P": P})


def committee_outputs(w: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Outputs (M, P) of the M binary committees w (M, K, N) on X (P, N): sign of the sum of the
    units' signs (K odd: no tie; a unit's zero field counts +1, as in the kernel)."""
    fields = np.einsum("mkn,pn->mkp", w.astype(np.int32), X.astype(np.int32))
    votes = np.where(fields >= 0, 1, -1).sum(axis=1)
    return np.where(votes > 0, 1, -1)


def initial_state(M: int, K: int, N: int, seed: int) -> np.ndarray:
    """Independent random hidden states +-1 per copy (float64)."""
    rng = np.random.default_rng([seed, 3])
    return pm1(rng, (M, K, N)).astype(np.float64)


def _couple(H: np.ndarray, gamma: float) -> None:
    # An elastic pull in the space of the real hidden states (the parameters the rule moves), as
    # replicated SGD pulls real weights: a pull towards the mean of the binary weights instead would
    # also push the agreeing majority towards zero and flip it when gamma is large.
    H += min(gamma, 1.0) * (H.mean(axis=0, keepdims=True) - H)


def _copies_agree(H: np.ndarray) -> bool:
    w = signs(H)
    return bool((w == w[:1]).all())


def train(arm: Arm, problem: Problem, M: int, K: int, rule: Rule, seed: int,
          stop_when_solved: bool = False) -> dict:
    """Trains the M copies of the arm on the problem; returns the final hidden states and the
    training history. stop_when_solved: also stop at the end of the first epoch where some copy
    classifies every training pattern (experiment 2's criterion)."""
    X, y = problem.patterns, problem.labels
    P, N = X.shape
    H = initial_state(M, K, N, seed)
    routing = arm.routing(M, seed)
    rng = np.random.default_rng([seed, 4])
    n_chunks_total = rule.epochs * max(1, math.ceil(P / rule.chunk))
    growth = (arm.gamma_end / arm.gamma0) ** (1.0 / max(1, n_chunks_total - 1)) if arm.kind == "replicated" else 1.0
    gamma, updates, epochs_run, solved_at = arm.gamma0, 0, 0, None
    for epoch in range(rule.epochs):
        order = rng.permutation(P)
        if arm.kind == "replicated":
            updates = 0
            for start in range(0, P, rule.chunk):
                updates += routed_kernels.committee_epoch(routing, H, X, y, order[start:start + rule.chunk],
                                                          rule.eta, rule.margin, rule.h_max, step=epoch + 1)
                _couple(H, gamma)
                gamma *= growth
        else:
            updates = routed_kernels.committee_epoch(routing, H, X, y, order, rule.eta, rule.margin, rule.h_max,
                                                     step=epoch + 1)
        epochs_run = epoch + 1
        if stop_when_solved and solved_at is None:
            if (committee_outputs(signs(H), X) == y[None, :]).all(axis=1).any():
                solved_at = epochs_run
                break
        if updates == 0 and (arm.kind != "replicated" or _copies_agree(H)):
            break
    cover_errors = routed_kernels.committee_epoch(routing, H, X, y, np.arange(P), 0.0, 0.0, 0.0, step=epochs_run)
    return {"H": H, "epochs": epochs_run, "last_epoch_updates": updates / (P * M),
            "cover_train_error": cover_errors / (P * M), "solved_at": solved_at}


def generalisation_error(w: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """arccos(R)/pi with R = w.t/N, for w (..., N): the teacher-student perceptron's test error on
    uniform +-1 inputs in the large-N limit."""
    R = (w.astype(np.int64) @ teacher.astype(np.int64)) / teacher.shape[0]
    return np.arccos(np.clip(R, -1.0, 1.0)) / np.pi


def perceptron_metrics(H: np.ndarray, problem: Problem) -> dict:
    """Experiment 1's metrics for M perceptrons H (M, 1, N)."""
    w = signs(H[:, 0, :])                                     # (M, N)
    M, N = w.shape
    eps = generalisation_error(w, problem.teacher)
    centre = signs(w.astype(np.int64).sum(axis=0))            # ties (even M) -> +1
    out_train = committee_outputs(w[:, None, :], problem.patterns)
    out_test = committee_outputs(w[:, None, :], problem.test_patterns)
    vote = np.where(out_test.sum(axis=0) >= 0, 1, -1)
    q = (w.astype(np.int64) @ w.T.astype(np.int64)) / N
    return {
        "eps_mean": float(eps.mean()),
        "eps_best": float(eps.min()),
        "eps_center": float(generalisation_error(centre, problem.teacher)),
        "eps_vote": float((vote != problem.test_labels).mean()),
        "train_error": float((out_train != problem.labels[None, :]).mean()),
        "train_error_center": float((committee_outputs(centre[None, None, :], problem.patterns)[0]
                                     != problem.labels).mean()),
        "overlap": float(q[np.triu_indices(M, 1)].mean()) if M > 1 else None,
    }


def committee_metrics(H: np.ndarray, problem: Problem) -> dict:
    """Experiment 2's metrics for M committees H (M, K, N): training errors of the copies and of the
    centre (sign of the summed copies), and whether any copy / the centre classifies every pattern."""
    w = signs(H)
    out = committee_outputs(w, problem.patterns)
    err = (out != problem.labels[None, :]).mean(axis=1)
    centre = signs(w.astype(np.int64).sum(axis=0))[None]
    err_c = float((committee_outputs(centre, problem.patterns)[0] != problem.labels).mean())
    return {"train_error": float(err.mean()), "train_error_best": float(err.min()),
            "train_error_center": err_c, "solved_any": float(err.min() == 0), "solved_center": float(err_c == 0),
            "solved_fraction": float((err == 0).mean())}
