"""Routed-replica (M-cover) CPU kernels against the float64 numpy reference: the routed MLP
(forward/backward, every granularity, per batch and per example), its identity and one-writer
properties, determinism, and the routed committee machine / binary perceptron epoch."""
import itertools
import zlib

import numpy as np
import pytest

import perceptrons
from perceptrons import kernels as K
from perceptrons.kernels import routed as KR
from perceptrons.reference import routed as RR
from perceptrons.routing import Routing, identity, ring_gaussian, sinkhorn, uniform

from ..conftest import ISAS, cpu_isa, num_threads
from ..mlp.helpers import make_net

U32_MAX = 2 ** 32 - 1
GRANULARITIES = ("layer", "unit", "edge")
ACTIVATIONS = ("relu", "tanh", "silu", "sine")
OUTPUT_ACTIVATIONS = ("none", "tanh", "sigmoid")
# Relative Frobenius error allowed against the float64 reference. float64: the kernels and the
# reference sum the same products in different orders, a few ulps per layer (1e-12 leaves a wide
# margin but catches any wrong copy, index or missing term, which give O(1) relative errors).
# float32: the reference runs in float64 on the same float32 inputs, so the error is the kernel's
# float32 rounding through 2-3 layers of width <= 32: ~1e-7 per operation, below 1e-5 in norm.
TOL = {np.float64: 1e-12, np.float32: 1e-5}


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))  # the same data every run


def random_ds(M, seed):
    return sinkhorn(np.random.default_rng(seed).uniform(0.05, 1.0, (M, M)))


def make_copies(widths, M, dtype, rng, activation, bias=True):
    """M independent copies of a network, copy-major: weights[l] (M, out, in), biases[l] (M, out)."""
    nets = [make_net(widths, np.float64, rng, activation, bias) for _ in range(M)]
    L = len(widths) - 1
    ws = [np.stack([n[0][l] for n in nets]).astype(dtype) for l in range(L)]
    bs = [np.stack([n[1][l] for n in nets]).astype(dtype) for l in range(L)] if bias else None
    return ws, bs


def ref_owners(routing, widths, step, batch_id, example_ids, B):
    """The owner maps the reference takes, from the same keys the kernels use."""
    if routing.per == "batch":
        ex = batch_id
    else:
        ex = np.arange(B) if example_ids is None else np.asarray(example_ids)
    return [routing.owners(l, widths[l + 1], widths[l], step, ex) for l in range(len(widths) - 1)]


def rel_err(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    nw = np.linalg.norm(want)
    if nw == 0:
        return np.inf if np.any(got != 0) else 0.0
    return np.linalg.norm(got - want) / nw


def assert_rel(got, want, tol, what):
    err = rel_err(got, want)
    assert err <= tol, f"{what}: relative Frobenius error {err:.3g} > {tol:.1g}"


def run_kernel(routing, spec, x, ws, bs, dy, step, batch_id=0, example_ids=None):
    kw = dict(step=step, batch_id=batch_id, example_ids=example_ids)
    y = KR.mlp_forward(routing, spec, x, ws, bs, **kw)
    y_t, saved = KR.mlp_forward(routing, spec, x, ws, bs, training=True, **kw)
    np.testing.assert_array_equal(y_t, y, err_msg="training forward differs from inference forward")
    dx, dws, dbs = KR.mlp_backward(routing, spec, dy, x, y_t, saved, ws, bs, **kw)
    return y, dx, dws, dbs


def run_reference(spec, x, ws, bs, dy, owners):
    kw = dict(activation=spec.activation, output_activation=spec.output_activation,
              activation_param=spec.activation_param, output_activation_param=spec.output_activation_param)
    y = RR.forward(x, ws, bs, owners, **kw)
    return (y, *RR.backward(dy, x, ws, bs, owners, **kw))


def compare_with_reference(routing, spec, x, ws, bs, dy, step, batch_id, example_ids, dtype, tag):
    y, dx, dws, dbs = run_kernel(routing, spec, x, ws, bs, dy, step, batch_id, example_ids)
    B = x.shape[-2]
    owners = ref_owners(routing, spec.widths, step, batch_id, example_ids, B)
    y_r, dx_r, dws_r, dbs_r = run_reference(spec, x, ws, bs, dy, owners)
    M = routing.M
    assert y.shape == (M, B, spec.widths[-1]) and y.dtype == dtype
    assert dx.shape == (M, B, spec.widths[0]) and dx.dtype == dtype, "dx is per stream, also for a shared x"
    tol = TOL[dtype]
    assert_rel(y, y_r, tol, f"y {tag}")
    assert_rel(dx, dx_r, tol, f"dx {tag}")
    for l in range(spec.n_layers):
        assert dws[l].shape == ws[l].shape
        assert_rel(dws[l], dws_r[l], tol, f"dW[{l}] {tag}")
        if bs is None:
            assert dbs is None and dbs_r is None
        else:
            assert_rel(dbs[l], dbs_r[l], tol, f"db[{l}] {tag}")
    return y, dx, dws, dbs


# ---- routed MLP against the reference ------------------------------------------------------------

NETS = {  # M -> (widths, Q, sampler)
    1: ([5, 16, 3], identity(1), "auto"),
    3: ([3, 16, 16, 2], ring_gaussian(3, 0.8), "rotation"),
    4: ([4, 32, 1], random_ds(4, 7), "birkhoff"),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("per", ["batch", "example"])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_routed_mlp_matches_reference(granularity, per, dtype):
    """M in (1, 3, 4) x batch in (0, 1, 5[, 100]) x (shared x, per-stream x) x (biases, none);
    the activation, output activation, mode, step, batch id and example ids vary along the grid."""
    batches = (0, 1, 5, 100) if per == "batch" else (0, 1, 5)
    combos = list(itertools.product((1, 3, 4), batches, ("shared", "streams"), (True, False)))
    for n, (M, B, x_mode, bias) in enumerate(combos):
        rng = rng_for(granularity, per, np.dtype(dtype).name, n)
        widths, Q, sampler = NETS[M]
        activation = ACTIVATIONS[n % len(ACTIVATIONS)]
        spec = K.MLPSpec(widths, activation, OUTPUT_ACTIVATIONS[n % len(OUTPUT_ACTIVATIONS)])
        mode = ("annealed", "quenched")[n % 2]
        routing = Routing(M, Q, granularity, per, mode, sampler, seed=int(rng.integers(0, 2 ** 32)))
        ws, bs = make_copies(widths, M, dtype, rng, activation, bias)
        x_shape = (B, widths[0]) if x_mode == "shared" else (M, B, widths[0])
        x = rng.standard_normal(x_shape).astype(dtype)
        dy = rng.standard_normal((M, B, widths[-1])).astype(dtype)
        step = int(rng.integers(0, 1000))
        batch_id = (0, U32_MAX, int(rng.integers(0, 2 ** 32)))[n % 3]
        example_ids = None
        if per == "example" and n % 3 != 0:
            example_ids = rng.integers(0, 2 ** 32, B)
            if B:
                example_ids[-1] = U32_MAX
        tag = (f"[{granularity} {per} {np.dtype(dtype).name}] M={M} B={B} x={x_mode} bias={bias} {spec} "
               f"mode={mode} step={step} batch_id={batch_id} ids={example_ids}")
        compare_with_reference(routing, spec, x, ws, bs, dy, step, batch_id, example_ids, dtype, tag)


@pytest.mark.parametrize("per", ["batch", "example"])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_permanental_sampler_through_mlp_kernel(granularity, per):
    rng = rng_for("permanental", granularity, per)
    widths = [3, 16, 8, 2]
    spec = K.MLPSpec(widths, "tanh")
    for M, B in ((4, 6), (5, 3)):
        routing = Routing(M, random_ds(M, 3), granularity, per, "annealed", "permanental", seed=U32_MAX)
        assert routing.sampler.name == "permanental"
        ws, bs = make_copies(widths, M, np.float64, rng, "tanh")
        x = rng.standard_normal((M, B, widths[0]))
        dy = rng.standard_normal((M, B, widths[-1]))
        ids = rng.integers(0, 2 ** 32, B) if per == "example" else None
        for step in (0, 5):
            compare_with_reference(routing, spec, x, ws, bs, dy, step, 77, ids, np.float64,
                                   f"permanental {granularity} {per} M={M} step={step}")


def test_routing_actually_mixes_the_copies():
    """A non-identity routing gives a different result than independent copies (so the reference
    comparisons above cannot pass by ignoring the routing)."""
    rng = rng_for("mixes")
    widths = [3, 16, 2]
    spec = K.MLPSpec(widths, "tanh")
    ws, bs = make_copies(widths, 4, np.float64, rng, "tanh")
    x = rng.standard_normal((10, 3))
    for g, per in itertools.product(GRANULARITIES, ("batch", "example")):
        mixed = KR.mlp_forward(Routing(4, uniform(4), g, per, seed=1), spec, x, ws, bs, step=2)
        plain = KR.mlp_forward(Routing(4, None, g, per, seed=1), spec, x, ws, bs, step=2)
        assert np.abs(mixed - plain).max() > 1e-3, f"{g} {per}: uniform Q gives the identity's output"


def test_per_example_with_equal_ids_equals_per_batch():
    """Per example with every example keyed by the same id draws the per-batch cover of that id."""
    rng = rng_for("equal ids")
    widths = [4, 16, 16, 3]
    spec = K.MLPSpec(widths, "silu")
    ws, bs = make_copies(widths, 4, np.float64, rng, "silu")
    x = rng.standard_normal((4, 9, 4))
    dy = rng.standard_normal((4, 9, 3))
    for g in GRANULARITIES:
        kw = dict(Q=random_ds(4, 1), granularity=g, mode="annealed", seed=5)
        a = run_kernel(Routing(4, per="batch", **kw), spec, x, ws, bs, dy, 3, batch_id=123)
        b = run_kernel(Routing(4, per="example", **kw), spec, x, ws, bs, dy, 3, example_ids=np.full(9, 123))
        for ga, gb in zip([a[0], a[1]] + a[2] + a[3], [b[0], b[1]] + b[2] + b[3]):
            assert rel_err(gb, ga) < 1e-13, g


# ---- identity and the one-writer property --------------------------------------------------------

@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_identity_is_independent_fused_mlps_bit_for_bit(granularity):
    """Q = I: stream m is the fused MLP on copy m, to the bit (every ISA, both dtypes)."""
    M = 3
    combos = itertools.product((np.float32, np.float64), (1, 37, 300), ("shared", "streams"))
    for n, (dtype, B, x_mode) in enumerate(combos):
        bias = n % 2 == 0          # with and without biases, along the grid
        rng = rng_for("identity", granularity, np.dtype(dtype).name, B, x_mode, bias)
        widths = [5, 32, 16, 3]
        spec = K.MLPSpec(widths, "silu", "tanh")
        routing = Routing(M, identity(M), granularity, "batch", "annealed", seed=9)
        ws, bs = make_copies(widths, M, dtype, rng, "silu", bias)
        x = rng.standard_normal((B, 5) if x_mode == "shared" else (M, B, 5)).astype(dtype)
        dy = rng.standard_normal((M, B, 3)).astype(dtype)
        for isa in ISAS:
            with cpu_isa(isa):
                y, dx, dws, dbs = run_kernel(routing, spec, x, ws, bs, dy, step=4, batch_id=8)
                for m in range(M):
                    xm = x if x_mode == "shared" else x[m]
                    wm = [w[m] for w in ws]
                    bm = None if bs is None else [b[m] for b in bs]
                    ym, saved = K.mlp_forward(spec, xm, wm, bm, training=True)
                    dxm, dwm, dbm = K.mlp_backward(spec, dy[m], xm, ym, saved, wm, bm)
                    tag = f"[{isa}] {granularity} {np.dtype(dtype).name} B={B} x={x_mode} bias={bias} stream {m}"
                    np.testing.assert_array_equal(y[m], ym, err_msg=f"y {tag}")
                    np.testing.assert_array_equal(dx[m], dxm, err_msg=f"dx {tag}")
                    for l in range(spec.n_layers):
                        np.testing.assert_array_equal(dws[l][m], dwm[l], err_msg=f"dW[{l}] {tag}")
                        if bs is None:
                            assert dbs is None
                        else:
                            np.testing.assert_array_equal(dbs[l][m], dbm[l], err_msg=f"db[{l}] {tag}")


@pytest.mark.parametrize("sampler", ["birkhoff", "permanental"])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_per_batch_gradients_have_one_writer_per_copy(granularity, sampler):
    """Per batch, each copy entry receives exactly one stream's gradient: dW[c, j, i] is, to the bit,
    the fused-kernel gradient of the stream m with owners[m, j, i] = c, computed on that stream's
    gathered weights (and the copies' gradients sum to the streams' gradients)."""
    M = 4
    widths = [3, 16, 8, 2]
    spec = K.MLPSpec(widths, "tanh")
    for dtype in (np.float32, np.float64):
        rng = rng_for("writer", granularity, sampler, np.dtype(dtype).name)
        routing = Routing(M, random_ds(M, 21), granularity, "batch", "annealed", sampler, seed=12)
        ws, bs = make_copies(widths, M, dtype, rng, "tanh")
        x = rng.standard_normal((M, 50, 3)).astype(dtype)
        dy = rng.standard_normal((M, 50, 2)).astype(dtype)
        y, dx, dws, dbs = run_kernel(routing, spec, x, ws, bs, dy, step=6, batch_id=31)
        owners = ref_owners(routing, widths, 6, 31, None, 50)
        gathered = [RR.gather(ws, bs, owners[l], l) for l in range(spec.n_layers)]
        streams = []
        for m in range(M):
            wm = [g[0][m].astype(dtype) for g in gathered]
            bm = [g[1][m].astype(dtype) for g in gathered]
            ym, saved = K.mlp_forward(spec, x[m], wm, bm, training=True)
            np.testing.assert_array_equal(y[m], ym, err_msg=f"y stream {m}")
            dxm, dwm, dbm = K.mlp_backward(spec, dy[m], x[m], ym, saved, wm, bm)
            np.testing.assert_array_equal(dx[m], dxm, err_msg=f"dx stream {m}")
            streams.append((dwm, dbm))
        for l in range(spec.n_layers):
            out, inp = widths[l + 1], widths[l]
            own = owners[l]
            want_w = np.full(ws[l].shape, np.nan, dtype)
            want_b = np.full(bs[l].shape, np.nan, dtype)
            j = np.arange(out)[:, None]
            i = np.arange(inp)[None, :]
            for m in range(M):
                want_w[own[m, :, :inp], j, i] = streams[m][0][l]
                want_b[own[m, :, inp], np.arange(out)] = streams[m][1][l]
            assert not np.isnan(want_w).any() and not np.isnan(want_b).any(), "owners are not permutations"
            tag = f"{granularity} {sampler} {np.dtype(dtype).name} layer {l}"
            np.testing.assert_array_equal(dws[l], want_w, err_msg=f"dW {tag}")
            np.testing.assert_array_equal(dbs[l], want_b, err_msg=f"db {tag}")
            total = sum(s[0][l].astype(np.float64) for s in streams)
            f32 = dtype == np.float32
            np.testing.assert_allclose(dws[l].astype(np.float64).sum(0), total, rtol=1e-5 if f32 else 1e-12,
                                       atol=1e-6 if f32 else 1e-14)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_gradients_do_not_depend_on_what_their_buffers_held(granularity):
    """Per batch with one tile of rows, the streams' weight gradients are written straight into the
    copies' arrays (unit granularity: through a row table), starting from the first tile's products:
    NaN-filled output arrays must come back with the bits of fresh ones, at one tile and at several."""
    from perceptrons import _C
    from perceptrons.kernels._common import DTYPES, ptr
    M = 4
    for widths, B in (([32, 64, 32, 16], 9), ([32, 64, 32, 16], 150), ([16, 16, 16], 72)):
        spec = K.MLPSpec(widths, "relu")
        rng = rng_for("buffers", granularity, str(widths), str(B))
        routing = Routing(M, ring_gaussian(M, 1.0), granularity, "batch", "annealed", seed=3)
        ws, bs = make_copies(widths, M, np.float32, rng, "relu")
        x = rng.standard_normal((M, B, widths[0])).astype(np.float32)
        dy = rng.standard_normal((M, B, widths[-1])).astype(np.float32)
        y, saved = KR.mlp_forward(routing, spec, x, ws, bs, training=True, step=2)
        want = KR.mlp_backward(routing, spec, dy, x, y, saved, ws, bs, step=2)
        dx = np.full_like(x, np.nan)
        dws = [np.full_like(w, np.nan) for w in ws]
        dbs = [np.full_like(b, np.nan) for b in bs]
        _C.routed_mlp_backward_cpu(KR.routing_tuple(routing, 2, 0, KR.example_ids_array(None, B)), DTYPES[x.dtype],
                                   spec.widths, *spec.codes(), B, ptr(x), B * widths[0], ptr(y),
                                   [ptr(s) for s in saved], ptr(dy), [ptr(w) for w in ws], [ptr(b) for b in bs],
                                   ptr(dx), [ptr(w) for w in dws], [ptr(b) for b in dbs])
        tag = f"{granularity} {widths} B={B}"
        np.testing.assert_array_equal(dx, want[0], err_msg=f"dx {tag}")
        for l in range(spec.n_layers):
            np.testing.assert_array_equal(dws[l], want[1][l], err_msg=f"dW[{l}] {tag}")
            np.testing.assert_array_equal(dbs[l], want[2][l], err_msg=f"db[{l}] {tag}")


@pytest.mark.parametrize("per", ["batch", "example"])
def test_results_are_deterministic_across_calls_and_threads(per):
    """Two calls give the same bits, and 1 thread gives the bits of 2 (per example, gradients are
    accumulated in a fixed number of slots whatever the thread count)."""
    rng = rng_for("determinism", per)
    M = 4
    widths = [6, 32, 32, 4]
    spec = K.MLPSpec(widths, "relu", "none")
    B = 300 if per == "batch" else 40
    ws, bs = make_copies(widths, M, np.float32, rng, "relu")
    x = rng.standard_normal((B, 6)).astype(np.float32)
    dy = rng.standard_normal((M, B, 4)).astype(np.float32)
    ids = rng.integers(0, 2 ** 32, B)
    before = perceptrons._C.openmp_max_threads()
    for g in GRANULARITIES:
        routing = Routing(M, random_ds(M, 4), g, per, "annealed", seed=2)
        results = []
        for threads in (2, 2, 1, 2):
            with num_threads(threads):
                results.append(run_kernel(routing, spec, x, ws, bs, dy, 11, 3, ids if per == "example" else None))
        assert perceptrons._C.openmp_max_threads() == before, "thread count not restored"
        first = results[0]
        flat0 = [first[0], first[1]] + first[2] + first[3]
        for k, other in enumerate(results[1:], 1):
            for a, b in zip(flat0, [other[0], other[1]] + other[2] + other[3]):
                np.testing.assert_array_equal(b, a, err_msg=f"{g} {per}: run {k} differs")


def test_empty_batch_gives_zero_gradients():
    rng = rng_for("empty")
    widths = [3, 16, 2]
    spec = K.MLPSpec(widths, "relu")
    for g, per in itertools.product(GRANULARITIES, ("batch", "example")):
        routing = Routing(3, uniform(3), g, per, seed=1)
        ws, bs = make_copies(widths, 3, np.float32, rng, "relu")
        x = np.zeros((0, 3), np.float32)
        y, saved = KR.mlp_forward(routing, spec, x, ws, bs, training=True)
        assert y.shape == (3, 0, 2)
        dx, dws, dbs = KR.mlp_backward(routing, spec, np.zeros((3, 0, 2), np.float32), x, y, saved, ws, bs,
                                       example_ids=np.zeros(0, np.int64) if per == "example" else None)
        assert dx.shape == (3, 0, 3)
        for gr, p in zip(dws + dbs, ws + bs):
            assert gr.shape == p.shape and gr.dtype == p.dtype and not gr.any()


# ---- routed committee machine / binary perceptron -------------------------------------------------

def committee_problem(K_, N, P, rng):
    patterns = rng.choice([-1, 1], size=(P, N)).astype(np.int8)
    teacher = rng.choice([-1, 1], size=(K_, N))
    labels = np.sign(np.sign(patterns @ teacher.T).sum(1)).astype(np.int8)   # K odd, N odd: no zeros
    assert np.all(np.abs(labels) == 1)
    return patterns, labels


@pytest.mark.parametrize("sampler", ["rotation", "permanental"])
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("K_", [1, 3], ids=["K1", "K3"])
def test_committee_epoch_matches_reference(K_, granularity, sampler):
    """Several epochs in a row (step = epoch index), annealed and quenched, margins 0 and 0.3,
    h_max 0 and 4: float64 H (eta = 1) and float32 H (eta = 0.5) are equal to the bit, and the update
    counts are equal. H starts on half-integers, zeros included (sign(0) = +1)."""
    M, N, P, epochs = 4, 21, 30, 3
    rng = rng_for("committee", K_, granularity, sampler)
    patterns, labels = committee_problem(K_, N, P, rng)
    Q = ring_gaussian(M, 0.9)
    H0 = rng.integers(-3, 4, size=(M, K_, N)) * 0.5
    total_updates = 0
    for mode, margin, h_max in itertools.product(("annealed", "quenched"), (0.0, 0.3), (0.0, 4.0)):
        routing = Routing(M, Q, granularity, "example", mode, sampler, seed=int(rng.integers(0, 2 ** 32)))
        H = {np.float64: H0.astype(np.float64), np.float32: H0.astype(np.float32)}
        H_ref = {dt: h.copy() for dt, h in H.items()}
        for epoch in range(epochs):
            order = rng.permutation(P)
            if epoch == 1:
                order = np.concatenate([order, order[:7]])       # repeated patterns inside an epoch
            all_owners = routing.owners(0, K_, N, epoch, np.arange(P))[..., :N]   # (P, M, K, N)
            np.testing.assert_array_equal(all_owners[5], routing.owners(0, K_, N, epoch, 5)[:, :, :N])
            for dt, eta in ((np.float64, 1.0), (np.float32, 0.5)):
                got = KR.committee_epoch(routing, H[dt], patterns, labels, order, eta=eta, margin=margin,
                                         h_max=h_max, step=epoch)
                want = RR.committee_epoch(H_ref[dt], patterns, labels, order, lambda mu: all_owners[mu], eta=eta,
                                          margin=margin, h_max=h_max)
                tag = (f"K={K_} {granularity} {sampler} {mode} margin={margin} h_max={h_max} epoch={epoch} "
                       f"{np.dtype(dt).name}")
                assert H[dt].dtype == dt and H_ref[dt].dtype == dt
                assert got == want, f"update count {got} != {want}: {tag}"
                np.testing.assert_array_equal(H[dt], H_ref[dt], err_msg=tag)
                if h_max > 0:
                    assert np.abs(H[dt]).max() <= h_max
                total_updates += got
    assert total_updates > 0


@pytest.mark.parametrize("sampler", ["rotation", "birkhoff"])
def test_committee_edge_epoch_with_many_copies_matches_reference(sampler):
    """Edge routing with M >= 32 copies and an epoch of >= 8 patterns runs weight-major (H transposed
    for the epoch; rotation tables as contiguous runs, other tables indexed): the same bits and
    update counts as the reference, clipped and not, for float64 and float32."""
    M, K_, N, P = 33, 3, 19, 12
    rng = rng_for("committee weight-major", sampler)
    patterns, labels = committee_problem(K_, N, P, rng)
    Q = ring_gaussian(M, 2.0) if sampler == "rotation" else random_ds(M, 3)
    H0 = rng.integers(-3, 4, size=(M, K_, N)) * 0.5
    H0[0, 0, :3] = np.nan                          # NaN reads as -1 and stays NaN
    for h_max in (0.0, 2.0):
        routing = Routing(M, Q, "edge", "example", "annealed", sampler, seed=int(rng.integers(0, 2 ** 32)))
        order = np.concatenate([rng.permutation(P), rng.permutation(P)[:5]])
        all_owners = routing.owners(0, K_, N, 3, np.arange(P))[..., :N]
        for dt, eta in ((np.float64, 1.0), (np.float32, 0.5)):
            H, H_ref = H0.astype(dt), H0.astype(dt)
            got = KR.committee_epoch(routing, H, patterns, labels, order, eta=eta, margin=0.2, h_max=h_max, step=3)
            want = RR.committee_epoch(H_ref, patterns, labels, order, lambda mu: all_owners[mu], eta=eta,
                                      margin=0.2, h_max=h_max)
            tag = f"{sampler} h_max={h_max} {np.dtype(dt).name}"
            assert got == want > 0, f"update count {got} != {want}: {tag}"
            np.testing.assert_array_equal(H, H_ref, err_msg=tag)


@pytest.mark.parametrize("M", [3, 4, 6, 12, 33],
                         ids=["copy-major-3", "copy-major-4", "copy-major-6", "copy-major-12", "weight-major"])
def test_committee_edge_epoch_is_the_same_on_every_isa(M):
    """The edge blocks' uniforms and (copy-major) fields come from per-ISA loops, gathers of 8 streams
    under a lane mask on AVX-512, the field in a register for up to 8 streams: every instruction set
    gives the generic build's bits (and the reference's), with a block part full (3, 4, 6) and a
    vector plus a remainder (12)."""
    K_, N, P = 3, 45, 10
    rng = rng_for("committee isa", M)
    patterns, labels = committee_problem(K_, N, P, rng)
    H0 = rng.standard_normal((M, K_, N))
    routing = Routing(M, ring_gaussian(M, 1.5), "edge", "example", "annealed", seed=11)
    order = rng.permutation(P)
    all_owners = routing.owners(0, K_, N, 2, np.arange(P))[..., :N]
    H_ref = H0.copy()
    want = RR.committee_epoch(H_ref, patterns, labels, order, lambda mu: all_owners[mu], eta=1.0, margin=0.1,
                              h_max=1.5)
    for isa in ISAS:
        with cpu_isa(isa):
            H = H0.copy()
            got = KR.committee_epoch(routing, H, patterns, labels, order, margin=0.1, h_max=1.5, step=2)
        assert got == want > 0, isa
        np.testing.assert_array_equal(H, H_ref, err_msg=isa)


def test_committee_identity_routing_is_independent_perceptrons():
    """Q = I: copy m learns alone; with M = 1 its H is what a plain clipped perceptron rule gives."""
    rng = rng_for("perceptron")
    N, P = 15, 25
    patterns, labels = committee_problem(1, N, P, rng)
    H0 = rng.integers(-2, 3, size=(1, 1, N)).astype(np.float64)
    H = H0.copy()
    order = rng.permutation(P)
    n = KR.committee_epoch(Routing(1), H, patterns, labels, order, eta=1.0, margin=0.0, h_max=2.0)
    h = H0[0, 0].copy()
    updates = 0
    for mu in order:
        w = np.where(h >= 0, 1, -1)
        if labels[mu] * (w @ patterns[mu]) <= 0:
            h = np.clip(h + labels[mu] * patterns[mu], -2, 2)
            updates += 1
    assert n == updates > 0
    np.testing.assert_array_equal(H[0, 0], h)
    # M = 3 identity: each copy equals an M = 1 run on its own H.
    H3 = rng.integers(-2, 3, size=(3, 1, N)).astype(np.float64)
    H3_in = H3.copy()
    n3 = KR.committee_epoch(Routing(3, granularity="edge"), H3, patterns, labels, order, h_max=2.0, step=4)
    parts = 0
    for m in range(3):
        Hm = H3_in[m:m + 1].copy()
        parts += KR.committee_epoch(Routing(1), Hm, patterns, labels, order, h_max=2.0)
        np.testing.assert_array_equal(H3[m], Hm[0])
    assert n3 == parts


def test_committee_layer_routing_only_relabels_streams():
    """At layer granularity the committee machine is one block: stream m reads the whole copy pi(m)
    and writes back to it, and all streams see the state before the pattern, so any Q gives the
    same H as independent copies. Unit and edge routing, on the other hand, do mix the copies."""
    rng = rng_for("layer relabels")
    M, K_, N, P = 4, 3, 21, 30
    patterns, labels = committee_problem(K_, N, P, rng)
    H0 = rng.integers(-3, 4, size=(M, K_, N)) * 0.5
    order = rng.permutation(P)
    H_id = H0.copy()
    n_id = KR.committee_epoch(Routing(M), H_id, patterns, labels, order, h_max=3.0, step=2)
    for sampler in ("birkhoff", "permanental"):
        for g in GRANULARITIES:
            H = H0.copy()
            n = KR.committee_epoch(Routing(M, uniform(M), g, "example", "annealed", sampler, seed=8), H, patterns,
                                   labels, order, h_max=3.0, step=2)
            if g == "layer":
                assert n == n_id
                np.testing.assert_array_equal(H, H_id, err_msg=sampler)
            else:
                assert not np.array_equal(H, H_id), f"{g} {sampler}: uniform routing left the copies independent"


def test_committee_is_deterministic_across_threads():
    rng = rng_for("committee threads")
    K_, N, P = 3, 301, 20                # M K N >= 4096: the parallel path
    patterns, labels = committee_problem(K_, N, P, rng)
    for M, g in itertools.product((8, 32), GRANULARITIES):   # edge with M = 32: weight-major
        H0 = rng.standard_normal((M, K_, N))
        routing = Routing(M, ring_gaussian(M, 1.5), g, "example", "annealed", seed=3)
        out = []
        for threads in (1, 2):
            with num_threads(threads):
                H = H0.copy()
                n = KR.committee_epoch(routing, H, patterns, labels, np.arange(P), margin=0.2, step=1)
                out.append((n, H))
        assert out[0][0] == out[1][0]
        np.testing.assert_array_equal(out[0][1], out[1][1], err_msg=f"M={M} {g}")


# ---- bad inputs ----------------------------------------------------------------------------------

@pytest.fixture
def mlp_setup():
    rng = rng_for("bad inputs")
    widths = [3, 16, 2]
    spec = K.MLPSpec(widths, "relu")
    ws, bs = make_copies(widths, 2, np.float64, rng, "relu")
    routing = Routing(2, uniform(2), "unit", "example", seed=1)
    x = rng.standard_normal((5, 3))
    return routing, spec, ws, bs, x


def test_mlp_bad_x(mlp_setup):
    routing, spec, ws, bs, x = mlp_setup
    with pytest.raises(ValueError, match=r"^x: expected shape \(2, batch, 3\) or \(batch, 3\), got \(5, 4\)"):
        KR.mlp_forward(routing, spec, np.zeros((5, 4)), ws, bs)
    with pytest.raises(ValueError, match=r"^x: "):
        KR.mlp_forward(routing, spec, np.zeros((3, 5, 3)), ws, bs)        # 3 streams for M = 2
    with pytest.raises(ValueError, match=r"^x: "):
        KR.mlp_forward(routing, spec, np.zeros(3), ws, bs)
    with pytest.raises(TypeError, match=r"^x: expected float32 or float64, got int64"):
        KR.mlp_forward(routing, spec, np.zeros((5, 3), np.int64), ws, bs)
    with pytest.raises(TypeError, match=r"^x: expected a numpy array"):
        KR.mlp_forward(routing, spec, x.tolist(), ws, bs)


def test_mlp_bad_parameters(mlp_setup):
    routing, spec, ws, bs, x = mlp_setup
    with pytest.raises(ValueError, match=r"^weights\[0\]: expected shape \(2, 16, 3\), got \(2, 16, 4\)"):
        KR.mlp_forward(routing, spec, x, [np.zeros((2, 16, 4)), ws[1]], bs)
    with pytest.raises(ValueError, match=r"^weights\[1\]: expected shape \(2, 2, 16\)"):
        KR.mlp_forward(routing, spec, x, [ws[0], ws[1][:1]], bs)        # one copy short
    with pytest.raises(TypeError, match=r"^weights\[0\]: expected dtype float64, got float32"):
        KR.mlp_forward(routing, spec, x, [ws[0].astype(np.float32), ws[1]], bs)
    with pytest.raises(ValueError, match=r"^weights: expected 2 arrays, got 1"):
        KR.mlp_forward(routing, spec, x, ws[:1], bs)
    with pytest.raises(ValueError, match=r"^biases\[1\]: expected shape \(2, 2\)"):
        KR.mlp_forward(routing, spec, x, ws, [bs[0], np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"^biases: expected 2 arrays"):
        KR.mlp_forward(routing, spec, x, ws, bs[:1])


def test_mlp_bad_keys(mlp_setup):
    routing, spec, ws, bs, x = mlp_setup
    with pytest.raises(ValueError, match=r"^example_ids: expected shape \(5,\), one id per example, got \(4,\)"):
        KR.mlp_forward(routing, spec, x, ws, bs, example_ids=np.arange(4))
    with pytest.raises(ValueError, match=r"^example_ids: expected ids in \[0, 2\*\*32\)"):
        KR.mlp_forward(routing, spec, x, ws, bs, example_ids=np.array([0, 1, -2, 3, 4]))
    with pytest.raises(ValueError, match=r"^example_ids: "):
        KR.mlp_forward(routing, spec, x, ws, bs, example_ids=np.array([0, 1, 2, 3, 2 ** 32]))
    with pytest.raises(TypeError, match=r"^example_ids: expected integers"):
        KR.mlp_forward(routing, spec, x, ws, bs, example_ids=np.arange(5.0))
    with pytest.raises(ValueError, match=r"^batch_id: "):
        KR.mlp_forward(routing, spec, x, ws, bs, batch_id=-1)
    with pytest.raises(ValueError, match=r"^batch_id: "):
        KR.mlp_forward(routing, spec, x, ws, bs, batch_id=2 ** 32)
    with pytest.raises(ValueError, match=r"^step: "):
        KR.mlp_forward(routing, spec, x, ws, bs, step=-3)
    KR.mlp_forward(routing, spec, x, ws, bs, example_ids=np.full(5, U32_MAX), batch_id=U32_MAX, step=U32_MAX)


def _call_with(entry, routing, setup):
    _, spec, ws, bs, x = setup
    if entry == "mlp_forward":
        return KR.mlp_forward(routing, spec, x, ws, bs)
    if entry == "permutations":
        return KR.permutations(routing, 0, 0, np.arange(2), np.arange(2))
    return KR.committee_epoch(routing, np.zeros((2, 1, 3)), np.ones((2, 3)), np.ones(2), np.arange(2))


@pytest.mark.parametrize("entry", ["mlp_forward", "permutations", "committee_epoch"])
def test_entry_points_reject_a_routing_that_is_not_a_routing(entry, mlp_setup):
    with pytest.raises(TypeError, match=r"^routing: expected a perceptrons.routing.Routing"):
        _call_with(entry, object(), mlp_setup)


def test_mlp_backward_bad_arrays(mlp_setup):
    routing, spec, ws, bs, x = mlp_setup
    y, saved = KR.mlp_forward(routing, spec, x, ws, bs, training=True)
    dy = np.ones_like(y)
    with pytest.raises(ValueError, match=r"^dy: expected shape \(2, 5, 2\), got \(5, 2\)"):
        KR.mlp_backward(routing, spec, dy[0], x, y, saved, ws, bs)
    with pytest.raises(TypeError, match=r"^dy: expected dtype float64"):
        KR.mlp_backward(routing, spec, dy.astype(np.float32), x, y, saved, ws, bs)
    with pytest.raises(ValueError, match=r"^y: expected shape"):
        KR.mlp_backward(routing, spec, dy, x, y[:1], saved, ws, bs)
    with pytest.raises(ValueError, match=r"^saved\[0\]: expected shape"):
        KR.mlp_backward(routing, spec, dy, x, y, [saved[0][:-1]] + saved[1:], ws, bs)
    with pytest.raises(ValueError, match=r"^example_ids: "):
        KR.mlp_backward(routing, spec, dy, x, y, saved, ws, bs, example_ids=np.arange(6))


def test_permutations_bad_arguments():
    r = Routing(3, uniform(3))
    with pytest.raises(ValueError, match=r"units, weights"):
        KR.permutations(r, 0, 0, np.arange(3), np.arange(2))
    with pytest.raises(ValueError, match=r"example/layer"):
        KR.permutations(r, -1, 0, np.arange(3), np.arange(3))
    with pytest.raises(ValueError, match=r"example/layer"):
        KR.permutations(r, 0, 0x10000, np.arange(3), np.arange(3))


@pytest.fixture
def committee_setup():
    rng = rng_for("bad committee")
    patterns, labels = committee_problem(3, 11, 6, rng)
    routing = Routing(2, uniform(2), "edge", "example", seed=1)
    H = rng.standard_normal((2, 3, 11))
    return routing, H, patterns, labels


def test_committee_bad_inputs(committee_setup):
    routing, H, patterns, labels = committee_setup
    order = np.arange(6)
    H_before = H.copy()
    with pytest.raises(ValueError, match=r"^H: its first axis has 3 copies but the routing has M = 2"):
        KR.committee_epoch(routing, np.zeros((3, 3, 11)), patterns, labels, order)
    with pytest.raises(TypeError, match=r"^H: "):
        KR.committee_epoch(routing, H.astype(np.int64), patterns, labels, order)
    with pytest.raises(TypeError, match=r"^H: "):
        KR.committee_epoch(routing, H[:, :, ::-1], patterns, labels, order)          # not contiguous
    with pytest.raises(TypeError, match=r"^H: "):
        KR.committee_epoch(routing, H[0], patterns, labels, order)
    with pytest.raises(ValueError, match=r"^patterns: expected shape \(P, 11\), got \(6, 10\)"):
        KR.committee_epoch(routing, H, patterns[:, :10], labels, order)
    bad = patterns.copy()
    bad[2, 3] = 0
    with pytest.raises(ValueError, match=r"^patterns: expected entries \+1 or -1"):
        KR.committee_epoch(routing, H, bad, labels, order)
    with pytest.raises(ValueError, match=r"^patterns: expected entries"):
        KR.committee_epoch(routing, H, patterns * 2, labels, order)
    with pytest.raises(ValueError, match=r"^labels: expected shape \(6,\)"):
        KR.committee_epoch(routing, H, patterns, labels[:5], order)
    with pytest.raises(ValueError, match=r"^labels: "):
        KR.committee_epoch(routing, H, patterns, labels[:, None], order)
    with pytest.raises(ValueError, match=r"^labels: .*\+1 or -1"):
        KR.committee_epoch(routing, H, patterns, np.zeros(6, np.int8), order)
    with pytest.raises(ValueError, match=r"^order: expected a 1-D array of pattern indices in \[0, 6\)"):
        KR.committee_epoch(routing, H, patterns, labels, np.array([0, 6]))
    with pytest.raises(ValueError, match=r"^order: "):
        KR.committee_epoch(routing, H, patterns, labels, np.array([-1, 2]))
    with pytest.raises(ValueError, match=r"^order: "):
        KR.committee_epoch(routing, H, patterns, labels, np.zeros((2, 2), np.int64))
    for name in ("eta", "margin", "h_max"):
        with pytest.raises(ValueError, match=rf"^{name}: expected a finite number"):
            KR.committee_epoch(routing, H, patterns, labels, order, **{name: np.nan})
    with pytest.raises(ValueError, match=r"^step: "):
        KR.committee_epoch(routing, H, patterns, labels, order, step=-1)
    np.testing.assert_array_equal(H, H_before, err_msg="a rejected call modified H")
    assert KR.committee_epoch(routing, H, patterns, labels, np.zeros(0, np.int64)) == 0
    np.testing.assert_array_equal(H, H_before)
