"""Experiment 1: teacher-student binary perceptron on the M-cover.

Question: does per-edge permutation routing across M copies (quenched or annealed, ring-Gaussian Q of
width sigma or uniform Q) give copies, or their centre / vote, a lower generalisation error than M
independent copies, or than replicated coupling, trained by the same rule with the same budget?

Design (perceptrons.mcover.binary has the rule and the arms):
- N = 301 inputs, binary teacher, P = alpha N patterns, alpha in {0.4, 0.7, 1.0, 1.3, 1.6}.
- Shared rule: clipped least-action perceptron rule, eta = 2, 100 epochs, stop at the first epoch
  with no update. Its margin kappa and clip h_max are tuned ONCE, on the independent arm (M = 16,
  alpha 1.0 and 1.3, tuning seeds 1000-1001, never the evaluation seeds) by the mean copy's
  generalisation error; every arm then uses the same rule.
- Arm knobs, swept and all reported (5 values each, no selection): routed sigma in {0.5, 1, 2, 4}
  plus uniform Q (lambda2(Q) in the JSON), for quenched and annealed covers; replicated coupling
  gamma_end in {0.003, 0.01, 0.03, 0.1, 0.3} (gamma0 = gamma_end / 100, geometric growth).
- Main grid at M = 16 over every alpha; M sweep {1, 4, 16, 64} at alpha in {1.0, 1.3} for the
  independent arm, quenched and annealed sigma = 1 and uniform, and replicated gamma_end = 0.03.
- 10 evaluation seeds (0-9) per point; a seed fixes the teacher, the data and the initial states,
  so arms are compared by paired differences (arm - independent) with their standard error;
  'better'/'worse' means more than 2 s.e. from zero.

Run:  python examples/mcover/perceptron.py [--jobs 2] [--seeds 10] [--out examples/mcover/results]
      python examples/mcover/perceptron.py --quick   (a 1-minute smoke version, written under /tmp)
Writes perceptron.json (every run, summaries, comparisons), perceptron.md and perceptron.png.
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

SIGMAS = (0.5, 1.0, 2.0, 4.0, None)              # None: uniform Q
GAMMAS = (0.003, 0.01, 0.03, 0.1, 0.3)
ALPHAS = (0.4, 0.7, 1.0, 1.3, 1.6)
SWEEP_ALPHAS = (1.0, 1.3)
M_SWEEP = (1, 4, 16, 64)
M_MAIN = 16
COMPARE = ("eps_mean", "eps_best", "eps_center", "eps_vote")
RULE_GRID = [dict(margin=k, h_max=h) for k in (0.25, 0.5, 1.0) for h in (0.0, 21.0, 101.0)]


def main_arms(sigmas=SIGMAS, gammas=GAMMAS):
    arms = [Arm("independent")]
    arms += [Arm("routed", "edge", mode, s) for mode in ("quenched", "annealed") for s in sigmas]
    arms += [Arm("replicated", gamma0=g / 100, gamma_end=g) for g in gammas]
    return arms


def sweep_arms():
    return [Arm("independent"), Arm("routed", "edge", "quenched", 1.0), Arm("routed", "edge", "quenched", None),
            Arm("routed", "edge", "annealed", 1.0), Arm("routed", "edge", "annealed", None),
            Arm("replicated", gamma0=0.03 / 100, gamma_end=0.03)]


def tune_rule(N, epochs, jobs, n_seeds=2, alphas=SWEEP_ALPHAS):
    """Chooses (margin, h_max) for the independent arm on tuning seeds; returns the rule and the table."""
    table = []
    for cfg in RULE_GRID:
        rule = Rule(epochs=epochs, **cfg)
        runs = sweep.run_grid(sweep.perceptron_job, {"alpha": alphas, "M": (M_MAIN,)}, [Arm("independent")],
                              stats.seeds(n_seeds, stats.TUNING_SEED_OFFSET), rule, jobs=jobs, N=N)
        table.append(dict(cfg, eps_mean=stats.mean_se(r["eps_mean"] for r in runs)))
    best = min(table, key=lambda t: t["eps_mean"]["mean"])
    return Rule(epochs=epochs, margin=best["margin"], h_max=best["h_max"]), table


def lambda2_table(Ms):
    out = {}
    for M in Ms:
        for s in SIGMAS:
            arm = Arm("routed", "edge", "quenched", s)
            out.setdefault(str(M), {})["uniform" if s is None else f"sigma{s:g}"] = stats.lambda2_of(arm.mixing(M))
    return out


def markdown(rows, lam):
    """The README-ready tables: M = 16 over alpha (every arm), and the M sweep."""
    lines = [f"lambda2(Q) at M = {M_MAIN}: " + ", ".join(f"{k} {v:.3f}" for k, v in lam[str(M_MAIN)].items()), ""]
    for title, sel in (("M = 16, all arms", lambda r: r["M"] == M_MAIN),
                       ("M sweep", lambda r: r["arm"] in {a.name for a in sweep_arms()})):
        lines.append(f"### {title}: generalisation error (mean ± s.e. over seeds) and paired difference to independent")
        lines.append("")
        header = ["alpha", "M", "arm", "mean copy", "centre", "vote", "best copy", "train err", "overlap",
                  "Δ mean copy", "Δ centre", "Δ vote"]
        body = []
        for r in sorted(filter(sel, rows), key=lambda r: (r["alpha"], r["M"], r["arm"] != "independent", r["arm"])):
            s = r["stats"]
            vs = r.get("vs_independent", {})
            d = lambda m: "" if m not in vs else f"{vs[m]['mean']:+.3f} ± {vs[m]['se']:.3f} ({vs[m]['verdict']})"
            body.append([f"{r['alpha']:g}", r["M"], r["arm"], stats.fmt(s["eps_mean"]), stats.fmt(s["eps_center"]),
                         stats.fmt(s["eps_vote"]), stats.fmt(s["eps_best"]), stats.fmt(s["train_error"]),
                         stats.fmt(s["overlap"]) if "overlap" in s else "", d("eps_mean"), d("eps_center"),
                         d("eps_vote")])
        lines += [stats.markdown_table(header, body), ""]
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    families = [("routed quenched", lambda a: a.startswith("edge-quenched")),
                ("routed annealed", lambda a: a.startswith("edge-annealed")),
                ("replicated coupling", lambda a: a.startswith("replicated"))]
    metrics = [("eps_mean", "mean copy"), ("eps_center", "centre"), ("eps_vote", "vote")]
    fig, axes = plt.subplots(len(metrics) + 1, len(families), figsize=(15, 15))
    main = [r for r in rows if r["M"] == M_MAIN]
    for j, (fam, pick) in enumerate(families):
        arms = sorted({r["arm"] for r in main if pick(r["arm"])})
        for i, (m, label) in enumerate(metrics):
            ax = axes[i, j]
            ax.axhline(0, color="k", lw=0.8)
            for k, arm in enumerate(arms):
                pts = sorted((r for r in main if r["arm"] == arm), key=lambda r: r["alpha"])
                x = np.array([r["alpha"] for r in pts]) + 0.012 * (k - len(arms) / 2)
                y = [r["vs_independent"][m]["mean"] for r in pts]
                e = [2 * r["vs_independent"][m]["se"] for r in pts]
                ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, label=arm)
            ax.set_title(f"{fam}: {label}, M = {M_MAIN}")
            ax.set_ylabel("ε_g(arm) − ε_g(independent)  [±2 s.e.]")
            ax.set_xlabel("α = P/N")
            if i == 0:
                ax.legend(fontsize=7)
    # bottom row: absolute errors of the independent arm and the M sweep at SWEEP_ALPHAS
    ax = axes[-1, 0]
    for m, label in metrics:
        pts = sorted((r for r in main if r["arm"] == "independent"), key=lambda r: r["alpha"])
        ax.errorbar([r["alpha"] for r in pts], [r["stats"][m]["mean"] for r in pts],
                    yerr=[2 * r["stats"][m]["se"] for r in pts], marker="o", ms=3, capsize=2, label=label)
    ax.set_title(f"independent copies, M = {M_MAIN}")
    ax.set_xlabel("α = P/N")
    ax.set_ylabel("ε_g")
    ax.legend(fontsize=7)
    for j, alpha in enumerate(SWEEP_ALPHAS):
        ax = axes[-1, j + 1]
        for arm in [a.name for a in sweep_arms()]:
            pts = sorted((r for r in rows if r["arm"] == arm and abs(r["alpha"] - alpha) < 1e-9),
                         key=lambda r: r["M"])
            if pts:
                ax.errorbar([r["M"] for r in pts], [r["stats"]["eps_center"]["mean"] for r in pts],
                            yerr=[2 * r["stats"]["eps_center"]["se"] for r in pts], marker="o", ms=3, capsize=2,
                            label=arm)
        ax.set_xscale("log", base=2)
        ax.set_title(f"centre ε_g vs M, α = {alpha:g}")
        ax.set_xlabel("M")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    a = common.parse(common.parser(__doc__, N=301, epochs=100,
                                   quick_help="a small smoke version (2 alphas, fewer arms)"), argv)
    out = common.out_dir(a)
    t0 = time.time()
    alphas, arms, m_sweep = ALPHAS, main_arms(), M_SWEEP
    if a.quick:
        alphas, arms, m_sweep = SWEEP_ALPHAS, main_arms((1.0, None), (0.03,)), (4, 16)
    rule, tuning = tune_rule(a.N, a.epochs, a.jobs)
    print(f"rule (tuned on independent copies, tuning seeds): {rule}", flush=True)
    seeds = stats.seeds(a.seeds)
    runs = sweep.run_grid(sweep.perceptron_job, {"alpha": alphas, "M": (M_MAIN,)}, arms, seeds, rule, jobs=a.jobs,
                          progress=True, N=a.N)
    runs += sweep.run_grid(sweep.perceptron_job, {"alpha": SWEEP_ALPHAS, "M": [m for m in m_sweep if m != M_MAIN]},
                           sweep_arms() if not a.quick else arms[:3], seeds, rule, jobs=a.jobs, progress=True, N=a.N)
    rows = sweep.summarise(runs, ("alpha", "M"), sweep.PERCEPTRON_METRICS, compare=COMPARE)
    lam = lambda2_table(sorted({r["M"] for r in runs}))
    wall = time.time() - t0
    stats.write_json(os.path.join(out, "perceptron.json"), {
        "experiment": "teacher-student binary perceptron on the M-cover (examples/mcover/perceptron.py)",
        "command": "python examples/mcover/perceptron.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "N": a.N, "rule": asdict(rule), "rule_tuning": tuning, "seeds": seeds, "lambda2": lam,
        "wall_s": wall, "summary": rows, "runs": runs})
    text = markdown(rows, lam)
    with open(os.path.join(out, "perceptron.md"), "w") as f:
        f.write(f"# Experiment 1: teacher-student binary perceptron (N = {a.N}, {len(seeds)} seeds)\n\n"
                f"Rule: {rule}. Generated by examples/mcover/perceptron.py in {wall / 60:.1f} min.\n\n{text}\n")
    plot(rows, os.path.join(out, "perceptron.png"))
    print(text)
    print(f"wrote {out}/perceptron.{{json,md,png}} in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
