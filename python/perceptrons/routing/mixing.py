"""Mixing kernels Q for permutation routing: families, checks and spectra (numpy only).

Q[a, b] is the probability that a stream at copy a reads copy b; every routing sampler here needs Q
doubly stochastic (rows and columns sum to 1), so that a permutation can have Q as its marginals.
The families follow the M-layer code of Leleu et al. (arXiv:2602.01490, github.com/tleleu/mlayer):
a Gaussian in the ring distance between copies, a band, and blocks of copies mixed uniformly inside.
lambda2(Q), the second largest eigenvalue modulus, is the mixing strength to report beside sigma
(that paper's contraction criterion is written in terms of it): 1 for independent copies, 0 for
uniform mixing.
"""
from __future__ import annotations

import numpy as np

DOUBLY_STOCHASTIC_TOL = 1e-9


def _check_m(M, name="M"):
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 1:
        raise ValueError(f"{name}: expected a positive integer number of copies, got {M!r}")
    return int(M)


def ring_distance(M):
    """(M, M) matrix of distances between copies a and b on a ring of M copies."""
    M = _check_m(M)
    d = np.abs(np.subtract.outer(np.arange(M), np.arange(M)))
    return np.minimum(d, M - d)


def _circulant(first_row):
    M = len(first_row)
    idx = (np.arange(M)[None, :] - np.arange(M)[:, None]) % M
    return np.asarray(first_row, dtype=np.float64)[idx]


def identity(M):
    """Q = I: every stream reads its own copy (M independent models)."""
    return np.eye(_check_m(M))


def uniform(M):
    """Q = 1/M: the uniformly random M-cover (the classic M-layer construction)."""
    M = _check_m(M)
    return np.full((M, M), 1.0 / M)


def ring_gaussian(M, sigma):
    """Q[a, b] proportional to exp(-d(a, b)^2 / (2 sigma^2)), d the ring distance. Circulant, hence
    doubly stochastic. sigma = 0 gives the identity; sigma -> infinity approaches uniform."""
    M = _check_m(M)
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma: expected a finite width >= 0, got {sigma}")
    if sigma == 0.0:
        return identity(M)
    d = ring_distance(M)[0].astype(np.float64)
    row = np.exp(-0.5 * (d / sigma) ** 2)
    return _circulant(row / row.sum())


def band(M, width):
    """Uniform over the copies within ring distance `width` (the 'step' kernel of tleleu/mlayer)."""
    M = _check_m(M)
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 0:
        raise ValueError(f"width: expected an integer >= 0, got {width!r}")
    row = (ring_distance(M)[0] <= width).astype(np.float64)
    return _circulant(row / row.sum())


def block(n_blocks, block_size, sigma):
    """M = n_blocks * block_size copies: a ring Gaussian of width sigma over the blocks, uniform
    mixing inside a block (the Kronecker construction of tleleu/mlayer)."""
    n_blocks = _check_m(n_blocks, "n_blocks")
    block_size = _check_m(block_size, "block_size")
    return np.kron(ring_gaussian(n_blocks, sigma), uniform(block_size))


def sinkhorn(A, iters=10000, tol=1e-13):
    """Scales a nonnegative matrix to a doubly stochastic one (Sinkhorn-Knopp). Raises if A has a zero
    row or column, or if it does not converge (A's support then has no perfect matching)."""
    A = np.array(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"A: expected a square (M, M) matrix, got shape {A.shape}")
    if not np.all(np.isfinite(A)) or np.any(A < 0):
        raise ValueError("A: expected finite, nonnegative entries")
    if np.any(A.sum(1) == 0) or np.any(A.sum(0) == 0):
        raise ValueError("A: a row or column is all zeros; no doubly stochastic scaling exists")
    for _ in range(iters):
        A /= A.sum(1, keepdims=True)
        A /= A.sum(0, keepdims=True)
        if np.max(np.abs(A.sum(1) - 1.0)) < tol:
            return A
    raise ValueError("A: Sinkhorn scaling did not converge; the support of A must contain a permutation "
                     "matrix (have total support) for a doubly stochastic scaling to exist")


def check_doubly_stochastic(Q, name="Q", tol=DOUBLY_STOCHASTIC_TOL):
    """Returns Q as a float64 array, or raises a ValueError that says what is wrong with it."""
    try:
        Q = np.array(Q, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}: expected a square matrix of numbers ({e})") from None
    if Q.ndim != 2 or Q.shape[0] != Q.shape[1] or Q.shape[0] == 0:
        raise ValueError(f"{name}: expected a square (M, M) matrix, got shape {Q.shape}")
    if not np.all(np.isfinite(Q)):
        raise ValueError(f"{name}: expected finite entries")
    if np.any(Q < 0):
        raise ValueError(f"{name}: expected nonnegative entries, got minimum {Q.min():.3g}")
    rows, cols = np.abs(Q.sum(1) - 1).max(), np.abs(Q.sum(0) - 1).max()
    if rows > tol or cols > tol:
        raise ValueError(f"{name}: expected a doubly stochastic matrix (rows and columns summing to 1 within "
                         f"{tol:g}); the largest deviation is {max(rows, cols):.3g} over "
                         f"{'rows' if rows >= cols else 'columns'} (perceptrons.routing.sinkhorn scales a "
                         f"nonnegative matrix to one)")
    return Q


def circulant_row(Q, tol=1e-12):
    """Q's first row if Q is circulant (Q[a, b] depends on (b - a) mod M only), else None."""
    Q = np.asarray(Q, dtype=np.float64)
    row = Q[0]
    return row.copy() if np.allclose(_circulant(row), Q, rtol=0, atol=tol) else None


def lambda2(Q):
    """Second largest eigenvalue modulus of Q (1 for the identity, 0 for uniform mixing)."""
    Q = check_doubly_stochastic(Q)
    if Q.shape[0] == 1:
        return 0.0
    ev = np.sort(np.abs(np.linalg.eigvals(Q)))[::-1]
    return float(min(ev[1], 1.0))


def spectral_gap(Q):
    """1 - lambda2(Q)."""
    return 1.0 - lambda2(Q)
