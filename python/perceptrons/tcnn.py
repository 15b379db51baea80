"""tiny-cuda-nn's PyTorch API on perceptrons' kernels: ``import perceptrons.tcnn as tcnn``.

Code written for tiny-cuda-nn's bindings (``import tinycudann as tcnn``) runs unchanged, on the CPU
(float32 and float64, fused CPU kernels: the encoding runs inside the MLP kernel's input stage) and on
CUDA (perceptrons' CUDA path). Three modules, with tcnn's constructors and attributes:

    Network(n_input_dims, n_output_dims, network_config, seed=1337)
    NetworkWithInputEncoding(n_input_dims, n_output_dims, encoding_config, network_config, seed=1337)
    Encoding(n_input_dims, encoding_config, seed=1337, dtype=None)

Each holds ONE flat parameter ``params`` with tcnn's layout and state_dict key ("params"), so a tcnn
checkpoint of a supported configuration loads with load_state_dict. The semantics below were read from
NVlabs/tiny-cuda-nn (file names given; no code copied):

- Networks have no biases. ``Network`` is ``NetworkWithInputEncoding`` with an "Identity" encoding
  (src/cpp_api.cu: create_network). The encoding's output is padded to a multiple of 16 columns
  (network_with_input_encoding.h: set_alignment(minimum_alignment(network)); 16 for both MLPs,
  REQUIRED_ALIGNMENT in networks/fully_fused_mlp.h and networks/cutlass_mlp.h) and the padded columns
  hold 1 (encodings/identity.h, frequency.h, oneblob.h write 1 there): with a bias-free first layer
  they act as its bias. Nothing is padded when the width is already a multiple of 16.
- Layers (src/fully_fused_mlp.cu and src/cutlass_mlp.cu, constructors): (n_neurons, in_padded), then
  n_hidden_layers - 1 times (n_neurons, n_neurons), then (out_padded, n_neurons), out_padded = n_output_dims
  rounded up to 16; CutlassMLP with n_hidden_layers = 0 is the single matrix (out_padded, in_padded).
  ``params`` holds them one after the other, each ROW-MAJOR (out, in) (GPUMatrix<T, RM>(out, in) in
  set_params_impl / initialize_params; the fused kernel reads weight (k, n) at n * WIDTH + k): the same
  layout as nn.Linear.weight. The output is sliced to n_output_dims (bindings/torch/tinycudann/
  modules.py); the padded output rows are never read, so they get zero gradient, as in tcnn.
- Initialisation (src/fully_fused_mlp.cu / src/cutlass_mlp.cu: initialize_params; gpu_matrix.h):
  Xavier-uniform per matrix on the padded shapes, U(-s, s) with s = sqrt(6 / (fan_in + fan_out)).
  With activation "Sine", SIREN's: first matrix s = 30 / fan_in, the others s = sqrt(6 / fan_in).
  tcnn draws from pcg32 on the host; this module draws from a torch.Generator seeded with ``seed``,
  so the values are not tcnn's bit for bit (the distribution is the same).
- Config keys are read like nlohmann::json's ``value(key, default)``: unknown keys are ignored, names
  are case-insensitive (equals_case_insensitive / to_lower). Defaults (src/network.cu, src/encoding.cu):
  network otype "MLP" (= CutlassMLP), activation "ReLU", output_activation "None", n_neurons 128,
  n_hidden_layers 5; encoding otype "OneBlob", n_bins 16, n_frequencies 12, degree 4, scale 1, offset 0.
- Activations (include/tiny-cuda-nn/common_device.h, warp_activation; DOCUMENTATION.md): LeakyReLU's
  slope is 0.01, Sine is sin(x) (no w0: SIREN's 30 is folded into the first layer's init), Softplus
  is log(1 + exp(10 x)) / 10 (K_ACT = 10: perceptrons' softplus with beta 10). Squareplus (also
  scaled by K_ACT) has no perceptrons kernel and is refused. "SiLU" is accepted as in tcnn's pull
  request #508 (x * sigmoid(x)); released tcnn rejects it.

Differences from tcnn, on purpose: parameters and outputs are float32 (tcnn computes and returns
float16 on most GPUs; call ``.half()`` on CUDA for perceptrons' float16 tensor-core kernels, or
``.double()`` for float64 on the CPU); second derivatives work through the networks (tcnn: grid
encodings only); Sine and SiLU hidden layers also run under "FullyFusedMLP" (tcnn's fused kernel
raises "Unsupported activation." for them at run time); any batch size, no padding to 128 rows;
inputs of shape (..., n_input_dims) are accepted (tcnn: 2-d only).
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
from torch import nn

from . import _C
from .kernels.encodings import EncodingPart, EncodingSpec
from .ops.encodings import encode
from .ops.mlp import fused_mlp

__all__ = ["Network", "NetworkWithInputEncoding", "Encoding", "parse_network_config", "parse_encoding_config"]

ALIGNMENT = 16  # REQUIRED_ALIGNMENT of FullyFusedMLP and CutlassMLP
FULLY_FUSED_WIDTHS = (16, 32, 64, 128)  # src/network.cu: the FullyFusedMLP widths tcnn instantiates

# tcnn activation name (lower case) -> (perceptrons activation, its parameter)
_ACTIVATIONS = {
    "none": ("none", None),
    "relu": ("relu", None),
    "leakyrelu": ("leaky_relu", 0.01),
    "exponential": ("exp", None),
    "sine": ("sine", 1.0),
    "sigmoid": ("sigmoid", None),
    "softplus": ("softplus", 10.0),
    "tanh": ("tanh", None),
    "silu": ("silu", None),
}
_ACTIVATION_NAMES = "None, ReLU, LeakyReLU, Exponential, Sine, Sigmoid, Softplus, Tanh, SiLU"
_NETWORKS = {"fullyfusedmlp": "FullyFusedMLP", "megakernelmlp": "FullyFusedMLP", "cutlassmlp": "CutlassMLP",
             "mlp": "CutlassMLP"}
_NETWORK_NAMES = "FullyFusedMLP (alias MegakernelMLP), CutlassMLP (alias MLP)"
_ENCODING_NAMES = "Identity, Frequency, SphericalHarmonics, OneBlob, Composite"
# tcnn encodings without a perceptrons implementation (src/encoding.cu: register_builtin_encodings)
_TCNN_ONLY_ENCODINGS = {"grid", "hashgrid", "densegrid", "tiledgrid", "trianglewave", "empty", "oneblobfrequency",
                        "nrc"}
SH_MAX_DEGREE = _C.ENCODING_MAX_SH_DEGREE
TCNN_SH_MAX_DEGREE = 8


# ---- config parsing (pure functions) ---------------------------------------------------------------

def _check_mapping(config, where):
    if not isinstance(config, Mapping):
        raise TypeError(f"{where}: expected a dict (a tiny-cuda-nn JSON config), got {type(config).__name__}")


def _get_str(config, key, default, where):
    value = config.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{where}[{key!r}]: expected a string, got {value!r}")
    return value


def _get_int(config, key, default, where, low, high=None):
    value = config.get(key, default)
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if isinstance(value, float) and value.is_integer():  # JSON numbers may come as 64.0
        value, ok = int(value), True
    if not ok or value < low or (high is not None and value > high):
        want = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise ValueError(f"{where}[{key!r}]: expected {want}, got {value!r}")
    return int(value)


def _get_float(config, key, default, where):
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{where}[{key!r}]: expected a finite number, got {value!r}")
    return float(value)


def _activation(config, key, default, where):
    name = _get_str(config, key, default, where)
    if name.lower() not in _ACTIVATIONS:
        why = ("has no perceptrons kernel" if name.lower() == "squareplus"
               else "is not a tiny-cuda-nn activation")
        raise ValueError(f"{where}[{key!r}]: activation {name!r} {why}; supported: {_ACTIVATION_NAMES}")
    return _ACTIVATIONS[name.lower()]


@dataclass(frozen=True)
class MLPConfig:
    """A parsed network config: tcnn's MLP type and the perceptrons activations it maps to."""
    otype: str  # "FullyFusedMLP" or "CutlassMLP"
    n_neurons: int
    n_hidden_layers: int
    activation: str
    activation_param: Optional[float]
    output_activation: str
    output_activation_param: Optional[float]

    def matrix_shapes(self, in_padded: int, n_output_dims: int):
        """(out, in) of each weight matrix, in the order of the parameter vector."""
        out_padded = -(-n_output_dims // ALIGNMENT) * ALIGNMENT
        if self.n_hidden_layers == 0:
            return [(out_padded, in_padded)]
        w = self.n_neurons
        return [(w, in_padded)] + [(w, w)] * (self.n_hidden_layers - 1) + [(out_padded, w)]


def parse_network_config(config, where="network_config") -> MLPConfig:
    """tcnn's network config (src/network.cu: select_network / create_network) as an MLPConfig."""
    _check_mapping(config, where)
    otype = _get_str(config, "otype", "MLP", where)
    if otype.lower() not in _NETWORKS:
        raise ValueError(f"{where}['otype']: network {otype!r} is not supported; supported: {_NETWORK_NAMES}")
    otype = _NETWORKS[otype.lower()]
    fused = otype == "FullyFusedMLP"
    n_neurons = _get_int(config, "n_neurons", 128, where, 1)
    n_hidden_layers = _get_int(config, "n_hidden_layers", 5, where, 1 if fused else 0)
    if fused and n_neurons not in FULLY_FUSED_WIDTHS:
        raise ValueError(f"{where}['n_neurons']: FullyFusedMLP only supports 16, 32, 64 and 128 neurons "
                         f"(as in tiny-cuda-nn), got {n_neurons}; use otype CutlassMLP for other widths")
    if n_hidden_layers and n_neurons > _C.MLP_MAX_HIDDEN_WIDTH:
        raise ValueError(f"{where}['n_neurons']: perceptrons' kernels take hidden widths up to "
                         f"{_C.MLP_MAX_HIDDEN_WIDTH}, got {n_neurons}")
    act, act_p = _activation(config, "activation", "ReLU", where)
    out_act, out_p = _activation(config, "output_activation", "None", where)
    return MLPConfig(otype, n_neurons, n_hidden_layers, act, act_p, out_act, out_p)


def _parse_leaf(config, otype, n_dims, where) -> EncodingPart:
    kind = otype.lower()
    if kind == "identity":
        return EncodingPart("identity", n_dims, 0, _get_float(config, "scale", 1.0, where),
                            _get_float(config, "offset", 0.0, where))
    if kind == "frequency":
        return EncodingPart("frequency", n_dims,
                            _get_int(config, "n_frequencies", 12, where, 1, _C.ENCODING_MAX_FREQUENCIES))
    if kind == "oneblob":
        n_bins = _get_int(config, "n_bins", 16, where, 1, _C.ENCODING_MAX_BINS)
        if n_bins & (n_bins - 1):
            raise ValueError(f"{where}['n_bins']: OneBlob needs a power of two (as in tiny-cuda-nn), got {n_bins}")
        return EncodingPart("one_blob", n_dims, n_bins)
    # "sphericalharmonics"
    if n_dims != 3:
        raise ValueError(f"{where}: SphericalHarmonics encodes 3-D directions, but it was given {n_dims} "
                         "input dims")
    degree = _get_int(config, "degree", 4, where, 1, TCNN_SH_MAX_DEGREE)
    if degree > SH_MAX_DEGREE:
        raise ValueError(f"{where}['degree']: perceptrons implements SphericalHarmonics degrees 1..{SH_MAX_DEGREE} "
                         f"(tiny-cuda-nn goes up to {TCNN_SH_MAX_DEGREE}), got {degree}")
    return EncodingPart("spherical_harmonics", 3, degree)


def _parse_composite(config, n_dims, where):
    """[(first input column, part)] of a Composite encoding (encodings/composite.h: constructor)."""
    nested = config.get("nested")
    if not isinstance(nested, (list, tuple)) or not nested:
        raise ValueError(f"{where}['nested']: expected a non-empty list of encoding configs, got {nested!r}")
    reduction = _get_str(config, "reduction", "Concatenation", where)
    if reduction.lower() != "concatenation":
        raise ValueError(f"{where}['reduction']: only 'Concatenation' is supported, got {reduction!r}")
    for i, entry in enumerate(nested):
        _check_mapping(entry, f"{where}['nested'][{i}]")
    # As in tcnn: one entry may leave n_dims_to_encode out and gets the dims the others leave, unless
    # some entry places itself with dims_to_encode_begin; entries that encode 0 dims are skipped.
    placed = any("dims_to_encode_begin" in e for e in nested)
    given = sum(_get_int(e, "n_dims_to_encode", 0, f"{where}['nested'][{i}]", 0) for i, e in enumerate(nested))
    if not placed and given > n_dims:
        raise ValueError(f"{where}['nested']: the nested encodings encode {given} dims in total, but the "
                         f"Composite has {n_dims}")
    remaining = None if placed else n_dims - given
    out, begin = [], 0
    for i, entry in enumerate(nested):
        w = f"{where}['nested'][{i}]"
        if "n_dims_to_encode" in entry:
            if "dims_to_encode_begin" in entry:
                begin = _get_int(entry, "dims_to_encode_begin", 0, w, 0)
            n = _get_int(entry, "n_dims_to_encode", 0, w, 0)
        elif remaining is None:
            raise ValueError(f"{w}['n_dims_to_encode']: missing; tiny-cuda-nn derives it (as the input dims "
                             "the other entries leave) for one nested encoding only, and only when no entry "
                             "sets 'dims_to_encode_begin'")
        else:
            n, remaining = remaining, None
        if n > 0:
            if begin + n > n_dims:
                raise ValueError(f"{w}: encodes input dims {begin}..{begin + n - 1}, but the Composite has "
                                 f"{n_dims} dims")
            out += [(begin + c, p) for c, p in _parse_encoding(entry, n, w)]
        begin += n
    return out


def _parse_encoding(config, n_dims, where):
    _check_mapping(config, where)
    otype = _get_str(config, "otype", "OneBlob", where)
    if otype.lower() == "composite":
        return _parse_composite(config, n_dims, where)
    if otype.lower() not in ("identity", "frequency", "oneblob", "sphericalharmonics"):
        why = ("is a tiny-cuda-nn encoding that perceptrons does not implement" if otype.lower() in
               _TCNN_ONLY_ENCODINGS else "is not an encoding perceptrons.tcnn knows")
        raise ValueError(f"{where}['otype']: {otype!r} {why}; supported: {_ENCODING_NAMES}")
    return [(0, _parse_leaf(config, otype, n_dims, where))]


def parse_encoding_config(config, n_input_dims: int, where="encoding_config"):
    """(columns, parts): the input columns the encoding reads, in order (None: all, as they come),
    and its parts (perceptrons.kernels.encodings.EncodingPart), which read those columns one after the
    other. A top-level "n_dims_to_encode" is ignored, as tcnn does (the encoding gets all n_input_dims);
    inside a Composite, inputs no entry reads are dropped."""
    located = _parse_encoding(config, n_input_dims, where)
    if len(located) > _C.ENCODING_MAX_PARTS:
        raise ValueError(f"{where}: {len(located)} nested encodings; perceptrons takes at most "
                         f"{_C.ENCODING_MAX_PARTS}")
    columns = tuple(c for begin, p in located for c in range(begin, begin + p.n_dims))
    parts = tuple(p for _, p in located)
    return (None if columns == tuple(range(n_input_dims)) else columns), parts


# ---- modules -----------------------------------------------------------------------------------------

def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _default_device(device):
    # tcnn creates its parameters on the GPU; here: the GPU when there is one, else the CPU.
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Module(nn.Module):
    """What the three modules share: the flat ``params``, ``seed``, ``dtype``, the input checks."""

    def __init__(self, n_input_dims, initial_params: torch.Tensor, seed, device):
        super().__init__()
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
        self.n_input_dims = n_input_dims
        self.seed = int(seed)
        self.loss_scale = 1.0  # tcnn's float32 value; float16 training wants torch.amp.GradScaler here
        self.params = nn.Parameter(initial_params.to(_default_device(device)), requires_grad=True)

    @property
    def dtype(self) -> torch.dtype:
        return self.params.dtype

    @property
    def n_params(self) -> int:
        return self.params.numel()

    def _input(self, x: torch.Tensor, compute_dtype) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != self.n_input_dims:
            raise ValueError(f"x: expected shape (batch, {self.n_input_dims}) (n_input_dims={self.n_input_dims}), "
                             f"got {tuple(x.shape)}")
        if x.device != self.params.device:  # as tcnn's Module.forward does (with the same warning)
            warnings.warn(f"input is on {x.device} but the module on {self.params.device}; copying it",
                          stacklevel=3)
            x = x.to(self.params.device)
        return x.to(compute_dtype)

    def extra_repr(self) -> str:
        return (f"n_input_dims={self.n_input_dims}, n_output_dims={self.n_output_dims}, seed={self.seed}, "
                f"dtype={self.dtype}, n_params={self.n_params}")


def _initial_weights(shapes, sine: bool, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    chunks = []
    for i, (fan_out, fan_in) in enumerate(shapes):
        if sine:
            bound = 30.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in)
        else:
            bound = math.sqrt(6.0 / (fan_in + fan_out))
        chunks.append((torch.rand(fan_out * fan_in, generator=gen) * 2.0 - 1.0) * bound)
    return torch.cat(chunks)


class _EncodedNetwork(_Module):
    def __init__(self, n_input_dims, n_output_dims, encoding_config, network_config, seed, device):
        n_input_dims = _positive_int("n_input_dims", n_input_dims)
        self.n_output_dims = _positive_int("n_output_dims", n_output_dims)
        self.mlp_config = parse_network_config(network_config)
        self._columns, parts = parse_encoding_config(encoding_config, n_input_dims)
        n_encoded = sum(p.out_features for p in parts)
        in_padded = -(-n_encoded // ALIGNMENT) * ALIGNMENT
        self._spec = EncodingSpec(parts, in_padded - n_encoded)
        self._shapes = self.mlp_config.matrix_shapes(in_padded, self.n_output_dims)
        super().__init__(n_input_dims, _initial_weights(self._shapes, self.mlp_config.activation == "sine", seed), seed,
                         device)

    def weights(self):
        """The weight matrices as (out, in) views into ``params`` (the last one cut to n_output_dims rows:
        tcnn's padded output rows are never read)."""
        out, offset = [], 0
        for rows, cols in self._shapes:
            out.append(self.params[offset:offset + rows * cols].view(rows, cols))
            offset += rows * cols
        out[-1] = out[-1][:self.n_output_dims]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._input(x, self.dtype)
        if self._columns is not None:
            x = x[..., list(self._columns)]
        m = self.mlp_config
        # CPU: the encoding runs inside the fused kernel's input stage. CUDA: fused_mlp encodes in float32
        # with torch ops, then runs the MLP in the parameters' dtype (tensor-core kernels for float16).
        return fused_mlp(x, self.weights(), None, m.activation, m.output_activation, m.activation_param,
                         m.output_activation_param, encoding=self._spec)


class NetworkWithInputEncoding(_EncodedNetwork):
    """An input encoding followed by a bias-free MLP, tiny-cuda-nn's "efficient combo".

    Takes (batch, n_input_dims) and returns (batch, n_output_dims) in the parameters' dtype. ``params``
    (one flat float32 nn.Parameter) holds the weight matrices in tcnn's layout (see the module docstring);
    the supported encodings have no parameters. ``seed`` seeds the Xavier/SIREN initialisation (a
    torch.Generator: same distribution as tcnn, not its pcg32 bits). ``device`` (an addition to tcnn's
    signature): where the parameters live; None = CUDA when available (as tcnn), else the CPU.
    """

    def __init__(self, n_input_dims, n_output_dims, encoding_config, network_config, seed=1337, *, device=None):
        self.encoding_config = encoding_config
        self.network_config = network_config
        super().__init__(n_input_dims, n_output_dims, encoding_config, network_config, seed, device)


class Network(_EncodedNetwork):
    """A bias-free MLP with tiny-cuda-nn's semantics: tcnn's NetworkWithInputEncoding with an "Identity"
    encoding, so the input is padded with columns of 1 up to a multiple of 16. See
    NetworkWithInputEncoding for the arguments and attributes."""

    def __init__(self, n_input_dims, n_output_dims, network_config, seed=1337, *, device=None):
        self.network_config = network_config
        super().__init__(n_input_dims, n_output_dims, {"otype": "Identity"}, network_config, seed, device)


class Encoding(_Module):
    """A parameter-free input encoding with tiny-cuda-nn's semantics: (batch, n_input_dims) ->
    (batch, n_output_dims), n_output_dims unpadded as in tcnn's standalone Encoding (src/cpp_api.cu:
    create_encoding with alignment 0). ``dtype``: the output's dtype, None (float32), float32, float64
    (computed in float64) or float16 (computed in float32, as tcnn computes its inputs). ``params`` is
    empty, as in tcnn for these encodings.
    """

    def __init__(self, n_input_dims, encoding_config, seed=1337, dtype=None, *, device=None):
        n_input_dims = _positive_int("n_input_dims", n_input_dims)
        dtype = torch.float32 if dtype is None else dtype
        if dtype not in (torch.float32, torch.float64, torch.float16):
            raise ValueError(f"dtype: Encoding supports torch.float32, torch.float64 or torch.float16, got {dtype}")
        self.encoding_config = encoding_config
        self._columns, parts = parse_encoding_config(encoding_config, n_input_dims)
        self._spec = EncodingSpec(parts)
        self.n_output_dims = self._spec.out_features
        super().__init__(n_input_dims, torch.zeros(0, dtype=dtype), seed, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._input(x, torch.float64 if self.dtype == torch.float64 else torch.float32)
        if self._columns is not None:
            x = x[..., list(self._columns)]
        return encode(x, self._spec).to(self.dtype)
