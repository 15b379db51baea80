"""Shared test data for the MLP tests: random networks and the comparison with the reference."""
import numpy as np

from perceptrons.reference import mlp as ref

from ..conftest import tolerance


def make_net(widths, dtype, rng, activation="relu", bias=True):
    """Weights scaled so activations stay O(1) through the layers (SIREN scaling for sine)."""
    ws, bs = [], []
    for l in range(len(widths) - 1):
        scale = 1.0 / np.sqrt(widths[l])
        if activation == "sine" and l > 0:
            scale /= 30.0  # SIREN: later layers scaled by 1/w0 so sin(w0 z) stays well conditioned
        elif activation == "sine":
            scale = 1.0 / (30.0 * widths[l])
        if activation == "exp":
            scale *= 0.2  # exp outputs are positive and compound layer after layer
        ws.append((rng.uniform(-1, 1, (widths[l + 1], widths[l])) * scale * np.sqrt(3)).astype(dtype))
        bs.append((rng.uniform(-0.5, 0.5, widths[l + 1]) * 0.2).astype(dtype) if bias else None)
    return ws, bs


def assert_close(got, want, dtype, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.size == 0:
        return
    # Non-finite values must match exactly (IEEE propagation); the rest is compared numerically.
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN positions differ")
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)], err_msg=f"{what}: Inf differs")
    finite = np.isfinite(want)
    got, want = got[finite], want[finite]
    if want.size == 0:
        return
    scale = max(np.max(np.abs(want)), 1e-30)
    err = np.max(np.abs(got - want))
    tol = tolerance(dtype) * max(scale, 1.0)
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g} (max |ref| {scale:.3g})"


def reference(spec, x, ws, bs, dy=None):
    y = ref.forward(x, ws, bs, spec.activation, spec.output_activation, spec.activation_param,
                    spec.output_activation_param)
    if dy is None:
        return y
    return (y, *ref.backward(dy, x, ws, bs, spec.activation, spec.output_activation, spec.activation_param,
                             spec.output_activation_param))
