"""Routing: which copy of each parameter block every stream reads (numpy only).

A Routing fixes the choices the paper leaves open (arXiv:2605.09256; see DESIGN.md, routed replicas):

* granularity: 'layer' (one permutation for a layer's W and b), 'unit' (one per output row j of W,
  with b[j]) or 'edge' (one per weight W[j, i]; b[j] counts as column i = in_features);
* per: 'batch' (one permutation per block for the whole minibatch, keyed by a batch id) or 'example'
  (one per block and example, keyed by the example's id, e.g. its index in the dataset);
* mode: 'quenched' (step key 0: a fixed cover, the same for an example in every epoch) or 'annealed'
  (keyed by the step too: a fresh cover every step);
* the mixing kernel Q and its sampler (samplers.make_sampler), and a 32-bit seed.

Philox counters: (example, layer, unit, weight) as in csrc/common/philox.h; the C++ kernels compute the
same permutations from the same keys.
"""
from __future__ import annotations

import numpy as np

from . import mixing, samplers

GRANULARITIES = ("layer", "unit", "edge")
PER = ("batch", "example")
MODES = ("quenched", "annealed")
GRANULARITY_CODES = {g: i for i, g in enumerate(GRANULARITIES)}


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name}: expected one of {', '.join(repr(o) for o in options)}, got {value!r}")
    return value


def check_seed(seed, name="seed"):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"{name}: expected an integer in [0, 2**32), got {seed!r}")
    return int(seed)


class Routing:
    """Routing of M copies: Q (default identity), sampler, granularity, per, mode and seed."""

    def __init__(self, M, Q=None, granularity="layer", per="batch", mode="annealed", sampler="auto", seed=0):
        self.M = mixing._check_m(M)
        self.Q = mixing.identity(self.M) if Q is None else mixing.check_doubly_stochastic(Q)
        if self.Q.shape != (self.M, self.M):
            raise ValueError(f"Q: expected shape ({self.M}, {self.M}) for M = {self.M} copies, got {self.Q.shape}")
        self.granularity = _choice("granularity", granularity, GRANULARITIES)
        self.per = _choice("per", per, PER)
        self.mode = _choice("mode", mode, MODES)
        self.sampler = samplers.make_sampler(self.Q, sampler)
        self.seed = check_seed(seed)

    @property
    def is_identity(self):
        return bool(np.array_equal(self.Q, np.eye(self.M)))

    def step_key(self, step):
        return 0 if self.mode == "quenched" else check_seed(step, "step")

    def owners(self, layer, out_features, in_features, step=0, example=0):
        """Copy read by each stream for every entry of layer `layer`'s augmented weight [W | b].
        `example`: an int (per='batch': the batch id) or a 1-D array of example ids (per='example').
        Returns int64 (M, out, in + 1), or (B, M, out, in + 1) for an array of examples."""
        ex = np.asarray(example, dtype=np.int64)
        if ex.ndim > 1:
            raise ValueError(f"example: expected an id or a 1-D array of ids, got shape {ex.shape}")
        ex_b = ex.reshape(ex.shape + (1, 1))
        if self.granularity == "layer":
            unit = np.zeros((1, 1), np.int64)
            weight = np.zeros((1, 1), np.int64)
        elif self.granularity == "unit":
            unit = np.arange(out_features).reshape(out_features, 1)
            weight = np.zeros((1, 1), np.int64)
        else:
            unit = np.arange(out_features).reshape(out_features, 1)
            weight = np.arange(in_features + 1).reshape(1, in_features + 1)
        perms = samplers.sample_permutations(self.sampler, self.seed, self.step_key(step), ex_b, layer, unit, weight)
        perms = np.broadcast_to(perms, ex.shape + (out_features, in_features + 1, self.M))
        return np.ascontiguousarray(np.moveaxis(perms, -1, ex.ndim))

    def __repr__(self):
        return (f"Routing(M={self.M}, granularity={self.granularity!r}, per={self.per!r}, mode={self.mode!r}, "
                f"sampler={self.sampler.name!r}, seed={self.seed}, lambda2={mixing.lambda2(self.Q):.4g})")
