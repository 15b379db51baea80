"""What a benchmark ran on: CPU, peak FLOP/s, library versions, git commit, load, BLAS threads."""
from __future__ import annotations

import ctypes
import glob
import os
import platform
import subprocess
import time

# FP32 lanes per FMA instruction for each ISA the kernels dispatch to ("generic" is left to the
# compiler's auto-vectorisation, so it has no fixed width).
SIMD_FP32_LANES = {"avx512": 16, "avx2": 8}
# Sapphire Rapids Xeon cores have two 512-bit FMA units (ports 0+1 fused, and port 5). This cannot
# be read from /proc/cpuinfo, so the nominal peak states it as an assumption.
ASSUMED_FMA_UNITS = 2


def cpuinfo() -> dict:
    model, mhz = None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "cpu MHz" and mhz is None:
                    mhz = float(value)
    except OSError:
        pass
    return {"model": model or platform.processor() or platform.machine(), "mhz": mhz,
            "logical_cpus": os.cpu_count()}


def measured_core_peak_gflops(isa: str, seconds: float = 0.3, tries: int = 5) -> float:
    """One core's FP32 FMA throughput on `isa`, measured: the best of a few runs, since another
    process can only make a run slower."""
    from .. import _C
    return max(_C.cpu_fma_peak_gflops(isa, seconds) for _ in range(tries))


def measured_concurrent_peak_gflops(isa: str, threads: int, seconds: float = 0.3) -> list:
    """Each core's FP32 FMA throughput while `threads` cores run the same loop at once (one Python
    thread each; the measurement releases the GIL). On a VM the cores can share more than a
    datasheet says: on the 2-core test VM one core alone runs 156-158 GFLOP/s, and with both
    running one of them drops to 120-133 (three tries). This is the ceiling a `threads`-thread
    kernel meets, reported next to the one-core peak, which stays the denominator of
    '% peak/thread'."""
    import threading
    from .. import _C
    out = [0.0] * threads
    def run(i):
        out[i] = _C.cpu_fma_peak_gflops(isa, seconds)
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out


def nominal_core_peak(isa: str, mhz) -> dict:
    """clock x FMA units x SIMD lanes x 2 (an FMA is two flops), with what each factor rests on."""
    lanes = SIMD_FP32_LANES.get(isa)
    if not mhz or not lanes:
        return {"gflops": None, "note": f"unknown clock or SIMD width for ISA {isa!r}"}
    return {"gflops": mhz / 1e3 * ASSUMED_FMA_UNITS * lanes * 2, "mhz": mhz, "fma_units": ASSUMED_FMA_UNITS,
            "fp32_lanes": lanes,
            "note": "nominal: clock from /proc/cpuinfo (on a VM often the base/TSC clock, not the turbo "
                    "clock the cores run at), FMA units assumed (not readable from /proc/cpuinfo)"}


def git_commit(path: str):
    """HEAD of the repository holding `path` and whether its work tree differs from it, or None.

    None too when `path` sits in some other repository: an installed (non-editable) package lies in
    site-packages, which may belong to the Python installation's own git tree (pyenv's does), and
    that tree's HEAD says nothing about the kernels timed."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        ours = os.path.join(top, "python", "perceptrons", "benchmarks")
        if not (os.path.isdir(ours) and os.path.samefile(ours, path)):
            return None
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return {"commit": head, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return None


def extension_built() -> dict:
    """Path and modification time of the loaded compiled module: with an editable install, HEAD and
    the kernels actually timed can differ (a rebuild is needed for source changes to count)."""
    from .. import _C
    path = getattr(_C, "__file__", None)
    try:
        mtime = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(path)))
    except (OSError, TypeError):
        mtime = None
    return {"path": path, "modified_utc": mtime}


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def versions() -> dict:
    import numpy
    from .. import __version__
    v = {"perceptrons": __version__, "numpy": numpy.__version__, "python": platform.python_version()}
    try:
        import torch
        v["torch"] = torch.__version__
    except ImportError:
        v["torch"] = None
    return v


# ---- numpy's BLAS thread count ------------------------------------------------------------------
# numpy's matmuls run on its own bundled OpenBLAS, whose thread pool perceptrons.set_num_threads does
# not reach. threadpoolctl sets it when installed; otherwise the OpenBLAS set-threads entry point is
# called directly (CDLL on an already loaded library returns that same library).

_OPENBLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads")


def _numpy_openblas_setter():
    import numpy
    root = os.path.dirname(os.path.dirname(numpy.__file__))
    for lib in glob.glob(os.path.join(root, "numpy.libs", "*openblas*")) + \
            glob.glob(os.path.join(os.path.dirname(numpy.__file__), ".dylibs", "*openblas*")):
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for name in _OPENBLAS_SETTERS:
            fn = getattr(handle, name, None)
            if fn is not None:
                return fn
    return None


def set_numpy_threads(n: int) -> str:
    """Sets numpy's BLAS threads; returns how ("threadpoolctl", "openblas", or "uncontrolled")."""
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(limits=int(n), user_api="blas")
        return "threadpoolctl"
    except ImportError:
        pass
    fn = _numpy_openblas_setter()
    if fn is None:
        return "uncontrolled"
    fn.argtypes = [ctypes.c_int]
    fn(int(n))
    return "openblas"


# ---- malloc state -------------------------------------------------------------------------------
# Eager torch allocates every intermediate on every call (16 MB per hidden layer of a 2^16-row MLP).
# Whether glibc hands a freed block of that size back as the same pages or as fresh ones (one page
# fault per 4 KB) depends on its dynamic mmap and trim thresholds, i.e. on everything the process
# allocated before. Measured on the 2-core VM (32-64-64-16 relu, 2^16 rows, eager inference, 1 / 2
# threads): 27-30 / 16-22 ms with ~8,000 faults per call in a fresh process, 18.5-19.6 / 9.6-11.9 ms
# with none. A sweep that times rows one after another then compares some rows against a faulting
# eager and others against a fault-free one. "warm" pins the fault-free state for the whole process
# before anything is timed: no mmap for large blocks (they come from the heap and are reused) and
# no trimming of the heap's top, so after warm-up no candidate pays page faults for memory it
# reallocates: the strongest form of every baseline. "default" leaves glibc alone (what a fresh user
# process gets; each row then reports its faults per call).

MALLOC_MODES = ("warm", "default")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
_INT_MAX = 2 ** 31 - 1                    # mallopt takes an int


def pin_malloc(mode: str) -> dict:
    """Puts this process's malloc into `mode` (see MALLOC_MODES); returns what was done, for the
    results. "warm" cannot be undone within the process (glibc's dynamic thresholds stay off), so
    call it from a benchmark's entry point, not from a library or test process."""
    if mode not in MALLOC_MODES:
        raise ValueError(f"malloc: expected one of {MALLOC_MODES}, got {mode!r}")
    if mode == "default":
        return {"mode": "default", "applied": True, "note": "glibc malloc left in its default, dynamic state"}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return {"mode": "warm", "applied": False, "note": "no mallopt (not glibc): malloc left as it is"}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
    return {"mode": "warm", "applied": ok,
            "note": ("mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, INT_MAX): freed memory is reused, "
                     "no page faults after warm-up" if ok else "mallopt refused: malloc left as it is")}


def add_malloc_argument(parser) -> None:
    """The --malloc option every CPU benchmark entry point takes (argparse parser or subparser)."""
    parser.add_argument("--malloc", choices=MALLOC_MODES, default="warm",
                        help="warm (default): pin glibc malloc so that no candidate pays page faults for memory it "
                             "reallocates; default: leave malloc alone (see bench/README.md)")


def malloc_text(state: dict) -> str:
    """One phrase for a results header."""
    if state["mode"] == "warm" and state["applied"]:
        return "malloc warm (large blocks reused, never unmapped: no candidate pays page faults after warm-up)"
    if state["mode"] == "warm":
        return f"malloc warm requested but not applied ({state['note']})"
    return "malloc default (glibc's dynamic thresholds: eager's intermediates may fault in every call)"


# ---- other processes' CPU use ---------------------------------------------------------------------
# The load average lags by a minute and counts our own threads; what spoils an OpenMP timing is
# another process running at the same moment. This measures exactly that: CPU time the whole machine
# spent busy minus what this process spent, over a wall-clock interval, as a fraction of all CPUs.

def _system_busy_s() -> float:
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system  # children (compile workers) are not ours: they count as foreign


class ForeignCpu:
    """with ForeignCpu() as f: ...; f.fraction is other processes' share of all CPUs meanwhile
    (None where /proc/stat is unavailable). Tick resolution (10 ms) makes short intervals noisy."""

    def __enter__(self):
        try:
            self._start = (time.perf_counter(), _system_busy_s(), _own_cpu_s())
        except (OSError, ValueError):
            self._start = None
        self.fraction = None
        return self

    def __exit__(self, *exc):
        if self._start is None:
            return False
        try:
            wall, busy, own = time.perf_counter(), _system_busy_s(), _own_cpu_s()
        except (OSError, ValueError):
            return False
        w0, b0, o0 = self._start
        ncpu = os.cpu_count() or 1
        if wall > w0:
            self.fraction = max(0.0, ((busy - b0) - (own - o0)) / ((wall - w0) * ncpu))
        return False


class QuietWaiter:
    """Waits (within a total budget for the whole run) until other processes leave the CPUs alone,
    so that timings are taken when the machine is quiet rather than whenever the loop gets there."""

    def __init__(self, budget_s: float, threshold: float = 0.1, window_s: float = 0.5):
        self.budget_s, self.threshold, self.window_s = budget_s, threshold, window_s
        self.waited_s = 0.0

    def wait(self) -> "float | None":
        """Returns the last measured foreign CPU fraction (None if unmeasurable)."""
        while True:
            with ForeignCpu() as f:
                time.sleep(self.window_s)
            self.waited_s += self.window_s
            if f.fraction is None or f.fraction <= self.threshold or self.waited_s >= self.budget_s:
                return f.fraction


def copy_bandwidth(nbytes: int = 128 << 20, repeats: int = 7) -> float:
    """Bytes per second moved by a torch copy of nbytes (read + write counted, best of `repeats`) at
    the current torch thread count. nbytes is above the dev VM's 105 MB L3, so this is the memory
    system as the host shares it right now: it moves memory-bound baselines (eager) far more than
    the fused kernels, and a sweep's ratios against them with it."""
    import torch
    a = torch.ones(nbytes // 4)
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.numel() * 4 / best


def one_thread_copy_bandwidth_gbs() -> float:
    """copy_bandwidth at 1 thread, in GB/s (the thread count restored after)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return copy_bandwidth() / 1e9
    finally:
        torch.set_num_threads(before)


def finish_run(m, records, waiter, t_start):
    """Closes a benchmark run: measures the FMA peak again (it varies by ~15% within a run on this VM,
    host-side clock changes) and uses the higher of start and end as the denominator of every
    '% peak/thread'; records elapsed and waited time."""
    waiter.wait()
    m["measured_core_peak_gflops_end"] = measured_core_peak_gflops(m["cpu_isa"])
    m["measured_core_peak_gflops_start"] = m["measured_core_peak_gflops"]
    peak = m["measured_core_peak_gflops"] = max(m["measured_core_peak_gflops"], m["measured_core_peak_gflops_end"])
    if "copy_gbs_1t_start" in m:
        m["copy_gbs_1t_end"] = one_thread_copy_bandwidth_gbs()
    for r in records:
        r["ours_peak_fraction_per_thread"] = r["impls"]["ours"]["gflops"] / (r["threads"] * peak)
    m["elapsed_s"] = time.perf_counter() - t_start
    m["waited_for_quiet_s"] = waiter.waited_s
