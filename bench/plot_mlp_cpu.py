"""Throughput vs batch size from bench/results/cpu/mlp_cpu.json: one panel per (mode, threads).

    python bench/plot_mlp_cpu.py [path/to/mlp_cpu.json]   -> mlp_cpu_throughput.png beside it
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display on benchmark machines
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"ours": ("FusedMLP (ours)", "C3", "o"), "eager": ("nn.Sequential eager", "C0", "s"),
         "compile": ("torch.compile", "C2", "^"), "numpy": ("numpy", "C7", "v")}


def plot(json_path: str, png_path: str = None) -> str:
    with open(json_path) as f:
        data = json.load(f)
    rows = [r for r in data["results"] if "batch" in r.get("sweeps", [])]
    modes = [m for m in ("inference", "training") if any(r["mode"] == m for r in rows)]
    threads = sorted({r["threads"] for r in rows})
    fig, axes = plt.subplots(len(modes), len(threads), figsize=(5.5 * len(threads), 4.2 * len(modes)),
                             squeeze=False, sharex=True)
    label = rows[0]["case"]["label"] if rows else ""
    for i, mode in enumerate(modes):
        for j, t in enumerate(threads):
            ax = axes[i][j]
            sel = sorted((r for r in rows if r["mode"] == mode and r["threads"] == t), key=lambda r: r["case"]["batch"])
            for impl, (name, color, marker) in STYLE.items():
                pts = [(r["case"]["batch"], r["impls"][impl]) for r in sel if impl in r["impls"]]
                if not pts:
                    continue
                b = [p[0] for p in pts]
                med = [p[0] / p[1]["median_s"] for p in pts]
                # Error bars span the slowest and fastest round, so a noisy point is visible as one.
                lo = [m - p[0] / p[1]["max_s"] for m, p in zip(med, pts)]
                hi = [p[0] / p[1]["min_s"] - m for m, p in zip(med, pts)]
                ax.errorbar(b, med, yerr=[lo, hi], label=name, color=color, marker=marker, capsize=2)
            ax.set_xscale("log", base=2)
            ax.set_xticks([r["case"]["batch"] for r in sel])
            ax.tick_params(labelbottom=True)
            ax.set_yscale("log")
            ax.set_title(f"{mode}, {t} thread{'s' * (t > 1)}")
            ax.set_xlabel("batch size (rows)")
            ax.set_ylabel("samples/s")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    cpu = data["machine"]["cpu"]["model"]
    fig.suptitle(f"MLP {label}, float32, {cpu}")
    fig.tight_layout()
    png_path = png_path or os.path.join(os.path.dirname(os.path.abspath(json_path)), "mlp_cpu_throughput.png")
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    print(plot(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "results", "cpu", "mlp_cpu.json")))
