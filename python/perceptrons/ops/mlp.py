"""Fused MLP as torch custom ops, wrapped by an autograd.Function.

Three autograd-less custom ops call the compiled kernels:
  perceptrons::mlp_forward        inference: only y is written
  perceptrons::mlp_forward_train  y and the buffers backward needs, one per layer (csrc/mlp/mlp.h)
  perceptrons::mlp_backward       dx and every weight and bias gradient
Each has a fake (meta) implementation, so torch.compile(fullgraph=True) traces through them.
FusedMLPFunction (setup_context style, which torch.func.grad needs) ties them together. Its backward
uses the fused kernel; when a graph of the backward is asked for (create_graph=True, or functorch
transforms), it uses an equivalent composite of torch ops instead, so second and higher derivatives
(eikonal/SDF losses) work: slower, but exact.

A layer without a bias is passed as an empty tensor.

Devices. CPU: float32/float64 kernels (csrc/mlp/mlp_cpu*). CUDA: tensor-core kernels for float16 and
bfloat16 (csrc/mlp/mlp_cuda*; float32 accumulation) when every hidden layer has the same width, one
of 16/32/64/128, at least one hidden layer, and input and output widths up to 256. Anything else on
a CUDA device (float32, float64, other widths) runs as the same network written in torch ops
(`composite_forward`): correct, differentiable to any order, cuBLAS-fast, but not fused;
`cuda_path()` says which one a call takes. The CUDA kernels launch on the current torch stream and
take their workspace from torch's allocator, so they work inside CUDA graphs.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import torch
from torch import Tensor

from .. import _C
from .. import activations as _acts
from ..kernels import MLPSpec
from ..kernels.encodings import EncodingSpec
from .encodings import check_input as _check_encoding_input
from .encodings import composite_encode, composite_encode_backward, encode, spec_of
from .direct_call import call_op
from .function_signature import cache_forward_signature
from .transforms import forward_mode_active

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}
_CUDA_DTYPE_CODES = {torch.float16: 2, torch.bfloat16: 3}
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _widths(x: Tensor, weights: Sequence[Tensor]):
    # weights[0]'s fan-in, not x's width: with an input encoding x holds the raw inputs.
    return [int(weights[0].shape[1])] + [int(w.shape[0]) for w in weights]


@functools.lru_cache(maxsize=512)
def _cached_spec(widths, activation, activation_param, output_activation, output_activation_param):
    return MLPSpec(widths, activation, output_activation, activation_param, output_activation_param)


def _spec(x, weights, activation, activation_param, output_activation, output_activation_param):
    # Cached: validating a spec costs microseconds that a small CUDA call cannot hide.
    return _cached_spec(tuple(_widths(x, weights)), activation, activation_param, output_activation,
                        output_activation_param)


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None or t.numel() == 0 else t.data_ptr()


def _check_cpu(x: Tensor, weights, encoding=()):
    if x.device.type != "cpu":
        raise RuntimeError(f"perceptrons.mlp: no kernel for device {x.device} in this build "
                           f"(CUDA kernels: {_C.build_info()['cuda']}); inputs are never moved between devices")
    # A cheap guard for direct callers of the ops (fused_mlp has checked everything already): the
    # kernels read x as contiguous (batch, n_in) rows.
    n_in = spec_of(tuple(encoding)).in_features if encoding else int(weights[0].shape[1])
    if x.dim() != 2 or x.shape[1] != n_in or not x.is_contiguous():
        raise ValueError(f"x: expected a contiguous (batch, {n_in}) tensor, got {tuple(x.shape)}")


# Plain Python constants and arithmetic below, so torch.compile traces the dispatch decision.
_CUDA_COMPILED = bool(_C.build_info()["cuda"])
_CUDA_HIDDEN_WIDTHS = (16, 32, 64, 128)


def _cuda_unsupported(dtype, widths) -> str:
    """Mirrors cuda_supported (csrc/mlp/mlp_cuda_layout.h): '' when the CUDA kernels take this call."""
    if dtype not in _CUDA_DTYPE_CODES:
        return f"the CUDA kernels take float16 and bfloat16, got {dtype}"
    if len(widths) < 3:
        return "no hidden layer"
    hidden = widths[1:-1]
    if any(w != hidden[0] for w in hidden):
        return f"hidden widths differ ({list(hidden)})"
    if hidden[0] not in _CUDA_HIDDEN_WIDTHS:
        return f"hidden width {hidden[0]} is not one of 16/32/64/128"
    if widths[0] > _C.MLP_CUDA_MAX_IO_WIDTH or widths[-1] > _C.MLP_CUDA_MAX_IO_WIDTH:
        return f"input or output width above {_C.MLP_CUDA_MAX_IO_WIDTH}"
    return ""


def cuda_path(x: Tensor, weights: Sequence[Tensor]) -> str:
    """'fused' when a CUDA call with these tensors runs the fused kernels, else 'torch: <why>'."""
    if not _CUDA_COMPILED:
        return "torch: this build has no CUDA kernels"
    why = _cuda_unsupported(x.dtype, [x.shape[-1]] + [w.shape[0] for w in weights])
    return f"torch: {why}" if why else "fused"


def _cuda_saved_numels(spec: MLPSpec, batch):
    """Mirrors cuda_saved_layer_numel (csrc/mlp/mlp_cuda_layout.h); plain arithmetic for symbolic batches."""
    rows = (batch + 15) // 16 * 16
    return [rows * spec.widths[l + 1] if l < spec.n_layers - 1 else 0 for l in range(spec.n_layers)]


def _saved_numels(spec: MLPSpec, x: Tensor):
    return _cuda_saved_numels(spec, x.shape[0]) if x.device.type == "cuda" else spec.saved_numels(x.shape[0])


def _cuda_call(x: Tensor):
    """(dtype code, stream handle) for a CUDA kernel call on x's device."""
    return _CUDA_DTYPE_CODES[x.dtype], torch.cuda.current_stream(x.device).cuda_stream


def _workspace(x: Tensor, spec: MLPSpec, backward: bool) -> Tensor:
    n = _C.mlp_cuda_workspace_bytes(_CUDA_DTYPE_CODES[x.dtype], spec.widths, x.shape[0], backward)
    return torch.empty((n,), dtype=torch.uint8, device=x.device)


# ---- custom ops --------------------------------------------------------------------------------

def _mlp_forward_cpu(x: Tensor, weights: list[Tensor], biases: list[Tensor], activation: str, activation_param: float,
                output_activation: str, output_activation_param: float, encoding: list[float]) -> Tensor:
    _check_cpu(x, weights, encoding)
    spec = _spec(x, weights, activation, activation_param, output_activation, output_activation_param)
    y = x.new_empty((x.shape[0], spec.widths[-1]))
    _C.mlp_forward_cpu(_DTYPE_CODES[x.dtype], spec.widths, *spec.codes(), x.shape[0], _ptr(x),
                       [_ptr(w) for w in weights], [_ptr(b) for b in biases], _ptr(y), [], list(encoding))
    return y


mlp_forward = torch.library.custom_op("perceptrons::mlp_forward", mutates_args=(),
                                      device_types="cpu")(_mlp_forward_cpu)


def _forward_cuda(x, weights, biases, spec, saved):
    """The CUDA forward of both ops: inference when saved is empty, else the training forward."""
    y = x.new_empty((x.shape[0], spec.widths[-1]))
    with torch.cuda.device(x.device):
        code, stream = _cuda_call(x)
        ws = _workspace(x, spec, backward=False)
        _C.mlp_forward_cuda(code, spec.widths, *spec.codes(), x.shape[0], _ptr(x), [_ptr(w) for w in weights],
                            [_ptr(b) for b in biases], _ptr(y), [_ptr(s) for s in saved], _ptr(ws), ws.numel(),
                            stream)
    return y


def _no_cuda_encoding(encoding):
    if encoding:  # fused_mlp sends encoded CUDA calls to the composite path; never here
        raise RuntimeError("perceptrons.mlp: the CUDA kernels have no input-encoding stage")


@mlp_forward.register_kernel("cuda")
def _mlp_forward_cuda(x, weights, biases, activation, activation_param, output_activation, output_activation_param,
                      encoding):
    _no_cuda_encoding(encoding)
    spec = _spec(x, weights, activation, activation_param, output_activation, output_activation_param)
    return _forward_cuda(x, weights, biases, spec, [])


@mlp_forward.register_fake
def _(x, weights, biases, activation, activation_param, output_activation, output_activation_param, encoding):
    return x.new_empty((x.shape[0], weights[-1].shape[0]))


def _mlp_forward_train_cpu(x: Tensor, weights: list[Tensor], biases: list[Tensor], activation: str,
                      activation_param: float, output_activation: str,
                      output_activation_param: float, encoding: list[float]) -> tuple[Tensor, list[Tensor]]:
    _check_cpu(x, weights, encoding)
    spec = _spec(x, weights, activation, activation_param, output_activation, output_activation_param)
    y = x.new_empty((x.shape[0], spec.widths[-1]))
    saved = [x.new_empty((n,)) for n in spec.saved_numels(x.shape[0])]
    _C.mlp_forward_cpu(_DTYPE_CODES[x.dtype], spec.widths, *spec.codes(), x.shape[0], _ptr(x),
                       [_ptr(w) for w in weights], [_ptr(b) for b in biases], _ptr(y), [_ptr(s) for s in saved],
                       list(encoding))
    return y, saved


mlp_forward_train = torch.library.custom_op("perceptrons::mlp_forward_train", mutates_args=(),
                                            device_types="cpu")(_mlp_forward_train_cpu)


@mlp_forward_train.register_kernel("cuda")
def _mlp_forward_train_cuda(x, weights, biases, activation, activation_param, output_activation,
                            output_activation_param, encoding):
    _no_cuda_encoding(encoding)
    spec = _spec(x, weights, activation, activation_param, output_activation, output_activation_param)
    saved = [x.new_empty((n,)) for n in _cuda_saved_numels(spec, x.shape[0])]
    return _forward_cuda(x, weights, biases, spec, saved), saved


@mlp_forward_train.register_fake
def _(x, weights, biases, activation, activation_param, output_activation, output_activation_param, encoding):
    spec = MLPSpec([weights[0].shape[1]] + [w.shape[0] for w in weights], activation, output_activation, activation_param,
                   output_activation_param)
    return x.new_empty((x.shape[0], spec.widths[-1])), [x.new_empty((n,)) for n in _saved_numels(spec, x)]


def _mlp_backward_cpu(dy: Tensor, x: Tensor, y: Tensor, saved: list[Tensor], weights: list[Tensor], biases: list[Tensor],
                 activation: str, activation_param: float, output_activation: str, output_activation_param: float,
                 need_dx: bool, encoding: list[float]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    _check_cpu(x, weights, encoding)
    spec = _spec(x, weights, activation, activation_param, output_activation, output_activation_param)
    dy = dy.contiguous()
    dx = torch.empty_like(x) if need_dx else x.new_empty((0,))
    dws = [torch.empty_like(w) for w in weights]
    dbs = [torch.empty_like(b) for b in biases]
    _C.mlp_backward_cpu(_DTYPE_CODES[x.dtype], spec.widths, *spec.codes(), x.shape[0], _ptr(x), _ptr(y),
                        [_ptr(s) for s in saved], _ptr(dy), [_ptr(w) for w in weights], _ptr(dx), [_ptr(w) for w in dws],
                        [_ptr(b) for b in dbs], list(encoding))
    return dx, dws, dbs


mlp_backward = torch.library.custom_op("perceptrons::mlp_backward", mutates_args=(),
                                       device_types="cpu")(_mlp_backward_cpu)


@mlp_backward.register_kernel("cuda")
def _mlp_backward_cuda(dy, x, y, saved, weights, biases, activation, activation_param, output_activation,
                       output_activation_param, need_dx, encoding):
    _no_cuda_encoding(encoding)
    spec = _spec(x, weights, activation, activation_param, output_activation, output_activation_param)
    dy = dy.contiguous()
    dx = torch.empty_like(x) if need_dx else x.new_empty((0,))
    dws = [torch.empty_like(w) for w in weights]
    dbs = [torch.empty_like(b) for b in biases]
    with torch.cuda.device(x.device):
        code, stream = _cuda_call(x)
        ws = _workspace(x, spec, backward=True)
        _C.mlp_backward_cuda(code, spec.widths, *spec.codes(), x.shape[0], _ptr(x), [_ptr(s) for s in saved],
                             _ptr(dy), [_ptr(w) for w in weights], [_ptr(b) for b in biases], _ptr(dx),
                             [_ptr(w) for w in dws], [_ptr(b) for b in dbs], _ptr(ws), ws.numel(), stream)
    return dx, dws, dbs


@mlp_backward.register_fake
def _(dy, x, y, saved, weights, biases, activation, activation_param, output_activation, output_activation_param,
      need_dx, encoding):
    dx = torch.empty_like(x) if need_dx else x.new_empty((0,))
    return dx, [torch.empty_like(w) for w in weights], [torch.empty_like(b) for b in biases]


# ---- composite (differentiable) backward for higher-order derivatives ---------------------------

def _act_torch(name: str, z: Tensor, p: float) -> Tensor:
    if name == "none":
        return z
    if name == "relu":
        return torch.relu(z)
    if name == "leaky_relu":
        return torch.nn.functional.leaky_relu(z, p)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "softplus":
        return torch.nn.functional.softplus(z, beta=p, threshold=20.0)
    if name == "silu":
        return torch.nn.functional.silu(z)
    if name == "sine":
        return torch.sin(p * z)
    if name == "exp":
        return torch.exp(z)
    raise ValueError(f"unknown activation {name!r}")


def _act_grad_torch(name: str, z: Tensor, p: float) -> Tensor:
    """f'(z) as differentiable torch ops (so its own derivative is available)."""
    if name == "none":
        return torch.ones_like(z)
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "leaky_relu":
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, p))
    if name == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1 - s)
    if name == "tanh":
        t = torch.tanh(z)
        return 1 - t * t
    if name == "softplus":
        return torch.where(p * z > 20.0, torch.ones_like(z), torch.sigmoid(p * z))
    if name == "silu":
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))
    if name == "sine":
        return p * torch.cos(p * z)
    if name == "exp":
        return torch.exp(z)
    raise ValueError(f"unknown activation {name!r}")


def composite_forward(x, weights, biases, activation, activation_param, output_activation,
                      output_activation_param, keep_preactivations=False, encoding=()):
    """The MLP in plain torch ops (also the reference for equality tests against nn.Sequential).
    encoding: an input encoding's codes (EncodingSpec.codes()), applied to x first; () for none."""
    h = composite_encode(x, spec_of(tuple(encoding))) if encoding else x
    zs, hs = [], [h]
    n = len(weights)
    for l, (w, b) in enumerate(zip(weights, biases)):
        z = torch.nn.functional.linear(h, w, b if b.numel() else None)
        last = l == n - 1
        h = _act_torch(output_activation if last else activation, z,
                       output_activation_param if last else activation_param)
        zs.append(z)
        if not last:
            hs.append(h)
    return (h, zs, hs) if keep_preactivations else h


def composite_backward(dy, x, weights, biases, activation, activation_param, output_activation,
                       output_activation_param, need_dx, encoding=()):
    """Same result as perceptrons::mlp_backward, written as differentiable torch ops."""
    _, zs, hs = composite_forward(x, weights, biases, activation, activation_param, output_activation,
                                  output_activation_param, keep_preactivations=True, encoding=encoding)
    g = dy * _act_grad_torch(output_activation, zs[-1], output_activation_param)
    n = len(weights)
    dws, dbs = [None] * n, [None] * n
    for l in range(n - 1, -1, -1):
        dws[l] = g.transpose(0, 1) @ hs[l]
        dbs[l] = g.sum(0) if biases[l].numel() else biases[l].new_empty((0,))
        if l == 0 and not need_dx:
            g = None
            break
        g = g @ weights[l]
        if l > 0:
            g = g * _act_grad_torch(activation, zs[l - 1], activation_param)
        elif encoding:
            g = composite_encode_backward(g, x, spec_of(tuple(encoding)))
    return g, dws, dbs


# ---- autograd -----------------------------------------------------------------------------------

@cache_forward_signature
class FusedMLPFunction(torch.autograd.Function):
    """y = MLP(e(x)); inputs: x (batch, in), config, the encoding's codes (a tuple, () for none), then n
    weights and n biases (empty = no bias)."""

    @staticmethod
    def forward(x, activation, activation_param, output_activation, output_activation_param, encoding, n, *params):
        weights, biases = list(params[:n]), list(params[n:])
        y, saved = call_op(mlp_forward_train, _mlp_forward_train_cpu, x.device, (x, *params), x, weights, biases,
                           activation, activation_param, output_activation, output_activation_param, list(encoding),
                           cuda_impl=_mlp_forward_train_cuda)
        return y, *saved

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, activation, activation_param, output_activation, output_activation_param, encoding, n, *params = inputs
        y, *saved = output
        ctx.config = (activation, activation_param, output_activation, output_activation_param)
        ctx.encoding = encoding
        ctx.n = n
        ctx.save_for_backward(x, y, *params, *saved)
        ctx.mark_non_differentiable(*saved)
        # Otherwise autograd fills a zero gradient for every saved buffer (megabytes) on each backward.
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, dy, *_dsaved):
        x, y, *rest = ctx.saved_tensors
        n = ctx.n
        weights, biases, saved = rest[:n], rest[n:2 * n], list(rest[2 * n:])
        need_dx = ctx.needs_input_grad[0]
        if dy is None:
            dy = torch.zeros_like(y)
        if torch.is_grad_enabled():
            # A graph of this backward is wanted (create_graph=True / functorch): composite torch ops.
            dx, dws, dbs = composite_backward(dy, x, list(weights), list(biases), *ctx.config, need_dx,
                                              encoding=ctx.encoding)
        else:
            dx, dws, dbs = call_op(mlp_backward, _mlp_backward_cpu, x.device, (dy, x, y, *rest), dy, x, y, saved,
                                   list(weights), list(biases), *ctx.config, need_dx, list(ctx.encoding),
                                   cuda_impl=_mlp_backward_cuda)
        grads_b = [db if b.numel() else None for db, b in zip(dbs, biases)]
        return (dx if need_dx else None, None, None, None, None, None, None, *dws, *grads_b)


# ---- functional API -----------------------------------------------------------------------------

def _check_inputs(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Optional[Tensor]],
                  encoding: Optional[EncodingSpec] = None):
    """With an encoding, x holds the raw inputs and weights[0] reads the encoding's outputs."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if len(weights) == 0:
        raise ValueError("weights: expected at least one weight matrix, got none")
    if len(biases) != len(weights):
        raise ValueError(f"biases: expected {len(weights)} entries (None for no bias), got {len(biases)}")
    # x's device and dtype read once: each read builds a Python object, and this check runs on every
    # call (tens of microseconds in all at small batches).
    device, dtype = x.device, x.dtype
    if device.type not in ("cpu", "meta", "cuda"):
        raise RuntimeError(f"x: is on {device}, but perceptrons has kernels for cpu and cuda only; "
                           "tensors are never copied between devices")
    if device.type == "cuda":
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"x: expected a floating dtype on CUDA (float16 and bfloat16 run the fused kernels; "
                            f"float32 and float64 run as torch ops), got {x.dtype}")
    elif dtype not in _DTYPE_CODES:
        raise TypeError(f"x: expected dtype torch.float32 or torch.float64 (the CPU kernels' dtypes), got {x.dtype}"
                        + ("; float16/bfloat16 run on CUDA devices only" if x.dtype in _CUDA_DTYPE_CODES else ""))
    if x.dim() < 1:
        raise ValueError("x: expected at least 1 dimension (..., in_features), got a 0-d tensor")
    fan_in = x.shape[-1] if encoding is None else encoding.out_features
    for l, w in enumerate(weights):
        if not isinstance(w, Tensor) or w.dim() != 2:
            raise ValueError(f"weights[{l}]: expected a 2-d tensor (out, in), got "
                             f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}")
        if w.shape[1] != fan_in:
            what = f"weights[{l - 1}].shape[0]" if l else \
                "x's last dimension" if encoding is None else "the encoding's out_features"
            raise ValueError(f"weights[{l}]: expected {fan_in} input features ({what}), got shape {tuple(w.shape)}")
        if w.dtype != dtype:
            raise TypeError(f"weights[{l}]: dtype {w.dtype} does not match x's dtype {x.dtype}")
        if w.device != device:
            raise RuntimeError(f"weights[{l}]: is on {w.device} but x is on {x.device}; "
                               "tensors are never copied between devices")
        b = biases[l]
        if b is not None:
            if b.dim() != 1 or b.shape[0] != w.shape[0]:
                raise ValueError(f"biases[{l}]: expected shape ({w.shape[0]},), got {tuple(b.shape)}")
            if b.dtype != dtype:
                raise TypeError(f"biases[{l}]: dtype {b.dtype} does not match x's dtype {x.dtype}")
            if b.device != device:
                raise RuntimeError(f"biases[{l}]: is on {b.device} but x is on {x.device}")
        fan_in = w.shape[0]
    for l, w in enumerate(weights[:-1]):
        if w.shape[0] > _C.MLP_MAX_HIDDEN_WIDTH:
            raise ValueError(f"weights[{l}]: hidden width {w.shape[0]} is not supported; the fused kernels take "
                             f"hidden widths up to {_C.MLP_MAX_HIDDEN_WIDTH}")


def fused_mlp(x: Tensor, weights: Sequence[Tensor], biases: Optional[Sequence[Optional[Tensor]]] = None,
              activation: str = "relu", output_activation: Optional[str] = None,
              activation_param: Optional[float] = None, output_activation_param: Optional[float] = None,
              encoding: Optional[EncodingSpec] = None) -> Tensor:
    """Functional fused MLP. x: (..., in); weights[l]: (out_l, in_l); biases[l]: (out_l,) or None.

    encoding: an input encoding (perceptrons.kernels.encodings.EncodingSpec, e.g. a perceptrons.nn
    encoding module's `.spec`) applied to x first, inside the kernel's input stage on the CPU: x is then
    (..., encoding.in_features) and weights[0] is (out_0, encoding.out_features). On CUDA the encoding
    runs as torch ops in float32 (float64 for float64 x) and its output is cast to the weights' dtype.
    Differentiable in x, every weight and every bias, to any order (see the module docstring).
    """
    weights = list(weights)
    biases = [None] * len(weights) if biases is None else list(biases)
    codes = ()
    if encoding is not None:
        if not isinstance(encoding, EncodingSpec):
            raise TypeError(f"encoding: expected an EncodingSpec (an encoding module's .spec) or None, "
                            f"got {type(encoding).__name__}")
        if isinstance(x, Tensor) and x.device.type == "cuda":
            # No CUDA encoding stage yet: the encoding as torch ops, in float32 at least (as tcnn computes
            # its encodings), then the MLP on its own CUDA path in the weights' dtype (the fused
            # tensor-core kernels for float16/bfloat16).
            if x.dtype not in _FLOAT_DTYPES:
                raise TypeError(f"x: expected a floating dtype, got {x.dtype}")
            h = encode(x if x.dtype == torch.float64 else x.float(), encoding)
            if weights and isinstance(weights[0], Tensor):
                h = h.to(weights[0].dtype)
            return fused_mlp(h, weights, biases, activation, output_activation, activation_param,
                             output_activation_param)
        _check_encoding_input(x, encoding)
        codes = tuple(encoding.codes())
    _check_inputs(x, weights, biases, encoding)
    act = _acts.canonical(activation, "activation")
    out_act = _acts.canonical(output_activation, "output_activation")
    p = _acts.resolve_param(act, activation_param, "activation_param")
    out_p = _acts.resolve_param(out_act, output_activation_param, "output_activation_param")
    flat = x.dim() == 2  # (batch, in) already: no reshapes (a microsecond each, on calls of tens)
    x2 = x if flat else x.reshape(-1, x.shape[-1])
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    weights = [w if w.is_contiguous() else w.contiguous() for w in weights]
    bs = [x2.new_empty((0,)) if b is None else (b if b.is_contiguous() else b.contiguous()) for b in biases]
    needs_grad = torch.is_grad_enabled() and (x2.requires_grad or any(t.requires_grad for t in weights + bs))
    if (x2.device.type == "cuda" and cuda_path(x2, weights) != "fused") or forward_mode_active(x2, *weights, *bs):
        y = composite_forward(x2, weights, bs, act, p, out_act, out_p, encoding=codes)
    elif needs_grad:
        y = FusedMLPFunction.apply(x2, act, p, out_act, out_p, codes, len(weights), *weights, *bs)[0]
    else:
        y = call_op(mlp_forward, _mlp_forward_cpu, x2.device, (x2, *weights, *bs), x2, weights, bs, act, p, out_act,
                    out_p, list(codes), cuda_impl=_mlp_forward_cuda)
    return y if flat else y.reshape(*x.shape[:-1], y.shape[-1])
