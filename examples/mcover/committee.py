"""Experiment 2: storage capacity of binary committee machines on the M-cover.

Question: does permutation routing across M copies (per hidden unit or per edge, quenched or
annealed, ring-Gaussian sigma = 1 or uniform Q) raise the probability that training reaches zero
training error, against M independent copies and replicated coupling, with the same rule and budget?

Design (perceptrons.mcover.binary has the rule and the arms):
- Committee machines with K in {3, 5, 7} binary hidden units, each seeing all N = 101 +-1 inputs;
  P = alpha K N random patterns with random labels; alpha (patterns per weight) on a grid around
  where the independent arm's solve probability falls (chosen by a pilot on tuning seeds).
- M = 8 copies. Shared rule: least-action clipped perceptron rule with no margin (the task is to
  store the patterns), eta = 2, unbounded hidden states, at most 100 epochs; a run stops when some
  copy classifies every pattern.
- Arm knobs, 4 settings per family, all reported: per-unit routing and per-edge routing, each with
  (quenched, annealed) x (sigma 1, uniform); replicated coupling gamma_end in {0.003, 0.01, 0.03, 0.1}.
- Metrics: solved (some copy stores every pattern within the budget; M independent copies are M
  independent tries, which the routed arms must beat), centre solved, mean training error of the
  copies, epochs used. 10 seeds per point; paired differences to the independent arm.

Run:  python examples/mcover/committee.py [--jobs 2] [--seeds 10] [--out examples/mcover/results]
Writes committee.json, committee.md and committee.png.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict

import numpy as np

import common
from perceptrons.mcover import stats, sweep
from perceptrons.mcover.binary import Arm, Rule

KS = (3, 5, 7)
ALPHAS = {3: (0.35, 0.4, 0.45, 0.5), 5: (0.25, 0.3, 0.35, 0.4), 7: (0.2, 0.25, 0.3, 0.35)}
M = 8
COMPARE = ("solved_any", "solved_center", "train_error", "train_error_best")
LOWER_IS_BETTER = {"solved_any": False, "solved_center": False}   # solving more is better


def arms():
    out = [Arm("independent")]
    for g in ("unit", "edge"):
        out += [Arm("routed", g, mode, s) for mode in ("quenched", "annealed") for s in (1.0, None)]
    out += [Arm("replicated", gamma0=g / 100, gamma_end=g) for g in (0.003, 0.01, 0.03, 0.1)]
    return out


def markdown(rows):
    header = ["K", "alpha", "arm", "P(solved)", "P(centre solved)", "train err (mean copy)", "epochs",
              "Δ P(solved)", "Δ train err"]
    body = []
    for r in sorted(rows, key=lambda r: (r["K"], r["alpha"], r["arm"] != "independent", r["arm"])):
        s, vs = r["stats"], r.get("vs_independent", {})
        d = lambda m: "" if m not in vs else f"{vs[m]['mean']:+.2f} ± {vs[m]['se']:.2f} ({vs[m]['verdict']})"
        body.append([r["K"], f"{r['alpha']:g}", r["arm"], stats.fmt(s["solved_any"], 2),
                     stats.fmt(s["solved_center"], 2), stats.fmt(s["train_error"]), stats.fmt(s["epochs"], 0),
                     d("solved_any"), d("train_error")])
    return stats.markdown_table(header, body)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(KS), figsize=(16, 5), sharey=True)
    names = [a.name for a in arms()]
    styles = {"independent": dict(color="k", lw=2.5)}
    for ax, K in zip(axes, KS):
        for name in names:
            pts = sorted((r for r in rows if r["K"] == K and r["arm"] == name), key=lambda r: r["alpha"])
            x = np.array([r["alpha"] for r in pts])
            y = np.array([r["stats"]["solved_any"]["mean"] for r in pts])
            e = np.array([r["stats"]["solved_any"]["se"] for r in pts])
            ls = "--" if name.startswith("edge") else (":" if name.startswith("replicated") else "-")
            ax.errorbar(x, y, yerr=np.nan_to_num(e), marker="o", ms=3, capsize=2, ls=ls, label=name,
                        **styles.get(name, {}))
        ax.set_title(f"K = {K}, M = {M}: P(some copy stores all patterns)")
        ax.set_xlabel("α = P / (K N)")
        ax.set_ylim(-0.05, 1.05)
    axes[0].set_ylabel("fraction of seeds solved (± s.e.)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(out, argv, a, rule, seeds, runs, wall):
    rows = sweep.summarise(runs, ("K", "alpha", "M"), sweep.COMMITTEE_METRICS, compare=COMPARE,
                           lower_is_better=LOWER_IS_BETTER)
    stats.write_json(os.path.join(out, "committee.json"), {
        "experiment": "binary committee machine storage on the M-cover (examples/mcover/committee.py)",
        "command": "python examples/mcover/committee.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "N": a.N, "M": M, "rule": asdict(rule), "seeds": seeds,
        "lambda2": {"sigma1": stats.lambda2_of(Arm("routed", sigma=1.0).mixing(M)), "uniform": 0.0},
        "wall_s": wall, "summary": rows, "runs": runs})
    text = markdown(rows)
    with open(os.path.join(out, "committee.md"), "w") as f:
        f.write(f"# Experiment 2: binary committee machines, storage (N = {a.N} per unit, M = {M}, {len(seeds)} "
                f"seeds)\n\nRule: {rule}. Generated by examples/mcover/committee.py in {wall / 60:.1f} min.\n\n"
                f"{text}\n")
    plot(rows, os.path.join(out, "committee.png"))
    return text


def main(argv=None):
    a = common.parse(common.parser(__doc__, N=101, epochs=100,
                                   quick_help="a small smoke version (K = 3, two alphas)"), argv)
    out = common.out_dir(a)
    t0 = time.time()
    rule = Rule(eta=2.0, margin=0.0, h_max=0.0, epochs=a.epochs)
    seeds = stats.seeds(a.seeds)
    ks = (3,) if a.quick else KS
    runs = []
    for K in ks:
        alphas = ALPHAS[K][1:3] if a.quick else ALPHAS[K]
        runs += sweep.run_grid(sweep.committee_job, {"K": (K,), "alpha": alphas, "M": (M,)}, arms(), seeds, rule,
                               jobs=a.jobs, progress=True, N=a.N)
        text = write(out, argv, a, rule, seeds, runs, time.time() - t0)   # after every K: a stopped run keeps it
        print(f"K = {K} done ({(time.time() - t0) / 60:.1f} min)", flush=True)
    print(text)
    print(f"wrote {out}/committee.{{json,md,png}} in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
