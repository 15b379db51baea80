"""numpy front of the routed-replica CPU kernels (csrc/routed/): routed MLP forward/backward,
permutation draws and the routed committee-machine epoch."""
from __future__ import annotations

import numpy as np

from .. import _C
from ..routing import GRANULARITIES, Routing
from ..routing.routing import check_seed
from ._common import DTYPES as _DTYPES
from ._common import check_array as _check_array
from ._common import ptr as _ptr
from .mlp import MLPSpec


def example_ids_array(example_ids, batch):
    """The per-example keys as a contiguous int64 array of length batch (None: 0..batch-1)."""
    if example_ids is None:
        return None
    ids = np.asarray(example_ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"example_ids: expected integers, got dtype {ids.dtype}")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.shape != (batch,):
        raise ValueError(f"example_ids: expected shape ({batch},), one id per example, got {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= 2 ** 32):
        raise ValueError(f"example_ids: expected ids in [0, 2**32), got range [{ids.min()}, {ids.max()}]")
    return ids


def _check_routing(routing):
    if not isinstance(routing, Routing):
        raise TypeError(f"routing: expected a perceptrons.routing.Routing, got {type(routing).__name__}")
    return routing


def routing_tuple(routing: Routing, step=0, batch_id=0, example_ids=None):
    """The routing block the compiled entry points take. `example_ids` must stay alive during the call."""
    _check_routing(routing)
    kind, perms, cdf, Q, subperm = routing.sampler.kernel_tables()
    return (routing.M, GRANULARITIES.index(routing.granularity), routing.per == "example",
            routing.seed, routing.step_key(step), check_seed(batch_id, "batch_id"), _ptr(example_ids), kind,
            perms.shape[0], _ptr(perms), _ptr(cdf), _ptr(Q), _ptr(subperm))


def permutations(routing: Routing, example, layer, units, weights, step=0):
    """The (n, M) permutations the kernels draw for blocks (units[b], weights[b]) of `layer`."""
    _check_routing(routing)
    units = np.ascontiguousarray(units, dtype=np.int64)
    weights = np.ascontiguousarray(weights, dtype=np.int64)
    if units.shape != weights.shape or units.ndim != 1:
        raise ValueError("units, weights: expected two 1-D arrays of the same length")
    out = np.empty((units.shape[0], routing.M), dtype=np.int32)
    _C.routed_permutations_cpu(routing_tuple(routing, step), int(example), int(layer), units.shape[0], _ptr(units),
                               _ptr(weights), _ptr(out))
    return out


def _stream_input(x, M, in_features):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a numpy array, got {type(x).__name__}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"x: expected float32 or float64, got {x.dtype}")
    if x.ndim == 2 and x.shape[1] == in_features:
        return np.ascontiguousarray(x), 0
    if x.ndim == 3 and x.shape[0] == M and x.shape[2] == in_features:
        x = np.ascontiguousarray(x)
        return x, x.shape[1] * in_features
    raise ValueError(f"x: expected shape ({M}, batch, {in_features}) or (batch, {in_features}), got {x.shape}")


def _copies(spec, M, weights, biases, dtype):
    if len(weights) != spec.n_layers:
        raise ValueError(f"weights: expected {spec.n_layers} arrays, got {len(weights)}")
    ws = [_check_array(f"weights[{l}]", w, (M, spec.widths[l + 1], spec.widths[l]), dtype) for l, w in enumerate(weights)]
    if biases is None:
        return ws, None
    if len(biases) != spec.n_layers:
        raise ValueError(f"biases: expected {spec.n_layers} arrays or None, got {len(biases)}")
    return ws, [_check_array(f"biases[{l}]", b, (M, spec.widths[l + 1]), dtype) for l, b in enumerate(biases)]


def mlp_forward(routing, spec: MLPSpec, x, weights, biases=None, step=0, batch_id=0, example_ids=None,
                training=False):
    """Routed forward: y (M, B, out); with training, also the saved arrays (one per layer, M blocks)."""
    M = _check_routing(routing).M
    x, stride = _stream_input(x, M, spec.widths[0])
    ws, bs = _copies(spec, M, weights, biases, x.dtype)
    B = x.shape[-2]
    ids = example_ids_array(example_ids, B)
    y = np.empty((M, B, spec.widths[-1]), dtype=x.dtype)
    saved = [np.empty(M * n, dtype=x.dtype) for n in spec.saved_numels(B)] if training else []
    _C.routed_mlp_forward_cpu(routing_tuple(routing, step, batch_id, ids), _DTYPES[x.dtype], spec.widths, *spec.codes(),
                              B, _ptr(x), stride, [_ptr(w) for w in ws], [] if bs is None else [_ptr(b) for b in bs],
                              _ptr(y), [_ptr(s) for s in saved])
    return (y, saved) if training else y


def mlp_backward(routing, spec: MLPSpec, dy, x, y, saved, weights, biases=None, step=0, batch_id=0, example_ids=None,
                 need_dx=True):
    """Routed backward. Returns (dx (M, B, in) per stream or None, dweights, dbiases or None)."""
    M = _check_routing(routing).M
    x, stride = _stream_input(x, M, spec.widths[0])
    ws, bs = _copies(spec, M, weights, biases, x.dtype)
    B = x.shape[-2]
    ids = example_ids_array(example_ids, B)
    dy = _check_array("dy", dy, (M, B, spec.widths[-1]), x.dtype)
    y = _check_array("y", y, (M, B, spec.widths[-1]), x.dtype)
    saved = [_check_array(f"saved[{l}]", s, (M * n,), x.dtype) for l, (s, n) in enumerate(zip(saved, spec.saved_numels(B)))]
    dx = np.empty((M, B, spec.widths[0]), dtype=x.dtype) if need_dx else None
    dws = [np.empty_like(w) for w in ws]
    dbs = None if bs is None else [np.empty_like(b) for b in bs]
    _C.routed_mlp_backward_cpu(routing_tuple(routing, step, batch_id, ids), _DTYPES[x.dtype], spec.widths,
                               *spec.codes(), B, _ptr(x), stride, _ptr(y), [_ptr(s) for s in saved], _ptr(dy),
                               [_ptr(w) for w in ws], [] if bs is None else [_ptr(b) for b in bs], _ptr(dx),
                               [_ptr(w) for w in dws], [0] * spec.n_layers if dbs is None else [_ptr(b) for b in dbs])
    return dx, dws, dbs


def committee_epoch(routing, H, patterns, labels, order, eta=1.0, margin=0.0, h_max=0.0, step=0):
    """One online epoch of the routed committee machine on H (M, K, N), in place; returns the number of
    (pattern, stream) updates. patterns (P, N) and labels (P,) hold +-1; order: pattern indices."""
    _check_routing(routing)
    if not isinstance(H, np.ndarray) or H.dtype not in _DTYPES or H.ndim != 3 or not H.flags.c_contiguous:
        raise TypeError("H: expected a C-contiguous float32/float64 numpy array of shape (M, K, N)")
    M, K, N = H.shape
    if M != routing.M:
        raise ValueError(f"H: its first axis has {M} copies but the routing has M = {routing.M}")
    patterns = np.asarray(patterns)
    if patterns.ndim != 2 or patterns.shape[1] != N:
        raise ValueError(f"patterns: expected shape (P, {N}), got {patterns.shape}")
    if not np.all(np.abs(patterns) == 1):
        raise ValueError("patterns: expected entries +1 or -1")
    labels = np.asarray(labels)
    if labels.shape != (patterns.shape[0],) or not np.all(np.abs(labels) == 1):
        raise ValueError(f"labels: expected shape ({patterns.shape[0]},) with entries +1 or -1, got shape {labels.shape}")
    order = np.ascontiguousarray(order, dtype=np.int64)
    if order.ndim != 1 or (order.size and (order.min() < 0 or order.max() >= patterns.shape[0])):
        raise ValueError(f"order: expected a 1-D array of pattern indices in [0, {patterns.shape[0]})")
    for name, v in (("eta", eta), ("margin", margin), ("h_max", h_max)):
        if not np.isfinite(v):
            raise ValueError(f"{name}: expected a finite number, got {v}")
    pats = np.ascontiguousarray(patterns, dtype=np.int8)
    labs = np.ascontiguousarray(labels, dtype=np.int8)
    return _C.routed_committee_epoch_cpu(routing_tuple(routing, step), _DTYPES[H.dtype], K, N, _ptr(H),
                                         pats.shape[0], _ptr(pats), _ptr(labs), _ptr(order), order.shape[0],
                                         float(eta), float(margin), float(h_max))
