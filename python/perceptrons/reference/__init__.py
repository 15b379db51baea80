"""numpy reference implementations (float64): the source of truth the kernels are tested against.

Nothing here imports torch or the compiled module; formulas are written for reading, not speed.
"""
from . import activations, encodings, kan, mlp

__all__ = ["activations", "encodings", "kan", "mlp"]
