"""Property-based test: random shapes, activations and batches against the reference."""
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from perceptrons import kernels as K
from perceptrons.activations import NAMES
from perceptrons.reference import mlp as ref

from .helpers import assert_close, make_net, reference


@settings(max_examples=60, deadline=None)
@given(widths=st.lists(st.integers(1, 70), min_size=2, max_size=5), batch=st.integers(0, 300),
       activation=st.sampled_from(NAMES), output_activation=st.sampled_from(NAMES),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1),
       bias=st.booleans())
def test_random_networks_match_reference(widths, batch, activation, output_activation, dtype, seed, bias):
    rng = np.random.default_rng(seed)
    spec = K.MLPSpec(widths, activation, output_activation)
    ws, bs = make_net(widths, dtype, rng, activation, bias)
    x = rng.uniform(-1, 1, (batch, widths[0])).astype(dtype)
    dy = rng.uniform(-1, 1, (batch, widths[-1])).astype(dtype)
    if dtype == np.float32 and {"relu", "leaky_relu"} & {activation, output_activation}:
        # A pre-activation within float32 rounding of a kink may legitimately land on the other side
        # (the derivative jumps there): such inputs have no single right float32 answer.
        _, zs, _ = ref.forward(x, ws, bs, spec.activation, spec.output_activation, spec.activation_param,
                               spec.output_activation_param, return_intermediates=True)
        assume(all(np.abs(z).min(initial=np.inf) > 1e-5 * max(1.0, np.abs(z).max(initial=0)) for z in zs))
    y_ref, dx_ref, dw_ref, db_ref = reference(spec, x, ws, bs, dy)
    y, saved = K.mlp_forward(spec, x, ws, bs, training=True)
    dx, dws, dbs = K.mlp_backward(spec, dy, x, y, saved, ws, bs)
    assert_close(y, y_ref, dtype, "y")
    assert_close(dx, dx_ref, dtype, "dx")
    for l in range(len(ws)):
        assert_close(dws[l], dw_ref[l], dtype, f"dW[{l}]")
        if bias:
            assert_close(dbs[l], db_ref[l], dtype, f"db[{l}]")
