"""Input encodings: the validated spec the kernels take, and numpy fronts of the CPU kernels."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .. import _C
from ._common import DTYPES as _DTYPES
from ._common import input_matrix, ptr as _ptr

# Kind codes: csrc/encodings/encodings.h (enc::Kind).
KINDS = {"identity": 0, "frequency": 1, "spherical_harmonics": 2, "one_blob": 3}
MAX_OUT_FEATURES = 1 << 24
# What the integer parameter of each kind is called (the error messages use these names).
PARAM_NAMES = {"identity": None, "frequency": "n_frequencies", "spherical_harmonics": "degree",
               "one_blob": "n_bins"}


def _int(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name}: expected an integer in {low}..{high}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class EncodingPart:
    """One encoding applied to n_dims consecutive inputs. n: n_frequencies / degree / n_bins."""
    kind: str
    n_dims: int
    n: int = 0
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {sorted(KINDS)}, got {self.kind!r}")
        _int("n_dims", self.n_dims, 1, 1 << 20)
        if self.kind == "frequency":
            _int("n_frequencies", self.n, 1, _C.ENCODING_MAX_FREQUENCIES)
        elif self.kind == "spherical_harmonics":
            if self.n_dims != 3:
                raise ValueError(f"n_dims: spherical harmonics encode 3-D directions, got {self.n_dims}")
            _int("degree", self.n, 1, _C.ENCODING_MAX_SH_DEGREE)
        elif self.kind == "one_blob":
            _int("n_bins", self.n, 1, _C.ENCODING_MAX_BINS)
        else:
            for name in ("scale", "offset"):
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"{name}: expected a finite number, got {v!r}")

    @property
    def out_features(self) -> int:
        if self.kind == "identity":
            return self.n_dims
        if self.kind == "frequency":
            return self.n_dims * 2 * self.n
        if self.kind == "spherical_harmonics":
            return self.n * self.n
        return self.n_dims * self.n


@dataclass(frozen=True)
class EncodingSpec:
    """Parts applied to consecutive slices of the input, then n_ones columns of 1 (tcnn's padding)."""
    parts: Tuple[EncodingPart, ...]
    n_ones: int = 0

    def __post_init__(self):
        object.__setattr__(self, "parts", tuple(self.parts))
        if not 1 <= len(self.parts) <= _C.ENCODING_MAX_PARTS:
            raise ValueError(f"parts: expected 1..{_C.ENCODING_MAX_PARTS} encodings, got {len(self.parts)}")
        for i, p in enumerate(self.parts):
            if not isinstance(p, EncodingPart):
                raise TypeError(f"parts[{i}]: expected an EncodingPart, got {type(p).__name__}")
        _int("n_ones", self.n_ones, 0, _C.ENCODING_MAX_ONES)
        if self.out_features > MAX_OUT_FEATURES:  # the kernels count columns in 32-bit integers
            raise ValueError(f"parts: the encoding would have {self.out_features} output columns; at most "
                             f"{MAX_OUT_FEATURES} are supported")

    @property
    def in_features(self) -> int:
        return sum(p.n_dims for p in self.parts)

    @property
    def out_features(self) -> int:
        return sum(p.out_features for p in self.parts) + self.n_ones

    @staticmethod
    def from_codes(codes) -> "EncodingSpec":
        """The inverse of codes()."""
        codes = [float(c) for c in codes]
        names = {v: k for k, v in KINDS.items()}
        parts = tuple(EncodingPart(names[int(codes[i])], int(codes[i + 1]), int(codes[i + 2]), codes[i + 3],
                                   codes[i + 4]) for i in range(1, len(codes), 5))
        return EncodingSpec(parts, int(codes[0]))

    def codes(self) -> list:
        """The flat list the compiled module takes (csrc/bindings.cpp, encoding_from_codes)."""
        out = [float(self.n_ones)]
        for p in self.parts:
            out += [float(KINDS[p.kind]), float(p.n_dims), float(p.n), float(p.scale), float(p.offset)]
        return out


def encoding_forward(spec: EncodingSpec, x):
    """y (batch, spec.out_features) from x (batch, spec.in_features), float32 or float64."""
    x = input_matrix(x, spec.in_features)
    y = np.empty((x.shape[0], spec.out_features), dtype=x.dtype)
    _C.encoding_forward_cpu(spec.codes(), _DTYPES[x.dtype], x.shape[0], _ptr(x), _ptr(y))
    return y


def encoding_backward(spec: EncodingSpec, x, dy):
    """dL/dx = J(x)^T dy."""
    x = input_matrix(x, spec.in_features)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    if dy.shape != (x.shape[0], spec.out_features):
        raise ValueError(f"dy: expected shape {(x.shape[0], spec.out_features)}, got {dy.shape}")
    dx = np.empty_like(x)
    _C.encoding_backward_cpu(spec.codes(), _DTYPES[x.dtype], x.shape[0], _ptr(x), _ptr(dy), _ptr(dx))
    return dx
