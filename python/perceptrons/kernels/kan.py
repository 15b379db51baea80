"""numpy front of the spline-KAN CPU kernels."""
from __future__ import annotations

import numpy as np

from .. import _C
from ._common import DTYPES, check_array, input_matrix, ptr

MODES = {"pykan": 0, "clamp": 1}


class KANSpec:
    """Validated sizes of a KAN layer: in/out features, grid size G, spline order k, out-of-range mode."""

    def __init__(self, in_features, out_features, grid_size, spline_order, mode="pykan"):
        for name, v in (("in_features", in_features), ("out_features", out_features), ("grid_size", grid_size)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        kmax = _C.KAN_MAX_SPLINE_ORDER
        if int(spline_order) != spline_order or not 1 <= spline_order <= kmax:
            raise ValueError(f"spline_order: expected an integer in 1..{kmax}, got {spline_order!r}")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.grid_size, self.spline_order, self.mode = int(grid_size), int(spline_order), mode

    @property
    def n_basis(self):
        return self.grid_size + self.spline_order

    @property
    def n_knots(self):
        return self.grid_size + 2 * self.spline_order + 1

    def args(self, dtype):
        return (DTYPES[dtype], self.in_features, self.out_features, self.grid_size, self.spline_order,
                MODES[self.mode])

    @classmethod
    def from_arrays(cls, grid, spline_weight, spline_order, mode="pykan"):
        out, in_, nb = spline_weight.shape
        return cls(in_, out, nb - spline_order, spline_order, mode)


def _params(spec, grid, base_weight, spline_weight, spline_scaler, dtype):
    i, o, nb = spec.in_features, spec.out_features, spec.n_basis
    return (check_array("grid", grid, (i, spec.n_knots), dtype), check_array("base_weight", base_weight, (o, i), dtype),
            check_array("spline_weight", spline_weight, (o, i, nb), dtype),
            None if spline_scaler is None else check_array("spline_scaler", spline_scaler, (o, i), dtype))


def kan_forward(x, grid, spline_order, base_weight, spline_weight, spline_scaler=None, mode="pykan"):
    """y (batch, out) of the KAN layer (same arguments as perceptrons.reference.kan.forward)."""
    spec = KANSpec.from_arrays(grid, spline_weight, spline_order, mode)
    x = input_matrix(x, spec.in_features)
    g, bw, sw, ss = _params(spec, grid, base_weight, spline_weight, spline_scaler, x.dtype)
    y = np.empty((x.shape[0], spec.out_features), dtype=x.dtype)
    _C.kan_forward_cpu(*spec.args(x.dtype), x.shape[0], ptr(x), ptr(g), ptr(bw), ptr(sw), ptr(ss), ptr(y))
    return y


def kan_backward(dy, x, grid, spline_order, base_weight, spline_weight, spline_scaler=None, mode="pykan",
                 need_dx=True):
    """(dx or None, d_base_weight, d_spline_weight, d_spline_scaler or None): gradients of sum(dy * y)."""
    spec = KANSpec.from_arrays(grid, spline_weight, spline_order, mode)
    x = input_matrix(x, spec.in_features)
    g, bw, sw, ss = _params(spec, grid, base_weight, spline_weight, spline_scaler, x.dtype)
    dy = check_array("dy", dy, (x.shape[0], spec.out_features), x.dtype)
    dx = np.empty_like(x) if need_dx else None
    dbw, dsw = np.empty_like(bw), np.empty_like(sw)
    dss = None if ss is None else np.empty_like(ss)
    _C.kan_backward_cpu(*spec.args(x.dtype), x.shape[0], ptr(x), ptr(g), ptr(bw), ptr(sw), ptr(ss), ptr(dy), ptr(dx),
                        ptr(dbw), ptr(dsw), ptr(dss))
    return dx, dbw, dsw, dss
