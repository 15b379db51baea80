"""The fused input-encoding stage of the MLP kernel (EncodedMLP, fused_mlp(encoding=...)): against the
float64 numpy reference across encodings, widths, depths, activations, batch sizes and dtypes; against
the unfused path (encoding kernel, then the MLP kernel); autograd to second order; ISAs and thread
counts; torch.compile; bad input."""
import numpy as np
import pytest
import torch

from perceptrons import kernels as K
from perceptrons.kernels.encodings import EncodingPart, EncodingSpec, encoding_backward, encoding_forward
from perceptrons.nn import (CompositeEncoding, EncodedMLP, FrequencyEncoding, FusedMLP, IdentityEncoding,
                            OneBlobEncoding, SphericalHarmonicsEncoding)
from perceptrons.ops import encodings as enc_ops
from perceptrons.ops import mlp as mlp_ops
from perceptrons.reference import encodings as ref_enc
from perceptrons.reference import mlp as ref_mlp

from ..conftest import ISAS, cpu_isa, num_threads
from ..mlp.helpers import assert_close, make_net

F = EncodingPart
ENCODINGS = {
    "freq-2x8": EncodingSpec((F("frequency", 2, 8),)),
    "freq-3x12+ones": EncodingSpec((F("frequency", 3, 12),), n_ones=4),
    "freq-1x1": EncodingSpec((F("frequency", 1, 1),)),
    "sh-1": EncodingSpec((F("spherical_harmonics", 3, 1),)),
    "sh-4": EncodingSpec((F("spherical_harmonics", 3, 4),)),
    "oneblob-2x16": EncodingSpec((F("one_blob", 2, 16),)),
    "oneblob-1x3": EncodingSpec((F("one_blob", 1, 3),), n_ones=13),
    "identity": EncodingSpec((F("identity", 5, 0, 2.0, -0.5),), n_ones=11),
    "nerf-colour": EncodingSpec((F("identity", 15), F("spherical_harmonics", 3, 4))),
    "all-four": EncodingSpec((F("frequency", 2, 4), F("spherical_harmonics", 3, 3), F("one_blob", 1, 8),
                              F("identity", 2, 0, 0.5, 0.25)), n_ones=3),
}


def _sample(spec, batch, rng, dtype):
    """Inputs in [0, 1] (directions for the SH parts), slightly outside for frequency / identity."""
    cols = []
    for p in spec.parts:
        if p.kind == "spherical_harmonics":
            v = rng.normal(size=(batch, 3))
            v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            cols.append((v + 1) / 2)
        elif p.kind == "one_blob":
            cols.append(rng.uniform(0, 1, (batch, p.n_dims)))
        else:
            cols.append(rng.uniform(-1.2, 1.2, (batch, p.n_dims)))
    return np.concatenate(cols, axis=1).astype(dtype)


def _reference(spec, mlp_spec, x, ws, bs, dy):
    e = ref_enc.encode(x, spec.parts, spec.n_ones)
    args = (mlp_spec.activation, mlp_spec.output_activation, mlp_spec.activation_param,
            mlp_spec.output_activation_param)
    y = ref_mlp.forward(e, ws, bs, *args)
    de, dws, dbs = ref_mlp.backward(dy, e, ws, bs, *args)
    return y, ref_enc.encode_backward(de, x, spec.parts, spec.n_ones), dws, dbs


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(ENCODINGS))
@pytest.mark.parametrize("hidden,depth,act", [(16, 1, "relu"), (64, 2, "silu"), (32, 3, "tanh")])
@pytest.mark.parametrize("batch", [0, 1, 73, 300])
def test_kernel_matches_reference(name, hidden, depth, act, batch, dtype):
    spec = ENCODINGS[name]
    rng = np.random.default_rng(hash((name, hidden, depth, batch)) % 2**32)
    widths = [spec.out_features] + [hidden] * depth + [3]
    mlp_spec = K.MLPSpec(widths, act, "sigmoid")
    ws, bs = make_net(widths, dtype, rng, act)
    x = _sample(spec, batch, rng, dtype)
    dy = rng.uniform(-1, 1, (batch, 3)).astype(dtype)
    y, saved = K.mlp_forward(mlp_spec, x, ws, bs, training=True, encoding=spec)
    dx, dws, dbs = K.mlp_backward(mlp_spec, dy, x, y, saved, ws, bs, encoding=spec)
    y_ref, dx_ref, dw_ref, db_ref = _reference(spec, mlp_spec, x, ws, bs, dy)
    assert_close(y, y_ref, dtype, "y")
    assert_close(K.mlp_forward(mlp_spec, x, ws, bs, encoding=spec), y_ref, dtype, "y (inference)")
    assert_close(dx, dx_ref, dtype, "dx")
    for l in range(len(ws)):
        assert_close(dws[l], dw_ref[l], dtype, f"dW[{l}]")
        assert_close(dbs[l], db_ref[l], dtype, f"db[{l}]")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["freq-3x12+ones", "all-four", "nerf-colour"])
def test_fused_equals_unfused(name, dtype):
    """The fused stage computes what encoding kernel + MLP kernel compute. Not bit for bit: the fused
    stage is compiled per ISA (FMA contraction in the sin/cos polynomial), the standalone kernel once."""
    spec = ENCODINGS[name]
    rng = np.random.default_rng(7)
    widths = [spec.out_features, 64, 64, 4]
    mlp_spec = K.MLPSpec(widths, "relu", "none")
    ws, bs = make_net(widths, dtype, rng)
    x = _sample(spec, 500, rng, dtype)
    dy = rng.uniform(-1, 1, (500, 4)).astype(dtype)
    y, saved = K.mlp_forward(mlp_spec, x, ws, bs, training=True, encoding=spec)
    dx, dws, dbs = K.mlp_backward(mlp_spec, dy, x, y, saved, ws, bs, encoding=spec)
    e = encoding_forward(spec, x)
    y2, saved2 = K.mlp_forward(mlp_spec, e, ws, bs, training=True)
    de, dws2, dbs2 = K.mlp_backward(mlp_spec, dy, e, y2, saved2, ws, bs)
    assert_close(y, y2, dtype, "y")
    assert_close(dx, encoding_backward(spec, x, de), dtype, "dx")
    for l, (a, b) in enumerate(zip(dws + dbs, dws2 + dbs2)):
        assert_close(a, b, dtype, f"gradient {l}")


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_and_thread_count_gives_the_same_bits(isa):
    spec = ENCODINGS["all-four"]
    rng = np.random.default_rng(3)
    widths = [spec.out_features, 32, 32, 2]
    mlp_spec = K.MLPSpec(widths, "softplus", "none")
    ws, bs = make_net(widths, np.float64, rng)
    x = _sample(spec, 1000, rng, np.float64)
    dy = rng.uniform(-1, 1, (1000, 2))
    y_ref, dx_ref, dw_ref, _ = _reference(spec, mlp_spec, x, ws, bs, dy)
    outs = []
    with cpu_isa(isa):
        for threads in (1, 2):
            with num_threads(threads):
                y, saved = K.mlp_forward(mlp_spec, x, ws, bs, training=True, encoding=spec)
                dx, dws, _ = K.mlp_backward(mlp_spec, dy, x, y, saved, ws, bs, encoding=spec)
                outs.append((y, dx, dws[0]))
    assert_close(outs[0][0], y_ref, np.float64, "y")
    assert_close(outs[0][1], dx_ref, np.float64, "dx")
    assert_close(outs[0][2], dw_ref[0], np.float64, "dW[0]")
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(a, b)


# --- torch: EncodedMLP ------------------------------------------------------------------------------

def _model(n_ones=3, activation="silu", dtype=torch.float64):
    torch.manual_seed(0)
    enc = CompositeEncoding([FrequencyEncoding(2, 4), SphericalHarmonicsEncoding(3, 4), OneBlobEncoding(1, 4)])
    mlp = FusedMLP(enc.out_features + n_ones, 2, 16, 2, activation=activation).to(dtype)
    return EncodedMLP(enc, mlp, n_ones=n_ones)


def _inputs(model, batch, dtype=torch.float64, seed=1):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(_sample(model.spec, batch, rng, np.float64)).to(dtype)


def _unfused(model, x):
    """The same network in plain torch ops: encoding, ones columns, then the MLP."""
    e = enc_ops.composite_encode(x, model.encoding.spec)
    e = torch.cat([e, e.new_ones((*e.shape[:-1], model.n_ones))], dim=-1)
    m = model.mlp
    return mlp_ops.composite_forward(e, m.weights, m.biases, m.activation, m.activation_param, m.output_activation,
                                     m.output_activation_param)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_encoded_mlp_matches_torch_ops_with_gradients(dtype):
    model = _model(dtype=dtype)
    x = _inputs(model, 257, dtype).requires_grad_()
    y = model(x)
    y_ref = _unfused(model, x)
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(y, y_ref, **tol)
    params = [x, *model.mlp.parameters()]
    g = torch.autograd.grad((y * y).sum(), params)
    g_ref = torch.autograd.grad((y_ref * y_ref).sum(), params)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, **tol)


def test_gradcheck_and_gradgradcheck():
    model = _model()
    x = _inputs(model, 12).requires_grad_()
    ws = [w.detach().clone().requires_grad_() for w in model.mlp.weights]
    bs = [b.detach().clone().requires_grad_() for b in model.mlp.biases]

    def f(x, *p):
        return mlp_ops.fused_mlp(x, p[:3], p[3:], "silu", encoding=model.spec)

    assert torch.autograd.gradcheck(f, (x, *ws, *bs))
    assert torch.autograd.gradgradcheck(f, (x, *ws, *bs))


def test_eikonal_style_double_backward_matches_torch_ops():
    model = _model(activation="softplus")
    x = _inputs(model, 64).requires_grad_()
    losses = []
    for fwd in (model, lambda x: _unfused(model, x)):
        (gx,) = torch.autograd.grad(fwd(x)[:, 0].sum(), x, create_graph=True)
        loss = ((gx.norm(dim=-1) - 1) ** 2).mean()
        # The last bias does not move dy/dx: its gradient is None (unused) on both paths.
        losses.append((loss, torch.autograd.grad(loss, list(model.mlp.parameters()), allow_unused=True)))
    torch.testing.assert_close(losses[0][0], losses[1][0])
    assert losses[0][1][-1] is None and losses[1][1][-1] is None
    for a, b in zip(losses[0][1][:-1], losses[1][1][:-1]):
        torch.testing.assert_close(a, b)


def test_leading_dims_empty_batch_and_no_grad():
    model = _model()
    x = _inputs(model, 30).reshape(5, 6, -1)
    y = model(x)
    assert y.shape == (5, 6, 2)
    torch.testing.assert_close(y.reshape(30, 2), _unfused(model, x.reshape(30, -1)))
    with torch.no_grad():
        torch.testing.assert_close(model(x), y)
    assert model(x[:0]).shape == (0, 6, 2)


def test_torch_compile_fullgraph():
    model = _model(dtype=torch.float32)
    x = _inputs(model, 100, torch.float32).requires_grad_()
    compiled = torch.compile(model, fullgraph=True)
    y = compiled(x)
    torch.testing.assert_close(y, model(x))
    (g,) = torch.autograd.grad(y.sum(), x)
    (g_ref,) = torch.autograd.grad(model(x).sum(), x)
    torch.testing.assert_close(g, g_ref)


def test_opcheck_with_encoding():
    model = _model()
    x = _inputs(model, 9)
    codes = model.spec.codes()
    ws, bs = [w.detach() for w in model.mlp.weights], [b.detach() for b in model.mlp.biases]
    args = ("silu", 0.0, "none", 0.0)
    torch.library.opcheck(mlp_ops.mlp_forward, (x, ws, bs, *args, codes))
    torch.library.opcheck(mlp_ops.mlp_forward_train, (x, ws, bs, *args, codes))
    y, saved = mlp_ops.mlp_forward_train(x, ws, bs, *args, codes)
    torch.library.opcheck(mlp_ops.mlp_backward, (torch.randn_like(y), x, y, saved, ws, bs, *args, True, codes))
    torch.library.opcheck(enc_ops.encoding_forward, (x, codes))
    e = enc_ops.encoding_forward(x, codes)
    torch.library.opcheck(enc_ops.encoding_backward, (torch.randn_like(e), x, codes))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_runs_the_torch_ops_and_matches_the_cpu():
    model = _model(dtype=torch.float32)
    x = _inputs(model, 300, torch.float32)
    want = model(x)
    torch.testing.assert_close(model.to("cuda")(x.to("cuda")).cpu(), want, atol=1e-5, rtol=1e-4)
    # float16 weights: the encoding in float32, then the fused tensor-core kernels (hidden width 16).
    half = model.to(torch.float16)
    for xin in (x.to("cuda"), x.to("cuda", torch.float16)):
        y = half(xin)
        assert y.dtype == torch.float16
        torch.testing.assert_close(y.float().cpu(), want, atol=2e-2, rtol=2e-2)


def test_bad_input_names_the_argument():
    enc = FrequencyEncoding(2, 4)
    with pytest.raises(ValueError, match="mlp: in_features is 17 but the encoding gives 16 columns"):
        EncodedMLP(enc, FusedMLP(17, 1))
    with pytest.raises(TypeError, match="encoding: expected a perceptrons.nn encoding module"):
        EncodedMLP(torch.nn.Identity(), FusedMLP(16, 1))
    with pytest.raises(TypeError, match="mlp: expected a perceptrons.nn.FusedMLP"):
        EncodedMLP(enc, torch.nn.Linear(16, 1))
    with pytest.raises(ValueError, match="n_ones: expected an integer >= 0"):
        EncodedMLP(enc, FusedMLP(16, 1), n_ones=-1)
    model = EncodedMLP(enc, FusedMLP(16, 1))
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 2\)"):
        model(torch.rand(4, 3))
    with pytest.raises(TypeError, match="x: expected dtype"):
        model(torch.rand(4, 2).half())
    w = [torch.rand(8, 15), torch.rand(1, 8)]
    with pytest.raises(ValueError, match="weights\\[0\\]: expected 16 input features \\(the encoding's out_features\\)"):
        mlp_ops.fused_mlp(torch.rand(4, 2), w, encoding=enc.spec)
    with pytest.raises(TypeError, match="encoding: expected an EncodingSpec"):
        mlp_ops.fused_mlp(torch.rand(4, 2), w, encoding=enc)
    with pytest.raises(ValueError, match="n_frequencies: expected an integer in 1..32"):
        EncodingSpec((F("frequency", 2, 33),))


# --- forward mode, transforms, strided inputs, high octaves (review findings) -----------------------

def _composite_of(enc):
    return lambda a: enc_ops.composite_encode(a, enc.spec)


def test_forward_mode_jacfwd_jvp_and_hessian_through_the_encodings():
    enc = CompositeEncoding([FrequencyEncoding(3, 3), SphericalHarmonicsEncoding(3, 4), OneBlobEncoding(1, 4)])
    x = torch.rand(5, 7, dtype=torch.float64)
    t = torch.rand_like(x)
    want = torch.func.jvp(_composite_of(enc), (x,), (t,))[1]
    assert want.abs().max() > 0
    torch.testing.assert_close(torch.func.jvp(enc, (x,), (t,))[1], want)
    torch.testing.assert_close(torch.func.jacfwd(enc)(x[0]), torch.func.jacrev(enc)(x[0]))
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(enc(fwAD.make_dual(x, t))).tangent
    torch.testing.assert_close(tangent, want)
    h = torch.func.hessian(lambda a: enc(a).square().sum())(x[0])
    torch.testing.assert_close(h, torch.func.hessian(lambda a: _composite_of(enc)(a).square().sum())(x[0]))


def test_vmap_of_grad_over_a_strided_batch():
    enc = CompositeEncoding([FrequencyEncoding(3, 3), SphericalHarmonicsEncoding(3, 4)])
    xs = torch.rand(6, 10, dtype=torch.float64)[:, :6]  # rows are not contiguous
    w = torch.rand(enc.out_features, dtype=torch.float64)

    def f(a):
        return (enc(a) ** 2 * w).sum()

    got = torch.func.vmap(torch.func.grad(f))(xs)
    want = torch.stack([torch.func.grad(f)(xs[i].clone()) for i in range(6)])
    torch.testing.assert_close(got, want)
    # The ops themselves take strided x (they make it contiguous).
    codes = enc.spec.codes()
    torch.testing.assert_close(enc_ops.encoding_forward(xs, codes), enc_ops.encoding_forward(xs.contiguous(), codes))


def test_torch_op_composite_keeps_high_octaves_accurate_in_float32():
    """create_graph / CUDA use the torch-op composite: its phases must be reduced before rounding."""
    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    enc = FrequencyEncoding(2, 20)
    want = ref_enc.frequency(x.float().double().numpy(), 20)
    got = enc_ops.composite_encode(x.float(), enc.spec).double().numpy()
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


def test_raw_ops_refuse_inputs_of_the_wrong_width():
    ws = [torch.rand(4, 300), torch.rand(1, 4)]
    bs = [torch.empty(0), torch.empty(0)]
    with pytest.raises(ValueError, match=r"x: expected a contiguous \(batch, 300\) tensor, got \(1, 2\)"):
        mlp_ops.mlp_forward(torch.rand(1, 2), ws, bs, "relu", 0.0, "none", 0.0, [])
    spec = ENCODINGS["freq-2x8"]
    with pytest.raises(ValueError, match=r"x: expected a contiguous \(batch, 2\) tensor"):
        mlp_ops.mlp_forward(torch.rand(3, 5), [torch.rand(4, 16), torch.rand(1, 4)], bs, "relu", 0.0, "none", 0.0,
                            spec.codes())
    with pytest.raises(ValueError, match=r"x: expected a float32/float64 \(batch, 2\) tensor"):
        enc_ops.encoding_forward(torch.rand(3, 5), spec.codes())
