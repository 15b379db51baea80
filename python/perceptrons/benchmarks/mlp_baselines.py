"""The MLP implementations a user would run instead of FusedMLP, set up to compute the same function.

Every candidate is a zero-argument callable (what timing.interleaved takes). Training candidates do
one full step: forward, backward, gradients of the input and of every parameter; gradients are set
to None first, as optimizer.zero_grad() does, so no candidate pays for accumulating into old ones.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import numpy as np
import torch

# Activations the numpy baseline implements: forward in place, and the derivative expressed through
# the activation's output (so backward needs only the saved outputs, as a hand-written one would).
NUMPY_ACTIVATIONS = {"relu", "none"}


def torch_train_step(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor,
                     params: Sequence[torch.Tensor]) -> Callable[[], None]:
    """One training step of `fn` on the leaf x (requires_grad) with output gradient `grad`."""
    def step():
        x.grad = None
        for p in params:
            p.grad = None
        fn(x).backward(grad)
    return step


def torch_grads(x: torch.Tensor, params: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """[dx, dW0, db0, dW1, ...] after a step, detached copies."""
    return [x.grad.detach().clone()] + [p.grad.detach().clone() for p in params]


def compiled(seq: torch.nn.Module) -> torch.nn.Module:
    """torch.compile in its default mode, shapes static: each benchmark case is compiled on its own
    (the caller resets dynamo first), which is what a user with a fixed batch size gets."""
    return torch.compile(seq, dynamic=False)


class NumpyMLP:
    """Plain numpy float32 MLP: one matmul per layer, bias, activation; and a hand-written backward."""

    def __init__(self, seq: torch.nn.Sequential, activation: str, output_activation: str):
        if activation not in NUMPY_ACTIVATIONS or output_activation not in NUMPY_ACTIVATIONS:
            raise ValueError(f"numpy baseline implements {sorted(NUMPY_ACTIVATIONS)}, "
                             f"not {activation!r}/{output_activation!r}")
        linears = [m for m in seq if isinstance(m, torch.nn.Linear)]
        self.w = [m.weight.detach().numpy().copy() for m in linears]               # (out, in): backward's dx
        self.wt = [np.ascontiguousarray(w.T) for w in self.w]                      # (in, out): forward
        self.b = [m.bias.detach().numpy().copy() if m.bias is not None else None for m in linears]
        self.acts = [activation] * (len(linears) - 1) + [output_activation]

    def _layers(self, x: np.ndarray, keep: bool):
        hs = [x]
        h = x
        for wt, b, act in zip(self.wt, self.b, self.acts):
            h = h @ wt
            if b is not None:
                h += b
            if act == "relu":
                np.maximum(h, 0, out=h)
            if keep:
                hs.append(h)
        return hs if keep else h

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._layers(x, keep=False)

    def train_step(self, x: np.ndarray, grad: np.ndarray):
        """Forward then backward; returns [dx, dW0, db0, dW1, ...] (nn.Linear layouts)."""
        hs = self._layers(x, keep=True)
        dz = grad
        if self.acts[-1] == "relu":
            dz = dz * (hs[-1] > 0)
        grads = []
        for l in reversed(range(len(self.w))):
            db = dz.sum(axis=0) if self.b[l] is not None else None
            grads = [dz.T @ hs[l], db] + grads
            dh = dz @ self.w[l]
            if l > 0 and self.acts[l - 1] == "relu":
                dh *= hs[l] > 0
            dz = dh
        return [dz] + [g for g in grads if g is not None]


def kink_free_grad(seq: torch.nn.Sequential, x: torch.Tensor, grad: torch.Tensor, rel: float = 1e-5):
    """The output gradient with the rows zeroed whose pre-activations come within `rel` (of the
    layer's largest) of zero; returns it and how many rows were zeroed.

    At a relu kink, float32 rounding decides which side a pre-activation of ~1e-9 falls on, and so
    whether a whole unit's gradient passes; two correct implementations then differ by O(1) in that
    row's dx and by O(1/sqrt(batch)) in dW. Validating with those rows' gradients zeroed compares
    everything else exactly. (Seen: 32-128-128-16, 4096 rows, one row with |z| = 4e-9.)
    """
    mods = list(seq)
    near = torch.zeros(x.shape[0], dtype=torch.bool)
    with torch.no_grad():
        h = x.double()
        for i, mod in enumerate(mods):
            if isinstance(mod, torch.nn.Linear):
                bias = None if mod.bias is None else mod.bias.double()
                h = torch.nn.functional.linear(h, mod.weight.double(), bias)
                if i + 1 < len(mods):  # a pre-activation
                    near |= (h.abs() <= rel * h.abs().max()).any(dim=1)
            else:
                h = mod(h)
    return grad.masked_fill(near[:, None], 0.0), int(near.sum())
