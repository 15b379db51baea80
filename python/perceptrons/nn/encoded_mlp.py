"""EncodedMLP: an input encoding and a FusedMLP run as one kernel (tcnn's NetworkWithInputEncoding)."""
from __future__ import annotations

import torch
from torch import nn

from ..kernels.encodings import EncodingSpec
from ..ops.mlp import fused_mlp
from .encodings import Encoding
from .fused_mlp import FusedMLP


class EncodedMLP(nn.Module):
    """y = mlp([encoding(x), 1, ..., 1]): the encoding runs inside the MLP kernel's input stage.

    On the CPU the encoded rows are computed per tile, just before the first layer reads them, and
    again in the backward: they never go through memory, and neither does their gradient. Other devices
    run the encoding's torch ops, then the MLP. Differentiable in x (SDF normals, eikonal losses: to any
    order) and in the MLP's parameters.

    Args:
        encoding: a perceptrons.nn encoding module (FrequencyEncoding, SphericalHarmonicsEncoding,
            OneBlobEncoding, IdentityEncoding, CompositeEncoding).
        mlp: the FusedMLP that reads the encoding; mlp.in_features must be encoding.out_features + n_ones.
        n_ones: columns of 1 appended to the encoding (tiny-cuda-nn pads its inputs that way: with a
            bias-free first layer they act as its bias). Default 0.
    """

    def __init__(self, encoding: Encoding, mlp: FusedMLP, n_ones: int = 0):
        super().__init__()
        if not isinstance(encoding, Encoding):
            raise TypeError(f"encoding: expected a perceptrons.nn encoding module, got {type(encoding).__name__}")
        if not isinstance(mlp, FusedMLP):
            raise TypeError(f"mlp: expected a perceptrons.nn.FusedMLP, got {type(mlp).__name__}")
        if isinstance(n_ones, bool) or not isinstance(n_ones, int) or n_ones < 0:
            raise ValueError(f"n_ones: expected an integer >= 0, got {n_ones!r}")
        if mlp.in_features != encoding.out_features + n_ones:
            raise ValueError(f"mlp: in_features is {mlp.in_features} but the encoding gives {encoding.out_features} "
                             f"columns + n_ones={n_ones}")
        self.encoding = encoding
        self.mlp = mlp
        self.n_ones = n_ones
        self.spec = EncodingSpec(encoding.spec.parts, n_ones)
        self.in_features = encoding.in_features
        self.out_features = mlp.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mlp
        return fused_mlp(x, m.weights, m.biases, m.activation, m.output_activation, m.activation_param,
                         m.output_activation_param, encoding=self.spec)

    def extra_repr(self) -> str:
        return f"n_ones={self.n_ones}" if self.n_ones else ""
