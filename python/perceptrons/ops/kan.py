"""Spline-KAN layer as torch custom ops, wrapped by an autograd.Function.

  perceptrons::kan_forward   y = silu(x) W_b^T + spline part, never building the basis tensor
  perceptrons::kan_backward  dx and the gradients of base_weight, spline_weight, spline_scaler
Backward saves only x (and the parameters). As for the fused MLP, when a graph of the backward is
needed (create_graph=True, functorch) an equivalent composite of torch ops runs instead
(materialised basis, like efficient-kan): exact, differentiable to any order, slower.
A layer without a standalone spline scaler passes an empty tensor.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _C
from ..kernels.kan import MODES
from .direct_call import call_op
from .function_signature import cache_forward_signature
from .transforms import forward_mode_active

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None or t.numel() == 0 else t.data_ptr()


def _sizes(x, spline_weight, spline_order, mode):
    out, in_, nb = spline_weight.shape
    return (_DTYPE_CODES[x.dtype], in_, out, nb - spline_order, spline_order, MODES[mode])


def _kan_forward_cpu(x: Tensor, grid: Tensor, base_weight: Tensor, spline_weight: Tensor, spline_scaler: Tensor,
                spline_order: int, mode: str) -> Tensor:
    y = x.new_empty((x.shape[0], spline_weight.shape[0]))
    _C.kan_forward_cpu(*_sizes(x, spline_weight, spline_order, mode), x.shape[0], _ptr(x), _ptr(grid),
                       _ptr(base_weight), _ptr(spline_weight), _ptr(spline_scaler), _ptr(y))
    return y


kan_forward = torch.library.custom_op("perceptrons::kan_forward", mutates_args=(),
                                      device_types="cpu")(_kan_forward_cpu)


@kan_forward.register_fake
def _(x, grid, base_weight, spline_weight, spline_scaler, spline_order, mode):
    return x.new_empty((x.shape[0], spline_weight.shape[0]))


def _kan_backward_cpu(dy: Tensor, x: Tensor, grid: Tensor, base_weight: Tensor, spline_weight: Tensor,
                 spline_scaler: Tensor, spline_order: int, mode: str,
                 need_dx: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    dy = dy.contiguous()
    dx = torch.empty_like(x) if need_dx else x.new_empty((0,))
    dbw, dsw, dss = torch.empty_like(base_weight), torch.empty_like(spline_weight), torch.empty_like(spline_scaler)
    _C.kan_backward_cpu(*_sizes(x, spline_weight, spline_order, mode), x.shape[0], _ptr(x), _ptr(grid),
                        _ptr(base_weight), _ptr(spline_weight), _ptr(spline_scaler), _ptr(dy), _ptr(dx), _ptr(dbw),
                        _ptr(dsw), _ptr(dss))
    return dx, dbw, dsw, dss


kan_backward = torch.library.custom_op("perceptrons::kan_backward", mutates_args=(),
                                       device_types="cpu")(_kan_backward_cpu)


@kan_backward.register_fake
def _(dy, x, grid, base_weight, spline_weight, spline_scaler, spline_order, mode, need_dx):
    dx = torch.empty_like(x) if need_dx else x.new_empty((0,))
    return dx, torch.empty_like(base_weight), torch.empty_like(spline_weight), torch.empty_like(spline_scaler)


# ---- composite (materialised-basis) path ---------------------------------------------------------

def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    # Repeated knots give 0/0 spans; they contribute 0 (as in the kernels), without NaN gradients.
    ok = den != 0
    return num / torch.where(ok, den, torch.ones_like(den)) * ok


def bspline_basis(x: Tensor, grid: Tensor, spline_order: int, mode: str = "pykan") -> Tensor:
    """(batch, in, G+k) Cox-de Boor basis in torch ops (differentiable in x); the kernels' semantics:
    half-open cells, 0 outside the extended grid and for non-finite x, clamp mode clamps into
    [grid[:, k], grid[:, G+k]]."""
    k = spline_order
    if mode == "clamp":
        x = torch.minimum(torch.maximum(x, grid[:, k]), grid[:, grid.shape[1] - 1 - k])
    finite = torch.isfinite(x)
    xe = torch.where(finite, x, torch.zeros_like(x)).unsqueeze(-1)
    g = grid.unsqueeze(0)
    n = grid.shape[1]
    bases = ((xe >= g[..., : n - 1]) & (xe < g[..., 1:])).to(x.dtype)
    for p in range(1, k + 1):
        left = _safe_div(xe - g[..., : n - 1 - p], g[..., p: n - 1] - g[..., : n - 1 - p])
        right = _safe_div(g[..., p + 1:] - xe, g[..., p + 1:] - g[..., 1: n - p])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases * finite.unsqueeze(-1).to(x.dtype)


def composite_edge_activations(x, grid, base_weight, spline_weight, spline_scaler, spline_order, mode,
                               base_activation=torch.nn.functional.silu):
    """(batch, out, in): phi_{o,i}(x_i), base branch plus scaled spline."""
    w = spline_weight if spline_scaler is None or spline_scaler.numel() == 0 else spline_weight * spline_scaler[..., None]
    spline = torch.einsum("bic,oic->boi", bspline_basis(x, grid, spline_order, mode), w)
    return base_activation(x).unsqueeze(1) * base_weight.unsqueeze(0) + spline


def composite_forward(x, grid, base_weight, spline_weight, spline_scaler, spline_order, mode,
                      base_activation=torch.nn.functional.silu):
    """The layer as efficient-kan computes it: materialised basis, then one matmul."""
    w = spline_weight if spline_scaler is None or spline_scaler.numel() == 0 else spline_weight * spline_scaler[..., None]
    basis = bspline_basis(x, grid, spline_order, mode)
    return (torch.nn.functional.linear(base_activation(x), base_weight)
            + torch.nn.functional.linear(basis.reshape(x.shape[0], -1), w.reshape(w.shape[0], -1)))


def bspline_basis_derivative(x: Tensor, grid: Tensor, spline_order: int, mode: str = "pykan") -> Tensor:
    """d/dx of bspline_basis, (batch, in, G+k), in differentiable torch ops. In clamp mode it is 0
    where x is strictly outside [grid[:, k], grid[:, G+k]] (torch.clamp's convention at the bounds)."""
    k = spline_order
    n = grid.shape[1]
    xs = x
    inside = torch.ones_like(x)
    if mode == "clamp":
        lo, hi = grid[:, k], grid[:, n - 1 - k]
        inside = ((x >= lo) & (x <= hi)).to(x.dtype)
        xs = torch.minimum(torch.maximum(x, lo), hi)
    lower = bspline_basis(xs, grid, k - 1)  # order k-1: G+k+1 functions, c = 0..G+k
    g = grid.unsqueeze(0)
    left = _safe_div(lower[..., :-1], g[..., k: n - 1] - g[..., : n - 1 - k])
    right = _safe_div(lower[..., 1:], g[..., k + 1:] - g[..., 1: n - k])
    return k * (left - right) * inside.unsqueeze(-1)


def composite_backward(dy, x, grid, base_weight, spline_weight, spline_scaler, spline_order, mode, need_dx):
    """Same results as perceptrons::kan_backward, as explicit differentiable torch ops (no
    autograd.grad inside, so it also runs under torch.func transforms)."""
    has_ss = spline_scaler is not None and spline_scaler.numel() > 0
    w = spline_weight * spline_scaler[..., None] if has_ss else spline_weight
    basis = bspline_basis(x, grid, spline_order, mode)
    s = torch.sigmoid(x)
    d_base_weight = dy.transpose(0, 1) @ (x * s)
    d_w = torch.einsum("bo,bic->oic", dy, basis)
    d_spline_weight = d_w * spline_scaler[..., None] if has_ss else d_w
    d_spline_scaler = (d_w * spline_weight).sum(-1) if has_ss else None
    dx = None
    if need_dx:
        dsilu = s * (1 + x * (1 - s))
        dbasis = bspline_basis_derivative(x, grid, spline_order, mode)
        dx = (dy @ base_weight) * dsilu + torch.einsum("bo,oic,bic->bi", dy, w, dbasis)
    return dx, d_base_weight, d_spline_weight, d_spline_scaler


@cache_forward_signature
class KANFunction(torch.autograd.Function):
    @staticmethod
    def forward(x, grid, base_weight, spline_weight, spline_scaler, spline_order, mode):
        return call_op(kan_forward, _kan_forward_cpu, x.device, (x, grid, base_weight, spline_weight, spline_scaler),
                       x, grid, base_weight, spline_weight, spline_scaler, spline_order, mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, grid, base_weight, spline_weight, spline_scaler, spline_order, mode = inputs
        ctx.save_for_backward(x, grid, base_weight, spline_weight, spline_scaler)
        ctx.config = (spline_order, mode)

    @staticmethod
    def backward(ctx, dy):
        x, grid, bw, sw, ss = ctx.saved_tensors
        k, mode = ctx.config
        need_dx = ctx.needs_input_grad[0]
        has_ss = ss.numel() > 0
        if torch.is_grad_enabled():
            # A graph of this backward is wanted: the same gradients as differentiable torch ops.
            dx, dbw, dsw, dss = composite_backward(dy, x, grid, bw, sw, ss, k, mode, need_dx)
        else:
            dx, dbw, dsw, dss = call_op(kan_backward, _kan_backward_cpu, x.device, (dy, x, grid, bw, sw, ss), dy, x,
                                        grid, bw, sw, ss, k, mode, need_dx)
            dx = dx if need_dx else None
            dss = dss if has_ss else None
        return dx, None, dbw, dsw, dss, None, None


def _check(x, grid, base_weight, spline_weight, spline_scaler, spline_order, mode):
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _DTYPE_CODES:
        raise TypeError(f"x: expected dtype torch.float32 or torch.float64 (the CPU kernels' dtypes), got {x.dtype}")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    kmax = _C.KAN_MAX_SPLINE_ORDER
    if not isinstance(spline_order, int) or not 1 <= spline_order <= kmax:
        raise ValueError(f"spline_order: expected an integer in 1..{kmax}, got {spline_order!r}")
    if spline_weight.dim() != 3:
        raise ValueError(f"spline_weight: expected (out, in, grid_size + spline_order), got {tuple(spline_weight.shape)}")
    out, in_, nb = spline_weight.shape
    if nb - spline_order < 1:
        raise ValueError(f"spline_weight: last dimension {nb} leaves no grid for spline_order={spline_order} "
                         f"(expected grid_size + spline_order with grid_size >= 1)")
    if x.shape[-1] != in_:
        raise ValueError(f"x: expected last dimension in_features={in_}, got {x.shape[-1]}")
    expected = {"grid": (in_, nb + spline_order + 1), "base_weight": (out, in_)}
    if spline_scaler is not None:
        expected["spline_scaler"] = (out, in_)
    for name, t in (("grid", grid), ("base_weight", base_weight), ("spline_weight", spline_weight),
                    ("spline_scaler", spline_scaler)):
        if t is None:
            continue
        if name in expected and tuple(t.shape) != expected[name]:
            raise ValueError(f"{name}: expected shape {expected[name]}, got {tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} does not match x's dtype {x.dtype}")
        if t.device != x.device:
            raise RuntimeError(f"{name}: is on {t.device} but x is on {x.device}; tensors are never copied between devices")
    if x.device.type not in ("cpu", "meta"):
        raise RuntimeError(f"x: is on {x.device}, but this build of perceptrons has no KAN kernel for that device "
                           "(CUDA KAN kernels are planned); tensors are never copied between devices")


def kan_linear(x: Tensor, grid: Tensor, base_weight: Tensor, spline_weight: Tensor,
               spline_scaler: Optional[Tensor] = None, spline_order: int = 3, mode: str = "pykan") -> Tensor:
    """Functional spline-KAN layer. x (..., in) -> (..., out); differentiable in x and every weight."""
    _check(x, grid, base_weight, spline_weight, spline_scaler, spline_order, mode)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    ss = x2.new_empty((0,)) if spline_scaler is None else spline_scaler.contiguous()
    args = (x2, grid.contiguous(), base_weight.contiguous(), spline_weight.contiguous(), ss, spline_order, mode)
    if forward_mode_active(x2, base_weight, spline_weight, ss):  # see ops/transforms.py
        y = composite_forward(*args)
    elif torch.is_grad_enabled() and any(t.requires_grad for t in (x2, base_weight, spline_weight, ss)):
        y = KANFunction.apply(*args)
    else:
        y = call_op(kan_forward, _kan_forward_cpu, x2.device, args[:5], *args)
    return y.reshape(*lead, y.shape[-1])
