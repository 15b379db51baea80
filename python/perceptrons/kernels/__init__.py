"""numpy fronts of the compiled CPU kernels: no torch needed.

These functions check their arguments, allocate outputs and call perceptrons._C. They are what the
kernel tests run against the numpy reference; torch users go through perceptrons.nn / perceptrons.ops.
"""
from .kan import KANSpec, kan_backward, kan_forward
from .mlp import MLPSpec, mlp_backward, mlp_forward

__all__ = ["MLPSpec", "mlp_forward", "mlp_backward", "KANSpec", "kan_forward", "kan_backward"]
