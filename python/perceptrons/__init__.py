"""perceptrons: fused C++/CUDA kernels for perceptron-family networks, as PyTorch layers.

    from perceptrons.nn import FusedMLP
    mlp = FusedMLP(32, 16, hidden_features=64, hidden_layers=2)   # drop-in for an nn.Sequential MLP

The numpy reference (perceptrons.reference) and the numpy kernel front (perceptrons.kernels) need no
torch; perceptrons.nn and perceptrons.ops do (imported lazily).
"""
from __future__ import annotations

import os as _os
import warnings as _warnings

from . import _C

__version__ = _C.build_info()["version"]

__all__ = ["__version__", "cpu_isa", "set_cpu_isa", "available_cpu_isas", "set_num_threads", "nn", "ops",
           "reference", "kernels"]


def cpu_isa() -> str:
    """The instruction set the CPU kernels use now: 'generic', 'avx2' or 'avx512'."""
    return _C.cpu_isa()


def available_cpu_isas() -> list:
    """Instruction sets compiled into this build that this CPU can run, slowest first."""
    return [n for n in ("generic", "avx2", "avx512") if _C.cpu_isa_supported(n)]


def set_cpu_isa(name: str) -> None:
    """Forces the CPU kernels onto one instruction set (the environment variable PERCEPTRONS_CPU_ISA
    does the same at start-up). Raises ValueError if the name is unknown or this CPU cannot run it."""
    _C.set_cpu_isa(name)


def set_num_threads(n: int) -> None:
    """Sets the OpenMP thread count of the perceptrons kernels (and of torch, if it is imported)."""
    _C.set_num_threads(int(n))
    import sys
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(n))


_env_isa = _os.environ.get("PERCEPTRONS_CPU_ISA")
if _env_isa and _env_isa.lower() != _C.cpu_isa():
    _warnings.warn(f"PERCEPTRONS_CPU_ISA={_env_isa!r} is unknown or not supported on this CPU; using "
                   f"{_C.cpu_isa()!r} (available: {', '.join(available_cpu_isas())})", RuntimeWarning, stacklevel=2)


def __getattr__(name):
    if name in ("nn", "ops", "reference", "kernels"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'perceptrons' has no attribute {name!r}")
