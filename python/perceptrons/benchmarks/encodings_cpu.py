"""What an input encoding costs in front of a FusedMLP on the CPU, fused or not.

For NeRF/INR-shaped networks at one batch size, four ways to compute the same function, timed in the
same rounds (perceptrons.benchmarks.timing.interleaved):

  mlp only    the FusedMLP on inputs encoded beforehand (the floor: an encoding that costs nothing)
  fused       EncodedMLP: the encoding inside the MLP kernel's input stage
  separate    the encoding kernel, then the FusedMLP (the encoded rows go through memory)
  torch       the encoding in torch ops, then the nn.Sequential copy (plain torch eager)

in inference (torch.no_grad) and training (forward + backward of every parameter; the raw input does
not require grad, as in INR fitting). The fused stage's overhead is (fused - mlp only) / mlp only.
"""
from __future__ import annotations

import time

import torch

from .. import cpu_isa, set_num_threads
from ..nn import (CompositeEncoding, EncodedMLP, FrequencyEncoding, FusedMLP, IdentityEncoding, OneBlobEncoding,
                  SphericalHarmonicsEncoding)
from ..ops.encodings import composite_encode
from . import machine
from .report import markdown_table, write_results
from .timing import interleaved

CONFIGS = {
    "INR Frequency(8) 2-d -> 64x3 -> 3": (lambda: FrequencyEncoding(2, 8), 64, 3, 3, "sigmoid"),
    "NeRF density Frequency(10) 3-d -> 64x2 -> 16": (lambda: FrequencyEncoding(3, 10), 64, 2, 16, None),
    "NeRF colour Identity(15)+SH(4) -> 64x2 -> 3": (
        lambda: CompositeEncoding([IdentityEncoding(15), SphericalHarmonicsEncoding(3, 4)]), 64, 2, 3, "sigmoid"),
    "OneBlob(64) 2-d -> 64x4 -> 3 (tcnn's benchmark)": (lambda: OneBlobEncoding(2, 64), 64, 4, 3, None),
}


def _candidates(enc, mlp, x, training):
    fused = EncodedMLP(enc, mlp)
    seq = mlp.to_sequential()
    encoded = enc(x)

    def run(f, params):
        if not training:
            with torch.no_grad():
                return f()
        y = f()
        return torch.autograd.grad(y.sum(), params)

    ours, theirs = list(mlp.parameters()), list(seq.parameters())
    return {
        "mlp only": lambda: run(lambda: mlp(encoded), ours),
        "fused": lambda: run(lambda: fused(x), ours),
        "separate": lambda: run(lambda: mlp(enc(x)), ours),
        "torch": lambda: run(lambda: seq(composite_encode(x, enc.spec)), theirs),
    }


def _inputs(enc, batch, gen):
    cols = []
    for p in enc.spec.parts:
        if p.kind == "spherical_harmonics":
            v = torch.randn(batch, 3, generator=gen)
            cols.append((v / v.norm(dim=1, keepdim=True) + 1) / 2)
        else:
            cols.append(torch.rand(batch, p.n_dims, generator=gen))
    return torch.cat(cols, dim=1)


def run(batch: int = 2 ** 16, threads=None, quick: bool = False, out=None) -> dict:
    t_start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
        set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    # quick: a smoke run (three short rounds), for the test suite and a first look
    timing = dict(min_rounds=3, max_rounds=3, min_sample_s=0.002) if quick else dict(min_rounds=5, budget_s=4.0)
    records = []
    for name, (make_enc, hidden, layers, n_out, out_act) in CONFIGS.items():
        enc = make_enc()
        mlp = FusedMLP(enc.out_features, n_out, hidden, layers, output_activation=out_act)
        x = _inputs(enc, batch, gen)
        with torch.no_grad():  # the four candidates compute the same function
            want = mlp.to_sequential()(composite_encode(x, enc.spec))
            torch.testing.assert_close(EncodedMLP(enc, mlp)(x), want, atol=1e-4, rtol=1e-4)
        for mode in ("inference", "training"):
            comp = interleaved(_candidates(enc, mlp, x, mode == "training"), reference="fused", **timing)
            med = {k: t.median for k, t in comp.timings.items()}
            records.append({"config": name, "mode": mode, "batch": batch, "threads": torch.get_num_threads(),
                            "median_ms": {k: 1e3 * v for k, v in med.items()},
                            "fused_overhead_vs_mlp_only": med["fused"] / med["mlp only"] - 1.0,
                            "comparison": comp.as_dict()})
            print(f"  {name:48s} {mode:9s} " + "  ".join(f"{k} {1e3 * v:7.2f} ms" for k, v in med.items()),
                  flush=True)
    result = {"machine": {"cpu_isa": cpu_isa(), "threads": torch.get_num_threads(), **machine.versions(),
                          "load_average": machine.load_average()},
              "records": records, "wall_s": time.perf_counter() - t_start}
    md = format_markdown(result)
    print(md)
    if out:
        for p in write_results(out, "encodings_cpu", result, md):
            print(f"wrote {p}")
    return result


def format_markdown(r: dict) -> str:
    rows = []
    for rec in r["records"]:
        ms = rec["median_ms"]
        sp = rec["comparison"]["speedup_of_reference"]
        rows.append([rec["config"], rec["mode"], f"{ms['mlp only']:.2f}", f"{ms['fused']:.2f}",
                     f"{100 * rec['fused_overhead_vs_mlp_only']:+.0f}%", f"{ms['separate']:.2f}",
                     f"{ms['torch']:.2f}", f"{sp['separate']['median']:.2f}x", f"{sp['torch']['median']:.2f}x"])
    m = r["machine"]
    head = (f"# Input encodings in front of a FusedMLP (CPU)\n\n"
            f"Batch {r['records'][0]['batch']}, float32, {m['threads']} threads, CPU ISA {m['cpu_isa']}; "
            f"`python bench/encodings_cpu.py` ({r['wall_s']:.0f} s). Medians over interleaved rounds; "
            "speedups are medians of per-round ratios. 'mlp only' runs the MLP on rows encoded beforehand "
            "(an encoding for free); 'fused' is EncodedMLP (encoding in the MLP kernel's input stage); "
            "'separate' the encoding kernel then the MLP; 'torch' the encoding in torch ops then "
            "nn.Sequential. Training = forward + backward of every parameter (x needs no gradient).\n\n")
    return head + markdown_table(["network", "mode", "mlp only ms", "fused ms", "fused overhead", "separate ms",
                                  "torch ms", "fused vs separate", "fused vs torch"], rows)
