"""CPU fused-MLP kernels (through the numpy front) against the float64 numpy reference.

Every test runs on every instruction set this CPU supports (generic, AVX2, AVX-512).
"""
import itertools
import zlib

import numpy as np
import pytest

from perceptrons import kernels as K
from perceptrons.activations import NAMES

from ..conftest import ISAS, cpu_isa, num_threads
from perceptrons.reference import mlp as ref

from .helpers import assert_close, make_net, reference

BATCHES = (0, 1, 7, 1000)
DTYPES = (np.float32, np.float64)


def rows_near_kink(spec, x, ws, bs, rel=1e-5):
    _, zs, _ = ref.forward(x, ws, bs, spec.activation, spec.output_activation, spec.activation_param,
                           spec.output_activation_param, return_intermediates=True)
    near = np.zeros(x.shape[0], bool)
    for z in zs:
        near |= (np.abs(z) < rel * max(1.0, np.abs(z).max(initial=0))).any(axis=1)
    return near


def run_and_compare(widths, activation, output_activation, batch, dtype, rng, bias=True, need_dx=True):
    spec = K.MLPSpec(widths, activation, output_activation)
    ws, bs = make_net(widths, dtype, rng, activation, bias)
    x = rng.standard_normal((batch, widths[0])).astype(dtype)
    dy = rng.standard_normal((batch, widths[-1])).astype(dtype)
    if dtype == np.float32 and {"relu", "leaky_relu"} & {spec.activation, spec.output_activation}:
        # A pre-activation within float32 rounding of a kink may land on either side (the derivative
        # jumps there): such rows have no single right float32 gradient, so they carry none.
        dy[rows_near_kink(spec, x, ws, bs)] = 0
    y_ref, dx_ref, dw_ref, db_ref = reference(spec, x, ws, bs, dy)
    tag = f"{widths} {activation}/{output_activation} B={batch} {np.dtype(dtype).name}"
    for isa in ISAS:
        with cpu_isa(isa):
            y = K.mlp_forward(spec, x, ws, bs)
            assert_close(y, y_ref, dtype, f"[{isa}] y {tag}")
            y_t, saved = K.mlp_forward(spec, x, ws, bs, training=True)
            np.testing.assert_array_equal(y_t, y, err_msg=f"[{isa}] training forward differs from inference {tag}")
            dx, dws, dbs = K.mlp_backward(spec, dy, x, y_t, saved, ws, bs, need_dx=need_dx)
            if need_dx:
                assert_close(dx, dx_ref, dtype, f"[{isa}] dx {tag}")
            else:
                assert dx is None
            for l in range(len(ws)):
                assert_close(dws[l], dw_ref[l], dtype, f"[{isa}] dW[{l}] {tag}")
                if bias:
                    assert_close(dbs[l], db_ref[l], dtype, f"[{isa}] db[{l}] {tag}")
                else:
                    assert dbs[l] is None


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("activation", NAMES)
@pytest.mark.parametrize("depth", (1, 2, 3))
@pytest.mark.parametrize("hidden", (16, 32, 64, 128))
def test_hidden_grid(hidden, depth, activation, dtype):
    """Hidden widths x depths x activations x dtypes; in/out widths and output activation vary."""
    rng = np.random.default_rng(zlib.crc32(repr((hidden, depth, activation)).encode()))  # same data every run
    in_w, out_w = [(1, 1), (3, 16), (32, 5), (17, 64)][(hidden // 16 + depth) % 4]
    output_activation = NAMES[(NAMES.index(activation) + depth) % len(NAMES)]
    widths = [in_w] + [hidden] * depth + [out_w]
    for batch in BATCHES:
        run_and_compare(widths, activation, output_activation, batch, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("output_activation", NAMES)
@pytest.mark.parametrize("in_out", [(1, 1), (2, 3), (7, 13), (33, 1), (64, 17), (5, 130)])
def test_output_activations_and_odd_widths(in_out, output_activation, dtype):
    rng = np.random.default_rng(7)
    widths = [in_out[0], 32, 48, in_out[1]]
    for batch in BATCHES:
        run_and_compare(widths, "tanh", output_activation, batch, dtype, rng)


@pytest.mark.parametrize("widths", [[4, 3], [1, 1], [9, 100, 2], [3, 20, 7, 30, 5], [16, 256, 256, 8],
                                    [2, 1024, 3], [6, 17, 1, 17, 2]])
def test_irregular_widths(widths):
    """Single layers, widths that are not multiples of the vector length, bottlenecks, wide layers."""
    rng = np.random.default_rng(len(widths))
    for dtype, batch in itertools.product(DTYPES, (1, 73, 300)):
        run_and_compare(widths, "silu", "none", batch, dtype, rng)


@pytest.mark.parametrize("hidden", (16, 32, 48, 64, 128, 256))
def test_one_vector_layers_at_every_tile_stride(hidden):
    """Layers one SIMD vector wide or narrower read their input tile through micro-tiles whose row
    stride is fixed at compile time for tile strides 16/32/64/128 (common/cpu_simd.h, kConstStrides)
    and is a run-time value for the others (48, 256). Batches 85, 83 and 1000 end in 72-row tiles' tails
    of 13, 11 and 64 rows, which leave 1, 11 and 4 rows to a last 12-row micro-tile (5, 3 and 0 to an
    8-row one); 30 rows are a single tile (which the inference forward may run feature-major
    instead; the backward tiles by rows whatever the batch)."""
    rng = np.random.default_rng(hidden)
    for dtype, out_w, batch in itertools.product(DTYPES, (1, 8, 16), (30, 85, 83, 1000)):
        run_and_compare([32, hidden, hidden, out_w], "relu", "none", batch, dtype, rng)
    run_and_compare([hidden, 16, 16, 16], "tanh", "none", 1000, np.float32, rng)


def test_without_bias_and_without_dx():
    rng = np.random.default_rng(3)
    for dtype in DTYPES:
        run_and_compare([5, 64, 64, 3], "relu", "sigmoid", 300, dtype, rng, bias=False)
        run_and_compare([5, 64, 64, 3], "sine", "none", 300, dtype, rng, need_dx=False)


@pytest.mark.parametrize("activation", ["leaky_relu", "softplus", "sine"])
def test_activation_parameters(activation):
    rng = np.random.default_rng(11)
    param = {"leaky_relu": 0.2, "softplus": 3.0, "sine": 5.0}[activation]
    spec = K.MLPSpec([4, 32, 32, 3], activation, activation, param, param)
    ws, bs = make_net(spec.widths, np.float64, rng)
    x = rng.standard_normal((50, 4))
    dy = rng.standard_normal((50, 3))
    y_ref, dx_ref, dw_ref, _ = reference(spec, x, ws, bs, dy)
    y, saved = K.mlp_forward(spec, x, ws, bs, training=True)
    dx, dws, _ = K.mlp_backward(spec, dy, x, y, saved, ws, bs)
    assert_close(y, y_ref, np.float64, "y")
    assert_close(dx, dx_ref, np.float64, "dx")
    assert_close(dws[0], dw_ref[0], np.float64, "dW0")


def test_empty_batch_gives_empty_output_and_zero_gradients():
    rng = np.random.default_rng(0)
    spec = K.MLPSpec([3, 16, 2], "relu")
    ws, bs = make_net(spec.widths, np.float32, rng)
    x = np.zeros((0, 3), np.float32)
    y, saved = K.mlp_forward(spec, x, ws, bs, training=True)
    assert y.shape == (0, 2) and sum(s.size for s in saved) == 0
    dx, dws, dbs = K.mlp_backward(spec, np.zeros((0, 2), np.float32), x, y, saved, ws, bs)
    assert dx.shape == (0, 3)
    for g, w in zip(dws + dbs, ws + bs):
        assert g.shape == w.shape and not g.any()


def test_nan_and_inf_follow_ieee_and_stay_in_their_row():
    """NaN/Inf inputs give what IEEE arithmetic gives (the reference's values, NaN where it has NaN),
    never crash, and never reach other rows."""
    rng = np.random.default_rng(1)
    for isa in ISAS:
        with cpu_isa(isa):
            for act in ("relu", "tanh", "silu", "sigmoid"):
                spec = K.MLPSpec([4, 32, 32, 2], act)
                ws, bs = make_net(spec.widths, np.float32, rng)
                x = rng.standard_normal((100, 4)).astype(np.float32)
                x[10, 1] = np.nan
                x[20, 2] = np.inf
                x[30, 0] = -np.inf
                y = K.mlp_forward(spec, x, ws, bs)
                assert np.isnan(y[10]).all(), f"[{isa}] {act}: a NaN input must give NaN outputs"
                with np.errstate(all="ignore"):
                    assert_close(y, reference(spec, x, ws, bs), np.float32, f"[{isa}] {act} with NaN/Inf")
                ok = np.ones(100, bool)
                ok[[10, 20, 30]] = False
                assert np.isfinite(y[ok]).all(), f"[{isa}] {act}: NaN/Inf leaked into other rows"
                dy = np.ones_like(y)
                y_t, saved = K.mlp_forward(spec, x, ws, bs, training=True)
                dx, _, _ = K.mlp_backward(spec, dy, x, y_t, saved, ws, bs)
                assert np.isfinite(dx[ok]).all(), f"[{isa}] {act}: NaN/Inf leaked into other rows of dx"


def test_weight_gradients_are_bitwise_deterministic_across_thread_counts():
    rng = np.random.default_rng(5)
    spec = K.MLPSpec([32, 64, 64, 16], "tanh")
    ws, bs = make_net(spec.widths, np.float32, rng)
    x = rng.standard_normal((5000, 32)).astype(np.float32)
    dy = rng.standard_normal((5000, 16)).astype(np.float32)
    for isa in ISAS:
        with cpu_isa(isa):
            results = []
            for threads in (1, 2, 1):
                with num_threads(threads):
                    y, saved = K.mlp_forward(spec, x, ws, bs, training=True)
                    results.append((y, *K.mlp_backward(spec, dy, x, y, saved, ws, bs)))
            for other in results[1:]:
                np.testing.assert_array_equal(other[0], results[0][0])
                np.testing.assert_array_equal(other[1], results[0][1])
                for a, b in zip(other[2] + other[3], results[0][2] + results[0][3]):
                    np.testing.assert_array_equal(a, b, err_msg=f"[{isa}] gradients change with threads")


def test_non_contiguous_input_is_accepted():
    rng = np.random.default_rng(2)
    spec = K.MLPSpec([3, 16, 2], "relu")
    ws, bs = make_net(spec.widths, np.float64, rng)
    x = rng.standard_normal((40, 6))[:, ::2]
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(K.mlp_forward(spec, x, ws, bs), K.mlp_forward(spec, x.copy(), ws, bs))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_saved_buffer_is_fully_written(dtype):
    """The padding of the saved rows is defined too: two training forwards give the same bits."""
    rng = np.random.default_rng(4)
    for widths, act in [([3, 8, 5, 2], "relu"), ([3, 20, 2], "silu"), ([2, 9, 9, 3], "tanh")]:
        spec = K.MLPSpec(widths, act, "sine")
        ws, bs = make_net(widths, dtype, rng, act)
        x = rng.standard_normal((77, widths[0])).astype(dtype)
        for isa in ISAS:
            with cpu_isa(isa):
                a = K.mlp_forward(spec, x, ws, bs, training=True)[1]
                for s in a:
                    np.empty_like(s).fill(np.nan)  # leave garbage where a new buffer may land
                b = K.mlp_forward(spec, x, ws, bs, training=True)[1]
                for sa, sb in zip(a, b):
                    np.testing.assert_array_equal(sa, sb, err_msg=f"[{isa}] {widths} {act}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("widths", [[16, 16], [16, 32, 16]])
def test_relu_of_negative_zero_is_positive_zero_as_in_the_reference(dtype, widths):
    # Weights and biases of -0.0 with x = 1 make a layer's pre-activations -0.0 exactly (the
    # products are -0.0): relu gives +0.0 in the reference, in the scalar activation and in the GEMM
    # epilogue alike. One layer: the output epilogue sees the -0.0 directly.
    ws = [np.full((o, i), -0.0, dtype) for i, o in zip(widths[:-1], widths[1:])]
    bs = [np.full(o, -0.0, dtype) for o in widths[1:]]
    x = np.ones((9, widths[0]), dtype)
    want = ref.forward(x, ws, bs, "relu", "relu")
    assert not np.signbit(want).any()
    for isa in ISAS:
        with cpu_isa(isa):
            y = K.mlp_forward(K.MLPSpec(widths, "relu", "relu"), x, ws, bs)
            assert not np.signbit(y).any(), f"[{isa}] relu(-0.0) kept its sign"
            np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("widths", [[32, 64, 64, 16], [20, 64, 40, 16], [16, 16, 48]])
def test_gradients_do_not_depend_on_what_their_buffers_held(dtype, widths):
    """With a single gradient slot (batch <= one tile) the backward accumulates dW straight in the
    caller's array where the layouts agree, starting from the first tile's products: buffers full of
    NaN must come back with the same gradients as fresh ones, on every path (1 slot and several)."""
    from perceptrons import _C
    from perceptrons.kernels.mlp import _DTYPES, _codes, _ptr
    rng = np.random.default_rng(11)
    spec = K.MLPSpec(widths, "relu")
    ws, bs = make_net(widths, dtype, rng)
    for batch in (1, 7, 72, 73, 300):
        x = rng.standard_normal((batch, widths[0])).astype(dtype)
        dy = rng.standard_normal((batch, widths[-1])).astype(dtype)
        for isa in ISAS:
            with cpu_isa(isa):
                y, saved = K.mlp_forward(spec, x, ws, bs, training=True)
                want = K.mlp_backward(spec, dy, x, y, saved, ws, bs)
                dx = np.full_like(x, np.nan)
                dws = [np.full_like(w, np.nan) for w in ws]
                dbs = [np.full_like(b, np.nan) for b in bs]
                _C.mlp_backward_cpu(_DTYPES[x.dtype], spec.widths, *spec.codes(), batch, _ptr(x), _ptr(y),
                                    [_ptr(s) for s in saved], _ptr(dy), [_ptr(w) for w in ws], _ptr(dx),
                                    [_ptr(w) for w in dws], [_ptr(b) for b in dbs], _codes(None))
                tag = f"[{isa}] {widths} B={batch}"
                np.testing.assert_array_equal(dx, want[0], err_msg=f"{tag} dx")
                for l in range(len(ws)):
                    np.testing.assert_array_equal(dws[l], want[1][l], err_msg=f"{tag} dW[{l}]")
                    np.testing.assert_array_equal(dbs[l], want[2][l], err_msg=f"{tag} db[{l}]")


SMALL_BATCH_NETS = [([32, 64, 64, 16], "relu", "none"), ([20, 48, 48, 3], "tanh", "sigmoid"),
                    ([64, 128, 64], "silu", "softplus"), ([48, 32, 32, 32, 40], "sine", "exp"),
                    ([16, 64, 16], "leaky_relu", "leaky_relu")]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("widths,activation,output_activation", SMALL_BATCH_NETS)
def test_small_batches_give_the_bits_of_the_tiled_forward(widths, activation, output_activation, dtype):
    """A batch of at most one tile may run the feature-major forward (W read in place, activations
    transposed); every output must have the bits it gets as a row of a large, tiled batch, in
    inference and training (saved layers included), and match the reference."""
    rng = np.random.default_rng(zlib.crc32(repr((widths, activation)).encode()))
    spec = K.MLPSpec(widths, activation, output_activation)
    ws, bs = make_net(widths, dtype, rng, activation)
    big = rng.standard_normal((200, widths[0])).astype(dtype)
    for isa in ISAS:
        with cpu_isa(isa):
            y_big = K.mlp_forward(spec, big, ws, bs)
            yt_big, saved_big = K.mlp_forward(spec, big, ws, bs, training=True)
            for B in (16, 24, 32, 48, 64, 72):
                tag = f"[{isa}] {widths} {activation}/{output_activation} B={B}"
                y = K.mlp_forward(spec, big[:B], ws, bs)
                np.testing.assert_array_equal(y, y_big[:B], err_msg=f"{tag} inference")
                yt, saved = K.mlp_forward(spec, big[:B], ws, bs, training=True)
                np.testing.assert_array_equal(yt, yt_big[:B], err_msg=f"{tag} training y")
                for l, (s, sb) in enumerate(zip(saved, saved_big)):
                    np.testing.assert_array_equal(s, sb[:s.size], err_msg=f"{tag} saved[{l}]")
    for B in (16, 32, 64):
        run_and_compare(widths, activation, output_activation, B, dtype, rng)
