"""Philox4x32-10 in numpy, word for word the same as csrc/common/philox.h.

Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3" (SC'11); the round
and key constants are those of their Random123 library. Counter-based: a (key, counter) pair maps to
four 32-bit words with no state, so a routed block's permutation is regenerated wherever it is needed
(the forward, the backward, the C++ kernels) and nothing is stored.

Routing keys: key = (seed, step); counter = (example, layer | (draw // 2) << 16, unit, weight).
Quenched routing uses step 0, annealed routing the training step. All arguments broadcast.
"""
from __future__ import annotations

import numpy as np

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)

MAX_LAYER = 0xFFFF  # the layer index shares its counter word with the draw number


def _u32(a, name):
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integers, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > 0xFFFFFFFF):
        raise ValueError(f"{name}: expected values in [0, 2**32), got range [{a.min()}, {a.max()}]")
    return a.astype(np.uint32)


def philox4x32_10(counter, key):
    """counter: 4 arrays of uint32 (broadcast together), key: 2 arrays. Returns 4 uint32 arrays."""
    c0, c1, c2, c3 = np.broadcast_arrays(*[_u32(c, f"counter[{i}]") for i, c in enumerate(counter)])
    k0, k1 = (_u32(k, f"key[{i}]") for i, k in enumerate(key))
    c0, c1, c2, c3 = (np.array(c, dtype=np.uint32) for c in (c0, c1, c2, c3))
    with np.errstate(over="ignore"):
        for r in range(10):
            if r > 0:
                k0 = (k0 + _W0).astype(np.uint32)
                k1 = (k1 + _W1).astype(np.uint32)
            p0 = c0.astype(np.uint64) * _M0
            p1 = c2.astype(np.uint64) * _M1
            hi0, lo0 = (p0 >> _S32).astype(np.uint32), (p0 & _LO).astype(np.uint32)
            hi1, lo1 = (p1 >> _S32).astype(np.uint32), (p1 & _LO).astype(np.uint32)
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def uniform53(hi, lo):
    """Doubles in [0, 1) from the top 53 bits of (hi << 32 | lo), as in philox.h."""
    bits = (hi.astype(np.uint64) << _S32) | lo.astype(np.uint64)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def routed_uniform(seed, step, example, layer, unit, weight, draw=0):
    """Draw number `draw` of the routed block (layer, unit, weight) for (seed, step, example)."""
    layer = np.asarray(layer)
    if layer.size and (layer.min() < 0 or layer.max() > MAX_LAYER):
        raise ValueError(f"layer: expected values in [0, {MAX_LAYER}], got range [{layer.min()}, {layer.max()}]")
    draw = np.asarray(draw)
    word1 = (layer.astype(np.uint64) | ((draw.astype(np.uint64) >> np.uint64(1)) << np.uint64(16))) & _LO
    w = philox4x32_10((example, word1.astype(np.uint32), unit, weight), (seed, step))
    first = uniform53(w[0], w[1])
    second = uniform53(w[2], w[3])
    return np.where(np.asarray(draw) & 1, second, first)
