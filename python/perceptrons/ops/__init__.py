"""torch.library custom ops and their autograd wrappers, one module per kernel family."""
from .kan import kan_linear
from .mlp import fused_mlp

__all__ = ["fused_mlp", "kan_linear"]
