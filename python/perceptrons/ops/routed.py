"""Routed MLP (M-cover) as torch custom ops, wrapped by an autograd.Function.

Two autograd-less custom ops call the CPU kernels (csrc/routed/):
  perceptrons::routed_mlp_forward_train  y (M, B, out) and the buffers backward needs
  perceptrons::routed_mlp_backward       dx per stream and the copies' weight and bias gradients
(inference uses the training op and drops the buffers: the routed forward is one kernel either way).
Routing travels as plain ints (M, granularity, per example, seed, step, batch id, sampler kind) and the
sampler's tables as CPU tensors, so the ops need no Python objects and torch.compile traces them.

Second derivatives (create_graph=True) and CUDA tensors use `composite_routed_forward`: the same
network with the routed weights gathered by explicit owner maps (routing.Routing.owners) and plain
torch ops, differentiable to any order. The CUDA routed kernels do not exist yet.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import _C
from ..kernels import MLPSpec
from ..routing import GRANULARITIES, Routing
from .direct_call import call_op
from .function_signature import cache_forward_signature
from .mlp import _DTYPE_CODES, _act_torch, _cached_spec, _ptr

def routing_ints(routing: Routing, step: int, batch_id: int) -> List[int]:
    """M, granularity, per_example, seed, step key, batch id, sampler kind."""
    kind = routing.sampler.kernel_tables()[0]
    return [routing.M, GRANULARITIES.index(routing.granularity), int(routing.per == "example"), routing.seed,
            routing.step_key(step), int(batch_id), int(kind)]


def sampler_tensors(routing: Routing) -> List[Tensor]:
    """The sampler's tables as CPU tensors (cached on the routing object)."""
    cached = getattr(routing, "_torch_tables", None)
    if cached is None:
        _, perms, cdf, Q, subperm = routing.sampler.kernel_tables()
        cached = [torch.from_numpy(np.ascontiguousarray(a)) for a in (perms, cdf, Q, subperm)]
        routing._torch_tables = cached
    return cached


def _routing_tuple(ints, tables, example_ids):
    M, g, per_example, seed, step, batch_id, kind = ints
    perms, cdf, Q, subperm = tables
    return (M, g, bool(per_example), seed, step, batch_id, _ptr(example_ids), kind, perms.shape[0], _ptr(perms),
            _ptr(cdf), _ptr(Q), _ptr(subperm))


def _spec(x, weights, activation, activation_param, output_activation, output_activation_param):
    # Weights are copy-major (M, out, in); the validated spec is cached like the fused MLP's.
    return _cached_spec(tuple([int(x.shape[-1])] + [int(w.shape[1]) for w in weights]), activation, activation_param,
                        output_activation, output_activation_param)


def _x_stride(x: Tensor) -> int:
    return 0 if x.dim() == 2 else x.shape[1] * x.shape[2]


# ---- custom ops --------------------------------------------------------------------------------

def _routed_mlp_forward_train_cpu(x: Tensor, weights: List[Tensor], biases: List[Tensor], ints: List[int],
                             tables: List[Tensor], example_ids: Tensor, activation: str, activation_param: float,
                             output_activation: str, output_activation_param: float) -> tuple[Tensor, List[Tensor]]:
    spec = _spec(x, weights, activation, activation_param, output_activation, output_activation_param)
    M, B = ints[0], x.shape[-2]
    y = x.new_empty((M, B, spec.widths[-1]))
    saved = [x.new_empty((M * n,)) for n in spec.saved_numels(B)]
    _C.routed_mlp_forward_cpu(_routing_tuple(ints, tables, example_ids), _DTYPE_CODES[x.dtype], spec.widths,
                              *spec.codes(), B, _ptr(x), _x_stride(x), [_ptr(w) for w in weights],
                              [_ptr(b) for b in biases], _ptr(y), [_ptr(s) for s in saved])
    return y, saved


routed_mlp_forward_train = torch.library.custom_op("perceptrons::routed_mlp_forward_train", mutates_args=(),
                                                   device_types="cpu")(_routed_mlp_forward_train_cpu)


@routed_mlp_forward_train.register_fake
def _(x, weights, biases, ints, tables, example_ids, activation, activation_param, output_activation,
      output_activation_param):
    # Uncached: under tracing the shapes may be symbolic.
    spec = MLPSpec([x.shape[-1]] + [w.shape[1] for w in weights], activation, output_activation, activation_param,
                   output_activation_param)
    M, B = ints[0], x.shape[-2]
    return x.new_empty((M, B, spec.widths[-1])), [x.new_empty((M * n,)) for n in spec.saved_numels(B)]


def _routed_mlp_backward_cpu(dy: Tensor, x: Tensor, y: Tensor, saved: List[Tensor], weights: List[Tensor],
                        biases: List[Tensor], ints: List[int], tables: List[Tensor], example_ids: Tensor,
                        activation: str, activation_param: float, output_activation: str,
                        output_activation_param: float, need_dx: bool) -> tuple[Tensor, List[Tensor], List[Tensor]]:
    spec = _spec(x, weights, activation, activation_param, output_activation, output_activation_param)
    M, B = ints[0], x.shape[-2]
    dy = dy.contiguous()
    dx = x.new_empty((M, B, spec.widths[0])) if need_dx else x.new_empty((0,))
    dws = [torch.empty_like(w) for w in weights]
    dbs = [torch.empty_like(b) for b in biases]
    _C.routed_mlp_backward_cpu(_routing_tuple(ints, tables, example_ids), _DTYPE_CODES[x.dtype], spec.widths,
                               *spec.codes(), B, _ptr(x), _x_stride(x), _ptr(y), [_ptr(s) for s in saved], _ptr(dy),
                               [_ptr(w) for w in weights], [_ptr(b) for b in biases], _ptr(dx),
                               [_ptr(w) for w in dws], [_ptr(b) for b in dbs] if biases else [0] * len(weights))
    return dx, dws, dbs


routed_mlp_backward = torch.library.custom_op("perceptrons::routed_mlp_backward", mutates_args=(),
                                              device_types="cpu")(_routed_mlp_backward_cpu)


@routed_mlp_backward.register_fake
def _(dy, x, y, saved, weights, biases, ints, tables, example_ids, activation, activation_param, output_activation,
      output_activation_param, need_dx):
    M, B = ints[0], x.shape[-2]
    dx = x.new_empty((M, B, x.shape[-1])) if need_dx else x.new_empty((0,))
    return dx, [torch.empty_like(w) for w in weights], [torch.empty_like(b) for b in biases]


# ---- composite (torch ops) -----------------------------------------------------------------------

def owner_maps(routing: Routing, widths, step: int, batch_id: int, example_ids: Optional[Tensor], batch: int,
               device) -> List[Tensor]:
    """The owner maps of every layer as int64 tensors (routing.Routing.owners)."""
    if routing.per == "example":
        example = np.arange(batch) if example_ids is None or example_ids.numel() == 0 else example_ids.cpu().numpy()
    else:
        example = batch_id
    return [torch.from_numpy(routing.owners(l, widths[l + 1], widths[l], step, example)).to(device)
            for l in range(len(widths) - 1)]


def composite_routed_forward(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Optional[Tensor]],
                             owners: Sequence[Tensor], activation: str, activation_param: float,
                             output_activation: str, output_activation_param: float) -> Tensor:
    """The routed MLP in differentiable torch ops. x: (M, B, in) or (B, in); owners[l]: (M, out, in + 1)
    or (B, M, out, in + 1). Returns (M, B, out)."""
    M = weights[0].shape[0]
    h = x.expand(M, *x.shape) if x.dim() == 2 else x
    n = len(weights)
    for l, (w, b) in enumerate(zip(weights, biases)):
        own = owners[l]
        out, inp = w.shape[1], w.shape[2]
        j = torch.arange(out, device=w.device).view(out, 1)
        i = torch.arange(inp, device=w.device).view(1, inp)
        wt = w[own[..., :inp], j, i]                       # (M, out, in) or (B, M, out, in)
        if own.dim() == 3:
            z = torch.bmm(h, wt.transpose(1, 2))
            if b is not None:
                z = z + b[own[..., inp], j[:, 0]].unsqueeze(1)
        else:
            z = torch.einsum("mbi,bmoi->mbo", h, wt)
            if b is not None:
                z = z + b[own[..., inp], j[:, 0]].transpose(0, 1)
        last = l == n - 1
        h = _act_torch(output_activation if last else activation, z,
                       output_activation_param if last else activation_param)
    return h


# ---- autograd -----------------------------------------------------------------------------------

@cache_forward_signature
class RoutedMLPFunction(torch.autograd.Function):
    """y = routed MLP(x); inputs: x, the routing (ints, tables, example ids, and the Routing object for
    the composite path), the activation config, n, then n weights and n or 0 biases."""

    @staticmethod
    def forward(x, ints, tables, example_ids, routing, config, n, *params):
        weights, biases = list(params[:n]), list(params[n:])
        y, saved = call_op(routed_mlp_forward_train, _routed_mlp_forward_train_cpu, x.device,
                           (x, example_ids, *tables, *params), x,
                           weights, biases, ints, tables, example_ids, *config)
        return y, *saved

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ints, tables, example_ids, routing, config, n, *params = inputs
        y, *saved = output
        ctx.ints, ctx.config, ctx.n, ctx.routing = ints, config, n, routing
        ctx.n_biases = len(params) - n
        ctx.save_for_backward(x, y, example_ids, *tables, *params, *saved)
        ctx.mark_non_differentiable(*saved)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, dy, *_dsaved):
        x, y, example_ids, *rest = ctx.saved_tensors
        n, nb = ctx.n, ctx.n_biases
        tables, weights, biases, saved = rest[:4], rest[4:4 + n], rest[4 + n:4 + n + nb], rest[4 + n + nb:]
        need_dx = ctx.needs_input_grad[0]
        if dy is None:
            dy = torch.zeros_like(y)
        if torch.is_grad_enabled():
            # A graph of this backward is wanted (create_graph=True): differentiate the composite.
            dx, dws, dbs = _composite_grads(ctx, dy, x, list(weights), list(biases), example_ids, need_dx)
        else:
            dx, dws, dbs = call_op(routed_mlp_backward, _routed_mlp_backward_cpu, x.device, (dy, x, *rest), dy, x, y,
                                   list(saved), list(weights), list(biases), ctx.ints, list(tables), example_ids,
                                   *ctx.config, need_dx)
            if need_dx and x.dim() == 2:
                dx = dx.sum(0)                 # the same batch fed every stream
        return (dx if need_dx else None, None, None, None, None, None, None, *dws, *dbs)


def _composite_grads(ctx, dy, x, weights, biases, example_ids, need_dx):
    widths = [x.shape[-1]] + [w.shape[1] for w in weights]
    _, _, _, _, step, batch_id, _ = ctx.ints
    # step is already the key (0 when quenched); owners() maps it through step_key again, which keeps it.
    owners = owner_maps(ctx.routing, widths, step, batch_id, example_ids, x.shape[-2], x.device)
    with torch.enable_grad():
        xs = x if (x.requires_grad or not need_dx) else x.detach().requires_grad_(True)
        y = composite_routed_forward(xs, weights, biases if biases else [None] * len(weights), owners, *ctx.config)
        inputs = ([xs] if need_dx else []) + weights + biases
        wanted = [t for t in inputs if t.requires_grad]
        got = dict(zip(map(id, wanted), torch.autograd.grad(y, wanted, dy, create_graph=True, allow_unused=True)))
    grads = [got.get(id(t)) for t in inputs]
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]
    dx = grads[0] if need_dx else None
    rest = grads[1:] if need_dx else grads
    return dx, rest[:len(weights)], rest[len(weights):]
