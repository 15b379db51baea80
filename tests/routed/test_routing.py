"""Permutation routing (M-cover), numpy side: the Philox RNG, the mixing kernels Q and their spectra,
the permutation samplers (marginals, the permanental law), their agreement with the C++ draws, and
the Routing object (owner maps, modes, granularities, argument checks)."""
import itertools

import numpy as np
import pytest

from perceptrons.kernels import routed as KR
from perceptrons.routing import (BirkhoffSampler, PermanentalSampler, RotationSampler, Routing, TableSampler,
                                 band, birkhoff_decomposition, block, check_doubly_stochastic, circulant_row,
                                 identity, lambda2, make_sampler, ring_distance, ring_gaussian, sample_permutations,
                                 sinkhorn, spectral_gap, uniform)
from perceptrons.routing import philox
from perceptrons.routing.samplers import subset_permanents

U32_MAX = 2 ** 32 - 1


def random_ds(M, seed, low=0.05):
    """A dense, non-circulant doubly stochastic matrix: Sinkhorn scaling of random positive entries."""
    return sinkhorn(np.random.default_rng(seed).uniform(low, 1.0, (M, M)))


def assert_doubly_stochastic(Q, tol=1e-12):
    Q = np.asarray(Q)
    assert Q.ndim == 2 and Q.shape[0] == Q.shape[1]
    assert np.all(Q >= 0), f"negative entries: min {Q.min()}"
    np.testing.assert_allclose(Q.sum(1), 1.0, rtol=0, atol=tol, err_msg="rows do not sum to 1")
    np.testing.assert_allclose(Q.sum(0), 1.0, rtol=0, atol=tol, err_msg="columns do not sum to 1")


def assert_rows_are_permutations(perms, M):
    perms = np.asarray(perms).reshape(-1, M)
    bad = ~np.all(np.sort(perms, axis=1) == np.arange(M), axis=1)
    assert not bad.any(), f"{bad.sum()} rows are not permutations of 0..{M - 1}, e.g. {perms[bad][0]}"


# ---- Philox --------------------------------------------------------------------------------------

# Known-answer vectors of Random123's philox4x32-10 (kat_vectors): (counter, key) -> 4 words.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((U32_MAX,) * 4, (U32_MAX,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,want", PHILOX_KAT, ids=["zeros", "ones", "pi"])
def test_philox_known_answers(counter, key, want):
    got = philox.philox4x32_10(tuple(np.uint64(c) for c in counter), tuple(np.uint64(k) for k in key))
    assert [int(w) for w in got] == list(want), f"got {[hex(int(w)) for w in got]}"


def test_philox_known_answers_broadcast_over_arrays():
    """All three vectors at once, as arrays: the vectorised path gives the same words."""
    counter = tuple(np.array([v[0][i] for v in PHILOX_KAT], dtype=np.uint64) for i in range(4))
    key = tuple(np.array([v[1][i] for v in PHILOX_KAT], dtype=np.uint64) for i in range(2))
    got = np.stack(philox.philox4x32_10(counter, key), axis=1)
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, np.array([v[2] for v in PHILOX_KAT], dtype=np.uint32))


def test_philox_rejects_out_of_range_words():
    with pytest.raises(ValueError, match=r"counter\[0\]"):
        philox.philox4x32_10((np.int64(-1), 0, 0, 0), (0, 0))
    with pytest.raises(ValueError, match=r"key\[1\]"):
        philox.philox4x32_10((0, 0, 0, 0), (0, np.uint64(2 ** 32)))
    with pytest.raises(TypeError, match=r"counter\[2\]"):
        philox.philox4x32_10((0, 0, 0.5, 0), (0, 0))


def test_uniform53_bounds():
    assert philox.uniform53(np.uint32(0), np.uint32(0)) == 0.0
    top = philox.uniform53(np.uint32(U32_MAX), np.uint32(U32_MAX))
    assert top < 1.0 and top == 1.0 - 2.0 ** -53


@pytest.mark.parametrize("draw", [0, 1, 2, 5])
def test_routed_uniforms_are_uniform(draw):
    """10^5 draws (fixed keys) lie in [0, 1) with mean 1/2 and variance 1/12.

    Standard errors for n = 10^5 uniforms: the mean has sd sqrt(1/12 / n) = 9.1e-4; the sample variance
    has sd sqrt((E(U-1/2)^4 - 1/144) / n) = sqrt((1/80 - 1/144) / n) = 2.4e-4. We allow 5 standard
    errors (a 1-in-1.7-million fluke for a correct generator; the keys are fixed, so the outcome is
    deterministic anyway). A generator stuck on a few values, using too few bits or biased by a
    wrong shift, misses these by far more.
    """
    n = 100_000
    u = philox.routed_uniform(12345, 7, np.arange(n), 3, 11, 2, draw)
    assert u.dtype == np.float64 and u.shape == (n,)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 5 * np.sqrt((1 / 80 - 1 / 144) / n)
    # Neighbouring examples are not correlated (lag-1 correlation has sd 1/sqrt(n)).
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(n)
    assert len(np.unique(u)) > n - 5  # 53-bit values: collisions are essentially impossible


def test_routed_uniform_draws_are_distinct_streams():
    """Draw 2k and 2k+1 share a Philox call (two words each), different k use different counters:
    the draws of one block must not repeat one another."""
    ex = np.arange(2000)
    draws = np.stack([philox.routed_uniform(1, 2, ex, 0, 0, 0, d) for d in range(6)])
    for a, b in itertools.combinations(range(6), 2):
        assert not np.any(draws[a] == draws[b]), f"draws {a} and {b} coincide"
        assert abs(np.corrcoef(draws[a], draws[b])[0, 1]) < 5 / np.sqrt(len(ex))


def test_routed_uniform_depends_on_every_key_word():
    base = dict(seed=5, step=6, example=7, layer=8, unit=9, weight=10, draw=0)
    u0 = philox.routed_uniform(**base)
    for name in ("seed", "step", "example", "layer", "unit", "weight"):
        changed = dict(base, **{name: base[name] + 1})
        assert philox.routed_uniform(**changed) != u0, f"{name} does not change the draw"
    with pytest.raises(ValueError, match="layer"):
        philox.routed_uniform(0, 0, 0, philox.MAX_LAYER + 1, 0, 0)


# ---- mixing kernels ------------------------------------------------------------------------------

FAMILIES = {
    "identity(5)": identity(5),
    "uniform(6)": uniform(6),
    "ring_gaussian(8,1.0)": ring_gaussian(8, 1.0),
    "ring_gaussian(7,0.4)": ring_gaussian(7, 0.4),
    "band(9,2)": band(9, 2),
    "band(4,0)": band(4, 0),
    "block(2,4,0.8)": block(2, 4, 0.8),
    "block(3,2,1.5)": block(3, 2, 1.5),
}
CIRCULANT = {"identity(5)", "uniform(6)", "ring_gaussian(8,1.0)", "ring_gaussian(7,0.4)", "band(9,2)", "band(4,0)"}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_families_are_doubly_stochastic(name):
    Q = FAMILIES[name]
    assert_doubly_stochastic(Q)
    np.testing.assert_array_equal(check_doubly_stochastic(Q), Q)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_circulant_families(name):
    Q = FAMILIES[name]
    row = circulant_row(Q)
    if name in CIRCULANT:
        assert row is not None, f"{name} should be circulant"
        M = Q.shape[0]
        for a in range(M):
            np.testing.assert_allclose(Q[a], np.roll(row, a), rtol=0, atol=1e-15)
    else:
        assert row is None, f"{name} is not circulant, got row {row}"


def test_family_values():
    M = 8
    d = ring_distance(M)
    assert d[0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]
    np.testing.assert_array_equal(d, d.T)
    Q = ring_gaussian(M, 1.3)
    row = np.exp(-d[0] ** 2 / (2 * 1.3 ** 2))
    np.testing.assert_allclose(Q[0], row / row.sum(), rtol=1e-14)
    np.testing.assert_array_equal(ring_gaussian(6, 0.0), np.eye(6))
    np.testing.assert_allclose(band(7, 1)[2], [0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0], atol=1e-15)
    np.testing.assert_array_equal(band(5, 0), np.eye(5))
    np.testing.assert_allclose(band(5, 2), uniform(5), atol=1e-15)
    B = block(2, 3, 0.5)
    assert B.shape == (6, 6)
    np.testing.assert_allclose(B[:3, :3], np.full((3, 3), ring_gaussian(2, 0.5)[0, 0] / 3), atol=1e-15)
    np.testing.assert_allclose(B[:3, 3:], np.full((3, 3), ring_gaussian(2, 0.5)[0, 1] / 3), atol=1e-15)
    # A very wide Gaussian is nearly uniform.
    np.testing.assert_allclose(ring_gaussian(5, 1e4), uniform(5), atol=1e-8)


def test_lambda2_and_spectral_gap():
    for M in (2, 5, 8):
        assert lambda2(identity(M)) == pytest.approx(1.0, abs=1e-12)
        assert spectral_gap(identity(M)) == pytest.approx(0.0, abs=1e-12)
        assert lambda2(uniform(M)) == pytest.approx(0.0, abs=1e-12)
        assert spectral_gap(uniform(M)) == pytest.approx(1.0, abs=1e-12)
    sigmas = [0.0, 0.3, 0.6, 1.0, 1.5, 2.5, 4.0]
    lams = [lambda2(ring_gaussian(8, s)) for s in sigmas]
    assert lams[0] == pytest.approx(1.0, abs=1e-12)
    assert all(a > b for a, b in zip(lams, lams[1:])), f"lambda2 not decreasing in sigma: {lams}"
    assert 0 < lams[-1] < 0.2
    assert lambda2(ring_gaussian(8, 1e3)) < 1e-5     # very wide: nearly uniform mixing
    # A circulant's eigenvalues are the DFT of its first row.
    for name in CIRCULANT:
        Q = FAMILIES[name]
        ev = np.sort(np.abs(np.fft.fft(Q[0])))[::-1]
        assert lambda2(Q) == pytest.approx(ev[1], abs=1e-12), name
    for Q in list(FAMILIES.values()) + [random_ds(6, 1)]:
        assert spectral_gap(Q) == pytest.approx(1.0 - lambda2(Q), abs=1e-15)
    # Block: the in-block uniform mixing kills all but n_blocks eigenvalues; the rest are the ring's.
    assert lambda2(block(2, 4, 0.8)) == pytest.approx(lambda2(ring_gaussian(2, 0.8)), abs=1e-12)
    assert lambda2(np.eye(1)) == 0.0


def test_sinkhorn_scales_to_doubly_stochastic():
    rng = np.random.default_rng(0)
    for M in (1, 2, 5, 9):
        A = rng.uniform(0.01, 3.0, (M, M))
        S = sinkhorn(A)
        assert_doubly_stochastic(S, tol=1e-12)
        # A diagonal scaling D1 A D2: S / A has rank one.
        R = S / A
        np.testing.assert_allclose(R, np.outer(R[:, 0], R[0, :] / R[0, 0]), rtol=1e-10)
    # Zeros off a permutation's support are allowed (total support) and stay zero.
    A = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [4.0, 0.0, 1.0]])
    S = sinkhorn(A)
    assert_doubly_stochastic(S)
    assert np.all(S[A == 0] == 0)
    # The input is not modified.
    A0 = A.copy()
    sinkhorn(A)
    np.testing.assert_array_equal(A, A0)


def test_sinkhorn_rejects_bad_matrices():
    with pytest.raises(ValueError, match="zero"):
        sinkhorn(np.array([[1.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="zero"):
        sinkhorn(np.array([[1.0, 0.0], [1.0, 0.0]]))          # a zero column
    with pytest.raises(ValueError, match="nonnegative"):
        sinkhorn(np.array([[1.0, -1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        sinkhorn(np.ones((2, 3)))
    with pytest.raises(ValueError, match="converge"):
        sinkhorn(np.array([[1.0, 1.0], [0.0, 1.0]]), iters=200)  # no total support


def test_check_doubly_stochastic_errors():
    # Rows sum to 1, columns do not.
    with pytest.raises(ValueError, match=r"^Q: .*doubly stochastic"):
        check_doubly_stochastic(np.array([[0.5, 0.5], [0.2, 0.8]]))
    # Rows and columns sum to 1 but entries are negative.
    with pytest.raises(ValueError, match=r"^Q: .*nonnegative"):
        check_doubly_stochastic(np.array([[1.5, -0.5], [-0.5, 1.5]]))
    with pytest.raises(ValueError, match=r"^Q: .*square"):
        check_doubly_stochastic(np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match=r"^Q: .*square"):
        check_doubly_stochastic(np.full(3, 1 / 3))
    with pytest.raises(ValueError, match=r"^Q: .*finite"):
        check_doubly_stochastic(np.array([[np.nan, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"^mix: .*doubly stochastic"):
        check_doubly_stochastic(np.array([[0.9, 0.1], [0.9, 0.1]]), name="mix")
    with pytest.raises(TypeError, match=r"^Q:"):
        check_doubly_stochastic([["a", "b"], ["c", "d"]])
    # Within tolerance is accepted; just outside is not.
    Q = uniform(4) + 1e-11 * np.array([[1, -1, 0, 0], [-1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    check_doubly_stochastic(Q)
    with pytest.raises(ValueError, match="doubly stochastic"):
        check_doubly_stochastic(uniform(4) * (1 + 1e-7))


def test_family_argument_checks():
    with pytest.raises(ValueError, match="^M:"):
        identity(0)
    with pytest.raises(ValueError, match="^M:"):
        uniform(2.5)
    with pytest.raises(ValueError, match="^sigma:"):
        ring_gaussian(4, -1.0)
    with pytest.raises(ValueError, match="^sigma:"):
        ring_gaussian(4, np.inf)
    with pytest.raises(ValueError, match="^width:"):
        band(4, -1)
    with pytest.raises(ValueError, match="^n_blocks:"):
        block(0, 3, 1.0)
    with pytest.raises(ValueError, match="^block_size:"):
        block(2, 0, 1.0)


# ---- samplers ------------------------------------------------------------------------------------

def sampler_cases():
    """(name, sampler, Q) for every sampler kind; Q is what a table sampler's marginals must be."""
    Qr = ring_gaussian(8, 1.0)
    Qb = block(2, 4, 0.8)
    Qs = random_ds(6, 3)
    return [
        ("rotation", make_sampler(Qr, "rotation"), Qr),
        ("birkhoff-block", make_sampler(Qb, "birkhoff"), Qb),
        ("birkhoff-sinkhorn", make_sampler(Qs, "auto"), Qs),
        ("identity", make_sampler(identity(5)), identity(5)),
    ]


def test_make_sampler_picks_the_right_kind():
    assert isinstance(make_sampler(ring_gaussian(6, 1.0)), RotationSampler)
    assert isinstance(make_sampler(ring_gaussian(6, 1.0), "birkhoff"), BirkhoffSampler)
    assert isinstance(make_sampler(block(2, 3, 1.0)), BirkhoffSampler)
    assert isinstance(make_sampler(random_ds(4, 0), "permanental"), PermanentalSampler)
    with pytest.raises(ValueError, match="circulant"):
        make_sampler(block(2, 3, 1.0), "rotation")
    with pytest.raises(ValueError, match="^sampler:"):
        make_sampler(uniform(3), "gibbs")
    with pytest.raises(ValueError, match="^Q:"):
        make_sampler(np.array([[0.5, 0.5], [0.2, 0.8]]))


@pytest.mark.parametrize("case", range(4), ids=["rotation", "birkhoff-block", "birkhoff-sinkhorn", "identity"])
def test_marginals_match_Q(case):
    """Empirical P(pi(m) = c) over n = 40000 draws against Q[m, c].

    Each entry is a binomial proportion with sd sqrt(q (1 - q) / n); 5 sd keeps a correct sampler's
    false-alarm chance below 1e-6 per entry (about 1e-4 over the 64 entries of an 8x8 Q). The extra
    1e-3 covers entries with q near 0 or 1, where the normal approximation is poor (q = 0 or 1 must
    be hit exactly: a deviation there is a count of impossible draws). A sampler with the wrong law
    (e.g. the permanental law, or a shifted rotation) is off by several percent.
    """
    name, sampler, Q = sampler_cases()[case]
    n = 40_000
    M = Q.shape[0]
    perms = sample_permutations(sampler, 17, 3, np.arange(n), 2, 5, 1)
    assert perms.shape == (n, M)
    assert_rows_are_permutations(perms, M)
    emp = np.stack([np.bincount(perms[:, m], minlength=M) for m in range(M)]) / n
    tol = 5 * np.sqrt(Q * (1 - Q) / n) + 1e-3
    dev = np.abs(emp - Q)
    worst = np.unravel_index(np.argmax(dev - tol), dev.shape)
    assert np.all(dev < tol), f"{name}: deviation {dev[worst]:.4g} > {tol[worst]:.4g} at (m, c) = {worst}"
    assert np.all(emp[Q == 0] == 0), f"{name}: a copy with Q = 0 was drawn"


@pytest.mark.parametrize("case", range(4), ids=["rotation", "birkhoff-block", "birkhoff-sinkhorn", "identity"])
def test_table_marginals_are_exact(case):
    name, sampler, Q = sampler_cases()[case]
    assert isinstance(sampler, TableSampler)
    np.testing.assert_allclose(sampler.marginals(), Q, rtol=0, atol=1e-12, err_msg=name)
    assert sampler.cdf[-1] == 1.0 and np.all(np.diff(sampler.cdf) > 0)
    assert_rows_are_permutations(sampler.perms, Q.shape[0])


@pytest.mark.parametrize("Q", [block(2, 4, 0.8), random_ds(6, 3), random_ds(7, 4, low=0.0), block(3, 2, 0.7),
                               ring_gaussian(5, 0.9), np.eye(4)[[2, 0, 3, 1]]],
                         ids=["block", "sinkhorn6", "sinkhorn7-sparse", "block3x2", "ring", "permutation"])
def test_birkhoff_decomposition(Q):
    perms, w = birkhoff_decomposition(Q)
    M = Q.shape[0]
    assert perms.shape == (len(w), M) and len(w) <= (M - 1) ** 2 + 1
    assert_rows_are_permutations(perms, M)
    assert np.all(w > 0)
    assert abs(w.sum() - 1.0) < 1e-10
    R = np.zeros((M, M))
    for wk, p in zip(w, perms):
        R[np.arange(M), p] += wk
    np.testing.assert_allclose(R, Q, rtol=0, atol=1e-10)
    # The Birkhoff sampler built on it has the same marginals.
    np.testing.assert_allclose(BirkhoffSampler(Q).marginals(), Q, rtol=0, atol=1e-10)


def test_table_sampler_argument_checks():
    with pytest.raises(ValueError, match="^perms:"):
        TableSampler([[0, 0, 1]], [1.0])
    with pytest.raises(ValueError, match="^perms:"):
        TableSampler([[0, 1], [1, 0]], [1.0])
    with pytest.raises(ValueError, match="^weights:"):
        TableSampler([[0, 1], [1, 0]], [1.0, -0.5])
    t = TableSampler([[0, 1], [1, 0]], [3.0, 0.0])          # zero weights are dropped
    assert t.perms.tolist() == [[0, 1]] and t.cdf.tolist() == [1.0]


def all_permutation_probabilities(Q):
    M = Q.shape[0]
    perms = np.array(list(itertools.permutations(range(M))))
    w = np.prod(Q[np.arange(M), perms], axis=1)
    return perms, w / w.sum(), w.sum()


def test_permanental_law():
    """M = 5, random positive Q (not doubly stochastic): the frequencies of the 120 permutations
    over n = 60000 draws against P(pi) = prod_m Q[m, pi(m)] / perm(Q), enumerated with itertools.

    Each frequency is binomial: we allow 5 sd + 2e-4 per permutation. The chi-square statistic
    (119 degrees of freedom: mean 119, sd sqrt(238) = 15.4) must stay below mean + 5 sd = 196; a
    sampler with Q's marginals instead of the permanental law, or a wrong conditional, fails both.
    """
    rng = np.random.default_rng(42)
    M, n = 5, 60_000
    Q = rng.uniform(0.05, 1.0, (M, M))
    perms, p, permanent = all_permutation_probabilities(Q)
    s = PermanentalSampler(Q)
    assert s.subperm[0] == pytest.approx(permanent, rel=1e-12)
    assert s.subperm[(1 << M) - 1] == 1.0
    drawn = sample_permutations(s, 99, 0, np.arange(n), 0, 0, 0)
    assert drawn.shape == (n, M)
    assert_rows_are_permutations(drawn, M)
    code = lambda a: (a * (M ** np.arange(M))).sum(-1)   # noqa: E731
    index = {c: k for k, c in enumerate(code(perms))}
    counts = np.bincount([index[c] for c in code(drawn)], minlength=len(perms))
    freq = counts / n
    tol = 5 * np.sqrt(p * (1 - p) / n) + 2e-4
    dev = np.abs(freq - p)
    assert np.all(dev < tol), f"max deviation {dev.max():.3g} for permutation {perms[np.argmax(dev - tol)]}"
    chi2 = np.sum((counts - n * p) ** 2 / (n * p))
    assert chi2 < 119 + 5 * np.sqrt(2 * 119), f"chi-square {chi2:.1f} with 119 degrees of freedom"


def test_permanental_law_respects_zeros_and_differs_from_Q():
    """Entries with Q = 0 are never drawn; and for a doubly stochastic Q the permanental marginals
    are not Q in general (the reason the table samplers exist)."""
    Q = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    perms = sample_permutations(PermanentalSampler(Q), 1, 0, np.arange(2000), 0, 0, 0)
    assert_rows_are_permutations(perms, 3)
    assert not np.any(perms == np.arange(3)), "a zero-probability entry was drawn"
    # Only the two 3-cycles have positive weight, each 1/2.
    assert set(map(tuple, perms)) == {(1, 2, 0), (2, 0, 1)}
    Q = random_ds(4, 8, low=0.0)
    perms, p, _ = all_permutation_probabilities(Q)
    marg = np.zeros((4, 4))
    for pk, pi in zip(p, perms):
        marg[np.arange(4), pi] += pk
    assert np.abs(marg - Q).max() > 1e-3


def test_permanental_subset_permanents():
    rng = np.random.default_rng(3)
    Q = rng.uniform(0, 1, (4, 4))
    F = subset_permanents(Q)
    # F[S]: permanent of rows |S|.. on the columns not in S.
    for S in range(16):
        cols = [j for j in range(4) if not (S >> j) & 1]
        r0 = 4 - len(cols)
        want = sum(np.prod([Q[r0 + t, c] for t, c in enumerate(pi)]) for pi in itertools.permutations(cols))
        assert F[S] == pytest.approx(want if cols else 1.0, rel=1e-12, abs=1e-300), S


def test_permanental_sampler_limits():
    with pytest.raises(ValueError, match=r"^Q: .*M <= 12"):
        PermanentalSampler(uniform(13))
    with pytest.raises(ValueError, match=r"^Q: .*M <= 12"):
        make_sampler(uniform(13), "permanental")
    with pytest.raises(ValueError, match=r"^Q: .*M <= 12"):
        Routing(13, uniform(13), sampler="permanental")
    s = PermanentalSampler(uniform(12))            # the largest size it takes
    assert_rows_are_permutations(sample_permutations(s, 0, 0, np.arange(50), 0, 0, 0), 12)
    with pytest.raises(ValueError, match="^Q:"):
        PermanentalSampler(np.ones((2, 3)))
    with pytest.raises(ValueError, match="^Q:"):
        PermanentalSampler(np.array([[1.0, -0.1], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"^Q: .*permanent is zero"):
        PermanentalSampler(np.array([[1.0, 1.0], [0.0, 0.0]]))


# ---- numpy and C++ draw the same permutations ----------------------------------------------------

SEEDS = (0, 1, 987654321, U32_MAX)
STEPS = (0, 7, U32_MAX)
EXAMPLES = (0, 3, 123456789, U32_MAX)
LAYERS = (0, 2, philox.MAX_LAYER)


def agreement_routings():
    return [
        ("rotation", ring_gaussian(8, 1.0), "rotation"),
        ("birkhoff-block", block(2, 4, 0.8), "birkhoff"),
        ("birkhoff-sinkhorn", random_ds(6, 3), "birkhoff"),
        ("permanental-5", random_ds(5, 11), "permanental"),
        ("permanental-12", random_ds(12, 12), "permanental"),
        ("identity", identity(3), "auto"),
    ]


def block_indices(granularity, out, inp):
    """The (unit, weight) indices of a layer's routed blocks at this granularity."""
    if granularity == "layer":
        return np.zeros(1, np.int64), np.zeros(1, np.int64)
    if granularity == "unit":
        return np.arange(out), np.zeros(out, np.int64)
    j, i = np.meshgrid(np.arange(out), np.arange(inp + 1), indexing="ij")
    return j.ravel(), i.ravel()


@pytest.mark.parametrize("case", range(6), ids=[c[0] for c in agreement_routings()])
@pytest.mark.parametrize("granularity", ["layer", "unit", "edge"])
def test_kernel_permutations_match_numpy(case, granularity):
    name, Q, sampler = agreement_routings()[case]
    out, inp = 5, 3
    units, weights = block_indices(granularity, out, inp)
    seeds = SEEDS if Q.shape[0] < 12 else (0, U32_MAX)    # M = 12: the sub-permanent table is slow to build
    n_checked = 0
    for seed, mode in itertools.product(seeds, ("annealed", "quenched")):
        r = Routing(Q.shape[0], Q, granularity, "batch", mode, sampler, seed)
        for step, example, layer in itertools.product(STEPS, EXAMPLES, LAYERS):
            got = KR.permutations(r, example, layer, units, weights, step)
            want = sample_permutations(r.sampler, r.seed, r.step_key(step), example, layer, units, weights)
            assert got.shape == want.shape == (len(units), Q.shape[0])
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {granularity} seed={seed} step={step} "
                                                             f"example={example} layer={layer} mode={mode}")
            n_checked += 1
    assert n_checked == len(seeds) * 2 * len(STEPS) * len(EXAMPLES) * len(LAYERS)


@pytest.mark.parametrize("granularity", ["layer", "unit", "edge"])
def test_owner_maps_match_kernel_permutations(granularity):
    """Routing.owners (what the reference uses) reads the permutations the kernels draw."""
    Q = random_ds(4, 5)
    for sampler in ("birkhoff", "permanental"):
        r = Routing(4, Q, granularity, "example", "annealed", sampler, seed=U32_MAX)
        out, inp, layer, step = 6, 4, 1, 9
        ex = np.array([0, 5, U32_MAX])
        own = r.owners(layer, out, inp, step, ex)
        units, weights = block_indices(granularity, out, inp)
        for b, e in enumerate(ex):
            perms = KR.permutations(r, e, layer, units, weights, step)        # (blocks, M)
            for blk, (j, i) in enumerate(zip(units, weights)):
                js = slice(None) if granularity == "layer" else slice(j, j + 1)
                is_ = slice(None) if granularity != "edge" else slice(i, i + 1)
                block_owners = own[b][:, js, is_].reshape(4, -1)
                np.testing.assert_array_equal(block_owners, np.repeat(perms[blk][:, None], block_owners.shape[1], 1))


# ---- Routing -------------------------------------------------------------------------------------

def test_quenched_ignores_step_annealed_does_not():
    Q = ring_gaussian(4, 1.0)
    for g in ("layer", "unit", "edge"):
        q = Routing(4, Q, g, "batch", "quenched", seed=3)
        a = Routing(4, Q, g, "batch", "annealed", seed=3)
        ex = np.arange(20)
        np.testing.assert_array_equal(q.owners(0, 5, 3, 0, ex), q.owners(0, 5, 3, 7, ex))
        np.testing.assert_array_equal(q.owners(1, 5, 3, 0, 4), q.owners(1, 5, 3, 7, 4))
        assert q.step_key(7) == 0 and a.step_key(7) == 7
        assert not np.array_equal(a.owners(0, 5, 3, 0, ex), a.owners(0, 5, 3, 7, ex)), g
        # Step 0 is the quenched cover.
        np.testing.assert_array_equal(a.owners(0, 5, 3, 0, ex), q.owners(0, 5, 3, 123, ex))
        # Examples and layers get different covers; seeds too.
        o = q.owners(0, 5, 3, 0, ex)
        assert any(not np.array_equal(o[0], o[k]) for k in range(1, 20)), g
        assert not np.array_equal(q.owners(0, 5, 3, 0, ex), q.owners(1, 5, 3, 0, ex)), g
        other_seed = Routing(4, Q, g, seed=4, mode="quenched")
        assert not np.array_equal(q.owners(0, 5, 3, 0, ex), other_seed.owners(0, 5, 3, 0, ex)), g


@pytest.mark.parametrize("granularity", ["layer", "unit", "edge"])
def test_owner_maps(granularity):
    M, out, inp = 4, 5, 3
    ident = Routing(M, None, granularity, "example", "annealed", seed=11)
    assert ident.is_identity
    o = ident.owners(0, out, inp, 5, np.arange(7))
    assert o.dtype == np.int64 and o.shape == (7, M, out, inp + 1)
    np.testing.assert_array_equal(o, np.broadcast_to(np.arange(M)[None, :, None, None], o.shape))
    r = Routing(M, random_ds(M, 2), granularity, "batch", "annealed", seed=11)
    assert not r.is_identity
    single = r.owners(2, out, inp, 3, 9)
    assert single.shape == (M, out, inp + 1)
    many = r.owners(2, out, inp, 3, np.array([4, 9, 0]))
    assert many.shape == (3, M, out, inp + 1)
    np.testing.assert_array_equal(many[1], single)
    assert r.owners(0, out, inp, 0, np.zeros(0, np.int64)).shape == (0, M, out, inp + 1)
    # Each entry's owners over the streams form a permutation.
    assert_rows_are_permutations(np.moveaxis(many, 1, -1), M)
    if granularity == "layer":
        np.testing.assert_array_equal(many, np.broadcast_to(many[..., :1, :1], many.shape))
    elif granularity == "unit":
        np.testing.assert_array_equal(many, np.broadcast_to(many[..., :1], many.shape))
        assert any(not np.array_equal(many[..., 0, 0], many[..., j, 0]) for j in range(1, out))
    else:
        assert any(not np.array_equal(many[..., 0, 0], many[..., j, i]) for j in range(out) for i in range(inp + 1))
        assert any(not np.array_equal(many[..., j, 0], many[..., j, i]) for j in range(out) for i in range(1, inp + 1))


def test_routing_defaults_and_repr():
    r = Routing(3)
    assert r.M == 3 and r.granularity == "layer" and r.per == "batch" and r.mode == "annealed" and r.seed == 0
    np.testing.assert_array_equal(r.Q, np.eye(3))
    assert "M=3" in repr(r) and "lambda2=1" in repr(r)
    assert Routing(1).owners(0, 2, 2, 5, 5).tolist() == [[[0, 0, 0], [0, 0, 0]]]


def test_routing_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"^granularity: .*'layer'.*got 'row'"):
        Routing(4, granularity="row")
    with pytest.raises(ValueError, match=r"^per: .*got 'minibatch'"):
        Routing(4, per="minibatch")
    with pytest.raises(ValueError, match=r"^mode: .*got 'frozen'"):
        Routing(4, mode="frozen")
    with pytest.raises(ValueError, match=r"^Q: expected shape \(3, 3\) for M = 3"):
        Routing(3, uniform(4))
    with pytest.raises(ValueError, match=r"^Q: .*doubly stochastic"):
        Routing(2, np.array([[0.5, 0.5], [0.2, 0.8]]))
    with pytest.raises(ValueError, match=r"^sampler:"):
        Routing(2, uniform(2), sampler="mcmc")
    for seed in (-1, 2 ** 32, 1.5, True):
        with pytest.raises(ValueError, match=r"^seed: .*\[0, 2\*\*32\)"):
            Routing(2, seed=seed)
    Routing(2, seed=U32_MAX)
    with pytest.raises(ValueError, match=r"^M:"):
        Routing(0)
    r = Routing(2, uniform(2), mode="annealed")
    with pytest.raises(ValueError, match=r"^step:"):
        r.step_key(-1)
    with pytest.raises(ValueError, match=r"^step:"):
        r.owners(0, 2, 2, 2 ** 32, 0)
    with pytest.raises(ValueError, match=r"^example:"):
        r.owners(0, 2, 2, 0, np.zeros((2, 2), np.int64))
