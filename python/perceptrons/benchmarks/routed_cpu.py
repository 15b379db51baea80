"""Routed replicas on the CPU: time per training step of RoutedMLP against M independent copies, and the
routed perceptron kernel against its numpy reference.

Training step = forward of M streams (one batch per stream) + MSE loss + backward, no optimizer step,
for every arm. Arms:
  batched      M independent copies, one torch.baddbmm per layer (the natural baseline; mbrl-lib's
               EnsembleLinearLayer layout)
  vmap         torch.func.stack_module_state + functional_call + vmap over M nn.Sequential
  loop         a Python loop over M nn.Sequential modules
  routed_I     RoutedMLP with Q = identity (M independent models through the routed kernel)
  routed_layer / routed_unit / routed_edge   RoutedMLP, ring-Gaussian Q (sigma = 1), per batch, annealed
  torch_floor  not a model: the torch work every arm's step contains whatever its kernels, namely the MSE
               loss forward and backward, and M models' gradients written once into fresh tensors and
               accumulated into the existing .grad (what autograd does with any arm's gradients)
Ratios are per round (timing.interleaved): routed_x / batched <= 1.1 and loop / routed_x >= 3 at M = 16
are the issue's targets for layer and unit routing.

How far loop / routed can go: besides torch_floor, the step must do its arithmetic (forward, dW, and
dL/dh for layers >= 1: x needs no gradient) and read the weights, once for the forward and once more
for the backward (at W = 256 those reads leave the caches). `bound` = loop / (torch_floor + the larger
of the arithmetic at the FMA peak of the threads and the weight reads at the copy bandwidth, both
measured at the start): the loop / routed ratio of a kernel at peak speed with its memory traffic
hidden, an upper bound on any routed kernel.
"""
from __future__ import annotations

import copy
import json
import os
import sys

import numpy as np
import torch

from .. import routing as R
from ..kernels import routed as kroute
from ..nn import RoutedMLP
from ..reference import routed as ref
from . import machine
from .timing import interleaved

HIDDEN_LAYERS = 2
SIGMA = 1.0


def _sequential(W, hidden_layers):
    layers = []
    dims = [W] * (hidden_layers + 2)
    for l in range(hidden_layers + 1):
        layers.append(torch.nn.Linear(dims[l], dims[l + 1]))
        if l < hidden_layers:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def mlp_arms(M, W, B):
    torch.manual_seed(0)
    x = torch.randn(M, B, W)
    target = torch.randn(M, B, W)
    arms = {}
    routed = {}
    for name, gran, Q in (("routed_I", "layer", None), ("routed_layer", "layer", R.ring_gaussian(M, SIGMA)),
                          ("routed_unit", "unit", R.ring_gaussian(M, SIGMA)),
                          ("routed_edge", "edge", R.ring_gaussian(M, SIGMA))):
        routed[name] = RoutedMLP(M, W, W, W, HIDDEN_LAYERS, "relu", routing=gran, Q=Q, seed=1)
    # Batched independent copies: the same parameters as routed_I.
    ws = [w.detach().clone().requires_grad_() for w in routed["routed_I"].weights]
    bs = [b.detach().clone().requires_grad_() for b in routed["routed_I"].biases]

    def batched():
        h = x
        for l, (w, b) in enumerate(zip(ws, bs)):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if l < len(ws) - 1:
                h = torch.relu(h)
        torch.nn.functional.mse_loss(h, target).backward()

    models = [_sequential(W, HIDDEN_LAYERS) for _ in range(M)]
    params, buffers = torch.func.stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def call(p, b, xi):
        return torch.func.functional_call(base, (p, b), (xi,))

    vcall = torch.func.vmap(call, in_dims=(0, 0, 0))

    def vmapped():
        torch.nn.functional.mse_loss(vcall(params, buffers, x), target).backward()

    def loop():
        loss = 0
        for m in range(M):
            loss = loss + torch.nn.functional.mse_loss(models[m](x[m]), target[m])
        (loss / M).backward()

    y_leaf = torch.randn(M, B, W, requires_grad=True)
    grads = [torch.zeros_like(p) for p in ws + bs]

    def torch_floor():
        torch.nn.functional.mse_loss(y_leaf, target).backward()
        for g in grads:
            g.add_(torch.empty_like(g).fill_(1.0))

    arms["batched"] = batched
    arms["vmap"] = vmapped
    arms["loop"] = loop
    arms["torch_floor"] = torch_floor
    for name, mod in routed.items():
        arms[name] = (lambda mod=mod: torch.nn.functional.mse_loss(mod(x), target).backward())
    return arms


def perceptron_rates(M, N, K, granularity, n_patterns, n_ref, budget_s=3.0, min_rounds=5):
    """Pattern-copy-weight updates per second (P * M * K * N per epoch / seconds) of the kernel and of
    the numpy reference (the reference runs n_ref patterns; its rate is per pattern, like the kernel's),
    timed side by side in interleaved rounds (BENCHMARKS.md); each epoch starts from the same H.
    Returns the median rates and the median, min and max of the per-round speedups."""
    rng = np.random.default_rng(0)
    r = R.Routing(M, R.ring_gaussian(M, 2.0), granularity=granularity, per="example", seed=3)
    pats = rng.choice([-1, 1], (n_patterns, N)).astype(np.int8)
    labs = rng.choice([-1, 1], n_patterns).astype(np.int8)
    H = rng.standard_normal((M, K, N))
    order = np.arange(n_patterns)

    def owners(mu):
        return r.owners(0, K, N, 0, mu)[:, :, :N]
    cmp = interleaved({"kernel": lambda: kroute.committee_epoch(r, H.copy(), pats, labs, order, eta=1.0, margin=0.5),
                       "reference": lambda: ref.committee_epoch(H.copy(), pats, labs, order[:n_ref], owners, 1.0, 0.5)},
                      reference="kernel", warmup=1, min_rounds=min_rounds, budget_s=budget_s, min_sample_s=0.0)
    per = M * K * N
    # Per round: reference seconds / kernel seconds, times the kernel's n_patterns / n_ref more work.
    speedup = cmp.speedup("reference")
    work = n_patterns / n_ref
    return {"kernel_updates_per_s": n_patterns * per / cmp.timings["kernel"].median,
            "reference_updates_per_s": n_ref * per / cmp.timings["reference"].median,
            "speedup": work * speedup.median, "speedup_min": work * speedup.min, "speedup_max": work * speedup.max,
            "rounds": cmp.rounds}


def weight_read_bytes(M, W, hidden_layers=HIDDEN_LAYERS, itemsize=4):
    """Bytes of weights a training step must read at least: every W_l and b_l for the forward, W_l for
    l >= 1 again for the backward's dL/dh."""
    layers = hidden_layers + 1
    return itemsize * M * (layers * (W * W + W) + (layers - 1) * W * W)


def step_flops(M, W, B, hidden_layers=HIDDEN_LAYERS):
    """Multiply-adds x 2 of a training step: forward and dW for every layer, dL/dh for layers >= 1."""
    layers = hidden_layers + 1
    return 2 * M * B * W * W * (2 * layers + layers - 1)


def main(quick=False, threads=None, out=None, malloc="warm"):
    """Runs the benchmark, prints the tables. malloc: "warm" or "default", see machine.pin_malloc
    (which it calls first: it lasts for the process)."""
    malloc_state = machine.pin_malloc(malloc)
    threads = threads or os.cpu_count()
    from .. import set_num_threads
    set_num_threads(threads)
    machine.set_numpy_threads(1)   # the reference is single-threaded numpy; idle BLAS pools must not spin
    Ms = (4, 16) if quick else (4, 16, 64)
    Ws = (64,) if quick else (64, 256)
    Bs = (32,) if quick else (32, 256)
    bandwidth = machine.copy_bandwidth(256 << 20)
    from .. import _C
    peak = threads * machine.measured_core_peak_gflops(_C.cpu_isa()) * 1e9
    print(f"copy bandwidth at {threads} threads: {bandwidth / 1e9:.1f} GB/s; FMA peak {peak / 1e9:.0f} GFLOP/s",
          file=sys.stderr, flush=True)
    records = []
    for M in Ms:
        for W in Ws:
            for B in Bs:
                arms = mlp_arms(M, W, B)
                cmp = interleaved(arms, reference="batched", budget_s=2.0 if quick else 6.0,
                                  min_rounds=3 if quick else 5)
                rec = {"M": M, "W": W, "B": B, **cmp.as_dict()}
                rec["routed_over_batched"] = {k: cmp.speedup(k).median for k in arms if k.startswith("routed")}
                rec["loop_over_routed"] = {k: cmp.timings["loop"].median / cmp.timings[k].median
                                           for k in arms if k.startswith("routed")}
                rec["weight_read_s"] = weight_read_bytes(M, W) / bandwidth
                rec["arithmetic_s"] = step_flops(M, W, B) / peak
                rec["loop_over_routed_bound"] = cmp.timings["loop"].median / (
                    cmp.timings["torch_floor"].median + max(rec["weight_read_s"], rec["arithmetic_s"]))
                records.append(rec)
                print(_row(rec), file=sys.stderr, flush=True)
    perc = []
    for M in ((16,) if quick else (4, 16, 64)):
        for K in (1, 3):
            for g in ("layer", "unit", "edge"):
                rates = perceptron_rates(M, 1001, K, g, 200 if quick else 600, 20 if quick else 60,
                                         budget_s=1.0 if quick else 3.0, min_rounds=3 if quick else 5)
                perc.append({"M": M, "N": 1001, "K": K, "granularity": g, **rates})
                print(f"perceptron M={M} K={K} {g}: kernel {rates['kernel_updates_per_s']:.3g}/s, reference "
                      f"{rates['reference_updates_per_s']:.3g}/s, {rates['speedup']:.1f}x "
                      f"[{rates['speedup_min']:.1f}-{rates['speedup_max']:.1f}]", file=sys.stderr, flush=True)
    result = {"machine": machine.cpuinfo(), "versions": machine.versions(), "threads": threads,
              "copy_bandwidth_bytes_per_s": bandwidth, "fma_peak_flops": peak, "malloc": malloc_state,
              "commit": machine.git_commit(os.path.dirname(os.path.abspath(__file__))),
              "hidden_layers": HIDDEN_LAYERS, "sigma": SIGMA, "mlp": records, "perceptron": perc}
    text = table(result)
    print(text)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "routed_cpu.json"), "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(out, "routed_cpu.md"), "w") as f:
            f.write(text)
    return 0


def _row(r):
    t = r["timings"]
    cells = " ".join(f"{k}={t[k]['median_s'] * 1e3:.3g}ms" for k in t)
    return f"M={r['M']} W={r['W']} B={r['B']}: {cells}"


def table(result) -> str:
    names = ["batched", "vmap", "loop", "routed_I", "routed_layer", "routed_unit", "routed_edge", "torch_floor"]
    bw = result.get("copy_bandwidth_bytes_per_s")
    lines = [f"# Routed replicas on the CPU ({result['threads']} threads)", "",
             *([machine.malloc_text(result["malloc"]) + ".", ""] if "malloc" in result else []),
             f"Training step (forward + MSE + backward), {result['hidden_layers']} hidden layers of width W, "
             f"in = out = W, ReLU; routed arms: ring-Gaussian Q (sigma = {result['sigma']}), per batch, annealed. "
             "Milliseconds per step (median over interleaved rounds); ratio columns: routed / batched "
             "(target <= 1.1 for layer and unit) and loop / routed (target >= 3 at M = 16). torch_floor: the "
             "torch work inside every arm's step (MSE loss, M models' gradients written once and accumulated "
             "into .grad); bound: loop / (torch_floor + the larger of the step's arithmetic at the FMA peak and "
             "its minimal weight reads at the copy bandwidth"
             + (f", {result['fma_peak_flops'] / 1e9:.0f} GFLOP/s and {bw / 1e9:.1f} GB/s" if bw else "")
             + "): the loop / routed of a kernel at peak speed with its memory traffic hidden, an upper bound "
             "(module docstring of perceptrons.benchmarks.routed_cpu).", "",
             "| M | W | B | " + " | ".join(names)
             + " | layer/batched | unit/batched | loop/layer | loop/unit | bound |",
             "|" + "---|" * (3 + len(names) + 5)]
    for r in result["mlp"]:
        t = r["timings"]
        rob, lor = r["routed_over_batched"], r["loop_over_routed"]
        bound = r.get("loop_over_routed_bound")
        lines.append(f"| {r['M']} | {r['W']} | {r['B']} | "
                     + " | ".join(f"{t[n]['median_s'] * 1e3:.3g}" if n in t else "-" for n in names)
                     + f" | {rob['routed_layer']:.2f} | {rob['routed_unit']:.2f} | {lor['routed_layer']:.1f} | "
                       f"{lor['routed_unit']:.1f} | " + (f"{bound:.1f}" if bound else "-") + " |")
    lines += ["", "Routed perceptron / committee machine epoch (N = 1001, ring Q sigma = 2, per-example keys): "
              "pattern-copy-weight updates per second (medians), kernel and numpy reference timed in "
              "interleaved rounds; speedup: median of the per-round ratios [min-max] (target >= 20).", "",
              "| M | K | granularity | kernel | numpy reference | speedup |", "|---|---|---|---|---|---|"]
    for p in result["perceptron"]:
        spread = f" [{p['speedup_min']:.1f}-{p['speedup_max']:.1f}]" if "speedup_min" in p else ""
        lines.append(f"| {p['M']} | {p['K']} | {p['granularity']} | {p['kernel_updates_per_s']:.3g} | "
                     f"{p['reference_updates_per_s']:.3g} | {p['speedup']:.1f}{spread} |")
    return "\n".join(lines) + "\n"
