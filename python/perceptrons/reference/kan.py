"""Reference spline-KAN layer (pykan's KANLayer in efficient-kan's parameter layout), float64.

    y[b,o] = sum_i base_weight[o,i] * silu(x[b,i])
           + sum_i scaler[o,i] * sum_c spline_weight[o,i,c] * B_c(x[b,i]; grid[i])

base_weight (out, in), spline_weight (out, in, G+k), spline_scaler (out, in) or None (scaler 1),
grid (in, G+2k+1): one knot vector per input feature, G intervals over grid_range plus k extension
knots on each side. B_c are the order-k Cox-de Boor B-splines on that knot vector, c = 0..G+k-1.
(research/kan.md sections 1.1, 1.2, 2.1.)

Two out-of-range modes for the spline part (the base branch always sees x itself):
- "pykan" (default): what pykan and efficient-kan compute. Inside [grid[i,k], grid[i,G+k]] the
  bases sum to 1; in the k extension cells on each side the spline decays smoothly; at and beyond
  the outermost knots every basis is exactly 0 (half-open intervals [t_c, t_c+1)). (kan.md section 7.)
- "clamp": the spline is evaluated at x clamped into the un-extended range [grid[i,k], grid[i,G+k]]
  (FusionKAN's choice), so it is constant outside; its derivative with respect to x is 0 there.

Non-finite inputs: a NaN or +-Inf x gives an all-zero basis (and zero basis derivative) in both
modes; the NaN/Inf still reaches y through the base branch silu(x). This is what pykan computes
(its nan_to_num turns the recursion's NaN*0 into 0); efficient-kan has no nan_to_num and returns NaN
bases instead, which makes no difference to y but would poison the spline_weight gradient of the
whole batch. Zero keeps the non-finite sample out of the batch reductions over spline terms.

Repeated knots (zero-width intervals) follow the usual 0/0 = 0 convention of the recursion.
"""
import numpy as np

from . import activations as _act

MODES = ("pykan", "clamp")


def _quiet_non_finite():
    """NaN/Inf inputs are allowed (module docstring): their propagation through silu and the matmuls
    is the intended result, not something to warn about."""
    return np.errstate(invalid="ignore", over="ignore")


def _as64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _grid_size(grid, spline_order):
    """G from a knot array of shape (in, G+2k+1)."""
    return grid.shape[1] - 2 * spline_order - 1


def _ratio(num, den):
    """num/den with 0 where den == 0 (a zero-width knot span contributes nothing)."""
    num, den = np.broadcast_arrays(num, den)
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def make_grid(in_features, grid_size, spline_order, grid_range=(-1.0, 1.0)):
    """Uniform knots t_c = lo + (c-k)*h, h = (hi-lo)/G, c = 0..G+2k, for every input feature.

    Same construction as pykan (linspace + extend_grid) and efficient-kan (arange * h + lo).
    """
    lo, hi = float(grid_range[0]), float(grid_range[1])
    h = (hi - lo) / grid_size
    knots = lo + (np.arange(grid_size + 2 * spline_order + 1) - spline_order) * h
    return np.tile(knots, (in_features, 1))


def _cox_de_boor(x, grid, order):
    """All order-`order` B-splines on the full knot vector: (B, in, n_knots-1-order).

    Non-finite x is evaluated at 0 and masked to zero afterwards (see the module docstring);
    the order-0 indicators alone would already be 0 there, but NaN*0 in the recursion is NaN.
    """
    finite = np.isfinite(x)[:, :, None]
    x = np.where(finite[:, :, 0], x, 0.0)[:, :, None]
    t = grid[None, :, :]
    # Order 0: indicator of the half-open interval [t_c, t_{c+1}).
    b = ((t[:, :, :-1] <= x) & (x < t[:, :, 1:])).astype(np.float64)
    for p in range(1, order + 1):
        n = b.shape[2] - 1  # number of order-p functions
        rise = _ratio(x - t[:, :, :n], t[:, :, p:p + n] - t[:, :, :n])
        fall = _ratio(t[:, :, p + 1:p + 1 + n] - x, t[:, :, p + 1:p + 1 + n] - t[:, :, 1:1 + n])
        b = rise * b[:, :, :-1] + fall * b[:, :, 1:]
    return np.where(finite, b, 0.0)


def basis(x, grid, spline_order):
    """B_c(x[b,i]; grid[i]) for c = 0..G+k-1: (B, in, G+k). x: (B, in), grid: (in, G+2k+1)."""
    return _cox_de_boor(_as64(x), _as64(grid), spline_order)


def basis_derivative(x, grid, spline_order):
    """d/dx B_c(x[b,i]; grid[i]): (B, in, G+k).

    B'_{c,k} = k * (B_{c,k-1} / (t_{c+k} - t_c) - B_{c+1,k-1} / (t_{c+k+1} - t_{c+1})).
    At a knot it is the right derivative (half-open intervals); 0 outside the extended grid.
    """
    x, grid = _as64(x), _as64(grid)
    k = spline_order
    n = grid.shape[1] - 1 - k  # G+k
    if k == 0:
        return np.zeros(x.shape + (n,))
    lower = _cox_de_boor(x, grid, k - 1)  # (B, in, G+k+1)
    t = grid[None, :, :]
    left = _ratio(lower[:, :, :n], t[:, :, k:k + n] - t[:, :, :n])
    right = _ratio(lower[:, :, 1:n + 1], t[:, :, k + 1:k + 1 + n] - t[:, :, 1:1 + n])
    return k * (left - right)


def _spline_input(x, grid, spline_order, mode):
    """Where the spline is evaluated, and where its x-derivative passes (1) or is cut (0)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}, expected one of {MODES}")
    if mode == "pykan":
        return x, np.ones_like(x)
    lo = grid[:, spline_order]
    hi = grid[:, spline_order + _grid_size(grid, spline_order)]
    # Non-finite x stays non-finite, so the zero-basis rule applies in clamp mode too.
    clamped = np.where(np.isfinite(x), np.clip(x, lo, hi), x)
    # Same convention as torch.clamp's backward: the gradient passes on the bounds themselves.
    passes = ((x >= lo) & (x <= hi)).astype(np.float64)
    return clamped, passes


def _scaled(spline_weight, spline_scaler):
    return spline_weight if spline_scaler is None else spline_weight * _as64(spline_scaler)[:, :, None]


def edge_activations(x, grid, spline_order, base_weight, spline_weight, spline_scaler=None, mode="pykan"):
    """phi_{o,i}(x[b,i]) for every edge: (B, out, in), so that forward(...) == this.sum(-1).

    This is pykan's `postacts` (KANLayer.forward's third output) with the axes it uses.
    """
    x, grid = _as64(x), _as64(grid)
    sx, _ = _spline_input(x, grid, spline_order, mode)
    with _quiet_non_finite():
        base = _act.forward("silu", x)[:, None, :] * _as64(base_weight)[None, :, :]
        spline = np.einsum("bic,oic->boi", basis(sx, grid, spline_order), _scaled(_as64(spline_weight), spline_scaler))
        return base + spline


def forward(x, grid, spline_order, base_weight, spline_weight, spline_scaler=None, mode="pykan"):
    """y (B, out) for x (B, in)."""
    x, grid = _as64(x), _as64(grid)
    sx, _ = _spline_input(x, grid, spline_order, mode)
    with _quiet_non_finite():
        base = _act.forward("silu", x) @ _as64(base_weight).T
        spline = np.einsum("bic,oic->bo", basis(sx, grid, spline_order), _scaled(_as64(spline_weight), spline_scaler))
        return base + spline


def backward(dy, x, grid, spline_order, base_weight, spline_weight, spline_scaler=None, mode="pykan"):
    """Gradients of sum(dy * y): (dx, d_base_weight, d_spline_weight, d_spline_scaler or None).

    The grid is a frozen buffer (as in pykan and efficient-kan) and gets no gradient.
    """
    dy, x, grid = _as64(dy), _as64(x), _as64(grid)
    base_weight, spline_weight = _as64(base_weight), _as64(spline_weight)
    sx, passes = _spline_input(x, grid, spline_order, mode)
    bases = basis(sx, grid, spline_order)  # (B, in, G+k)
    scaled = _scaled(spline_weight, spline_scaler)

    with _quiet_non_finite():
        d_base_weight = dy.T @ _act.forward("silu", x)
        d_spline_weight = np.einsum("bo,bic->oic", dy, bases)
        d_spline_scaler = None
        if spline_scaler is not None:
            # y depends on scaler[o,i] through scaler * (unscaled spline of edge o,i).
            d_spline_scaler = np.einsum("oic,oic->oi", d_spline_weight, spline_weight)
            d_spline_weight = d_spline_weight * _as64(spline_scaler)[:, :, None]

        dx_base = (dy @ base_weight) * _act.derivative("silu", x)
        dx_spline = np.einsum("bo,oic,bic->bi", dy, scaled, basis_derivative(sx, grid, spline_order)) * passes
        return dx_base + dx_spline, d_base_weight, d_spline_weight, d_spline_scaler


def fit_spline_weight(x, values, grid, spline_order):
    """Least-squares coefficients c (out, in, G+k) with sum_c c[o,i,c] B_c(x[:,i]) ~= values[:,o,i].

    One lstsq per input feature i: the (B, G+k) basis matrix against the (B, out) targets of all the
    edges leaving i (efficient-kan's curve2coeff). Underdetermined systems get the minimum-norm
    solution, as torch.linalg.lstsq's default CPU driver (gelsy) also gives.
    """
    x, values, grid = _as64(x), _as64(values), _as64(grid)
    bases = basis(x, grid, spline_order)  # (B, in, G+k)
    n_in, n_out = x.shape[1], values.shape[1]
    coef = np.empty((n_out, n_in, bases.shape[2]))
    for i in range(n_in):
        solution, *_ = np.linalg.lstsq(bases[:, i, :], values[:, :, i], rcond=None)  # (G+k, out)
        coef[:, i, :] = solution.T
    return coef


def _quantile_indices(batch, grid_size):
    """floor(j*(B-1)/G), j = 0..G: the sorted-sample positions of the adaptive knots.

    efficient-kan writes torch.linspace(0, B-1, G+1, dtype=int64); that rounds in floating point and
    lands one index lower at some exact integer points when G is large (e.g. B=57, G=50). The
    exact integer form is the intended value.
    """
    return np.arange(grid_size + 1) * (batch - 1) // grid_size


def update_grid(x, grid, spline_order, base_weight, spline_weight, spline_scaler=None, grid_eps=0.02, margin=0.01):
    """Grid adapted to the samples x (B, in), and spline_weight refitted to it: (new_grid, new_spline_weight).

    The grid follows efficient-kan's update_grid (kan.md 2.1): per feature, G+1 knots mixing
    grid_eps * (uniform over [min-margin, max+margin]) + (1-grid_eps) * (sample quantiles), then k
    extension knots on each side at the uniform step. The new coefficients are a least-squares fit,
    on the samples, of each edge's *unscaled* spline sum_c spline_weight[o,i,c] B_c(x_i) under the old
    grid, so forward (which multiplies by spline_scaler again) keeps its output up to fit error.
    efficient-kan fits the scaled spline instead and so applies the scaler twice (kan.md 2.1 bug);
    not reproduced here. base_weight and spline_scaler do not affect the result (the base branch does
    not depend on the grid and the scaler is per edge); they are accepted so a layer's whole state
    can be passed as for forward. pykan mode semantics: the old spline is evaluated unclamped.
    """
    x, grid, spline_weight = _as64(x), _as64(grid), _as64(spline_weight)
    k = spline_order
    batch = x.shape[0]
    grid_size = _grid_size(grid, k)

    old_spline = np.einsum("bic,oic->boi", basis(x, grid, k), spline_weight)  # (B, out, in), unscaled

    x_sorted = np.sort(x, axis=0)
    adaptive = x_sorted[_quantile_indices(batch, grid_size)]  # (G+1, in)
    lo, hi = x_sorted[0], x_sorted[-1]
    step = (hi - lo + 2 * margin) / grid_size  # (in,)
    uniform = lo - margin + np.arange(grid_size + 1)[:, None] * step
    knots = grid_eps * uniform + (1 - grid_eps) * adaptive
    below = knots[:1] - np.arange(k, 0, -1)[:, None] * step
    above = knots[-1:] + np.arange(1, k + 1)[:, None] * step
    new_grid = np.concatenate([below, knots, above], axis=0).T  # (in, G+2k+1)

    return new_grid, fit_spline_weight(x, old_spline, new_grid, k)
