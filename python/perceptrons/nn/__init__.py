"""torch.nn.Modules: drop-in layers backed by the fused kernels."""
from .activations import Exp, Sine
from .fused_mlp import FusedMLP

__all__ = ["FusedMLP", "Sine", "Exp"]
