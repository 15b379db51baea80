"""`python -m perceptrons info`: what this build contains and what this machine offers."""
from __future__ import annotations

import os
import platform

from . import _C


def collect() -> dict:
    b = _C.build_info()
    info = {
        "version": b["version"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cxx_compiler": b["cxx_compiler"],
        "cpu_isas_compiled": b["cpu_isas_compiled"],
        "cpu_isas_supported": [n for n in b["cpu_isas_compiled"] if _C.cpu_isa_supported(n)],
        "cpu_isa": _C.cpu_isa(),
        "cpu_isa_env": os.environ.get("PERCEPTRONS_CPU_ISA"),
        "openmp": b["openmp"],
        "openmp_max_threads": _C.openmp_max_threads(),
        "cuda_compiled": b["cuda"],
        "cuda_archs": b["cuda_archs"].split(",") if b["cuda"] else [],
        "cuda_compiler": b["cuda_compiler"],
        "cuda": _C.cuda_probe(),
        "kernels": {"mlp": {"cpu": True, "cuda": bool(b["cuda"])}, "encodings": {"cpu": True, "cuda": False},
                    "kan": {"cpu": True, "cuda": False},
                    "routed": {"cpu": True, "cuda": False}},
    }
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def format_info(info: dict) -> str:
    c = info["cuda"]
    lines = [
        f"perceptrons {info['version']}  (python {info['python']}, torch {info['torch'] or 'not installed'})",
        f"platform        {info['platform']}",
        f"compiler        {info['cxx_compiler']}",
        f"CPU ISA         {info['cpu_isa']} (compiled: {', '.join(info['cpu_isas_compiled'])}; "
        f"this CPU runs: {', '.join(info['cpu_isas_supported'])}"
        + (f"; PERCEPTRONS_CPU_ISA={info['cpu_isa_env']}" if info["cpu_isa_env"] else "") + ")",
        f"OpenMP          {'yes' if info['openmp'] else 'no'} (max threads {info['openmp_max_threads']})",
        f"CUDA compiled   {'yes' if info['cuda_compiled'] else 'no'}"
        + (f" (nvcc {info['cuda_compiler']}, archs {', '.join(info['cuda_archs'])})" if info["cuda_compiled"] else ""),
    ]
    if c["device_count"]:
        for i, d in enumerate(c["devices"]):
            lines.append(f"CUDA device {i}   {d['name']} (sm_{d['capability'][0]}{d['capability'][1]}, "
                         f"{d['multiprocessors']} SMs, {d['total_memory'] / 2**30:.1f} GiB)")
    else:
        lines.append(f"CUDA devices    none ({c['error'] or 'no device found'})")
    if c["compiled"]:
        lines.append(f"CUDA runtime    {c['runtime_version']}, driver {c['driver_version'] or 'none'}")
    ks = ", ".join(f"{k}: " + "+".join(dev for dev, ok in v.items() if ok) for k, v in info["kernels"].items())
    lines.append(f"kernels         {ks}")
    return "\n".join(lines)
