"""Fused MLP on CUDA vs PyTorch (eager fp16/bf16/fp32, torch.compile default and reduce-overhead).

Configurations (issue 6): input = output = width with 4 hidden layers for widths 16/32/64/128 (the
configuration tiny-dpcpp-nn publishes) and a NeRF-like 32 -> 64 -> 64 -> 4; batch 2^14 .. 2^21.
Inference (no grad) and a training step (forward + backward, every parameter gradient). Timed with
CUDA events after warm-up, variants interleaved round by round, medians reported (BENCHMARKS.md);
each round starts behind a short GPU sleep so that it times calls back to back (ROUND_LEAD_CYCLES).
Outputs under --out: mlp_cuda.json (every record, machine, versions), mlp_cuda.md, mlp_cuda.png.

    python bench/mlp_cuda.py [--quick] [--out bench/results/h100]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time

import torch
from torch import nn

import perceptrons
from perceptrons.nn import FusedMLP

DENSE_FP16_PEAK = 989e12   # H100 SXM dense fp16/bf16 (BENCHMARKS.md)
HBM_PEAK = 3.35e12


def configs(quick):
    out = [("w64x4", [64] * 6), ("nerf", [32, 64, 64, 4])]
    if not quick:
        out = [(f"w{w}x4", [w] * 6) for w in (16, 32, 64, 128)] + [("nerf", [32, 64, 64, 4])]
    return out


def batches(quick):
    return [2 ** 18, 2 ** 21] if quick else [2 ** k for k in range(14, 22)]


def flops(widths, training):
    fwd = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    if not training:
        return fwd
    dx = sum(2 * a * b for a, b in zip(widths[1:-1], widths[2:]))  # no dL/dx of the input
    return 2 * fwd + dx


def make_models(widths):
    torch.manual_seed(0)
    ours = FusedMLP(widths[0], widths[-1], hidden_features=widths[1], hidden_layers=len(widths) - 2,
                    activation="relu").cuda()
    seq = ours.to_sequential().cuda()
    return ours, seq


# GPU cycles of torch.cuda._sleep queued ahead of each round's start event (about 0.5 ms on an H100):
# the host enqueues the round's first calls meanwhile, so the round times calls back to back instead of
# also timing how long the first call takes to reach the GPU after the synchronisation that ended the
# previous round (run 12: a w64x4 2^21 training step took 2.63 ms per call over rounds of 7 calls and
# 2.45 ms over 20 calls back to back in bench/profile_mlp_cuda.py --breakdown). A variant
# the host cannot keep fed stays host-bound; it gains at most this sleep over the round.
ROUND_LEAD_CYCLES = 1_000_000


def time_rounds(fns: dict, rounds: int, reps: int):
    """{name: [ms per call for each round]}, variants interleaved within each round."""
    times = {k: [] for k in fns}
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(rounds):
        for k, f in fns.items():
            torch.cuda._sleep(ROUND_LEAD_CYCLES)
            start.record()
            for _ in range(reps):
                f()
            end.record()
            end.synchronize()
            times[k].append(start.elapsed_time(end) / reps)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/results/h100")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    dev = torch.cuda.get_device_properties(0)
    machine = {"gpu": dev.name, "sm_count": dev.multi_processor_count, "torch": torch.__version__,
               "cuda": torch.version.cuda, "perceptrons": perceptrons.__version__,
               "build": perceptrons._C.build_info(),
               "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
               or os.environ.get("PERCEPTRONS_COMMIT", "unknown"),
               "peak_fp16_flops": DENSE_FP16_PEAK, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(json.dumps(machine), flush=True)
    records = []
    for name, widths in configs(args.quick):
        ours32, seq32 = make_models(widths)
        models = {}
        for dt, tag in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
            m = FusedMLP(widths[0], widths[-1], hidden_features=widths[1], hidden_layers=len(widths) - 2,
                         activation="relu").cuda().to(dt)
            m.load_state_dict({k: v.to(dt) for k, v in ours32.state_dict().items()})
            models[f"ours_{tag}"] = (m, dt)
            models[f"eager_{tag}"] = (m.to_sequential(), dt)
        models["eager_fp32"] = (seq32, torch.float32)
        compiled = {}
        if not args.no_compile and name in ("w64x4", "nerf"):  # the configurations the figures name
            for mode in ("default", "reduce-overhead"):
                seq16 = models["eager_fp16"][0]
                compiled[f"compile_{mode}_fp16"] = torch.compile(seq16, mode=None if mode == "default" else mode,
                                                                 dynamic=True)
        for batch in batches(args.quick):
            x32 = torch.rand(batch, widths[0], device="cuda") * 2 - 1
            dy32 = torch.rand(batch, widths[-1], device="cuda") * 2 - 1
            inputs = {torch.float16: (x32.half(), dy32.half()), torch.bfloat16: (x32.bfloat16(), dy32.bfloat16()),
                      torch.float32: (x32, dy32)}
            # Validate: ours against eager in the same dtype (relative Frobenius error).
            errs = {}
            with torch.no_grad():
                for tag in ("fp16", "bf16"):
                    dt = models[f"ours_{tag}"][1]
                    a = models[f"ours_{tag}"][0](inputs[dt][0]).float()
                    b = models["eager_fp32"][0](inputs[dt][0].float())
                    errs[tag] = float((a - b).norm() / b.norm())
            for task in ("inference", "training"):
                fns = {}
                for k, (m, dt) in list(models.items()) + [(k, (c, torch.float16)) for k, c in compiled.items()]:
                    x, dy = inputs[dt]
                    params = list(m.parameters())
                    if task == "inference":
                        def f(m=m, x=x):
                            with torch.no_grad():
                                m(x)
                    else:
                        def f(m=m, x=x, dy=dy, params=params):
                            torch.autograd.grad(m(x), params, dy)
                    for _ in range(3):
                        f()  # warm-up (compiles, records graphs)
                    fns[k] = f
                torch.cuda.synchronize()
                probe = time_rounds({"ours_fp16": fns["ours_fp16"]}, 1, 3)["ours_fp16"][0]
                reps = max(3, min(200, int(20.0 / max(probe, 1e-3))))
                times = time_rounds(fns, rounds=5 if args.quick else 7, reps=reps)
                fl = flops(widths, task == "training")
                rec = {"config": name, "widths": widths, "batch": batch, "task": task, "flops_per_sample": fl,
                       "validation_rel_err_vs_fp32": errs, "reps": reps, "variants": {}}
                base = statistics.median(times["eager_fp16"])
                for k, ts in times.items():
                    med = statistics.median(ts)
                    ratios = [b / a for a, b in zip(ts, times["eager_fp16"])]
                    rec["variants"][k] = {"ms": med, "ms_min": min(ts), "ms_max": max(ts),
                                          "samples_per_s": batch / (med * 1e-3),
                                          "tflops": fl * batch / (med * 1e-3) / 1e12,
                                          "frac_fp16_peak": fl * batch / (med * 1e-3) / DENSE_FP16_PEAK,
                                          "speedup_vs_eager_fp16": statistics.median(ratios)}
                records.append(rec)
                o = rec["variants"]["ours_fp16"]
                print(f"{name:6s} {task:9s} batch=2^{batch.bit_length() - 1:<2d} ours fp16 {o['ms']:.4f} ms "
                      f"{o['samples_per_s']:.3g}/s {o['tflops']:.1f} TF/s ({100 * o['frac_fp16_peak']:.1f}% peak) "
                      f"x{o['speedup_vs_eager_fp16']:.2f} vs eager fp16 ({base:.4f} ms); "
                      + " ".join(f"{k}={v['ms']:.4f}" for k, v in rec["variants"].items() if k != "ours_fp16"),
                      flush=True)
        del models, compiled
        torch.cuda.empty_cache()
    result = {"machine": machine, "records": records, "targets": targets(records)}
    with open(os.path.join(args.out, "mlp_cuda.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "mlp_cuda.md"), "w") as f:
        f.write(markdown(result))
    try:
        plot(records, os.path.join(args.out, "mlp_cuda.png"))
    except Exception as e:  # matplotlib missing is not a benchmark failure
        print("plot skipped:", e)
    print(markdown(result))


def targets(records):
    out = []
    for task, sps, ratio in (("inference", 4e9, 5.0), ("training", 1e9, 2.0)):
        r = [r for r in records if r["config"] == "w64x4" and r["batch"] == 2 ** 21 and r["task"] == task]
        if not r:
            continue
        o = r[0]["variants"]["ours_fp16"]
        out.append({"what": f"w64x4 {task} 2^21 fp16", "samples_per_s": o["samples_per_s"], "target_samples_per_s": sps,
                    "speedup_vs_eager_fp16": o["speedup_vs_eager_fp16"], "target_speedup": ratio,
                    "pass": o["samples_per_s"] >= sps and o["speedup_vs_eager_fp16"] >= ratio})
    return out


def markdown(result):
    m = result["machine"]
    lines = [f"# Fused MLP on CUDA: {m['gpu']} ({m['sm_count']} SMs), torch {m['torch']} (CUDA {m['cuda']}), "
             f"commit {m['commit'][:10]}, {m['date']}", "",
             "Medians of interleaved rounds (CUDA events). Speed-up: median of per-round ratios against "
             "eager fp16. TFLOP/s counts the logical network's multiply-adds x 2; peak = 989 TFLOP/s dense fp16.", "",
             "## Targets", "", "| what | samples/s | target | x eager fp16 | target | pass |", "|---|---|---|---|---|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['what']} | {t['samples_per_s']:.3g} | {t['target_samples_per_s']:.0e} | "
                     f"{t['speedup_vs_eager_fp16']:.2f} | {t['target_speedup']} | {'PASS' if t['pass'] else 'FAIL'} |")
    names = list(result["records"][0]["variants"]) if result["records"] else []
    lines += ["", "## All configurations (ms per call; ours fp16 samples/s, TFLOP/s, % of peak)", "",
              "| config | task | batch | " + " | ".join(names) + " | ours fp16 samples/s | TFLOP/s | % peak | x eager fp16 |",
              "|" + "---|" * (len(names) + 7)]
    for r in result["records"]:
        o = r["variants"]["ours_fp16"]
        lines.append(f"| {r['config']} | {r['task']} | 2^{r['batch'].bit_length() - 1} | "
                     + " | ".join(f"{r['variants'][k]['ms']:.4f}" for k in names)
                     + f" | {o['samples_per_s']:.3g} | {o['tflops']:.1f} | {100 * o['frac_fp16_peak']:.1f} | "
                       f"{o['speedup_vs_eager_fp16']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(records, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cfgs = sorted({r["config"] for r in records})
    fig, axes = plt.subplots(2, len(cfgs), figsize=(4 * len(cfgs), 7), squeeze=False)
    for j, c in enumerate(cfgs):
        for i, task in enumerate(("inference", "training")):
            ax = axes[i][j]
            rs = sorted((r for r in records if r["config"] == c and r["task"] == task), key=lambda r: r["batch"])
            for k in rs[0]["variants"]:
                ax.loglog([r["batch"] for r in rs], [r["variants"][k]["samples_per_s"] for r in rs],
                          marker="o" if k.startswith("ours") else ".", label=k)
            ax.set_title(f"{c} {task}")
            ax.set_xlabel("batch")
            ax.set_ylabel("samples/s")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
