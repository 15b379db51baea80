"""numpy front of the fused-MLP CPU kernels."""
from __future__ import annotations

import numpy as np

from .. import _C
from .. import activations as _acts
from ._common import DTYPES as _DTYPES
from ._common import check_array as _check_array
from ._common import input_matrix, ptr as _ptr


class MLPSpec:
    """Validated description of a fused MLP call: widths, activations and their parameters."""

    def __init__(self, widths, activation="relu", output_activation=None, activation_param=None,
                 output_activation_param=None):
        widths = [int(w) for w in widths]
        if len(widths) < 2:
            raise ValueError(f"widths: expected at least [in, out], got {widths}")
        if len(widths) - 1 > _C.MLP_MAX_LAYERS:
            raise ValueError(f"widths: at most {_C.MLP_MAX_LAYERS} layers are supported, got {len(widths) - 1}")
        for i, w in enumerate(widths):
            if w < 1:
                raise ValueError(f"widths[{i}]: expected a positive width, got {w}")
        for i, w in enumerate(widths[1:-1], start=1):
            if w > _C.MLP_MAX_HIDDEN_WIDTH:
                raise ValueError(f"widths[{i}]: hidden width {w} is not supported; the fused kernels take "
                                 f"hidden widths up to {_C.MLP_MAX_HIDDEN_WIDTH}")
        self.widths = widths
        self.activation = _acts.canonical(activation, "activation")
        self.output_activation = _acts.canonical(output_activation, "output_activation")
        self.activation_param = _acts.resolve_param(self.activation, activation_param, "activation_param")
        self.output_activation_param = _acts.resolve_param(self.output_activation, output_activation_param,
                                                           "output_activation_param")

    @property
    def n_layers(self):
        return len(self.widths) - 1

    def codes(self):
        return (_acts.CODES[self.activation], self.activation_param,
                _acts.CODES[self.output_activation], self.output_activation_param)

    def saved_numels(self, batch):
        """Elements the training forward saves for backward, per layer (0 where a layer saves nothing);
        mirrors saved_layer_numel in csrc/mlp/mlp.h. Plain arithmetic, so a symbolic batch passes."""
        align = _C.MLP_SAVED_ALIGN
        out = []
        for l in range(self.n_layers):
            last = l == self.n_layers - 1
            saved = not last or self.output_activation in _acts.NEEDS_PREACTIVATION
            out.append(batch * ((self.widths[l + 1] + align - 1) // align * align) if saved else 0)
        return out

    def backward_needs_output(self):
        return self.output_activation != "none" and self.output_activation not in _acts.NEEDS_PREACTIVATION

    def __repr__(self):
        return (f"MLPSpec(widths={self.widths}, activation={self.activation!r}, "
                f"output_activation={self.output_activation!r})")


def _params(spec, weights, biases, dtype):
    if len(weights) != spec.n_layers:
        raise ValueError(f"weights: expected {spec.n_layers} matrices, got {len(weights)}")
    if biases is not None and len(biases) != spec.n_layers:
        raise ValueError(f"biases: expected {spec.n_layers} vectors (or None entries), got {len(biases)}")
    ws, bs = [], []
    for l in range(spec.n_layers):
        ws.append(_check_array(f"weights[{l}]", weights[l], (spec.widths[l + 1], spec.widths[l]), dtype))
        b = None if biases is None else biases[l]
        bs.append(None if b is None else _check_array(f"biases[{l}]", b, (spec.widths[l + 1],), dtype))
    return ws, bs


def _input(spec, x, encoding):
    if encoding is None:
        return input_matrix(x, spec.widths[0])
    if encoding.out_features != spec.widths[0]:
        raise ValueError(f"encoding: gives {encoding.out_features} columns but widths[0] is {spec.widths[0]}")
    return input_matrix(x, encoding.in_features)


def _codes(encoding):
    return [] if encoding is None else encoding.codes()


def mlp_forward(spec, x, weights, biases=None, training=False, encoding=None):
    """Runs the fused forward. Returns y, or (y, saved) when training (saved: one array per layer).
    encoding: an EncodingSpec run in the kernel's input stage (x then holds the raw inputs)."""
    x = _input(spec, x, encoding)
    ws, bs = _params(spec, weights, biases, x.dtype)
    batch = x.shape[0]
    y = np.empty((batch, spec.widths[-1]), dtype=x.dtype)
    saved = [np.empty(n, dtype=x.dtype) for n in spec.saved_numels(batch)] if training else []
    _C.mlp_forward_cpu(_DTYPES[x.dtype], spec.widths, *spec.codes(), batch, _ptr(x), [_ptr(w) for w in ws],
                       [_ptr(b) for b in bs], _ptr(y), [_ptr(s) for s in saved], _codes(encoding))
    return (y, saved) if training else y


def mlp_backward(spec, dy, x, y, saved, weights, biases=None, need_dx=True, encoding=None):
    """Runs the fused backward. Returns (dx or None, [dW], [db or None])."""
    x = _input(spec, x, encoding)
    ws, bs = _params(spec, weights, biases, x.dtype)
    batch = x.shape[0]
    dy = _check_array("dy", dy, (batch, spec.widths[-1]), x.dtype)
    y = _check_array("y", y, (batch, spec.widths[-1]), x.dtype)
    numels = spec.saved_numels(batch)
    if len(saved) != len(numels):
        raise ValueError(f"saved: expected {len(numels)} arrays (one per layer), got {len(saved)}")
    saved = [_check_array(f"saved[{l}]", s, (n,), x.dtype) for l, (s, n) in enumerate(zip(saved, numels))]
    dx = np.empty_like(x) if need_dx else None
    dws = [np.empty_like(w) for w in ws]
    dbs = [None if b is None else np.empty_like(b) for b in bs]
    _C.mlp_backward_cpu(_DTYPES[x.dtype], spec.widths, *spec.codes(), batch, _ptr(x), _ptr(y), [_ptr(s) for s in saved],
                        _ptr(dy), [_ptr(w) for w in ws], _ptr(dx), [_ptr(w) for w in dws],
                        [_ptr(b) for b in dbs], _codes(encoding))
    return dx, dws, dbs
