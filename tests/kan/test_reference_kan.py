"""Tests of the numpy spline-KAN reference (perceptrons.reference.kan).

The reference is the source of truth for the kernels, so it is checked here against independent
evaluations: closed-form uniform cubic weights (research/kan.md section 6), the decay numbers of
kan.md section 7, scipy's B-splines, finite differences, torch autograd on a materialised-basis
layer written below, and pykan's KANLayer itself.
"""
import contextlib

import numpy as np
import pytest

from perceptrons.reference import kan as ref

ORDERS = [1, 2, 3, 5]
GRID_SIZES = [1, 3, 5, 10, 50]


# ---------------------------------------------------------------------------------------------------
# Test data


def random_knots(rng, n_in, grid_size, spline_order):
    """Strictly increasing, visibly non-uniform knot vectors (spans vary by up to 5x), one per feature."""
    spans = rng.uniform(0.2, 1.0, (n_in, grid_size + 2 * spline_order))
    start = rng.uniform(-3.0, -1.0, (n_in, 1))
    return np.concatenate([start, start + np.cumsum(spans, axis=1)], axis=1)


def random_layer(rng, n_in, n_out, grid_size, spline_order, scaler=True):
    """Non-trivial parameters: O(1) spline coefficients and scalers far from 1 (some negative)."""
    base_weight = rng.uniform(-1, 1, (n_out, n_in))
    spline_weight = rng.normal(0, 1, (n_out, n_in, grid_size + spline_order))
    spline_scaler = rng.uniform(0.3, 2.0, (n_out, n_in)) * rng.choice([-1, 1], (n_out, n_in)) if scaler else None
    return base_weight, spline_weight, spline_scaler


def range_bounds(grid, k):
    """The un-extended range [t_k, t_{G+k}] per feature."""
    return grid[:, k], grid[:, grid.shape[1] - 1 - k]


def away_from_knots(x, grid, distance):
    """Keeps the rows of x whose every entry is at least `distance` from its feature's knots."""
    gap = np.abs(x[:, :, None] - grid[None, :, :]).min(axis=2)
    return x[(gap > distance).all(axis=1)]


def cubic_uniform_closed_form(x, lo, h, grid_size, derivative=False):
    """kan.md section 6: cell by floor, weights w0..w3 of u, drop indices outside [0, G+3).

    x is 1-D (one feature); knots t_c = lo + (c-3) h. Returns (len(x), G+3).
    """
    s = (x - (lo - 3 * h)) / h  # position in extended-grid cells
    cell = np.floor(s).astype(int)
    u = s - cell
    if derivative:
        w = [-(1 - u) ** 2 / 2, (3 * u**2 - 4 * u) / 2, (-3 * u**2 + 2 * u + 1) / 2, u**2 / 2]
        w = [wr / h for wr in w]
    else:
        w = [(1 - u) ** 3 / 6, (3 * u**3 - 6 * u**2 + 4) / 6, (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6, u**3 / 6]
    out = np.zeros((len(x), grid_size + 3))
    for r in range(4):
        j = cell - 3 + r
        keep = (j >= 0) & (j < grid_size + 3)
        out[np.nonzero(keep)[0], j[keep]] = w[r][keep]
    return out


# ---------------------------------------------------------------------------------------------------
# 1. basis


@pytest.mark.parametrize("k", ORDERS)
@pytest.mark.parametrize("G", GRID_SIZES)
def test_make_grid_layout(G, k):
    grid = ref.make_grid(3, G, k, (-0.5, 2.0))
    h = 2.5 / G
    assert grid.shape == (3, G + 2 * k + 1) and grid.dtype == np.float64
    np.testing.assert_allclose(grid, np.tile(-0.5 + (np.arange(G + 2 * k + 1) - k) * h, (3, 1)), rtol=0, atol=1e-15)
    lo, hi = range_bounds(grid, k)
    np.testing.assert_allclose(lo, -0.5, atol=1e-15)
    np.testing.assert_allclose(hi, 2.0, atol=1e-15)


@pytest.mark.parametrize("k", ORDERS)
@pytest.mark.parametrize("G", GRID_SIZES)
def test_partition_of_unity_inside_range(G, k):
    rng = np.random.default_rng(G * 10 + k)
    grid = ref.make_grid(2, G, k)
    # Random points, both ends of the range, and every knot inside it.
    column = np.concatenate([rng.uniform(-1, 1, 200), [-1.0, 1.0], grid[0, k:G + k + 1]])
    x = np.stack([column, column[::-1]], axis=1)
    b = ref.basis(x, grid, k)
    assert b.shape == (len(column), 2, G + k)
    np.testing.assert_allclose(b.sum(axis=2), 1.0, rtol=0, atol=1e-14)
    assert (b >= 0).all()
    assert ((b != 0).sum(axis=2) <= k + 1).all()  # local support: at most k+1 bases per point


@pytest.mark.parametrize("k", ORDERS)
@pytest.mark.parametrize("G", GRID_SIZES)
def test_exact_zeros_beyond_extended_grid(G, k):
    grid = ref.make_grid(1, G, k)
    first, last = grid[0, 0], grid[0, -1]
    # Half-open intervals: the last knot itself is outside; the first knot is inside the support of
    # B_0 but B_0 vanishes there exactly ((x - t_0) = 0 factor).
    outside = np.array([first, last, np.nextafter(first, -np.inf), np.nextafter(last, np.inf),
                        first - 1.0, last + 1.0, -1e300, 1e300])[:, None]
    assert np.array_equal(ref.basis(outside, grid, k), np.zeros((len(outside), 1, G + k)))
    # The derivative is a right derivative: at t_0 the order-1 hat still rises, so skip t_0 there.
    strictly_outside = outside[1:]
    assert np.array_equal(ref.basis_derivative(strictly_outside, grid, k), np.zeros((len(strictly_outside), 1, G + k)))


def test_decay_in_extension_cells_matches_kan_md():
    """kan.md section 7 (G=5, k=3, [-1, 1], h=0.4): basis sums 0.682 at +-1.5, 0.021 at -2.0, 3e-6 at 2.19.

    Exact values from the closed form: at -1.5 only w2+w3 of u=0.75 survive, at -2.0 only w3 of
    u=0.5, at 2.19 only w0 of u=0.975.
    """
    grid = ref.make_grid(1, 5, 3)
    x = np.array([-1.5, -2.0, 1.5, 2.19])[:, None]
    sums = ref.basis(x, grid, 3).sum(axis=2)[:, 0]
    u = 0.75
    want = [(-2 * u**3 + 3 * u**2 + 3 * u + 1) / 6, 0.5**3 / 6, (-2 * u**3 + 3 * u**2 + 3 * u + 1) / 6, 0.025**3 / 6]
    np.testing.assert_allclose(sums, want, rtol=1e-9)
    np.testing.assert_allclose(sums[:3], [0.682291666, 0.020833333, 0.682291666], atol=1e-9)
    # Smooth monotone decay from hi to the last knot.
    ramp = np.linspace(1.0, 2.2, 301)[:, None]
    ramp_sums = ref.basis(ramp, grid, 3).sum(axis=2)[:, 0]
    assert (np.diff(ramp_sums) <= 1e-15).all() and ramp_sums[0] == pytest.approx(1.0) and ramp_sums[-1] == 0.0


@pytest.mark.parametrize("k", ORDERS)
def test_values_on_knots_are_continuous(k):
    """For k >= 1 the splines are continuous, so the value on a knot is the limit from the left too."""
    grid = ref.make_grid(1, 5, k)
    knots = grid[0, 1:-1]
    on = ref.basis(knots[:, None], grid, k)
    left = ref.basis(np.nextafter(knots, -np.inf)[:, None], grid, k)
    np.testing.assert_allclose(on, left, rtol=0, atol=1e-13)


def test_cubic_values_on_interior_knots():
    """Uniform cubic B-splines at a knot: 1/6, 2/3, 1/6 on the three bases that touch it."""
    grid = ref.make_grid(1, 5, 3)
    b = ref.basis(grid[0, 3:9, None], grid, 3)[:, 0, :]  # the knots -1, -0.6, ..., 1 in range
    for j in range(6):
        want = np.zeros(8)
        want[j:j + 3] = [1 / 6, 2 / 3, 1 / 6]
        np.testing.assert_allclose(b[j], want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("G", [1, 5, 10, 50])
def test_uniform_cubic_closed_form_equals_recursion(G):
    rng = np.random.default_rng(G)
    lo, hi = -0.7, 1.3
    h = (hi - lo) / G
    grid = ref.make_grid(1, G, 3, (lo, hi))
    # Covers the range and both extension regions; points beyond the knots give 0 in both.
    x = rng.uniform(lo - 3.5 * h, hi + 3.5 * h, 2000)
    np.testing.assert_allclose(ref.basis(x[:, None], grid, 3)[:, 0], cubic_uniform_closed_form(x, lo, h, G),
                               rtol=0, atol=1e-13)
    np.testing.assert_allclose(ref.basis_derivative(x[:, None], grid, 3)[:, 0],
                               cubic_uniform_closed_form(x, lo, h, G, derivative=True), rtol=0, atol=1e-11 / h)


@pytest.mark.parametrize("k", ORDERS)
def test_non_uniform_knots_match_scipy(k):
    interpolate = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(100 + k)
    G = 6
    grid = random_knots(rng, 3, G, k)
    x = np.stack([rng.uniform(g[0] - 1, g[-1] + 1, 500) for g in grid], axis=1)
    b = ref.basis(x, grid, k)
    for i in range(3):
        for c in range(G + k):
            element = interpolate.BSpline.basis_element(grid[i, c:c + k + 2], extrapolate=False)
            np.testing.assert_allclose(b[:, i, c], np.nan_to_num(element(x[:, i]), nan=0.0), rtol=0, atol=1e-13)
    # Partition of unity holds on any knot vector inside [t_k, t_{G+k}].
    lo, hi = range_bounds(grid, k)
    inside = (x >= lo) & (x <= hi)
    np.testing.assert_allclose(b.sum(axis=2)[inside], 1.0, rtol=0, atol=1e-13)


@pytest.mark.parametrize("mode", ref.MODES)
def test_non_finite_inputs(mode):
    """Documented rule: NaN/+-Inf x gives an all-zero basis; the value still reaches y via silu(x)."""
    rng = np.random.default_rng(7)
    G, k = 5, 3
    grid = ref.make_grid(3, G, k)
    layer = random_layer(rng, 3, 2, G, k)
    x = rng.uniform(-1, 1, (5, 3))
    x[1, 0], x[2, 1], x[3, 2] = np.nan, np.inf, -np.inf
    bad = ~np.isfinite(x)

    b, db = ref.basis(x, grid, k), ref.basis_derivative(x, grid, k)
    assert (b[bad] == 0).all() and (db[bad] == 0).all()
    np.testing.assert_array_equal(b[~bad], ref.basis(np.where(bad, 0.3, x), grid, k)[~bad])

    y = ref.forward(x, grid, k, *layer, mode=mode)
    assert np.isnan(y[1]).all()  # silu(NaN) = NaN
    assert np.isnan(y[3]).all()  # silu(-Inf) = -Inf * 0 = NaN, as torch
    assert np.isinf(y[2]).all()  # silu(+Inf) = +Inf, times non-zero base weights
    assert np.isfinite(y[[0, 4]]).all()
    edges = ref.edge_activations(x, grid, k, *layer, mode=mode)
    assert np.isnan(edges[1, :, 0]).all() and np.isfinite(edges[1, :, 1:]).all()

    # A bad entry adds nothing to the spline-weight and scaler gradients (finite dy): they are the
    # batch sums over the finite entries only, and stay finite.
    dy = rng.normal(size=(5, 2))
    _, _, dws, dscale = ref.backward(dy, x, grid, k, *layer, mode=mode)
    spline_x = np.clip(x, *[bound[None, :] for bound in range_bounds(grid, k)]) if mode == "clamp" else x
    finite_bases = ref.basis(np.where(bad, 0.3, spline_x), grid, k) * ~bad[:, :, None]
    unscaled = np.einsum("bo,bic->oic", dy, finite_bases)
    np.testing.assert_allclose(dws, unscaled * layer[2][:, :, None], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(dscale, (unscaled * layer[1]).sum(axis=2), rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------------------------------
# 2. basis derivative


@pytest.mark.parametrize("k", ORDERS)
@pytest.mark.parametrize("uniform", [True, False])
def test_basis_derivative_matches_finite_differences(k, uniform):
    rng = np.random.default_rng(200 + k)
    G = 7
    grid = ref.make_grid(2, G, k) if uniform else random_knots(rng, 2, G, k)
    x = np.stack([rng.uniform(g[0] - 0.5, g[-1] + 0.5, 400) for g in grid], axis=1)
    eps = 1e-6
    x = away_from_knots(x, grid, 10 * eps)  # the derivative jumps (k=1) or kinks (k=2) at knots
    numeric = (ref.basis(x + eps, grid, k) - ref.basis(x - eps, grid, k)) / (2 * eps)
    np.testing.assert_allclose(ref.basis_derivative(x, grid, k), numeric, rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------------------------------
# 3. forward / backward against torch autograd and finite differences


def torch_kan_layer(x, grid, k, base_weight, spline_weight, spline_scaler, mode):
    """efficient-kan-style layer in plain torch: materialised Cox-de Boor basis, then one matmul."""
    import torch

    xs = x
    if mode == "clamp":
        xs = torch.clamp(x, grid[:, k], grid[:, grid.shape[1] - 1 - k])
    xb = xs[:, :, None]
    b = ((grid[:, :-1] <= xb) & (xb < grid[:, 1:])).to(x.dtype)
    for p in range(1, k + 1):
        rise = (xb - grid[:, :-(p + 1)]) / (grid[:, p:-1] - grid[:, :-(p + 1)])
        fall = (grid[:, p + 1:] - xb) / (grid[:, p + 1:] - grid[:, 1:-p])
        b = rise * b[:, :, :-1] + fall * b[:, :, 1:]
    weight = spline_weight if spline_scaler is None else spline_weight * spline_scaler[:, :, None]
    n_out = base_weight.shape[0]
    return torch.nn.functional.silu(x) @ base_weight.T + b.reshape(x.shape[0], -1) @ weight.reshape(n_out, -1).T


def torch_layer_and_grads(x, grid, k, layer, dy, mode):
    import torch

    def leaf(a):
        return None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True)

    tx, tb, tw, ts = (leaf(a) for a in (x, *layer))
    y = torch_kan_layer(tx, torch.tensor(grid), k, tb, tw, ts, mode)
    (y * torch.tensor(dy)).sum().backward()
    grads = [None if t is None else t.grad.numpy() for t in (tx, tb, tw, ts)]
    return y.detach().numpy(), grads


def layer_inputs(rng, grid, k, batch):
    """N(0, 1.5)-ish samples (inside, in the extension cells, beyond) plus rows of exact knots."""
    x = rng.normal(0, 1.5, (batch, grid.shape[0]))
    knots_as_rows = grid.T[1:-1]  # (G+2k-1, in): every knot except the outermost
    return np.concatenate([x, knots_as_rows], axis=0)


@pytest.mark.parametrize("mode", ref.MODES)
@pytest.mark.parametrize("scaler", [True, False])
@pytest.mark.parametrize("k,uniform", [(1, True), (3, True), (2, False), (3, False)])
def test_forward_backward_match_torch_autograd(mode, scaler, k, uniform):
    pytest.importorskip("torch")
    rng = np.random.default_rng(300 + 10 * k + uniform)
    n_in, n_out, G = 4, 3, 5
    grid = ref.make_grid(n_in, G, k) if uniform else random_knots(rng, n_in, G, k)
    layer = random_layer(rng, n_in, n_out, G, k, scaler)
    x = layer_inputs(rng, grid, k, 64)
    dy = rng.normal(size=(len(x), n_out))

    y_torch, grads_torch = torch_layer_and_grads(x, grid, k, layer, dy, mode)
    y = ref.forward(x, grid, k, *layer, mode=mode)
    np.testing.assert_allclose(y, y_torch, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.edge_activations(x, grid, k, *layer, mode=mode).sum(axis=2), y,
                               rtol=1e-12, atol=1e-12)
    grads = ref.backward(dy, x, grid, k, *layer, mode=mode)
    for name, got, want in zip(["dx", "d_base_weight", "d_spline_weight", "d_spline_scaler"], grads, grads_torch):
        if want is None:
            assert got is None, name
        else:
            np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("mode", ref.MODES)
def test_backward_matches_finite_differences(mode):
    rng = np.random.default_rng(400)
    n_in, n_out, G, k = 3, 2, 4, 3
    grid = ref.make_grid(n_in, G, k)
    layer = list(random_layer(rng, n_in, n_out, G, k))
    x = rng.uniform(-2.0, 2.0, (6, n_in))
    x = away_from_knots(x, grid, 1e-3)  # clamp mode: also away from the range bounds (knots too)
    dy = rng.normal(size=(len(x), n_out))
    grads = ref.backward(dy, x, grid, k, *layer, mode=mode)

    def loss(x_, layer_):
        return float((dy * ref.forward(x_, grid, k, *layer_, mode=mode)).sum())

    eps = 1e-6
    for slot, grad in enumerate(grads):
        params = [x] + layer
        numeric = np.zeros_like(params[slot])
        for idx in np.ndindex(params[slot].shape):
            plus, minus = [p.copy() for p in params], [p.copy() for p in params]
            plus[slot][idx] += eps
            minus[slot][idx] -= eps
            numeric[idx] = (loss(plus[0], plus[1:]) - loss(minus[0], minus[1:])) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7, err_msg=f"slot {slot}")


def test_clamp_mode_is_constant_outside_range():
    rng = np.random.default_rng(500)
    G, k = 5, 3
    grid = ref.make_grid(2, G, k)
    layer = random_layer(rng, 2, 2, G, k)
    no_base = (np.zeros_like(layer[0]),) + layer[1:]
    x = np.array([[1.0, -1.0], [1.7, -3.0], [40.0, -2.5]])
    y = ref.forward(x, grid, k, *no_base, mode="clamp")
    np.testing.assert_allclose(y[1:], np.broadcast_to(y[0], (2, 2)), rtol=0, atol=1e-14)
    dx = ref.backward(np.ones((3, 2)), x, grid, k, *no_base, mode="clamp")[0]
    assert (dx[1:] == 0).all() and (dx[0] != 0).all()


# ---------------------------------------------------------------------------------------------------
# 4. pykan's KANLayer


@contextlib.contextmanager
def default_dtype(dtype):
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@pytest.mark.parametrize("G,k", [(5, 3), (3, 3), (10, 2), (1, 1), (4, 5)])
@pytest.mark.parametrize("uniform", [True, False])
def test_matches_pykan_kanlayer(G, k, uniform):
    """pykan 0.2.8 KANLayer.forward on the same coefficients, mapped onto efficient-kan's layout."""
    torch = pytest.importorskip("torch")
    pykan_layer = pytest.importorskip("kan.KANLayer")
    rng = np.random.default_rng(600 + 10 * G + k)
    n_in, n_out = 4, 3
    with default_dtype(torch.float64):
        layer = pykan_layer.KANLayer(in_dim=n_in, out_dim=n_out, num=G, k=k)
        if uniform:
            np.testing.assert_allclose(ref.make_grid(n_in, G, k), layer.grid.detach().numpy(), rtol=0, atol=1e-15)
        else:
            layer.grid.data = torch.tensor(random_knots(rng, n_in, G, k))
        base_weight, spline_weight, spline_scaler = random_layer(rng, n_in, n_out, G, k)
        # pykan: coef (in, out, G+k), scale_base (in, out), scale_sp (in, out).
        layer.coef.data = torch.tensor(spline_weight.transpose(1, 0, 2).copy())
        layer.scale_base.data = torch.tensor(base_weight.T.copy())
        layer.scale_sp.data = torch.tensor(spline_scaler.T.copy())
        grid = layer.grid.detach().numpy().copy()
        x = layer_inputs(rng, grid, k, 128)
        with torch.no_grad():
            y, _, postacts, postspline = layer(torch.tensor(x))

    np.testing.assert_allclose(ref.forward(x, grid, k, base_weight, spline_weight, spline_scaler), y.numpy(),
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ref.edge_activations(x, grid, k, base_weight, spline_weight, spline_scaler),
                               postacts.numpy(), rtol=1e-13, atol=1e-13)
    spline_only = ref.edge_activations(x, grid, k, np.zeros_like(base_weight), spline_weight)
    np.testing.assert_allclose(spline_only, postspline.numpy(), rtol=1e-13, atol=1e-13)


def test_basis_matches_pykan_b_batch_on_non_finite_inputs():
    """pykan's nan_to_num makes NaN/Inf inputs give zero bases: the rule the reference documents."""
    torch = pytest.importorskip("torch")
    spline = pytest.importorskip("kan.spline")
    grid = ref.make_grid(3, 5, 3)
    x = np.array([[np.nan, np.inf, -np.inf], [0.1, -1.9, 2.5]])
    got = spline.B_batch(torch.tensor(x), torch.tensor(grid), k=3).numpy()
    np.testing.assert_allclose(ref.basis(x, grid, 3), got, rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------------
# 5. update_grid


def update_grid_layer(seed, grid_size=10, spline_order=3):
    """A layer whose splines are smooth bumps (a + b t) exp(-(t/0.7)^2), scalers far from 1, and
    N(0, 1.5) samples: many outside [-1, 1], some beyond the extended grid.

    Why smooth: the refit is a least-squares projection onto the new spline space, so it can only
    preserve what that space can represent. With G=5 and N(0,1) coefficients the old spline has
    structure at the old knot step (0.4) and drops to 0 at +-2.2, while the new knots sit at the
    quantiles (about -4.8, -1.3, -0.4, 0.4, 1.3, 4.8); the best refit then misses 30-60% of the spline
    (see test_update_grid_refit_is_the_least_squares_projection).
    """
    rng = np.random.default_rng(seed)
    n_in, n_out, k = 4, 3, spline_order
    grid = ref.make_grid(n_in, grid_size, k)
    base_weight, _, spline_scaler = random_layer(rng, n_in, n_out, grid_size, k)
    t = np.linspace(-3, 3, 400)[:, None, None]
    a, b = rng.normal(size=(2, n_out, n_in))
    bumps = (a + b * t) * np.exp(-(t / 0.7) ** 2)  # (400, out, in)
    spline_weight = ref.fit_spline_weight(np.repeat(t[:, 0], n_in, axis=1), bumps, grid, k)
    x = rng.normal(0, 1.5, (1024, n_in))
    return x, grid, k, (base_weight, spline_weight, spline_scaler)


def relative_l2(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def efficient_kan_buggy_update_grid(x, grid, k, base_weight, spline_weight, spline_scaler, grid_eps=0.02, margin=0.01):
    """efficient-kan's refit target: the *scaled* spline (kan.md 2.1), which forward then scales again."""
    new_grid, _ = ref.update_grid(x, grid, k, base_weight, spline_weight, spline_scaler, grid_eps, margin)
    scaled_spline = np.einsum("bic,oic->boi", ref.basis(x, grid, k), spline_weight * spline_scaler[:, :, None])
    return new_grid, ref.fit_spline_weight(x, scaled_spline, new_grid, k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_grid_preserves_layer_output(seed):
    x, grid, k, (base_weight, spline_weight, spline_scaler) = update_grid_layer(seed)
    y_before = ref.forward(x, grid, k, base_weight, spline_weight, spline_scaler)
    spline_before = ref.forward(x, grid, k, np.zeros_like(base_weight), spline_weight, spline_scaler)
    assert np.linalg.norm(spline_before) > 0.5 * np.linalg.norm(y_before)  # the spline part matters
    new_grid, new_weight = ref.update_grid(x, grid, k, base_weight, spline_weight, spline_scaler)
    assert new_grid.shape == grid.shape and new_weight.shape == spline_weight.shape
    y_after = ref.forward(x, new_grid, k, base_weight, new_weight, spline_scaler)
    assert relative_l2(y_after, y_before) < 0.02

    buggy_grid, buggy_weight = efficient_kan_buggy_update_grid(x, grid, k, base_weight, spline_weight, spline_scaler)
    y_buggy = ref.forward(x, buggy_grid, k, base_weight, buggy_weight, spline_scaler)
    assert relative_l2(y_buggy, y_before) > 0.5


def test_update_grid_refit_is_the_least_squares_projection():
    """With arbitrary coefficients the refit cannot be exact, but per edge it is the best one: the
    residual of the unscaled spline is orthogonal to every new basis function, and efficient-kan's
    variant (scaler applied twice) is further from the old layer on every edge whose scaler is not 1."""
    rng = np.random.default_rng(12)
    n_in, n_out, G, k = 4, 3, 5, 3
    grid = ref.make_grid(n_in, G, k)
    base_weight, spline_weight, spline_scaler = random_layer(rng, n_in, n_out, G, k)
    x = rng.normal(0, 1.5, (1024, n_in))
    new_grid, new_weight = ref.update_grid(x, grid, k, base_weight, spline_weight, spline_scaler)

    def edge_splines(g, w):  # (B, out, in), scaled as forward uses them
        return np.einsum("bic,oic->boi", ref.basis(x, g, k), w * spline_scaler[:, :, None])

    before = edge_splines(grid, spline_weight)
    residual = edge_splines(new_grid, new_weight) - before
    new_bases = ref.basis(x, new_grid, k)
    normal_equations = np.einsum("bic,boi->oic", new_bases, residual)
    np.testing.assert_allclose(normal_equations, 0.0, atol=1e-9 * np.abs(before).max() * len(x))

    buggy_grid, buggy_weight = efficient_kan_buggy_update_grid(x, grid, k, base_weight, spline_weight, spline_scaler)
    buggy_residual = edge_splines(buggy_grid, buggy_weight) - before
    assert (np.linalg.norm(buggy_residual, axis=0) > np.linalg.norm(residual, axis=0)).all()


def test_update_grid_knots_cover_samples():
    x, grid, k, layer = update_grid_layer(3, grid_size=5)
    G = grid.shape[1] - 2 * k - 1
    eps, margin = 0.02, 0.01
    new_grid, _ = ref.update_grid(x, grid, k, *layer, grid_eps=eps, margin=margin)
    lo, hi = range_bounds(new_grid, k)
    # The range endpoints mix min/max (adaptive) with min-margin/max+margin (uniform).
    np.testing.assert_allclose(lo, x.min(axis=0) - eps * margin, rtol=0, atol=1e-14)
    np.testing.assert_allclose(hi, x.max(axis=0) + eps * margin, rtol=0, atol=1e-14)
    assert ((x >= lo) & (x <= hi)).all()
    assert (np.diff(new_grid, axis=1) > 0).all()
    # Extension knots: k steps of the uniform step (max - min + 2 margin) / G on each side.
    step = (x.max(axis=0) - x.min(axis=0) + 2 * margin) / G
    np.testing.assert_allclose(np.diff(new_grid[:, :k + 1], axis=1), np.repeat(step[:, None], k, 1), rtol=1e-12)
    np.testing.assert_allclose(np.diff(new_grid[:, G + k:], axis=1), np.repeat(step[:, None], k, 1), rtol=1e-12)

    # grid_eps = 1: uniform over [min - margin, max + margin]; grid_eps = 0: sample quantiles.
    uniform, _ = ref.update_grid(x, grid, k, *layer, grid_eps=1.0, margin=margin)
    np.testing.assert_allclose(uniform[:, k:G + k + 1],
                               x.min(axis=0)[:, None] - margin + np.arange(G + 1) * step[:, None], rtol=0, atol=1e-14)
    adaptive, _ = ref.update_grid(x, grid, k, *layer, grid_eps=0.0, margin=margin)
    quantiles = np.sort(x, axis=0)[np.arange(G + 1) * (len(x) - 1) // G].T
    np.testing.assert_array_equal(adaptive[:, k:G + k + 1], quantiles)
    np.testing.assert_allclose(new_grid[:, k:G + k + 1],
                               eps * uniform[:, k:G + k + 1] + (1 - eps) * adaptive[:, k:G + k + 1], rtol=0, atol=1e-14)


def test_update_grid_refit_is_exact_when_the_spline_space_contains_the_function():
    """A spline that is a cubic polynomial over all samples is reproduced exactly on any cubic grid."""
    rng = np.random.default_rng(9)
    G, k = 5, 3
    grid = ref.make_grid(2, G, k, (-4.0, 4.0))
    x = rng.uniform(-2.0, 2.0, (300, 2))
    # Cubic splines reproduce cubic polynomials inside [t_k, t_{G+k}]: fit the old coefficients to
    # polynomials (exact), then the refit on the new knots must be exact too.
    poly = np.stack([1 - x + 0.5 * x**2, 0.3 * x**3 - x], axis=1)  # (B, out=2, in=2)
    spline_weight = ref.fit_spline_weight(x, poly, grid, k)
    base_weight = np.zeros((2, 2))
    new_grid, new_weight = ref.update_grid(x, grid, k, base_weight, spline_weight, rng.uniform(0.5, 2, (2, 2)))
    got = np.einsum("bic,oic->boi", ref.basis(x, new_grid, k), new_weight)
    np.testing.assert_allclose(got, poly, rtol=0, atol=1e-10)


def test_fit_spline_weight_recovers_coefficients():
    rng = np.random.default_rng(11)
    G, k = 6, 2
    grid = random_knots(rng, 3, G, k)
    coef = rng.normal(size=(2, 3, G + k))
    lo, hi = range_bounds(grid, k)
    x = rng.uniform(lo, hi, (200, 3))
    values = np.einsum("bic,oic->boi", ref.basis(x, grid, k), coef)
    np.testing.assert_allclose(ref.fit_spline_weight(x, values, grid, k), coef, rtol=0, atol=1e-10)
