"""Where the time of a fused-MLP call goes on the GPU.

Without --breakdown: three training steps (forward + backward; --task inference: three inference calls)
for a profiler such as ncu to look at, e.g.
    ncu -k regex:mlp_backward_kernel -c 1 --section WarpStateStats python3 bench/profile_mlp_cuda.py
With --breakdown: torch.profiler's per-kernel GPU times of inference and of a training step, ours and
eager fp16 side by side, plus the wall time per call with the GPU kept busy (back-to-back calls behind a
short GPU sleep, as bench/mlp_cuda.py's rounds) and
the GPU busy time per call, which tells host-bound calls from GPU-bound ones.
Width 64, 4 hidden layers, in = out = 64, batch 2^21, float16: the configuration of issue 6's figures."""
import argparse

import torch
from mlp_cuda import ROUND_LEAD_CYCLES  # bench/ is this script's directory

from perceptrons.nn import FusedMLP


def step_fns(batch, width, layers):
    model = FusedMLP(width, width, hidden_features=width, hidden_layers=layers).cuda().half()
    seq = model.to_sequential()
    x = torch.rand(batch, width, device="cuda", dtype=torch.float16)
    dy = torch.rand(batch, width, device="cuda", dtype=torch.float16)
    out = {}
    for name, m in (("ours", model), ("eager", seq)):
        params = list(m.parameters())

        def infer(m=m):
            with torch.no_grad():
                m(x)

        def train(m=m, params=params):
            torch.autograd.grad(m(x), params, dy)

        out[f"{name} inference"] = infer
        out[f"{name} training"] = train
    return out


def breakdown(batch, width, layers, reps=20):
    from torch.profiler import ProfilerActivity, profile
    for name, f in step_fns(batch, width, layers).items():
        for _ in range(3):
            f()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        # Behind a GPU sleep, as the sweep's rounds: the first call's trip to the GPU is not timed.
        torch.cuda._sleep(ROUND_LEAD_CYCLES)
        start.record()
        for _ in range(reps):
            f()
        end.record()
        end.synchronize()
        wall = start.elapsed_time(end) / reps
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                f()
            torch.cuda.synchronize()
        rows = []
        busy = 0.0
        for ev in prof.key_averages():
            t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0.0)
            if t > 0 and ev.count > 0:
                rows.append((t / reps / 1e3, ev.count // reps, ev.key))
                busy += t / reps / 1e3
        print(f"== {name}: {wall:.4f} ms per call back to back; GPU busy {busy:.4f} ms per call (batch 2^"
              f"{batch.bit_length() - 1}, w{width}x{layers})")
        for ms, n, key in sorted(rows, reverse=True)[:12]:
            print(f"   {ms:8.4f} ms  x{n:<3d} {key[:110]}")


def host_times(batch, width, layers, reps=300):
    """Host time per inference call (the GPU keeps up at small batches, so this is the call's time):
    torch's eager nn.Sequential, FusedMLP (which takes the eager shortcut past the dispatcher), the
    perceptrons::mlp_forward op through the dispatcher, and the op's CUDA implementation called directly."""
    import time

    import perceptrons.ops.mlp as mlp_ops
    model = FusedMLP(width, width, hidden_features=width, hidden_layers=layers).cuda().half()
    seq = model.to_sequential()
    x = torch.rand(batch, width, device="cuda", dtype=torch.float16)
    ws = [m.weight for m in seq if isinstance(m, torch.nn.Linear)]
    bs = [m.bias for m in seq if isinstance(m, torch.nn.Linear)]
    args = (x, ws, bs, "relu", 0.0, "none", 0.0, [])
    calls = {"eager nn.Sequential": lambda: seq(x), "FusedMLP": lambda: model(x),
             "op (dispatcher)": lambda: mlp_ops.mlp_forward(*args),
             "op's CUDA implementation": lambda: mlp_ops._mlp_forward_cuda(*args)}
    with torch.no_grad():
        for name, f in calls.items():
            best = float("inf")
            for _ in range(5):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(reps):
                    f()
                best = min(best, (time.perf_counter() - t0) / reps)
            torch.cuda.synchronize()
            print(f"== host {name}: {best * 1e6:.1f} us per call (batch 2^{batch.bit_length() - 1}, "
                  f"w{width}x{layers}; best of 5 runs of {reps} calls)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--breakdown", action="store_true")
    ap.add_argument("--host", action="store_true", help="host time per inference call (see host_times)")
    ap.add_argument("--batch-log2", type=int, default=21)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--task", choices=("training", "inference"), default="training",
                    help="what the profiler run (no --breakdown) calls three times")
    args = ap.parse_args()
    if args.host:
        host_times(2 ** args.batch_log2, args.width, 4)
    elif args.breakdown:
        breakdown(2 ** args.batch_log2, args.width, 4)
    else:
        f = step_fns(2 ** args.batch_log2, args.width, 4)[f"ours {args.task}"]
        for _ in range(3):
            f()
        torch.cuda.synchronize()
