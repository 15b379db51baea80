"""perceptrons.tcnn (tiny-cuda-nn's PyTorch API) against hand-built torch equivalents written from
tcnn's semantics: ones-padding to 16, bias-free row-major (out, in) matrices one after the other in
`params`, tcnn's activation constants, output padding to 16 then slicing; init statistics; bad configs."""
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import perceptrons.tcnn as tcnn
from perceptrons.reference import encodings as ref

F64 = torch.float64

# tcnn's activations written out (include/tiny-cuda-nn/common_device.h: warp_activation, K_ACT = 10)
TCNN_ACT = {
    "none": lambda z: z,
    "relu": torch.relu,
    "leakyrelu": lambda z: torch.where(z > 0, z, 0.01 * z),
    "exponential": torch.exp,
    "sine": torch.sin,
    "sigmoid": torch.sigmoid,
    "softplus": lambda z: torch.log1p(torch.exp(10.0 * z)) / 10.0,
    "tanh": torch.tanh,
    "silu": lambda z: z * torch.sigmoid(z),
}


def pad16(n):
    return (n + 15) // 16 * 16


def expected_shapes(n_encoded, n_out, config):
    """(out, in) of tcnn's matrices for a network config, from tcnn's defaults."""
    width, depth = config.get("n_neurons", 128), config.get("n_hidden_layers", 5)
    if depth == 0:
        return [(pad16(n_out), pad16(n_encoded))]
    return [(width, pad16(n_encoded))] + [(width, width)] * (depth - 1) + [(pad16(n_out), width)]


def reference_mlp(h, params, n_out, config):
    """tcnn's network applied to encoded rows h: pad with ones, bias-free layers, slice the output."""
    shapes = expected_shapes(h.shape[-1], n_out, config)
    assert params.numel() == sum(o * i for o, i in shapes)
    h = torch.cat([h, h.new_ones(*h.shape[:-1], shapes[0][1] - h.shape[-1])], dim=-1)
    act = TCNN_ACT[config.get("activation", "ReLU").lower()]
    out_act = TCNN_ACT[config.get("output_activation", "None").lower()]
    offset = 0
    for l, (rows, cols) in enumerate(shapes):
        w = params[offset:offset + rows * cols].reshape(rows, cols)  # row-major (out, in)
        offset += rows * cols
        z = F.linear(h, w)
        h = out_act(z) if l == len(shapes) - 1 else act(z)
    return h[..., :n_out]


def close(got, want, tol, what):
    err = (got - want).abs().max().item() if want.numel() else 0.0
    scale = max(want.abs().max().item() if want.numel() else 0.0, 1.0)
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol * scale:.3g}"


def net_and_grads(module, x, g):
    x = x.clone().requires_grad_(True)
    module.zero_grad()
    y = module(x)
    (y * g).sum().backward()
    return y.detach(), module.params.grad.clone(), x.grad.clone()


def ref_and_grads(fn, params, x, g):
    p = params.detach().clone().requires_grad_(True)
    x = x.clone().requires_grad_(True)
    y = fn(x, p)
    (y * g).sum().backward()
    return y.detach(), p.grad, x.grad


NETWORKS = [  # otype, activation, output activation, n_neurons, n_hidden_layers, n_input_dims, n_output_dims
    ("FullyFusedMLP", "ReLU", "None", 64, 2, 3, 1),
    ("FullyFusedMLP", "LeakyReLU", "Sigmoid", 16, 1, 16, 4),
    ("FullyFusedMLP", "Tanh", "Tanh", 32, 3, 5, 17),
    ("FullyFusedMLP", "Softplus", "Exponential", 128, 1, 32, 3),
    ("megakernelmlp", "relu", "sine", 16, 3, 1, 1),
    ("CutlassMLP", "Sigmoid", "Softplus", 24, 2, 7, 2),
    ("MLP", "Sine", "None", 32, 2, 2, 3),
    ("CutlassMLP", "SiLU", "LeakyReLU", 48, 1, 20, 16),
    ("CutlassMLP", "Exponential", "ReLU", 16, 0, 3, 5),
    ("cutlassmlp", "NONE", "SiLU", 64, 1, 9, 2),
]


def network_config(otype, act, out_act, width, depth):
    return {"otype": otype, "activation": act, "output_activation": out_act, "n_neurons": width,
            "n_hidden_layers": depth}


@pytest.mark.parametrize("case", NETWORKS, ids=lambda c: "-".join(map(str, c)))
def test_network_matches_hand_built_torch(case):
    otype, act, out_act, width, depth, n_in, n_out = case
    config = network_config(otype, act, out_act, width, depth)
    net = tcnn.Network(n_in, n_out, config, seed=7)
    assert net.params.shape == (sum(o * i for o, i in expected_shapes(n_in, n_out, config)),)
    assert (net.n_input_dims, net.n_output_dims, net.n_params, net.dtype) == (n_in, n_out, net.params.numel(),
                                                                               torch.float32)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(37, n_in, generator=gen, dtype=F64) * 2 - 1

    y32 = net(x.float())  # float32, as tcnn users call it
    assert y32.dtype == torch.float32 and y32.shape == (37, n_out)
    close(y32.double(), reference_mlp(x, net.params.detach().double(), n_out, config), 2e-5, "float32 forward")

    net.double()
    g = torch.randn(37, n_out, generator=gen, dtype=F64)
    y, dparams, dx = net_and_grads(net, x, g)
    y_ref, dparams_ref, dx_ref = ref_and_grads(lambda x, p: reference_mlp(x, p, n_out, config), net.params, x, g)
    close(y, y_ref, 1e-9, "forward")
    close(dparams, dparams_ref, 1e-9, "d params")
    close(dx, dx_ref, 1e-9, "d input")
    # tcnn's padded output rows are never read: their gradient is zero
    last_rows, last_cols = expected_shapes(n_in, n_out, config)[-1]
    assert torch.all(dparams[-last_rows * last_cols:].view(last_rows, last_cols)[n_out:] == 0)


ENCODINGS = [  # encoding config, n_input_dims, expected encoded width
    ({"otype": "Frequency", "n_frequencies": 3}, 3, 18),
    ({"otype": "SphericalHarmonics", "degree": 4}, 3, 16),
    ({"otype": "sphericalharmonics", "degree": 3}, 3, 9),
    ({"otype": "OneBlob", "n_bins": 8}, 2, 16),
    ({}, 3, 48),  # tcnn's defaults: OneBlob, 16 bins
    ({"otype": "Identity", "scale": 0.5, "offset": 0.25}, 5, 5),
    ({"otype": "Composite", "nested": [{"n_dims_to_encode": 3, "otype": "SphericalHarmonics", "degree": 2},
                                       {"otype": "Frequency", "n_frequencies": 2}]}, 5, 12),
    ({"otype": "Composite", "nested": [{"n_dims_to_encode": 2, "otype": "Identity"}]}, 4, 2),
    ({"otype": "Composite", "nested": [
        {"otype": "Frequency", "n_frequencies": 2, "n_dims_to_encode": 1, "dims_to_encode_begin": 2},
        {"otype": "Identity", "n_dims_to_encode": 2, "dims_to_encode_begin": 0}]}, 3, 6),
    ({"otype": "Frequency", "n_frequencies": 2, "n_dims_to_encode": 1}, 3, 12),  # top-level key ignored
]


def sample_inputs(n, n_in, gen):
    return torch.rand(n, n_in, generator=gen, dtype=F64)


@pytest.mark.parametrize("case", ENCODINGS, ids=lambda c: f"{c[0].get('otype', 'default')}-{c[1]}-{c[2]}")
def test_network_with_input_encoding_is_encoding_then_padded_network(case):
    enc_config, n_in, n_encoded = case
    config = network_config("FullyFusedMLP", "ReLU", "None", 32, 2)
    net = tcnn.NetworkWithInputEncoding(n_in, 3, enc_config, config, seed=3).double()
    enc = tcnn.Encoding(n_in, enc_config, dtype=F64)
    assert enc.n_output_dims == n_encoded and enc.n_params == 0
    assert net.n_params == sum(o * i for o, i in expected_shapes(n_encoded, 3, config))
    gen = torch.Generator().manual_seed(2)
    x = sample_inputs(29, n_in, gen)
    g = torch.randn(29, 3, generator=gen, dtype=F64)
    y, dparams, dx = net_and_grads(net, x, g)
    y_ref, dparams_ref, dx_ref = ref_and_grads(lambda x, p: reference_mlp(enc(x), p, 3, config), net.params, x, g)
    close(y, y_ref, 1e-9, "forward")
    close(dparams, dparams_ref, 1e-9, "d params")
    close(dx, dx_ref, 1e-8, "d input")


def test_encoding_values_and_column_routing():
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(11, 6, generator=gen, dtype=F64)
    xn = x.numpy()
    config = {"otype": "Composite", "nested": [
        {"otype": "Identity", "n_dims_to_encode": 1, "scale": 2.0, "offset": -1.0},
        {"otype": "SphericalHarmonics", "n_dims_to_encode": 3, "degree": 3},
        {"otype": "OneBlob", "n_dims_to_encode": 1, "n_bins": 4}]}  # column 5 is not encoded
    enc = tcnn.Encoding(6, config, dtype=F64)
    want = np.concatenate([ref.identity(xn[:, :1], 2.0, -1.0), ref.spherical_harmonics(xn[:, 1:4], 3),
                           ref.one_blob(xn[:, 4:5], 4)], axis=-1)
    assert enc.n_output_dims == 1 + 9 + 4
    np.testing.assert_allclose(enc(x).numpy(), want, rtol=0, atol=1e-12)
    freq = tcnn.Encoding(2, {"otype": "Frequency", "n_frequencies": 5})
    assert freq.dtype == torch.float32 and freq(x[:, :2].float()).dtype == torch.float32
    np.testing.assert_allclose(freq(x[:, :2].float()).double().numpy(), ref.frequency(xn[:, :2], 5), atol=1e-5)
    assert tcnn.Encoding(2, {"otype": "Frequency"}, dtype=torch.float16)(x[:, :2]).dtype == torch.float16


def test_input_gradient_of_encoding_and_gradcheck():
    torch.manual_seed(0)
    net = tcnn.NetworkWithInputEncoding(3, 2, {"otype": "Frequency", "n_frequencies": 2},
                                        network_config("FullyFusedMLP", "Tanh", "Sigmoid", 16, 1)).double()
    x = torch.rand(4, 3, dtype=F64, requires_grad=True)

    def f(x, params):
        return torch.func.functional_call(net, {"params": params}, (x,))

    params = net.params.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x, params))
    small = tcnn.Network(2, 1, network_config("CutlassMLP", "Softplus", "None", 8, 2)).double()
    assert torch.autograd.gradcheck(lambda x, p: torch.func.functional_call(small, {"params": p}, (x,)),
                                    (x[:, :2].detach().clone().requires_grad_(True),
                                     small.params.detach().clone().requires_grad_(True)))
    assert torch.autograd.gradgradcheck(f, (x, params))  # second derivatives (eikonal losses) work


def test_xavier_init_on_padded_shapes_and_seeds():
    config = network_config("FullyFusedMLP", "ReLU", "None", 64, 2)
    net = tcnn.Network(3, 1, config)  # tcnn's default seed
    assert net.seed == 1337
    shapes = expected_shapes(3, 1, config)
    assert shapes == [(64, 16), (64, 64), (16, 64)]
    offset = 0
    for rows, cols in shapes:
        w = net.params.detach()[offset:offset + rows * cols]
        offset += rows * cols
        bound = math.sqrt(6.0 / (rows + cols))  # fans of the padded shapes
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
        assert abs(w.mean()) < 0.1 * bound and abs(w.var() - bound ** 2 / 3) < 0.2 * bound ** 2 / 3
    same = tcnn.Network(3, 1, config)
    other = tcnn.Network(3, 1, config, seed=1338)
    assert torch.equal(same.params, net.params) and not torch.equal(other.params, net.params)


def test_siren_init_when_activation_is_sine():
    config = network_config("CutlassMLP", "Sine", "None", 32, 2)
    net = tcnn.NetworkWithInputEncoding(3, 2, {"otype": "Identity"}, config, seed=5)
    bounds = [30.0 / 16, math.sqrt(6.0 / 32), math.sqrt(6.0 / 32)]  # tcnn: 30 / fan_in first, sqrt(6 / fan_in)
    offset = 0
    for (rows, cols), bound in zip(expected_shapes(3, 2, config), bounds):
        w = net.params.detach()[offset:offset + rows * cols]
        offset += rows * cols
        assert w.abs().max() <= bound * (1 + 1e-6) and w.abs().max() > 0.9 * bound


def test_defaults_case_insensitivity_unknown_keys_and_state_dict():
    net = tcnn.Network(3, 2, {})  # CutlassMLP, ReLU, 128 neurons, 5 hidden layers
    assert net.n_params == 128 * 16 + 4 * 128 * 128 + 16 * 128
    a = tcnn.Network(4, 2, {"otype": "FULLYFUSEDMLP", "activation": "leakyrelu", "n_neurons": 16,
                            "n_hidden_layers": 1, "feedback_alignment": False, "my_note": "ignored"})
    b = tcnn.Network(4, 2, {"otype": "FullyFusedMLP", "activation": "LeakyReLU", "n_neurons": 16.0,
                            "n_hidden_layers": 1})
    x = torch.rand(5, 4)
    assert torch.equal(a(x), b(x))
    assert list(a.state_dict()) == ["params"]  # tcnn checkpoints have this one key
    c = tcnn.Network(4, 2, b.network_config, seed=99)
    c.load_state_dict(a.state_dict())
    assert torch.equal(c(x), a(x))
    assert a(torch.rand(0, 4)).shape == (0, 2)
    assert a(torch.rand(2, 3, 4)).shape == (2, 3, 2)


BAD = [  # constructor, message pattern
    (lambda: tcnn.NetworkWithInputEncoding(3, 1, {"otype": "HashGrid"}, {}),
     r"encoding_config\['otype'\]: 'HashGrid' is a tiny-cuda-nn encoding that perceptrons does not implement; "
     r"supported: Identity, Frequency, SphericalHarmonics, OneBlob, Composite"),
    (lambda: tcnn.Encoding(3, {"otype": "Composite", "nested": [{"n_dims_to_encode": 1, "otype": "Identity"},
                                                               {"otype": "TriangleWave"}]}),
     r"encoding_config\['nested'\]\[1\]\['otype'\]: 'TriangleWave' is a tiny-cuda-nn encoding"),
    (lambda: tcnn.Encoding(3, {"otype": "Fourier"}), r"'Fourier' is not an encoding perceptrons.tcnn knows"),
    (lambda: tcnn.Network(3, 1, {"activation": "Squareplus"}),
     r"network_config\['activation'\]: activation 'Squareplus' has no perceptrons kernel; supported: None, ReLU"),
    (lambda: tcnn.Network(3, 1, {"output_activation": "GELU"}),
     r"network_config\['output_activation'\]: activation 'GELU' is not a tiny-cuda-nn activation"),
    (lambda: tcnn.Encoding(3, {"otype": "SphericalHarmonics", "degree": 8}),
     r"encoding_config\['degree'\]: perceptrons implements SphericalHarmonics degrees 1\.\.4 "
     r"\(tiny-cuda-nn goes up to 8\), got 8"),
    (lambda: tcnn.Encoding(4, {"otype": "SphericalHarmonics"}), r"SphericalHarmonics encodes 3-D directions"),
    (lambda: tcnn.Network(3, 1, {"n_neurons": 0}), r"network_config\['n_neurons'\]: expected an integer >= 1, got 0"),
    (lambda: tcnn.Network(3, 1, {"n_neurons": -16}), r"network_config\['n_neurons'\]: expected an integer >= 1"),
    (lambda: tcnn.Network(3, 1, {"otype": "FullyFusedMLP", "n_neurons": 256}),
     r"FullyFusedMLP only supports 16, 32, 64 and 128 neurons .* use otype CutlassMLP"),
    (lambda: tcnn.Network(3, 1, {"otype": "FullyFusedMLP", "n_hidden_layers": 0}),
     r"network_config\['n_hidden_layers'\]: expected an integer >= 1, got 0"),
    (lambda: tcnn.Network(3, 1, {"otype": "CutlassMLP", "n_neurons": 4096}), r"hidden widths up to 1024"),
    (lambda: tcnn.Network(3, 1, {"otype": "ResNet"}),
     r"network_config\['otype'\]: network 'ResNet' is not supported; supported: FullyFusedMLP"),
    (lambda: tcnn.Encoding(4, {"otype": "Composite", "nested": [{"otype": "Identity"}, {"otype": "OneBlob"}]}),
     r"encoding_config\['nested'\]\[1\]\['n_dims_to_encode'\]: missing; tiny-cuda-nn derives it"),
    (lambda: tcnn.Encoding(4, {"otype": "Composite", "nested": [
        {"otype": "Identity", "n_dims_to_encode": 1, "dims_to_encode_begin": 3}, {"otype": "OneBlob"}]}),
     r"\['nested'\]\[1\]\['n_dims_to_encode'\]: missing"),
    (lambda: tcnn.Encoding(2, {"otype": "Composite", "nested": [{"otype": "Identity", "n_dims_to_encode": 3}]}),
     r"encode 3 dims in total, but the Composite has 2"),
    (lambda: tcnn.Encoding(2, {"otype": "Composite", "nested": []}), r"\['nested'\]: expected a non-empty list"),
    (lambda: tcnn.Encoding(2, {"otype": "Composite", "reduction": "Sum", "nested": [{"otype": "Identity"}]}),
     r"\['reduction'\]: only 'Concatenation' is supported, got 'Sum'"),
    (lambda: tcnn.Encoding(2, {"otype": "OneBlob", "n_bins": 12}), r"\['n_bins'\]: OneBlob needs a power of two"),
    (lambda: tcnn.Encoding(2, {"otype": "Frequency", "n_frequencies": 0}),
     r"\['n_frequencies'\]: expected an integer in 1\.\.32, got 0"),
    (lambda: tcnn.Encoding(2, {"otype": "Identity", "scale": "big"}), r"\['scale'\]: expected a finite number"),
    (lambda: tcnn.Network(0, 1, {}), r"n_input_dims: expected a positive integer, got 0"),
    (lambda: tcnn.Network(2, 1, {}, seed=-1), r"seed: expected an integer >= 0"),
    (lambda: tcnn.Encoding(2, {}, dtype=torch.int32), r"dtype: Encoding supports torch.float32"),
]


@pytest.mark.parametrize("make, pattern", BAD, ids=[re.sub(r"\W+", "_", p[1][:40]) for p in BAD])
def test_bad_configs_raise_value_error_naming_the_problem(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_config_type_errors_and_wrong_input_width():
    with pytest.raises(TypeError, match=r"network_config: expected a dict"):
        tcnn.Network(3, 1, "FullyFusedMLP")
    net = tcnn.NetworkWithInputEncoding(3, 1, {"otype": "Frequency"}, {"n_neurons": 16, "n_hidden_layers": 1})
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 3\) \(n_input_dims=3\), got \(5, 4\)"):
        net(torch.rand(5, 4))
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 2\)"):
        tcnn.Encoding(2, {"otype": "Identity"})(torch.rand(5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    config = network_config("FullyFusedMLP", "ReLU", "Sigmoid", 64, 2)
    enc_config = {"otype": "Composite", "nested": [{"otype": "SphericalHarmonics", "n_dims_to_encode": 3},
                                                   {"otype": "Frequency", "n_frequencies": 4}]}
    cpu = tcnn.NetworkWithInputEncoding(5, 3, enc_config, config, device="cpu")
    gpu = tcnn.NetworkWithInputEncoding(5, 3, enc_config, config)
    assert gpu.params.is_cuda and torch.equal(gpu.params.cpu(), cpu.params)
    x = torch.rand(1000, 5)
    close(gpu(x.cuda()).cpu(), cpu(x), 1e-4, "cuda float32")
    close(gpu.half()(x.cuda()).float().cpu(), cpu(x), 2e-2, "cuda float16")
