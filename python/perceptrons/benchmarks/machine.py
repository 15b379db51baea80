"""What a benchmark ran on: CPU, peak FLOP/s, library versions, git commit, load, BLAS threads."""
from __future__ import annotations

import ctypes
import glob
import os
import platform
import subprocess

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


def measured_core_peak_gflops(isa: str, seconds: float = 0.3, tries: int = 3) -> float:
    """One core's FP32 FMA throughput on `isa`, measured: the best of a few runs, since another
    process can only make a run slower."""
    from .. import _C
    return max(_C.cpu_fma_peak_gflops(isa, seconds) for _ in range(tries))


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
    """HEAD of the repository holding `path` and whether its work tree differs from it, or None."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return {"commit": head, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return None


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
