"""Activation modules torch lacks, so that FusedMLP.to_sequential() has a module for every activation."""
import torch


class Sine(torch.nn.Module):
    """SIREN's activation: sin(w0 * x)."""

    def __init__(self, w0: float = 30.0):
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x):
        return torch.sin(self.w0 * x)

    def extra_repr(self):
        return f"w0={self.w0}"


class Exp(torch.nn.Module):
    """exp(x), tiny-cuda-nn's "Exponential" activation (used for NeRF densities)."""

    def forward(self, x):
        return torch.exp(x)
