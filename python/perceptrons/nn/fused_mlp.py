"""FusedMLP: a drop-in multi-layer perceptron whose whole forward and backward run as one fused kernel."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import nn

from .. import activations as _acts
from ..kernels import MLPSpec
from ..ops.mlp import fused_mlp
from .activations import Exp, Sine


def _activation_module(name: str, param: float) -> nn.Module:
    return {
        "none": lambda: nn.Identity(),
        "relu": lambda: nn.ReLU(),
        "leaky_relu": lambda: nn.LeakyReLU(param),
        "sigmoid": lambda: nn.Sigmoid(),
        "tanh": lambda: nn.Tanh(),
        "softplus": lambda: nn.Softplus(beta=param, threshold=20.0),
        "silu": lambda: nn.SiLU(),
        "sine": lambda: Sine(param),
        "exp": lambda: Exp(),
    }[name]()


def _activation_of(module: nn.Module, where: str):
    """(name, param) for an activation module, or None if the module is not an activation."""
    if isinstance(module, nn.Identity):
        return "none", None
    if isinstance(module, nn.ReLU):
        return "relu", None
    if isinstance(module, nn.LeakyReLU):
        return "leaky_relu", float(module.negative_slope)
    if isinstance(module, nn.Sigmoid):
        return "sigmoid", None
    if isinstance(module, nn.Tanh):
        return "tanh", None
    if isinstance(module, nn.Softplus):
        if float(module.threshold) != 20.0:
            raise ValueError(f"{where}: nn.Softplus with threshold={module.threshold} is not supported "
                             "(the fused kernels use torch's default threshold 20)")
        return "softplus", float(module.beta)
    if isinstance(module, nn.SiLU):
        return "silu", None
    if isinstance(module, Sine):
        return "sine", module.w0
    if isinstance(module, Exp):
        return "exp", None
    return None


def layer_widths(in_features, out_features, hidden_features, hidden_layers):
    """[in, hidden..., out] from the constructor arguments of the MLP modules, validated."""
    if isinstance(hidden_features, int):
        if hidden_layers < 0:
            raise ValueError(f"hidden_layers: expected >= 0, got {hidden_layers}")
        hidden = [hidden_features] * hidden_layers
    else:
        hidden = [int(h) for h in hidden_features]
    widths = [in_features, *hidden, out_features]
    for name, w in zip(["in_features", *[f"hidden_features[{i}]" for i in range(len(hidden))], "out_features"],
                       widths):
        if not isinstance(w, int) or w < 1:
            raise ValueError(f"{name}: expected a positive integer, got {w!r}")
    from .. import _C
    for h in hidden:
        if h > _C.MLP_MAX_HIDDEN_WIDTH:
            raise ValueError(f"hidden_features: width {h} is not supported; the fused kernels take hidden "
                             f"widths up to {_C.MLP_MAX_HIDDEN_WIDTH}")
    return widths


def _layer_tensor(layer: nn.Module, name: str):
    """layer.<name>, read from the layer's parameter dict where it holds it: going through
    nn.Module.__getattr__ for each layer cost ~7 us a forward for a 3-layer MLP, about half the kernel
    at 64 rows. A parametrized tensor (torch.nn.utils.parametrize, parametrizations.weight_norm) is not
    in the dict and is read as an attribute, which computes it."""
    t = layer._parameters.get(name) if not hasattr(type(layer), name) else None
    return t if t is not None else getattr(layer, name)


def _layer_tensors(layers: nn.ModuleList, name: str) -> list:
    """layer.<name> of every layer (see _layer_tensor)."""
    return [_layer_tensor(layer, name) for layer in layers._modules.values()]


def _layer_weights_and_biases(layers: nn.ModuleList):
    """(weights, biases) of the layers in one pass over them (forward reads both on every call).

    The fused kernel never calls the layers, so their forward hooks would not run: a hook-based
    reparametrization (the old torch.nn.utils.weight_norm recomputes .weight in a forward pre-hook)
    would silently leave a stale weight. A layer with hooks is refused instead."""
    ws, bs = [], []
    for i, layer in enumerate(layers._modules.values()):
        if layer._forward_pre_hooks or layer._forward_hooks:
            raise RuntimeError(f"layers[{i}]: has forward hooks, which FusedMLP cannot run (its kernel never calls "
                               "the layers; torch.nn.utils.weight_norm is one); for weight normalisation use "
                               "torch.nn.utils.parametrizations.weight_norm, which FusedMLP supports")
        if type(layer) is nn.Linear:  # no class attribute shadows the parameters (hasattr costs ~0.5 us)
            p = layer._parameters
            w, b = p.get("weight"), p.get("bias")
            ws.append(w if w is not None else layer.weight)
            bs.append(b if b is not None else layer.bias)
        else:
            ws.append(_layer_tensor(layer, "weight"))
            bs.append(_layer_tensor(layer, "bias"))
    return ws, bs


class FusedMLP(nn.Module):
    """y = f_out(W_L ... f(W_1 x + b_1) ... + b_L), all layers in one fused kernel.

    Args:
        in_features, out_features: input and output widths (any positive size).
        hidden_features: width of every hidden layer, or a sequence of widths (one per hidden layer).
        hidden_layers: number of hidden layers (ignored when hidden_features is a sequence); 0 gives
            a single linear layer.
        activation: hidden activation: none, relu, leaky_relu, sigmoid, tanh, softplus, silu, sine, exp.
        output_activation: activation of the last layer (same set; None means none).
        bias: whether the layers have biases.
        activation_param / output_activation_param: leaky_relu's negative slope (0.01), softplus's
            beta (1), sine's w0 (30); None takes the default.

    Parameters follow nn.Linear: ``layers[l].weight`` is (out, in), ``layers[l].bias`` is (out,),
    initialised as nn.Linear does (SIREN's initialisation when activation is "sine").
    Inputs are (..., in_features) on the module's device and in its dtype (never moved or cast):
    float32/float64 on the CPU (fused CPU kernels); float16/bfloat16 on CUDA (fused tensor-core kernels,
    float32 accumulation; hidden widths 16/32/64/128, all equal); other CUDA configurations run as torch
    ops (see perceptrons.ops.mlp.cuda_path). For float16 training, scale the loss as for any float16 torch
    model (torch.amp.GradScaler): gradients are stored in float16 between layers.
    """

    def __init__(self, in_features: int, out_features: int, hidden_features: Union[int, Sequence[int]] = 64,
                 hidden_layers: int = 2, activation: Optional[str] = "relu", output_activation: Optional[str] = None,
                 bias: bool = True, device=None, dtype=None, activation_param: Optional[float] = None,
                 output_activation_param: Optional[float] = None):
        super().__init__()
        widths = layer_widths(in_features, out_features, hidden_features, hidden_layers)
        if dtype is not None and dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            raise TypeError(f"dtype: expected torch.float32, float64, float16 or bfloat16, got {dtype}")
        self.in_features = in_features
        self.out_features = out_features
        spec = MLPSpec(widths, activation, output_activation, activation_param, output_activation_param)
        self.widths = spec.widths
        self.activation, self.activation_param = spec.activation, spec.activation_param
        self.output_activation, self.output_activation_param = spec.output_activation, spec.output_activation_param
        biases = [bias] * (len(widths) - 1) if isinstance(bias, bool) else [bool(b) for b in bias]
        if len(biases) != len(widths) - 1:
            raise ValueError(f"bias: expected a bool or one bool per layer ({len(widths) - 1}), got {len(biases)}")
        self.layers = nn.ModuleList(
            nn.Linear(widths[l], widths[l + 1], bias=biases[l], device=device, dtype=dtype)
            for l in range(len(widths) - 1))
        if self.activation == "sine":
            self._siren_init()

    @torch.no_grad()
    def _siren_init(self):
        # Sitzmann et al. 2020: first layer U(-1/in, 1/in), later layers U(-sqrt(6/in)/w0, sqrt(6/in)/w0).
        w0 = self.activation_param
        for l, layer in enumerate(self.layers):
            fan_in = layer.weight.shape[1]
            bound = 1.0 / fan_in if l == 0 else math.sqrt(6.0 / fan_in) / w0
            layer.weight.uniform_(-bound, bound)

    @property
    def weights(self):
        return _layer_tensors(self.layers, "weight")

    @property
    def biases(self):
        return _layer_tensors(self.layers, "bias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, biases = _layer_weights_and_biases(self.layers)
        return fused_mlp(x, weights, biases, self.activation, self.output_activation, self.activation_param,
                         self.output_activation_param)

    def extra_repr(self):
        s = f"widths={self.widths}, activation={self.activation!r}"
        if self.activation in _acts.DEFAULT_PARAMS:
            s += f"({self.activation_param:g})"
        s += f", output_activation={self.output_activation!r}"
        if self.output_activation in _acts.DEFAULT_PARAMS:
            s += f"({self.output_activation_param:g})"
        return s

    # ---- conversion to and from nn.Sequential ----------------------------------------------------

    @classmethod
    def from_sequential(cls, seq: nn.Sequential) -> "FusedMLP":
        """Builds a FusedMLP computing the same function as ``seq`` (its parameters are copied).

        ``seq`` must be Linear (act Linear)* [out_act], with one activation type (and parameter) for
        every hidden layer; activations: Identity, ReLU, LeakyReLU, Sigmoid, Tanh, Softplus, SiLU,
        perceptrons.nn.Sine, perceptrons.nn.Exp.
        """
        if not isinstance(seq, nn.Sequential):
            raise TypeError(f"seq: expected an nn.Sequential, got {type(seq).__name__}")
        mods = list(seq)
        linears, hidden_acts, out_act = [], [], ("none", None)
        i = 0
        while i < len(mods):
            m = mods[i]
            if not isinstance(m, nn.Linear):
                raise ValueError(f"seq[{i}]: expected nn.Linear, got {type(m).__name__}")
            linears.append(m)
            act = _activation_of(mods[i + 1], f"seq[{i + 1}]") if i + 1 < len(mods) else None
            if i + 1 < len(mods) and act is None and not isinstance(mods[i + 1], nn.Linear):
                raise ValueError(f"seq[{i + 1}]: {type(mods[i + 1]).__name__} is not supported by FusedMLP "
                                 "(expected nn.Linear or an activation module)")
            nxt = i + (2 if act is not None else 1)
            if nxt < len(mods):
                hidden_acts.append((act or ("none", None), i + 1))
            else:
                out_act = act or ("none", None)
            i = nxt
        if not linears:
            raise ValueError("seq: contains no nn.Linear")
        for k in range(1, len(linears)):
            if linears[k].in_features != linears[k - 1].out_features:
                raise ValueError(f"seq: layer {k} expects {linears[k].in_features} inputs but the previous "
                                 f"layer gives {linears[k - 1].out_features}")
        hidden_name, hidden_param = ("relu", None)
        if hidden_acts:
            (hidden_name, hidden_param), _ = hidden_acts[0]
            for (name, param), idx in hidden_acts[1:]:
                if (name, param) != (hidden_name, hidden_param):
                    raise ValueError(f"seq[{idx}]: every hidden activation must be the same for FusedMLP; "
                                     f"found {name!r} after {hidden_name!r}")
        w0 = linears[0].weight
        model = cls(linears[0].in_features, linears[-1].out_features,
                    [lin.out_features for lin in linears[:-1]], activation=hidden_name,
                    output_activation=out_act[0], bias=[lin.bias is not None for lin in linears],
                    device=w0.device, dtype=w0.dtype, activation_param=hidden_param,
                    output_activation_param=out_act[1])
        with torch.no_grad():
            for dst, src in zip(model.layers, linears):
                dst.weight.copy_(src.weight)
                if src.bias is not None:
                    dst.bias.copy_(src.bias)
        return model

    def to_sequential(self) -> nn.Sequential:
        """The same function as an nn.Sequential of nn.Linear and activation modules (parameters copied)."""
        mods = []
        n = len(self.layers)
        for l, layer in enumerate(self.layers):
            lin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                            device=layer.weight.device, dtype=layer.weight.dtype)
            with torch.no_grad():
                lin.weight.copy_(layer.weight)
                if layer.bias is not None:
                    lin.bias.copy_(layer.bias)
            mods.append(lin)
            if l < n - 1:
                mods.append(_activation_module(self.activation, self.activation_param))
            elif self.output_activation != "none":
                mods.append(_activation_module(self.output_activation, self.output_activation_param))
        return nn.Sequential(*mods)
