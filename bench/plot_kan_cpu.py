"""Speedup of KANLinear over the materialised-basis baseline vs batch size, from bench/results/cpu/kan_cpu.json:
one panel per (mode, threads), one line per (width, G); pykan dashed where it ran.

    python bench/plot_kan_cpu.py [path/to/kan_cpu.json]   -> kan_cpu_speedup.png beside it
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display on benchmark machines
import matplotlib.pyplot as plt  # noqa: E402

BASELINES = {"materialised": ("-", "o"), "pykan": ("--", "s")}


def plot(json_path: str, png_path: str = None) -> str:
    with open(json_path) as f:
        data = json.load(f)
    rows = data["results"]
    modes = [m for m in ("training", "inference") if any(r["mode"] == m for r in rows)]
    threads = sorted({r["threads"] for r in rows})
    configs = sorted({(r["case"]["width"], r["case"]["grid_size"]) for r in rows})
    colors = {c: f"C{i}" for i, c in enumerate(configs)}
    fig, axes = plt.subplots(len(modes), len(threads), figsize=(5.8 * len(threads), 4.4 * len(modes)),
                             squeeze=False, sharey=True)
    for i, mode in enumerate(modes):
        for j, t in enumerate(threads):
            ax = axes[i][j]
            for (w, g) in configs:
                sel = sorted((r for r in rows if r["mode"] == mode and r["threads"] == t
                              and r["case"]["width"] == w and r["case"]["grid_size"] == g),
                             key=lambda r: r["case"]["batch"])
                for base, (ls, marker) in BASELINES.items():
                    pts = [(r["case"]["batch"], r["speedup_of_ours"][base]) for r in sel if base in r["speedup_of_ours"]]
                    if not pts:
                        continue
                    b = [p[0] for p in pts]
                    med = [p[1]["median"] for p in pts]
                    # Error bars span the smallest and largest per-round ratio.
                    lo = [m - p[1]["min"] for m, p in zip(med, pts)]
                    hi = [p[1]["max"] - m for m, p in zip(med, pts)]
                    ax.errorbar(b, med, yerr=[lo, hi], color=colors[(w, g)], ls=ls, marker=marker, capsize=2,
                                label=f"{w}->{w}, G={g} vs {base}")
            ax.axhline(1.0, color="k", lw=0.8)
            if mode == "training":  # the target at the headline size (10,000 x 100, G=5)
                ax.axhline(10.0, color="k", lw=0.8, ls=":", label="target 10x (10,000 rows, 100->100, G=5)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sorted({r["case"]["batch"] for r in rows}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.set_title(f"{'forward+backward' if mode == 'training' else 'forward (no_grad)'}, "
                         f"{t} thread{'s' * (t > 1)}")
            ax.set_xlabel("batch size (rows)")
            ax.set_ylabel("speedup of KANLinear (x)")
            ax.grid(True, which="both", alpha=0.3)
    cpu = data["machine"]["cpu"]["model"]
    fig.suptitle(f"KANLinear vs materialised basis (efficient-kan) and pykan, k=3, float32, {cpu}")
    # One legend for all panels, below them: inside a panel it covers the points.
    handles, labels = {}, []
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in handles:
                handles[l] = h
                labels.append(l)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend([handles[l] for l in labels], labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    png_path = png_path or os.path.join(os.path.dirname(os.path.abspath(json_path)), "kan_cpu_speedup.png")
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    print(plot(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "results", "cpu", "kan_cpu.json")))
