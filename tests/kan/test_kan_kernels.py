"""CPU spline-KAN kernels (numpy front) against the float64 numpy reference, on every ISA."""
import itertools

import numpy as np
import pytest

from perceptrons import kernels as K
from perceptrons.reference import kan as ref

from ..conftest import ISAS, cpu_isa, num_threads, tolerance
from ..mlp.helpers import assert_close

DTYPES = (np.float32, np.float64)


def make_layer(in_f, out_f, G, k, rng, dtype, uniform=True, scaler=True):
    grid = ref.make_grid(in_f, G, k, (-1.0, 1.0))
    if not uniform:  # knots moved by up to 40% of a step, still increasing (like after update_grid)
        h = grid[:, 1:2] - grid[:, :1]
        grid = np.sort(grid + rng.uniform(-0.4, 0.4, grid.shape) * h, axis=1)
    bw = rng.standard_normal((out_f, in_f)) / np.sqrt(in_f)
    sw = rng.standard_normal((out_f, in_f, G + k)) / np.sqrt(in_f)
    ss = rng.standard_normal((out_f, in_f)) if scaler else None
    cast = lambda a: None if a is None else a.astype(dtype)
    return cast(grid), cast(bw), cast(sw), cast(ss)


def special_inputs(grid, k, batch, rng, dtype):
    """Inputs inside, on knots, on the grid edges, in the extension cells and far outside."""
    in_f, n = grid.shape
    x = rng.uniform(grid[:, :1].T - 1.0, grid[:, -1:].T + 1.0, (batch, in_f))
    picks = [grid[:, k], grid[:, n - 1 - k], grid[:, 0], grid[:, n - 1], grid[:, n // 2],
             (grid[:, 0] + grid[:, k]) / 2, (grid[:, n - 1 - k] + grid[:, n - 1]) / 2,
             grid[:, 0] - 10.0, grid[:, n - 1] + 10.0, np.nextafter(grid[:, n - 1], -np.inf)]
    for r, p in enumerate(picks[:batch]):
        x[r] = p
    return x.astype(dtype)


def compare(in_f, out_f, G, k, batch, dtype, mode, rng, uniform=True, scaler=True):
    grid, bw, sw, ss = make_layer(in_f, out_f, G, k, rng, dtype, uniform, scaler)
    x = special_inputs(grid.astype(np.float64), k, batch, rng, dtype)
    dy = rng.standard_normal((batch, out_f)).astype(dtype)
    as64 = lambda a: None if a is None else a.astype(np.float64)
    y_ref = ref.forward(as64(x), as64(grid), k, as64(bw), as64(sw), as64(ss), mode)
    grads_ref = ref.backward(as64(dy), as64(x), as64(grid), k, as64(bw), as64(sw), as64(ss), mode)
    tag = f"in={in_f} out={out_f} G={G} k={k} B={batch} {np.dtype(dtype).name} {mode} uniform={uniform}"
    for isa in ISAS:
        with cpu_isa(isa):
            y = K.kan_forward(x, grid, k, bw, sw, ss, mode)
            assert_close(y, y_ref, dtype, f"[{isa}] y {tag}")
            grads = K.kan_backward(dy, x, grid, k, bw, sw, ss, mode)
            for name, g, g_ref in zip(("dx", "d_base_weight", "d_spline_weight", "d_spline_scaler"), grads, grads_ref):
                if g_ref is None:
                    assert g is None
                else:
                    assert_close(g, g_ref, dtype, f"[{isa}] {name} {tag}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("k", (1, 2, 3, 5))
@pytest.mark.parametrize("G", (1, 3, 5, 10, 50))
def test_grid_sizes_orders_and_modes(G, k, dtype):
    rng = np.random.default_rng(G * 10 + k)
    for (in_f, out_f), mode, uniform in itertools.product([(1, 1), (3, 17), (20, 5)], ("pykan", "clamp"),
                                                          (True, False)):
        compare(in_f, out_f, G, k, 13, dtype, mode, rng, uniform=uniform, scaler=(in_f != 3))


@pytest.mark.parametrize("batch", (0, 1, 7, 1000))
def test_batch_sizes(batch):
    rng = np.random.default_rng(batch)
    for dtype in DTYPES:
        compare(9, 33, 5, 3, batch, dtype, "pykan", rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("k", (1, 3, 5))
def test_wide_layer(k, dtype):
    # 130 outputs: several register chunks of the outputs with a partial last vector, for every
    # order (the chunk width depends on k); 300 rows: more than one row tile in both directions.
    compare(64, 130, 8, k, 300, dtype, "pykan", np.random.default_rng(k))


def test_nan_and_inf_inputs():
    """Non-finite x: no spline contribution (every basis is 0), the base branch propagates by IEEE
    rules; other rows are untouched."""
    rng = np.random.default_rng(2)
    grid, bw, sw, ss = make_layer(3, 4, 5, 3, rng, np.float64)
    x = rng.uniform(-1, 1, (6, 3))
    x[1, 0], x[2, 1], x[3, 2] = np.nan, np.inf, -np.inf
    y_ref = ref.forward(x, grid, 3, bw, sw, ss)
    for isa in ISAS:
        with cpu_isa(isa):
            y = K.kan_forward(x, grid, 3, bw, sw, ss)
            with np.errstate(all="ignore"):
                assert_close(y, y_ref, np.float64, f"[{isa}] y")
            assert np.isnan(y[1]).all()
            assert np.isfinite(y[[0, 4, 5]]).all()
            dx, dbw, dsw, dss = K.kan_backward(np.ones((6, 4)), x, grid, 3, bw, sw, ss)
            assert np.isfinite(dx[[0, 4, 5]]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("k", (1, 3))
def test_non_finite_inputs_in_clamp_mode(k, dtype):
    """Clamp mode clamps finite x only: NaN and +-Inf have no cell, so they add nothing to the spline
    weight gradients (a clamped Inf would add dy * B(grid edge) to them)."""
    rng = np.random.default_rng(5)
    grid, bw, sw, ss = make_layer(3, 17, 5, k, rng, dtype)
    x = rng.uniform(-2, 2, (7, 3))
    x[1, 0], x[2, 0], x[3, 1] = np.inf, -np.inf, np.nan
    x = x.astype(dtype)
    dy = rng.standard_normal((7, 17)).astype(dtype)
    as64 = lambda a: a.astype(np.float64)
    refs = ref.backward(as64(dy), as64(x), as64(grid), k, as64(bw), as64(sw), as64(ss), "clamp")
    for isa in ISAS:
        with cpu_isa(isa):
            grads = K.kan_backward(dy, x, grid, k, bw, sw, ss, "clamp")
            for name, g, g_ref in zip(("d_spline_weight", "d_spline_scaler"), grads[2:], refs[2:]):
                assert_close(g, g_ref, dtype, f"[{isa}] {name} k={k} clamp, non-finite x")


def test_order_1_weight_gradients_do_not_depend_on_dx():
    # k = 1 finds cells from the stored knots whatever is computed, so asking for dx does not move
    # a row near a knot (clamp mode puts every x below the range exactly on one) to another cell.
    rng = np.random.default_rng(6)
    grid, bw, sw, ss = make_layer(1, 16, 5, 1, rng, np.float32)
    x = rng.uniform(-2.5, 2.5, (130, 1)).astype(np.float32)
    dy = rng.standard_normal((130, 16)).astype(np.float32)
    for isa in ISAS:
        with cpu_isa(isa):
            with_dx = K.kan_backward(dy, x, grid, 1, bw, sw, ss, "clamp")
            without = K.kan_backward(dy, x, grid, 1, bw, sw, ss, "clamp", need_dx=False)
            for a, b in zip(with_dx[1:], without[1:]):
                np.testing.assert_array_equal(a, b, err_msg=f"[{isa}] k=1 weight gradients change with dx")


def test_weight_gradients_bitwise_deterministic_across_threads():
    rng = np.random.default_rng(3)
    grid, bw, sw, ss = make_layer(40, 24, 10, 3, rng, np.float32)
    x = rng.uniform(-1.5, 1.5, (3000, 40)).astype(np.float32)
    dy = rng.standard_normal((3000, 24)).astype(np.float32)
    for isa in ISAS:
        with cpu_isa(isa):
            runs = []
            for threads in (1, 2):
                with num_threads(threads):
                    runs.append(K.kan_backward(dy, x, grid, 3, bw, sw, ss))
            for a, b in zip(*runs):
                np.testing.assert_array_equal(a, b, err_msg=f"[{isa}] gradients change with the thread count")


def test_bad_arguments():
    rng = np.random.default_rng(4)
    grid, bw, sw, ss = make_layer(3, 2, 5, 3, rng, np.float64)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 3\), got \(4, 2\)"):
        K.kan_forward(np.zeros((4, 2)), grid, 3, bw, sw, ss)
    with pytest.raises(ValueError, match=r"grid: expected shape \(3, 12\), got \(3, 11\)"):
        K.kan_forward(np.zeros((4, 3)), grid[:, :-1], 3, bw, sw, ss)
    with pytest.raises(ValueError, match=r"spline_order: expected an integer in 1\.\.5, got 6"):
        K.KANSpec(3, 2, 5, 6)
    with pytest.raises(ValueError, match=r"mode: expected one of pykan, clamp, got 'wrap'"):
        K.kan_forward(np.zeros((4, 3)), grid, 3, bw, sw, ss, mode="wrap")
    bad = grid.copy()
    bad[1, 4] = bad[1, 2]  # decreasing knots
    with pytest.raises(ValueError, match=r"grid: every feature's knots must be finite and non-decreasing"):
        K.kan_forward(np.zeros((4, 3)), bad, 3, bw, sw, ss)
    bad = grid.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"grid: every feature's knots must be finite"):
        K.kan_forward(np.zeros((4, 3)), bad, 3, bw, sw, ss)


def test_small_batch_wide_layer_split_over_threads():
    # Fewer row tiles than threads: the forward splits the outputs between the threads instead. The
    # result must match the reference and be the same bits as with one thread.
    rng = np.random.default_rng(4)
    grid, bw, sw, ss = make_layer(30, 300, 5, 3, rng, np.float32)
    x = rng.uniform(-2.5, 2.5, (5, 30)).astype(np.float32)
    y_ref = ref.forward(x.astype(np.float64), grid.astype(np.float64), 3, bw.astype(np.float64),
                        sw.astype(np.float64), ss.astype(np.float64))
    for isa in ISAS:
        with cpu_isa(isa):
            runs = []
            for threads in (1, 2):
                with num_threads(threads):
                    runs.append(K.kan_forward(x, grid, 3, bw, sw, ss))
            assert_close(runs[1], y_ref, np.float32, f"[{isa}] y, outputs split over threads")
            np.testing.assert_array_equal(runs[0], runs[1], err_msg=f"[{isa}] y changes with the thread count")
