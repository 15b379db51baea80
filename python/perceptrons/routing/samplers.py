"""Permutation samplers: which copy each stream reads, for one routed block.

A sampler turns uniforms from the counter-based RNG (philox.py) into permutations pi of the M copies:
stream m reads copy pi[m]. Two kinds, each computed identically by numpy here and by C++
(csrc/routed/routed_sampler.h):

* a table sampler: K permutations with cumulative weights; one uniform u picks the first k with
  u < cdf[k]. RotationSampler (circulant Q: pi(b) = (b + s) mod M with s drawn from Q's first row)
  and BirkhoffSampler (any doubly stochastic Q written as a mixture of permutation matrices) are
  table samplers; both have marginals P(pi(m) = c) = Q[m, c] exactly.
* the permanental sampler: P(pi) proportional to prod_m Q[m, pi(m)], exact for M <= 12, drawn row by
  row from exact conditionals (a table of sub-permanents over subsets of columns). Its marginals are
  NOT Q (see shared research note, section 1.5); it is the convention of tleleu/mlayer.
"""
from __future__ import annotations

import numpy as np

from . import mixing, philox

TABLE, PERMANENTAL = 0, 1        # sampler kind codes shared with C++
MAX_PERMANENTAL_COPIES = 12      # 2^M sub-permanents; beyond this the table grows too large


class TableSampler:
    """K permutations `perms` (K, M) picked with probabilities `weights` (K,)."""
    kind = TABLE

    def __init__(self, perms, weights, name="table"):
        perms = np.asarray(perms, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        if perms.ndim != 2 or perms.shape[0] != weights.shape[0] or perms.shape[0] == 0:
            raise ValueError(f"perms: expected shape (K, M) with K = len(weights) > 0, got {perms.shape}")
        M = perms.shape[1]
        if not np.all(np.sort(perms, axis=1) == np.arange(M)):
            raise ValueError("perms: every row must be a permutation of 0..M-1")
        if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
            raise ValueError("weights: expected nonnegative finite weights with a positive sum")
        keep = weights > 0
        self.perms = np.ascontiguousarray(perms[keep].astype(np.int32))
        w = weights[keep] / weights[keep].sum()
        cdf = np.cumsum(w)
        cdf[-1] = 1.0                       # u < 1 always picks an entry
        self.cdf = np.ascontiguousarray(cdf)
        self.M = M
        self.name = name

    def marginals(self):
        """E[P_pi]: the (M, M) matrix of P(pi(m) = c), exactly."""
        w = np.diff(np.concatenate([[0.0], self.cdf]))
        P = np.zeros((self.M, self.M))
        for wk, p in zip(w, self.perms):
            P[np.arange(self.M), p] += wk
        return P

    def from_uniforms(self, draw):
        """draw(d) -> uniforms for draw number d (any shape S). Returns permutations, shape S + (M,)."""
        k = np.searchsorted(self.cdf, draw(0), side="right")
        return self.perms[np.minimum(k, len(self.cdf) - 1)].astype(np.int64)

    def kernel_tables(self):
        """What the C++ sampler reads: (kind, perms int32 (K, M), cdf float64 (K,), Q, subperm)."""
        return TABLE, self.perms, self.cdf, np.zeros((0,)), np.zeros((0,))


class RotationSampler(TableSampler):
    """Circulant Q: pi(b) = (b + s) mod M, s ~ Q's first row. Exact marginals, one uniform per block."""

    def __init__(self, first_row):
        row = np.asarray(first_row, dtype=np.float64)
        M = len(row)
        perms = (np.arange(M)[None, :] + np.arange(M)[:, None]) % M   # row s: shift by s
        super().__init__(perms, row, name="rotation")


class BirkhoffSampler(TableSampler):
    """Any doubly stochastic Q = sum_k lambda_k P_k (Birkhoff-von Neumann); pick P_k with probability
    lambda_k. Greedy decomposition: repeatedly take a permutation inside the support of the residual
    (the most probable one, by an assignment on log-entries), remove as much of it as fits."""

    def __init__(self, Q, tol=1e-12):
        Q = mixing.check_doubly_stochastic(Q)
        perms, weights = birkhoff_decomposition(Q, tol)
        super().__init__(perms, weights, name="birkhoff")


class PermanentalSampler:
    """P(pi) proportional to prod_m Q[m, pi(m)], exactly, for M <= 12 (tleleu/mlayer's convention).
    Rows are assigned in order; row r picks column j with probability Q[r, j] * F[S | j] / F[S], where
    S is the set of columns already used and F[S] the permanent of the rows >= |S| on the columns not
    in S. Uses M - 1 uniforms per permutation."""
    kind = PERMANENTAL

    def __init__(self, Q):
        Q = np.array(Q, dtype=np.float64)
        if Q.ndim != 2 or Q.shape[0] != Q.shape[1] or Q.shape[0] == 0:
            raise ValueError(f"Q: expected a square (M, M) matrix, got shape {Q.shape}")
        M = Q.shape[0]
        if M > MAX_PERMANENTAL_COPIES:
            raise ValueError(f"Q: the exact permanental sampler takes M <= {MAX_PERMANENTAL_COPIES} copies, got "
                             f"M = {M}; use sampler='birkhoff' (or 'rotation' for a circulant Q)")
        if not np.all(np.isfinite(Q)) or np.any(Q < 0):
            raise ValueError("Q: expected finite, nonnegative entries")
        self.Q = np.ascontiguousarray(Q)
        self.M = M
        self.subperm = subset_permanents(Q)
        if not self.subperm[0] > 0:
            raise ValueError("Q: its permanent is zero (no permutation has positive probability)")
        self.name = "permanental"

    def from_uniforms(self, draw):
        M, Q, F = self.M, self.Q, self.subperm
        used = None
        out = []
        for r in range(M):
            if r == M - 1:          # one column left: no draw
                full = (1 << M) - 1
                last = np.zeros_like(used)
                for j in range(M):
                    last = np.where(((full ^ used) >> j) & 1 == 1, j, last)
                out.append(last)
                break
            u = np.asarray(draw(r), dtype=np.float64)
            if used is None:
                used = np.zeros(u.shape, dtype=np.int64)
            # Weights and their running sum in column order, exactly as the C++ loop adds them.
            w = [np.where((used >> j) & 1 == 1, 0.0, Q[r, j] * F[used | (1 << j)]) for j in range(M)]
            total = np.zeros(u.shape)
            for j in range(M):
                total = total + w[j]
            target = u * total
            choice = np.full(u.shape, -1, dtype=np.int64)
            cum = np.zeros(u.shape)
            for j in range(M):
                cum = cum + w[j]
                take = (choice < 0) & (w[j] > 0) & (target < cum)
                choice = np.where(take, j, choice)
            # Rounding can leave target >= the final sum: take the last column with positive weight.
            last_pos = np.full(u.shape, -1, dtype=np.int64)
            for j in range(M):
                last_pos = np.where(w[j] > 0, j, last_pos)
            choice = np.where(choice < 0, last_pos, choice)
            out.append(choice)
            used = used | (np.int64(1) << choice)
        return np.stack(out, axis=-1)

    def kernel_tables(self):
        return PERMANENTAL, np.zeros((0, self.M), dtype=np.int32), np.zeros((0,)), self.Q, self.subperm


def subset_permanents(Q):
    """F[S] for every subset S of columns (bit mask): the permanent of Q restricted to rows |S|..M-1
    and the columns not in S. F[all] = 1 and F[0] = perm(Q)."""
    M = Q.shape[0]
    full = (1 << M) - 1
    F = np.zeros(1 << M)
    F[full] = 1.0
    popcount = np.array([bin(s).count("1") for s in range(1 << M)])
    for r in range(M - 1, -1, -1):      # subsets with r columns used; row r is next
        for S in np.nonzero(popcount == r)[0]:
            acc = 0.0
            for j in range(M):
                if not (S >> j) & 1:
                    acc += Q[r, j] * F[S | (1 << j)]
            F[S] = acc
    return F


def _assignment(cost):
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:             # small pure-Python fallback: any perfect matching of the support
        return _any_matching(np.isfinite(cost) & (cost < 1e300))
    rows, cols = linear_sum_assignment(cost)
    return cols


def _any_matching(support):
    M = support.shape[0]
    match_col = [-1] * M

    def augment(r, seen):
        for c in np.nonzero(support[r])[0]:
            if not seen[c]:
                seen[c] = True
                if match_col[c] < 0 or augment(match_col[c], seen):
                    match_col[c] = r
                    return True
        return False

    for r in range(M):
        if not augment(r, [False] * M):
            raise ValueError("Q: its support contains no permutation")
    perm = np.empty(M, dtype=np.int64)
    for c, r in enumerate(match_col):
        perm[r] = c
    return perm


def birkhoff_decomposition(Q, tol=1e-12):
    """Permutations (K, M) and weights (K,) with sum_k w_k P_k = Q up to `tol` (K <= (M-1)^2 + 1)."""
    Q = mixing.check_doubly_stochastic(Q)
    M = Q.shape[0]
    row = mixing.circulant_row(Q)
    if row is not None:              # exact and short: the rotations
        perms = (np.arange(M)[None, :] + np.arange(M)[:, None]) % M
        keep = row > 0
        return perms[keep], row[keep]
    R = Q.copy()
    perms, weights = [], []
    for _ in range((M - 1) ** 2 + 1):
        if R.max() <= tol:
            break
        cost = np.where(R > tol, -np.log(np.maximum(R, 1e-300)), 1e308)
        p = _assignment(cost)
        lam = R[np.arange(M), p].min()
        if lam <= tol:
            break
        perms.append(p)
        weights.append(lam)
        R[np.arange(M), p] -= lam
    return np.array(perms), np.array(weights)


def make_sampler(Q, sampler="auto"):
    """A sampler for the doubly stochastic Q: 'rotation' (circulant Q), 'birkhoff', 'permanental', or
    'auto' (rotation when Q is circulant, Birkhoff otherwise)."""
    if sampler not in ("auto", "rotation", "birkhoff", "permanental"):
        raise ValueError(f"sampler: expected 'auto', 'rotation', 'birkhoff' or 'permanental', got {sampler!r}")
    Q = mixing.check_doubly_stochastic(Q)
    if sampler == "permanental":
        return PermanentalSampler(Q)
    row = mixing.circulant_row(Q)
    if sampler == "rotation" and row is None:
        raise ValueError("Q: sampler='rotation' needs a circulant Q (Q[a, b] a function of (b - a) mod M); "
                         "use sampler='birkhoff' for this Q")
    if row is not None and sampler in ("auto", "rotation"):
        return RotationSampler(row)
    return BirkhoffSampler(Q)


def sample_permutations(sampler, seed, step, example, layer, unit, weight):
    """Permutations for routed blocks keyed by (seed, step, example, layer, unit, weight); the key
    arrays broadcast to a shape S and the result has shape S + (M,)."""
    def draw(d):
        return philox.routed_uniform(seed, step, example, layer, unit, weight, d)
    return sampler.from_uniforms(draw)
