"""FusedMLP on the CPU vs nn.Sequential eager, torch.compile and numpy: `python -m perceptrons bench`.

Each case (widths, batch, threads) is validated first (outputs and every gradient against eager),
then inference (torch.no_grad) and a training step (forward + backward of input and parameters) are
timed with all candidates interleaved. Speedups are medians of per-round ratios (timing.py).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass

from . import machine
from .report import fmt_rate, fmt_ratio, markdown_table, write_results
from .timing import interleaved
from .validation import ValidationError, check

# The headline configuration: a NeRF/SDF-sized MLP, 32 -> 64 -> 64 -> 16, relu.
HEADLINE = dict(in_features=32, hidden=64, hidden_layers=2, out_features=16, activation="relu")
HEADLINE_BATCH = 2 ** 16
# Step 2 in the exponent keeps the full sweep to ~7 minutes on an idle 2-core machine. 64 rows: a
# small batch (one tile; the inference runs the feature-major forward), where per-call overhead counts.
SWEEP_BATCHES = [2 ** 6] + [2 ** e for e in range(10, 19, 2)]
SWEEP_WIDTHS = [16, 32, 64, 128]
DEFAULT_THREADS = [1, 2]
# Relative to the largest magnitude of the reference tensor: float32 sums over up to 2^18 rows in a
# different order than torch's still agree to ~1e-5 of the scale.
TOLERANCE = 1e-4
IMPLS = ["ours", "eager", "compile", "numpy"]
# Timing effort: quick must finish in a minute or two including torch.compile's warm-up.
EFFORT = {
    True: dict(warmup=2, min_rounds=5, max_rounds=15, budget_s=2.5, min_sample_s=0.02),
    False: dict(warmup=3, min_rounds=7, max_rounds=30, budget_s=8.0, min_sample_s=0.05),
}
# Other processes' share of the CPUs above which a timing is retried (the protocol's "rerun when the
# load is high"), how often, and how long the whole run may wait for a quiet machine.
BUSY_FRACTION = 0.1
ATTEMPTS = {True: 1, False: 3}
QUIET_WAIT_BUDGET_S = {True: 10.0, False: 300.0}
# numpy's OpenBLAS workers busy-wait ~0.13 s after each call (their THREAD_TIMEOUT, fixed when the
# library loads); measured here, they made the next candidate's 2-thread call up to 3x slower. So
# at > 1 thread the timing sleeps this long after each numpy sample (see timing.interleaved).
NUMPY_SETTLE_S = 0.2
# The targets at the headline configuration (float32).
TARGETS = {"inference_vs_eager": 3.0, "inference_vs_compile": 1.3, "inference_peak_fraction": 0.60,
           "training_vs_eager": 2.0}


@dataclass(frozen=True)
class Case:
    in_features: int
    hidden: int
    hidden_layers: int
    out_features: int
    activation: str
    batch: int

    @property
    def widths(self):
        return [self.in_features] + [self.hidden] * self.hidden_layers + [self.out_features]

    @property
    def label(self):
        return "-".join(map(str, self.widths)) + f" {self.activation}"

    def forward_flops(self):
        """2 flops per multiply-add of every layer's matmul (bias and activation not counted)."""
        w = self.widths
        return 2 * self.batch * sum(a * b for a, b in zip(w[:-1], w[1:]))


def cases(quick: bool):
    """(case, sweeps it belongs to); a case in both sweeps is timed once."""
    if quick:
        return [(Case(**HEADLINE, batch=HEADLINE_BATCH), ["headline"])]
    out = {}
    for b in SWEEP_BATCHES:
        out.setdefault(Case(**HEADLINE, batch=b), []).append("batch")
    for w in SWEEP_WIDTHS:
        c = Case(**dict(HEADLINE, hidden=w), batch=HEADLINE_BATCH)
        out.setdefault(c, []).append("width")
    return list(out.items())


# ---- validation ---------------------------------------------------------------------------------

def _check(name: str, got: list, ref: list, errors: dict):
    check(name, got, ref, errors, TOLERANCE)


# ---- one case -----------------------------------------------------------------------------------

def _setup(case: Case, compile_baseline: bool, notes: list):
    import torch
    from ..nn import FusedMLP
    from .mlp_baselines import NumpyMLP, compiled
    torch.manual_seed(0)
    ours = FusedMLP(case.in_features, case.out_features, hidden_features=case.hidden,
                    hidden_layers=case.hidden_layers, activation=case.activation, dtype=torch.float32)
    seq = ours.to_sequential()
    models = {"ours": ours, "eager": seq}
    if compile_baseline:
        torch._dynamo.reset()  # a fresh compile per case: no recompilation limits, no shape reuse
        models["compile"] = compiled(seq)
    try:
        npm = NumpyMLP(seq, case.activation, "none")
    except ValueError as e:
        npm = None
        notes.append(f"numpy baseline skipped: {e}")
    x = torch.randn(case.batch, case.in_features)
    grad = torch.randn(case.batch, case.out_features)
    return models, npm, x, grad


def _first_call_s(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _timed(cands: dict, quick: bool, threads: int, waiter, log):
    """Interleaved timing, retried while other processes were busy; keeps the quietest attempt."""
    best = None
    for attempt in range(ATTEMPTS[quick]):
        waiter.wait()
        with machine.ForeignCpu() as f:
            comp = interleaved(cands, reference="ours", settle_s={"numpy": NUMPY_SETTLE_S} if threads > 1 else None,
                               **EFFORT[quick])
        foreign = f.fraction
        if best is None or (foreign is not None and foreign < best[1]):
            best = (comp, foreign, attempt + 1)
        if foreign is None or foreign <= BUSY_FRACTION:
            break
        log(f"    other processes used {100 * foreign:.0f}% of the CPUs while timing"
            + ("; retrying" if attempt + 1 < ATTEMPTS[quick] else ""))
    return best


def run_case(case: Case, threads: int, quick: bool, compile_baseline: bool, waiter, log) -> list:
    """Validates and times one case at one thread count; returns two result records."""
    import torch
    from .mlp_baselines import kink_free_grad, torch_grads, torch_train_step
    notes = []
    models, npm, x, grad = _setup(case, compile_baseline, notes)
    xn, gn = x.numpy(), grad.numpy()
    errors, first_call = {}, {}
    records = []

    # Inference: validate every candidate against eager, then time.
    with torch.no_grad():
        cands = {name: (lambda m=m: m(x)) for name, m in models.items()}
        if "compile" in cands:
            try:
                first_call["compile_inference_s"] = _first_call_s(cands["compile"])
            except Exception as e:  # e.g. no C++ compiler for inductor: report, go on without it
                notes.append(f"torch.compile baseline dropped: {type(e).__name__}: {str(e)[:300]}")
                log(f"  {notes[-1]}")
                del cands["compile"], models["compile"]
        ref = models["eager"](x).numpy()
        for name in cands:
            if name != "eager":
                _check(f"inference/{name}", [cands[name]().numpy()], [ref], errors)
        if npm is not None:
            cands["numpy"] = lambda: npm.forward(xn)
            _check("inference/numpy", [cands["numpy"]()], [ref], errors)
        log(f"  inference  validated ({_fmt_errors(errors, 'inference/')}); timing")
        records.append(_record(case, threads, "inference", case.forward_flops(),
                               _timed(cands, quick, threads, waiter, log), errors, notes))

    # Training step: every candidate gets its own leaf input, so gradients never mix. Validation
    # uses an output gradient that is zero on rows sitting on a relu kink (see kink_free_grad);
    # the timing uses the full one.
    vgrad, kink_rows = kink_free_grad(models["eager"], x, grad)
    if kink_rows:
        notes.append(f"training validated with the output gradient of {kink_rows} rows on a kink zeroed")
    cands, grads = {}, {}
    for name, m in models.items():
        xi = x.clone().requires_grad_(True)
        params = list(m.parameters())
        if name == "compile":
            first_call["compile_training_s"] = _first_call_s(torch_train_step(m, xi, grad, params))
        torch_train_step(m, xi, vgrad, params)()
        grads[name] = [g.numpy() for g in torch_grads(xi, params)]
        cands[name] = torch_train_step(m, xi, grad, params)
    for name in cands:
        if name != "eager":
            _check(f"training/{name}", grads[name], grads["eager"], errors)
    if npm is not None:
        _check("training/numpy", npm.train_step(xn, vgrad.numpy()), grads["eager"], errors)
        cands["numpy"] = lambda: npm.train_step(xn, gn)
    log(f"  training   validated ({_fmt_errors(errors, 'training/')}"
        + (f"; {kink_rows} rows on a relu kink left out" if kink_rows else "") + "); timing")
    records.append(_record(case, threads, "training", 3 * case.forward_flops(),
                           _timed(cands, quick, threads, waiter, log), errors, notes))
    for r in records:
        r["first_call_s"] = first_call
    return records


def _fmt_errors(errors: dict, prefix: str) -> str:
    return ", ".join(f"{k[len(prefix):]} {v:.1e}" for k, v in errors.items() if k.startswith(prefix))


def _record(case, threads, mode, flops, timed, errors, notes) -> dict:
    comp, foreign, attempts = timed
    impls = {}
    for name, t in comp.timings.items():
        impls[name] = dict(t.as_dict(), samples_per_s=case.batch / t.median, gflops=flops / t.median / 1e9)
    return {
        "case": dict(asdict(case), widths=case.widths, label=case.label),
        "threads": threads, "mode": mode, "flops": flops, "rounds": comp.rounds,
        "impls": impls,
        "speedup_of_ours": {k: comp.speedup(k).as_dict() for k in impls if k != "ours"},
        "max_rel_error": {k: v for k, v in errors.items() if k.startswith(mode)},
        "load_average": machine.load_average(),
        "foreign_cpu_fraction": foreign, "attempts": attempts,
        "notes": list(notes),
    }


# ---- tables and targets -------------------------------------------------------------------------

def _fmt_faults(f) -> str:
    return "n/a" if f is None else f"{f:.0f}"


def results_table(records: list) -> str:
    headers = ["threads", "mode", "widths", "batch", "ours ms", "ours samples/s", "ours GFLOP/s",
               "% peak/thread", "eager samples/s", "compile samples/s", "numpy samples/s",
               "vs eager", "vs compile", "vs numpy", "page faults/call ours, eager", "load 1m", "other procs"]
    rows = []
    for r in records:
        im, sp = r["impls"], r["speedup_of_ours"]
        rows.append([r["threads"], r["mode"], r["case"]["label"], r["case"]["batch"],
                     f"{im['ours']['median_s'] * 1e3:.3f}", fmt_rate(im["ours"]["samples_per_s"]),
                     f"{im['ours']['gflops']:.1f}", f"{100 * r['ours_peak_fraction_per_thread']:.0f}%"]
                    + [fmt_rate(im[k]["samples_per_s"]) if k in im else "n/a" for k in IMPLS[1:]]
                    + [fmt_ratio(sp[k]) if k in sp else "n/a" for k in IMPLS[1:]]
                    + [", ".join(_fmt_faults(im.get(k, {}).get("minor_faults_per_call")) for k in ("ours", "eager"))]
                    + [f"{r['load_average'][0]:.2f}" if r["load_average"] else "n/a",
                       "n/a" if r["foreign_cpu_fraction"] is None else f"{100 * r['foreign_cpu_fraction']:.0f}%"])
    return markdown_table(headers, rows)


def check_targets(records: list) -> list:
    """(description, value, target, passed or None when not measured) at the headline case."""
    out = []
    head = [r for r in records if r["case"]["label"] == Case(**HEADLINE, batch=1).label
            and r["case"]["batch"] == HEADLINE_BATCH]
    for r in sorted(head, key=lambda r: (r["mode"], r["threads"])):
        t, sp = r["threads"], r["speedup_of_ours"]
        if r["mode"] == "inference":
            checks = [(f"inference {t}T vs eager", sp.get("eager"), TARGETS["inference_vs_eager"]),
                      (f"inference {t}T vs torch.compile", sp.get("compile"), TARGETS["inference_vs_compile"]),
                      (f"inference {t}T fraction of one-core peak per thread",
                       {"median": r["ours_peak_fraction_per_thread"]}, TARGETS["inference_peak_fraction"])]
        else:
            checks = [(f"training {t}T vs eager", sp.get("eager"), TARGETS["training_vs_eager"])]
        for desc, v, target in checks:
            value = None if v is None else v["median"]
            out.append((desc, value, target, None if value is None else value >= target))
    return out


def targets_text(targets: list) -> str:
    lines = []
    for desc, value, target, ok in targets:
        status = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        shown = "not measured" if value is None else f"{value:.2f}"
        lines.append(f"{status}  {desc}: {shown} (target >= {target:g})")
    measured = [ok for *_, ok in targets if ok is not None]
    if not all(measured):
        overall = "FAIL"
    elif len(measured) < len(targets):
        overall = "INCOMPLETE"  # e.g. --no-compile: a target was not measured
    else:
        overall = "PASS"
    lines.append(f"{overall}: issue targets at {HEADLINE_BATCH} rows, {Case(**HEADLINE, batch=1).label}, float32 "
                 f"({sum(measured)}/{len(targets)} met)")
    return "\n".join(lines)


def machine_text(m: dict) -> str:
    nominal = m["nominal_core_peak"]["gflops"]
    return (f"CPU {m['cpu']['model']} ({m['cpu']['logical_cpus']} logical CPUs), ISA {m['cpu_isa']}; "
            f"one-core FP32 FMA peak: measured {m['measured_core_peak_gflops']:.1f} GFLOP/s (higher of start "
            f"{m['measured_core_peak_gflops_start']:.1f} and end {m['measured_core_peak_gflops_end']:.1f})"
            + (f", nominal {nominal:.0f} GFLOP/s" if nominal else "")
            + "".join(f"; {t} cores at once: {', '.join(f'{g:.1f}' for g in per)} GFLOP/s per core"
                      for t, per in (m.get("measured_concurrent_peak_gflops") or {}).items())
            + (f"; memory copy bandwidth (1 thread, 128 MB): start {m['copy_gbs_1t_start']:.1f}, end "
               f"{m['copy_gbs_1t_end']:.1f} GB/s (eager is memory-bound and moves with it)"
               if "copy_gbs_1t_end" in m else "")
            + f"; torch {m['versions']['torch']}, numpy {m['versions']['numpy']} "
            f"(BLAS threads: {m['numpy_threads_control']}), perceptrons {m['versions']['perceptrons']}"
            + (f", commit {m['git']['commit'][:10]}{' (dirty)' if m['git']['dirty'] else ''}" if m["git"] else "")
            + f"; load average at start {', '.join(f'{v:.2f}' for v in m['load_average_start'] or [])}"
            + (f"; {machine.malloc_text(m['malloc'])}" if "malloc" in m else ""))


# ---- entry point --------------------------------------------------------------------------------

def collect_machine(threads, waiter) -> dict:
    from .. import cpu_isa
    isa = cpu_isa()
    cpu = machine.cpuinfo()
    load = machine.load_average()
    foreign = waiter.wait()  # the peak is the denominator of every '% peak': measure it on a quiet machine
    return {"cpu": cpu, "cpu_isa": isa, "threads": list(threads), "foreign_cpu_fraction_start": foreign,
            "measured_core_peak_gflops": machine.measured_core_peak_gflops(isa),
            "measured_concurrent_peak_gflops": {str(t): machine.measured_concurrent_peak_gflops(isa, t)
                                                for t in threads if t > 1},
            "nominal_core_peak": machine.nominal_core_peak(isa, cpu["mhz"]),
            "copy_gbs_1t_start": machine.one_thread_copy_bandwidth_gbs(),
            "versions": machine.versions(), "git": machine.git_commit(os.path.dirname(os.path.abspath(__file__))),
            "extension": machine.extension_built(),
            "load_average_start": load, "dtype": "float32"}


def main(quick: bool = False, threads=None, out=None, compile_baseline: bool = True, malloc: str = "warm") -> int:
    """Runs the benchmark, prints a markdown table; returns 1 if a validation fails, else 0.
    malloc: "warm" or "default", see machine.pin_malloc (which it calls first: it lasts for the process)."""
    from .. import set_num_threads
    threads = list(threads or DEFAULT_THREADS)
    if any(t < 1 for t in threads):
        raise ValueError(f"threads: expected positive counts, got {threads}")
    malloc_state = machine.pin_malloc(malloc)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # progress on stderr; tables on stdout
    t_start = time.perf_counter()
    waiter = machine.QuietWaiter(QUIET_WAIT_BUDGET_S[quick], BUSY_FRACTION)
    m = collect_machine(threads, waiter)
    m["malloc"] = malloc_state
    busy = m["foreign_cpu_fraction_start"]
    if busy is not None and busy > BUSY_FRACTION:
        log(f"warning: other processes are using {100 * busy:.0f}% of the CPUs; OpenMP timings suffer when "
            "other processes compete for the cores: rerun on an idle machine")
    if max(threads) > (m["cpu"]["logical_cpus"] or 1):
        log(f"warning: {max(threads)} threads on {m['cpu']['logical_cpus']} logical CPUs")
    todo = cases(quick)
    records = []
    try:
        for t in threads:
            set_num_threads(t)  # our kernels' and torch's OpenMP pools
            m["numpy_threads_control"] = machine.set_numpy_threads(t)
            for i, (case, sweeps) in enumerate(todo):
                log(f"[{t} thread{'s' * (t > 1)}, {i + 1}/{len(todo)}] {case.label}, batch {case.batch}")
                for r in run_case(case, t, quick, compile_baseline, waiter, log):
                    r["sweeps"] = sweeps
                    records.append(r)
    except ValidationError as e:
        print(f"VALIDATION FAILED: {e}", flush=True)
        return 1
    machine.finish_run(m, records, waiter, t_start)

    title = "FusedMLP CPU benchmark" + (" (quick)" if quick else "")
    order = lambda r: (r["mode"], r["threads"], r["case"]["hidden"], r["case"]["batch"])
    parts = [f"# {title}", "", machine_text(m), "",
             "Speedup columns: how many times faster ours is than each baseline, median of per-round "
             "ratios [min-max]. GFLOP/s counts 2*B*sum(in*out) per forward, 3x that per training step; "
             "% peak/thread is ours' GFLOP/s / (threads x measured one-core peak). 'other procs': share "
             "of the CPUs other processes used while the row was timed (above "
             f"{100 * BUSY_FRACTION:.0f}% the row is unreliable, especially at 2 threads).", ""]
    if quick:
        parts += [results_table(sorted(records, key=order))]
    else:
        for sweep, heading in (("batch", "Batch sweep"), ("width", f"Width sweep (batch {HEADLINE_BATCH})")):
            parts += [f"## {heading}", "", results_table(sorted([r for r in records if sweep in r["sweeps"]],
                                                               key=order)), ""]
    targets = check_targets(records)
    if targets:
        parts += ["", "## Issue targets", "", "```", targets_text(targets), "```"]
    parts += ["", f"Total run time {m['elapsed_s']:.0f} s."]
    text = "\n".join(parts)
    print(text, flush=True)
    if out:
        data = {"benchmark": "mlp_cpu", "quick": quick, "compile_baseline": compile_baseline,
                "machine": m, "tolerance": TOLERANCE, "effort": EFFORT[quick], "results": records,
                "targets": [dict(zip(("target", "value", "threshold", "passed"), t)) for t in targets]}
        for p in write_results(out, "mlp_cpu_quick" if quick else "mlp_cpu", data, text):
            log(f"wrote {p}")
    return 0
