"""Input encodings as torch custom ops, wrapped by an autograd.Function, and their torch-op composites.

  perceptrons::encoding_forward    y = e(x)                      (csrc/encodings/encodings_cpu.cpp)
  perceptrons::encoding_backward   dx = J_e(x)^T dy

CPU float32/float64 tensors run the kernels. The backward uses the kernel; when a graph of the
backward is wanted (create_graph=True: eikonal losses, torch.func transforms) it runs
`composite_encode_backward`, the same VJP written in differentiable torch ops. CUDA tensors run the
composites (`composite_encode`) for now: there is no CUDA encoding kernel yet.

The composites are also what the fused MLP's composite path uses in front of its first layer
(perceptrons.ops.mlp), and their formulas follow the float64 numpy reference
(perceptrons.reference.encodings), which cites tiny-cuda-nn's sources.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .. import _C
from ..kernels.encodings import EncodingSpec
from .direct_call import call_op
from .function_signature import cache_forward_signature
from .transforms import in_functorch_transform

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


@functools.lru_cache(maxsize=256)
def spec_of(codes: tuple) -> EncodingSpec:
    return EncodingSpec.from_codes(codes)


# ---- composites (plain differentiable torch ops) -------------------------------------------------

def _frequency_theta(x: Tensor, n: int):
    """Phases (..., d, F) and their slopes 2^l pi. The phase is reduced mod 2 pi in float64 before it is
    rounded to x's dtype (what the kernel's exact reduction does): 2^l pi x formed in float32 would
    carry an error of 2^l pi |x| eps32, 1e-2 at l = 16. The reduction does not change the derivative."""
    scales = torch.exp2(torch.arange(n, dtype=torch.float64, device=x.device))
    theta = (torch.remainder(x.to(torch.float64).unsqueeze(-1) * scales, 2.0) * math.pi).to(x.dtype)
    return theta, (scales * math.pi).to(x.dtype)


def _sh_basis(v: Tensor, degree: int):
    """The first degree^2 real SH polynomials of v (..., 3) in tcnn's order and signs."""
    x, y, z = v.unbind(-1)
    rs = 1.0 / math.sqrt(math.pi)
    # The constant band is written as 0 * x + c, not a fresh tensor, so that the output stays on the
    # autograd graph (zero gradient) even at degree 1, where nothing else depends on x.
    out = [x * 0.0 + 0.5 * rs]
    if degree > 1:
        c1 = math.sqrt(3.0) / 2.0 * rs
        out += [-c1 * y, c1 * z, -c1 * x]
    if degree > 2:
        x2, y2, z2 = x * x, y * y, z * z
        c2 = math.sqrt(15.0) / 2.0 * rs
        out += [c2 * x * y, -c2 * y * z, math.sqrt(5.0) / 4.0 * rs * (3.0 * z2 - 1.0), -c2 * x * z,
                math.sqrt(15.0) / 4.0 * rs * (x2 - y2)]
    if degree > 3:
        c3a, c3c = math.sqrt(70.0) / 8.0 * rs, math.sqrt(42.0) / 8.0 * rs
        out += [c3a * y * (y2 - 3.0 * x2), math.sqrt(105.0) / 2.0 * rs * x * y * z, c3c * y * (1.0 - 5.0 * z2),
                math.sqrt(7.0) / 4.0 * rs * z * (5.0 * z2 - 3.0), c3c * x * (1.0 - 5.0 * z2),
                math.sqrt(105.0) / 4.0 * rs * z * (x2 - y2), c3a * x * (3.0 * y2 - x2)]
    return out


def _sh_vjp(v: Tensor, g: Tensor, degree: int) -> Tensor:
    """dL/dv for dL/d(SH values) g (..., degree^2): the transposed Jacobian of _sh_basis."""
    x, y, z = v.unbind(-1)
    rs = 1.0 / math.sqrt(math.pi)
    gx = gy = gz = x * 0.0
    if degree > 1:
        c1 = math.sqrt(3.0) / 2.0 * rs
        gy = gy - c1 * g[..., 1]
        gz = gz + c1 * g[..., 2]
        gx = gx - c1 * g[..., 3]
    if degree > 2:
        c2a, c2b, c2c = math.sqrt(15.0) / 2.0 * rs, math.sqrt(5.0) / 4.0 * rs, math.sqrt(15.0) / 4.0 * rs
        g4, g5, g6, g7, g8 = (g[..., k] for k in range(4, 9))
        gx = gx + c2a * (y * g4 - z * g7) + 2.0 * c2c * x * g8
        gy = gy + c2a * (x * g4 - z * g5) - 2.0 * c2c * y * g8
        gz = gz - c2a * (y * g5 + x * g7) + 6.0 * c2b * z * g6
    if degree > 3:
        c3a, c3b, c3c = math.sqrt(70.0) / 8.0 * rs, math.sqrt(105.0) / 2.0 * rs, math.sqrt(42.0) / 8.0 * rs
        c3d, c3e = math.sqrt(7.0) / 4.0 * rs, math.sqrt(105.0) / 4.0 * rs
        x2, y2, z2 = x * x, y * y, z * z
        g9, g10, g11, g12, g13, g14, g15 = (g[..., k] for k in range(9, 16))
        gx = (gx - 6.0 * c3a * x * y * g9 + c3b * y * z * g10 + c3c * (1.0 - 5.0 * z2) * g13
              + 2.0 * c3e * x * z * g14 + 3.0 * c3a * (y2 - x2) * g15)
        gy = (gy + 3.0 * c3a * (y2 - x2) * g9 + c3b * x * z * g10 + c3c * (1.0 - 5.0 * z2) * g11
              - 2.0 * c3e * y * z * g14 + 6.0 * c3a * x * y * g15)
        gz = (gz + c3b * x * y * g10 - 10.0 * c3c * y * z * g11 + c3d * (15.0 * z2 - 3.0) * g12
              - 10.0 * c3c * x * z * g13 + c3e * (x2 - y2) * g14)
    return torch.stack((gx, gy, gz), dim=-1)


def _quartic_cdf(u: Tensor) -> Tensor:
    # Clamping the argument (not the result) gives the same values as tcnn's clamped polynomial,
    # and derivatives that are the kernel's: the density and its slope both vanish at |u| = 1.
    u = u.clamp(-1.0, 1.0)
    u2 = u * u
    return (15.0 / 16.0) * u * (1.0 - (2.0 / 3.0) * u2 + 0.2 * u2 * u2) + 0.5


def _quartic_pdf(u: Tensor) -> Tensor:
    v = 1.0 - u.clamp(-1.0, 1.0) ** 2  # 0 at and beyond |u| = 1
    return (15.0 / 16.0) * v * v


def _one_blob_u(x: Tensor, n: int):
    bounds = torch.arange(n + 1, dtype=x.dtype, device=x.device) / n
    return (bounds - x.unsqueeze(-1)) * n  # (..., d, B+1)


def _encode_part(x: Tensor, part) -> Tensor:
    lead = x.shape[:-1]
    if part.kind == "identity":
        return x * part.scale + part.offset
    if part.kind == "frequency":
        theta, _ = _frequency_theta(x, part.n)
        return torch.stack((torch.sin(theta), torch.cos(theta)), dim=-1).reshape(*lead, part.out_features)
    if part.kind == "spherical_harmonics":
        return torch.stack(_sh_basis(x * 2.0 - 1.0, part.n), dim=-1)
    u = _one_blob_u(x, part.n)
    n = part.n
    cdf = _quartic_cdf(u - n) + _quartic_cdf(u) + _quartic_cdf(u + n)
    return (cdf[..., 1:] - cdf[..., :-1]).reshape(*lead, part.out_features)


def _encode_part_backward(g: Tensor, x: Tensor, part) -> Tensor:
    if part.kind == "identity":
        return g * part.scale
    if part.kind == "frequency":
        theta, scales = _frequency_theta(x, part.n)
        g = g.reshape(*x.shape, part.n, 2)
        return (scales * (g[..., 0] * torch.cos(theta) - g[..., 1] * torch.sin(theta))).sum(-1)
    if part.kind == "spherical_harmonics":
        return 2.0 * _sh_vjp(x * 2.0 - 1.0, g, part.n)  # dv/dx = 2
    n = part.n
    u = _one_blob_u(x, n)
    dcdf = -n * (_quartic_pdf(u - n) + _quartic_pdf(u) + _quartic_pdf(u + n))  # d/dx of the boundary CDFs
    g = g.reshape(*x.shape, n)
    return (g * (dcdf[..., 1:] - dcdf[..., :-1])).sum(-1)


def composite_encode(x: Tensor, spec: EncodingSpec) -> Tensor:
    """e(x) in plain torch ops: (..., in_features) -> (..., out_features)."""
    outs, i = [], 0
    for part in spec.parts:
        outs.append(_encode_part(x[..., i:i + part.n_dims], part))
        i += part.n_dims
    if spec.n_ones:
        outs.append(x.new_ones((*x.shape[:-1], spec.n_ones)))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)


def composite_encode_backward(dy: Tensor, x: Tensor, spec: EncodingSpec) -> Tensor:
    """J_e(x)^T dy in differentiable torch ops (the columns of ones have no input)."""
    dxs, i, j = [], 0, 0
    for part in spec.parts:
        dxs.append(_encode_part_backward(dy[..., j:j + part.out_features], x[..., i:i + part.n_dims], part))
        i += part.n_dims
        j += part.out_features
    return dxs[0] if len(dxs) == 1 else torch.cat(dxs, dim=-1)


# ---- custom ops ----------------------------------------------------------------------------------

def _check_rows(x: Tensor, spec: EncodingSpec):
    # The kernels read x as (batch, in_features) rows: a cheap guard for direct callers of the ops.
    if x.dim() != 2 or x.shape[1] != spec.in_features or x.dtype not in _DTYPE_CODES:
        raise ValueError(f"x: expected a float32/float64 (batch, {spec.in_features}) tensor, got "
                         f"{tuple(x.shape)} {x.dtype}")


def _encoding_forward_cpu(x: Tensor, encoding: list[float]) -> Tensor:
    spec = spec_of(tuple(encoding))
    _check_rows(x, spec)
    x = x.contiguous()
    y = x.new_empty((x.shape[0], spec.out_features))
    _C.encoding_forward_cpu(list(encoding), _DTYPE_CODES[x.dtype], x.shape[0], x.data_ptr() if x.numel() else 0,
                            y.data_ptr() if y.numel() else 0)
    return y


encoding_forward = torch.library.custom_op("perceptrons::encoding_forward", mutates_args=(),
                                           device_types="cpu")(_encoding_forward_cpu)


@encoding_forward.register_fake
def _(x, encoding):
    return x.new_empty((x.shape[0], spec_of(tuple(encoding)).out_features))


def _encoding_backward_cpu(dy: Tensor, x: Tensor, encoding: list[float]) -> Tensor:
    spec = spec_of(tuple(encoding))
    _check_rows(x, spec)
    if dy.shape != (x.shape[0], spec.out_features):
        raise ValueError(f"dy: expected shape {(x.shape[0], spec.out_features)}, got {tuple(dy.shape)}")
    x, dy = x.contiguous(), dy.contiguous()
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x.numel():
        _C.encoding_backward_cpu(list(encoding), _DTYPE_CODES[x.dtype], x.shape[0], x.data_ptr(), dy.data_ptr(),
                                 dx.data_ptr())
    return dx


encoding_backward = torch.library.custom_op("perceptrons::encoding_backward", mutates_args=(),
                                            device_types="cpu")(_encoding_backward_cpu)


@encoding_backward.register_fake
def _(dy, x, encoding):
    return torch.empty_like(x)


@cache_forward_signature
class EncodingFunction(torch.autograd.Function):
    """y = e(x) for x (batch, in) on the CPU; encoding: the spec's codes as a tuple of floats."""

    @staticmethod
    def forward(x, encoding):
        return call_op(encoding_forward, _encoding_forward_cpu, x.device, (x,), x, list(encoding))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, encoding = inputs
        ctx.encoding = encoding
        ctx.save_for_backward(x)

    @staticmethod
    def vmap(info, in_dims, x, encoding):
        # Rows are independent: fold the vmapped dimension into the batch and unfold it afterwards.
        if in_dims[0] is None:
            return EncodingFunction.apply(x, encoding), None
        x = x.movedim(in_dims[0], 0)
        y = EncodingFunction.apply(x.reshape(-1, x.shape[-1]).contiguous(), encoding)
        return y.reshape(*x.shape[:-1], y.shape[-1]), 0

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        if torch.is_grad_enabled():  # a graph of this backward is wanted: differentiable torch ops
            return composite_encode_backward(dy, x, spec_of(ctx.encoding)), None
        return call_op(encoding_backward, _encoding_backward_cpu, x.device, (dy, x), dy, x, list(ctx.encoding)), None


def check_input(x: Tensor, spec: EncodingSpec):
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x: expected dtype torch.float32 or torch.float64, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] != spec.in_features:
        raise ValueError(f"x: expected shape (..., {spec.in_features}) (in_features={spec.in_features}), "
                         f"got {tuple(x.shape)}")


def encode(x: Tensor, spec: EncodingSpec) -> Tensor:
    """e(x): (..., spec.in_features) -> (..., spec.out_features); differentiable in x to any order."""
    check_input(x, spec)
    if x.device.type != "cpu":
        return composite_encode(x, spec)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    if in_functorch_transform(x2):  # every transform understands the composite (ops/transforms.py)
        y = composite_encode(x2, spec)
    elif torch.is_grad_enabled() and x2.requires_grad:
        y = EncodingFunction.apply(x2, tuple(spec.codes()))
    else:
        y = call_op(encoding_forward, _encoding_forward_cpu, x2.device, (x2,), x2, list(spec.codes()))
    return y.reshape(*lead, spec.out_features)
