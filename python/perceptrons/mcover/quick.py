"""`python -m perceptrons mcover [--quick]`: a small version of experiment 1 (teacher-student binary
perceptron on the M-cover) that prints the table, so a user can see the effect, or its absence, on
their own machine. The full study, with plots and every arm, is examples/mcover/ (README there)."""
from __future__ import annotations

import os
import time

from . import stats, sweep
from .binary import Arm, Rule

QUICK = dict(N=201, alphas=(0.6, 1.0, 1.4), M=16, seeds=4, epochs=100)
FULL = dict(N=301, alphas=(0.6, 1.0, 1.4), M=16, seeds=10, epochs=200)
# The rule examples/mcover/perceptron.py chose on independent copies (tuning seeds 1000-1001;
# results/perceptron.json, "rule_tuning").
RULE = dict(eta=2.0, margin=0.5, h_max=0.0)


def arms():
    return [Arm("independent"), Arm("routed", "edge", "quenched", 1.0), Arm("routed", "edge", "quenched", None),
            Arm("routed", "edge", "annealed", None), Arm("replicated", gamma0=0.0003, gamma_end=0.03)]


def run(quick=True, seeds=None, jobs=None, N=None, M=None, epochs=None, alphas=None):
    cfg = dict(QUICK if quick else FULL)
    for k, v in (("seeds", seeds), ("N", N), ("M", M), ("epochs", epochs), ("alphas", alphas)):
        if v is not None:
            cfg[k] = v
    if cfg["N"] < 1 or cfg["N"] % 2 == 0:
        raise ValueError(f"N: expected an odd positive number of inputs, got {cfg['N']}")
    if cfg["seeds"] < 2:
        raise ValueError(f"seeds: expected at least 2 (a standard error needs two), got {cfg['seeds']}")
    if cfg["M"] < 2:
        raise ValueError(f"M: expected at least 2 copies to route between, got {cfg['M']}")
    if cfg["epochs"] < 1 or any(not a > 0 for a in cfg["alphas"]):
        raise ValueError("epochs, alphas: expected a positive epoch budget and alphas > 0")
    jobs = jobs or min(os.cpu_count() or 1, 8)
    if jobs < 1:
        raise ValueError(f"jobs: expected at least 1 worker, got {jobs}")
    rule = Rule(epochs=cfg["epochs"], **RULE)
    t0 = time.time()
    runs = sweep.run_grid(sweep.perceptron_job, {"alpha": cfg["alphas"], "M": (cfg["M"],)}, arms(),
                          stats.seeds(cfg["seeds"]), rule, jobs=jobs, N=cfg["N"], n_test=5000)
    rows = sweep.summarise(runs, ("alpha", "M"), sweep.PERCEPTRON_METRICS, compare=("eps_mean", "eps_center",
                                                                                      "eps_vote"))
    return cfg, rule, rows, time.time() - t0


def table(rows) -> str:
    header = ["alpha", "arm", "ε mean copy", "ε centre", "ε vote", "overlap", "Δ centre vs independent"]
    body = []
    for r in sorted(rows, key=lambda r: (r["alpha"], r["arm"] != "independent", r["arm"])):
        s, vs = r["stats"], r.get("vs_independent", {})
        d = vs.get("eps_center")
        body.append([f"{r['alpha']:g}", r["arm"], stats.fmt(s["eps_mean"]), stats.fmt(s["eps_center"]),
                     stats.fmt(s["eps_vote"]), stats.fmt(s["overlap"]),
                     "" if d is None else f"{d['mean']:+.3f} ± {d['se']:.3f} ({d['verdict']})"])
    return stats.markdown_table(header, body)


def main(quick=True, seeds=None, jobs=None, N=None, M=None, epochs=None) -> int:
    cfg, rule, rows, wall = run(quick, seeds, jobs, N, M, epochs)
    print(f"M-cover, teacher-student binary perceptron: N = {cfg['N']}, M = {cfg['M']}, {cfg['seeds']} seeds, "
          f"{cfg['epochs']} epochs; rule eta = {rule.eta:g}, margin = {rule.margin:g} sqrt(N)")
    print("ε = arccos(R)/π of each copy (mean), of the centre sign(Σ copies), and the copies' majority vote on "
          "5000 test patterns; Δ: paired by seed, ± s.e.; 'better'/'worse' = more than 2 s.e. from 0.")
    print("Routed arms route every weight (per-edge) through a permutation drawn from a ring Gaussian Q "
          "(sigma 1) or uniform Q; replicated: elastic pull to the copies' mean.\n")
    print(table(rows))
    print(f"\n{wall:.0f} s. The full study (all arms, alpha 0.4-1.6, M 1-64, plots): examples/mcover/README.md")
    return 0
