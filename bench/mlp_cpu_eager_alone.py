"""Ours and eager alone, no other candidate in between: what "3x eager" asks of the FMA units.

    python bench/mlp_cpu_eager_alone.py [rounds]

The headline MLP (32 -> 64 -> 64 -> 16 relu, float32, 2^16 rows, 1 thread, malloc warm). Each round
times one call of each right after a call of the same (its buffers still in the last-level cache:
"warm") and one right after 256 MB were written ("flushed"). Ours is compute-bound and moves little
between the two; eager reads and writes ~2 KB per row. The last lines say how many GFLOP/s, and
which fraction of the measured one-core FMA peak, ours would need to be 3x as fast as eager in each
state. Compare with the sweep (bench/mlp_cpu.py), where eager runs interleaved with ours,
torch.compile and numpy.
"""
import statistics
import sys
import time

import torch

from perceptrons import _C
from perceptrons.benchmarks.machine import measured_core_peak_gflops, pin_malloc
from perceptrons.nn import FusedMLP


def main(rounds: int = 12) -> None:
    pin_malloc("warm")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch = 1 << 16
    model = FusedMLP(32, 16, hidden_features=64, hidden_layers=2)
    seq = model.to_sequential()
    x = torch.randn(batch, 32)
    flush = torch.empty(64 << 20)  # 256 MB of float32, over twice the 105 MB L3 of the dev VM
    flops = 2 * batch * (32 * 64 + 64 * 64 + 64 * 16)
    isa = _C.cpu_isa()
    peak = measured_core_peak_gflops(isa)
    times = {k: [] for k in ("ours warm", "eager warm", "ours flushed", "eager flushed")}
    with torch.no_grad():
        for _ in range(2):
            model(x), seq(x)
        for r in range(rounds):
            for name, fn in (("ours", lambda: model(x)), ("eager", lambda: seq(x))):
                fn()
                t0 = time.perf_counter()
                fn()
                times[name + " warm"].append(time.perf_counter() - t0)
                flush.fill_(r)
                t0 = time.perf_counter()
                fn()
                times[name + " flushed"].append(time.perf_counter() - t0)
    print(f"one-core FP32 FMA peak (measured, {isa}): {peak:.1f} GFLOP/s; medians of {rounds} rounds")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:14s} {v / batch * 1e9:6.1f} ns/row  {batch / v / 1e6:5.2f} M rows/s  {flops / v / 1e9:6.1f} GFLOP/s")
    for state in ("warm", "flushed"):
        eager, ours = med["eager " + state], med["ours " + state]
        need = flops / (eager / 3) / 1e9
        print(f"eager {state}: ours is {eager / ours:.2f}x as fast; 3x needs {need:.0f} GFLOP/s, "
              f"{100 * need / peak:.0f}% of the peak")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12)
