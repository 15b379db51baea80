"""RoutedMLP: M copies of an MLP trained on permutation-routed models (the M-cover transform)."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .. import activations as _acts
from ..ops.mlp import fused_mlp
from ..ops.routed import RoutedMLPFunction, composite_routed_forward, owner_maps, routing_ints, sampler_tensors
from ..ops.transforms import forward_mode_active
from ..routing import Routing
from .fused_mlp import layer_widths

INFERENCE_MODES = ("mean", "copy", "vote", "center")


def _no_example_ids() -> Tensor:
    """'No example ids' for the ops (routing keyed on positions in the batch). Made per call, not
    shared: under FakeTensorMode a tensor made outside the mode is refused."""
    return torch.empty(0, dtype=torch.int64)


def _parameters_of(plist: nn.ParameterList) -> list:
    """The parameters of a ParameterList in index order. Iterating the list itself goes through
    ParameterList.__getitem__ and Module.__getattr__ per item: ~25 us per forward for six parameters,
    as much as the routed kernel at small batches; its `_parameters` dict holds the same objects in
    insertion (= index) order, unless an entry left it (a parametrization, pruning): then the slow
    way."""
    params = list(plist._parameters.values())
    return params if len(params) == len(plist) else list(plist)


class RoutedMLP(nn.Module):
    """M copies of y = f_out(W_L ... f(W_1 x + b_1) ... + b_L), trained through routed models.

    In a training forward, stream m evaluates the model whose every routed block (a layer, a unit's
    row or a single weight: `routing`) is read from copy pi(m), with pi a permutation of the copies
    drawn from the mixing kernel Q for that block (per minibatch, or per example with `per='example'`);
    the block's gradient goes back to the copy it was read from. Q = identity is M independent models
    (bit for bit); uniform Q the random M-cover (arXiv:2605.09256; see perceptrons.routing).

    Args:
        M: number of copies.
        in_features, out_features, hidden_features, hidden_layers, activation, output_activation, bias,
            activation_param, output_activation_param: as FusedMLP.
        routing: granularity, 'layer', 'unit' or 'edge'.
        Q: (M, M) doubly stochastic mixing kernel (default: identity), e.g. perceptrons.routing.ring_gaussian.
        sampler: 'auto' (rotation for circulant Q, else Birkhoff), 'rotation', 'birkhoff', 'permanental'.
        per: 'batch' (one permutation per block and minibatch) or 'example'.
        mode: 'annealed' (a fresh cover every training step) or 'quenched' (fixed per batch id / example id).
        seed: 32-bit seed of the routing RNG (the permutations, not the initialisation).
        init: 'independent' (each copy initialised like nn.Linear on its own) or 'identical' (every copy
            starts from copy 0's draw; aligns hidden units, see the research note on unit symmetry).

    Parameters carry the leading copy axis: ``weights[l]`` (M, out, in), ``biases[l]`` (M, out); any
    torch optimizer works, and each entry's optimizer state stays with its copy.

    forward(x, step=None, batch_id=0, example_ids=None): x is (M, B, in) (one batch per stream) or
    (B, in) (the same batch for every stream); returns (M, B, out). `step` keys annealed routing: when
    None, a training forward uses and then advances ``self.step``. `example_ids` (B,) keys per-example
    routing (default: positions in the batch). In eval mode the forward is unrouted (copy m runs its own
    parameters); `predict` combines the copies.
    CPU: float32/float64 kernels (csrc/routed/). CUDA tensors run as torch ops (composite_routed_forward).
    """

    def __init__(self, M: int, in_features: int, out_features: int, hidden_features: Union[int, Sequence[int]] = 64,
                 hidden_layers: int = 2, activation: Optional[str] = "relu", output_activation: Optional[str] = None,
                 bias: bool = True, routing: str = "layer", Q=None, sampler: str = "auto", per: str = "batch",
                 mode: str = "annealed", seed: int = 0, init: str = "independent",
                 activation_param: Optional[float] = None, output_activation_param: Optional[float] = None,
                 device=None, dtype=None):
        super().__init__()
        self.routing = Routing(M, Q, granularity=routing, per=per, mode=mode, sampler=sampler, seed=seed)
        self._identity = Routing(M, None, granularity="layer", per="batch", mode="quenched")
        self.M = self.routing.M
        self.widths = layer_widths(in_features, out_features, hidden_features, hidden_layers)
        self.activation = _acts.canonical(activation, "activation")
        self.output_activation = _acts.canonical(output_activation, "output_activation")
        self.activation_param = _acts.resolve_param(self.activation, activation_param, "activation_param")
        self.output_activation_param = _acts.resolve_param(self.output_activation, output_activation_param,
                                                           "output_activation_param")
        if init not in ("independent", "identical"):
            raise ValueError(f"init: expected 'independent' or 'identical', got {init!r}")
        kw = dict(device=device, dtype=dtype)
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(self.M, o, i, **kw)) for i, o in zip(self.widths[:-1], self.widths[1:])])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.empty(self.M, o, **kw)) for o in self.widths[1:]]) if bias else None
        self.init = init
        self.step = 0
        self.reset_parameters()

    def reset_parameters(self):
        """nn.Linear's initialisation, per copy (or copy 0's draw for all with init='identical')."""
        with torch.no_grad():
            for l, w in enumerate(self.weights):
                bound = 1.0 / math.sqrt(w.shape[2])
                w.uniform_(-bound, bound)
                if self.biases is not None:
                    self.biases[l].uniform_(-bound, bound)
                if self.init == "identical":
                    w.copy_(w[:1].expand_as(w))
                    if self.biases is not None:
                        self.biases[l].copy_(self.biases[l][:1].expand_as(self.biases[l]))

    @property
    def config(self):
        return (self.activation, self.activation_param, self.output_activation, self.output_activation_param)

    def _params(self):
        """(weights, biases) as lists ([] for no biases)."""
        return _parameters_of(self.weights), _parameters_of(self.biases) if self.biases is not None else []

    def _check_x(self, x: Tensor, w0: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dtype != w0.dtype:
            raise TypeError(f"x: dtype {x.dtype} does not match the parameters' dtype {w0.dtype}")
        if x.device != w0.device:
            raise RuntimeError(f"x: is on {x.device} but the parameters are on {w0.device}")
        n_in = self.widths[0]
        if x.dim() == 2 and x.shape[1] == n_in:
            return x.contiguous()
        if x.dim() == 3 and x.shape[0] == self.M and x.shape[2] == n_in:
            return x.contiguous()
        raise ValueError(f"x: expected shape ({self.M}, batch, {n_in}) (one batch per copy, M = {self.M}) or "
                         f"(batch, {n_in}) (the same batch for every copy), got {tuple(x.shape)}")

    def _example_ids(self, example_ids, batch: int) -> Tensor:
        if example_ids is None:
            return _no_example_ids()
        ids = torch.as_tensor(example_ids)
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise TypeError(f"example_ids: expected an integer tensor, got {ids.dtype}")
        if ids.shape != (batch,):
            raise ValueError(f"example_ids: expected shape ({batch},), one id per example, got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= 2 ** 32):
            raise ValueError("example_ids: expected ids in [0, 2**32)")
        return ids.to(device="cpu", dtype=torch.int64).contiguous()

    def _routed(self, x: Tensor, weights, biases, routing: Routing, step: int, batch_id: int,
                example_ids: Tensor) -> Tensor:
        if x.device.type != "cpu" or forward_mode_active(x, *weights, *biases):  # ops/transforms.py
            owners = owner_maps(routing, self.widths, step, batch_id, example_ids, x.shape[-2], x.device)
            return composite_routed_forward(x, weights, biases or [None] * len(weights), owners, *self.config)
        ints = routing_ints(routing, step, batch_id)
        return RoutedMLPFunction.apply(x, ints, sampler_tensors(routing), example_ids, routing, self.config,
                                       len(weights), *weights, *biases)[0]

    def forward(self, x: Tensor, step: Optional[int] = None, batch_id: int = 0, example_ids=None) -> Tensor:
        weights, biases = self._params()
        x = self._check_x(x, weights[0])
        if not self.training:
            return self._routed(x, weights, biases, self._identity, 0, 0, _no_example_ids())
        if step is None:
            step = self.step
            # Into the instance dict directly: nn.Module.__setattr__ first searches the parameter,
            # buffer and submodule dicts (~3 us, on a step that costs ~400 us at small sizes).
            self.__dict__["step"] = step + 1
        ids = self._example_ids(example_ids, x.shape[-2])
        return self._routed(x, weights, biases, self.routing, int(step), int(batch_id), ids)

    def copy_forward(self, x: Tensor, m: int) -> Tensor:
        """Copy m alone (its own parameters, no routing) on x (..., in)."""
        if not 0 <= m < self.M:
            raise ValueError(f"m: expected a copy index in [0, {self.M}), got {m}")
        return fused_mlp(x, [w[m] for w in self.weights],
                         None if self.biases is None else [b[m] for b in self.biases], *self._fused_config())

    def center_forward(self, x: Tensor) -> Tensor:
        """The 'center': one model whose parameters are the mean over copies."""
        return fused_mlp(x, [w.mean(0) for w in self.weights],
                         None if self.biases is None else [b.mean(0) for b in self.biases], *self._fused_config())

    def _fused_config(self):
        return (self.activation, self.output_activation, self.activation_param, self.output_activation_param)

    @torch.no_grad()
    def predict(self, x: Tensor, mode: str = "mean", copy: int = 0) -> Tensor:
        """Inference from the copies on x (B, in): 'mean' (mean of the M copies' outputs), 'copy' (copy
        `copy` alone), 'vote' (majority of the copies' argmax classes, ties to the lowest class; returns
        int64 (B,)), 'center' (the model with the mean parameters)."""
        if mode not in INFERENCE_MODES:
            raise ValueError(f"mode: expected one of {', '.join(map(repr, INFERENCE_MODES))}, got {mode!r}")
        if x.dim() != 2:
            raise ValueError(f"x: expected shape (batch, {self.widths[0]}), got {tuple(x.shape)}")
        if mode == "copy":
            return self.copy_forward(x, copy)
        if mode == "center":
            return self.center_forward(x)
        weights, biases = self._params()
        y = self._routed(self._check_x(x, weights[0]), weights, biases, self._identity, 0, 0, _no_example_ids())
        if mode == "mean":
            return y.mean(0)
        classes = y.argmax(-1)                                    # (M, B)
        counts = torch.nn.functional.one_hot(classes, y.shape[-1]).sum(0)   # (B, C)
        return counts.argmax(-1)

    def extra_repr(self):
        return (f"M={self.M}, widths={self.widths}, activation={self.activation!r}, "
                f"output_activation={self.output_activation!r}, bias={self.biases is not None}, {self.routing!r}")
