"""Input encodings: torch modules vs the float64 numpy reference, the reference vs finite differences
and known values from tiny-cuda-nn, autograd (gradcheck / gradgradcheck), bad input, torch.compile."""
import math
import re

import numpy as np
import pytest
import torch

from perceptrons.nn import FrequencyEncoding, IdentityEncoding, OneBlobEncoding, SphericalHarmonicsEncoding
from perceptrons.reference import encodings as ref

DTYPES = [torch.float32, torch.float64]


class Case:
    """One encoding configuration: the module, its reference, an input sampler and error scales.

    `value_scale` / `grad_scale` bound how much a rounding error of the input or of an intermediate
    grows in the output / in dL/dx (e.g. the phase 2^l pi x of the frequency encoding: a relative
    error eps of the phase is an absolute error eps * 2^l pi |x| of its sine).
    """

    def __init__(self, name, make, forward, backward, sample, value_scale, grad_scale):
        self.name, self.make, self.forward, self.backward = name, make, forward, backward
        self.sample, self.value_scale, self.grad_scale = sample, value_scale, grad_scale

    def __repr__(self):
        return self.name


def _uniform(low, high):
    return lambda gen, shape: gen.uniform(low, high, size=shape)


def _directions(gen, shape):
    """Unit vectors mapped into [0,1]^3, as tcnn expects."""
    v = gen.normal(size=shape)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return (v + 1.0) / 2.0


def _frequency_case(in_features, n_frequencies, low=-1.0, high=1.0):
    top = 2.0 ** (n_frequencies - 1) * math.pi
    phase = 1.0 + top * max(abs(low), abs(high))
    return Case(f"frequency-in{in_features}-F{n_frequencies}",
                lambda: FrequencyEncoding(in_features, n_frequencies),
                lambda x: ref.frequency(x, n_frequencies),
                lambda dy, x: ref.frequency_backward(dy, x, n_frequencies),
                _uniform(low, high), phase, phase * top)


def _sh_case(degree, sample=_directions, label="dir"):
    return Case(f"sh-deg{degree}-{label}", lambda: SphericalHarmonicsEncoding(3, degree),
                lambda x: ref.spherical_harmonics(x, degree),
                lambda dy, x: ref.spherical_harmonics_backward(dy, x, degree), sample, 8.0, 32.0)


def _one_blob_case(in_features, n_bins):
    return Case(f"oneblob-in{in_features}-B{n_bins}", lambda: OneBlobEncoding(in_features, n_bins),
                lambda x: ref.one_blob(x, n_bins), lambda dy, x: ref.one_blob_backward(dy, x, n_bins),
                _uniform(0.0, 1.0), 4.0 * n_bins, 4.0 * n_bins * n_bins)


def _identity_case(in_features, scale=1.0, offset=0.0):
    return Case(f"identity-in{in_features}-s{scale}-o{offset}", lambda: IdentityEncoding(in_features, scale, offset),
                lambda x: ref.identity(x, scale, offset), lambda dy, x: ref.identity_backward(dy, x, scale, offset),
                _uniform(-2.0, 2.0), 1.0 + 2 * abs(scale) + abs(offset), 1.0 + abs(scale))


CASES = [
    _frequency_case(3, 4), _frequency_case(1, 12, 0.0, 1.0), _frequency_case(2, 1), _frequency_case(5, 6),
    *[_sh_case(d) for d in (1, 2, 3, 4)],
    _sh_case(4, _uniform(0.0, 1.0), "cube"),
    _one_blob_case(2, 16), _one_blob_case(3, 4), _one_blob_case(1, 5), _one_blob_case(2, 1), _one_blob_case(1, 64),
    _identity_case(4), _identity_case(3, 2.5, -0.5),
]
SMALL_CASES = [c for c in CASES if c.name in {"frequency-in3-F4", "sh-deg4-dir", "sh-deg4-cube", "oneblob-in2-B16",
                                               "oneblob-in1-B5", "identity-in3-s2.5-o-0.5"}]
LEADING = [(), (0,), (1,), (7,), (2, 3)]


def _atol(dtype, scale):
    return float(torch.finfo(dtype).eps) * 8.0 * scale


def _input(case, lead, dtype, seed=0):
    m = case.make()
    gen = np.random.default_rng(seed)
    x = np.asarray(case.sample(gen, (*lead, m.in_features)), dtype=np.float64)
    return m, torch.tensor(x, dtype=dtype)


# --- torch module vs reference -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead", LEADING, ids=str)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_values_and_input_gradients_match_reference(case, lead, dtype):
    m, x = _input(case, lead, dtype)
    x.requires_grad_()
    y = m(x)
    assert y.dtype == dtype and y.shape == (*lead, m.out_features)
    xd = x.detach().double().numpy()
    y_ref = case.forward(xd)
    np.testing.assert_allclose(y.detach().double().numpy(), y_ref, rtol=0, atol=_atol(dtype, case.value_scale))

    dy = torch.tensor(np.random.default_rng(1).normal(size=y.shape), dtype=dtype)
    (dx,) = torch.autograd.grad(y, x, dy)
    dx_ref = case.backward(dy.double().numpy(), xd)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx.double().numpy(), dx_ref, rtol=0,
                               atol=_atol(dtype, case.grad_scale) * math.sqrt(m.out_features))


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_reference_backward_matches_finite_differences(case):
    m = case.make()
    gen = np.random.default_rng(2)
    x = case.sample(gen, (5, m.in_features))
    dy = gen.normal(size=(5, m.out_features))
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = np.sum(dy * (case.forward(xp) - case.forward(xm))) / (2 * h)
    got = case.backward(dy, x)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-7 * case.grad_scale)


@pytest.mark.parametrize("case", SMALL_CASES, ids=repr)
def test_gradcheck_and_gradgradcheck_float64(case):
    m, x = _input(case, (3,), torch.float64, seed=3)
    x.requires_grad_()
    assert torch.autograd.gradcheck(m, (x,))
    assert torch.autograd.gradgradcheck(m, (x,))


def test_eikonal_style_double_backward_frequency():
    """The gradient of an encoded field w.r.t. its input is itself differentiable."""
    torch.manual_seed(0)
    enc = FrequencyEncoding(3, 4).double()
    head = torch.nn.Linear(enc.out_features, 1).double()
    x = torch.rand(16, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(head(enc(x)).sum(), x, create_graph=True)
    ((g.norm(dim=-1) - 1) ** 2).mean().backward()
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_vmap_and_jacrev_match_reference():
    enc = OneBlobEncoding(2, 8).double()
    x = torch.rand(4, 2, dtype=torch.float64)
    jac = torch.vmap(torch.func.jacrev(enc))(x)  # (4, 16, 2)
    for k in range(enc.out_features):
        dy = np.zeros((4, enc.out_features))
        dy[:, k] = 1.0
        np.testing.assert_allclose(jac[:, k].numpy(), ref.one_blob_backward(dy, x.numpy(), 8), atol=1e-12)


# --- known values ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_frequency_known_values_and_tcnn_order(dtype):
    enc = FrequencyEncoding(2, 3)
    y = enc(torch.zeros(2, dtype=dtype))
    torch.testing.assert_close(y, torch.tensor([0.0, 1.0] * 6, dtype=dtype))  # sin 0, cos 0 per frequency
    # x = 1/2: sin(pi/2), cos(pi/2), sin(pi), cos(pi), sin(2 pi), cos(2 pi); second feature x = 0.
    y = enc(torch.tensor([0.5, 0.0], dtype=dtype))
    expected = torch.tensor([1.0, 0.0, 0.0, -1.0, 0.0, 1.0] + [0.0, 1.0] * 3, dtype=dtype)
    torch.testing.assert_close(y, expected, atol=4 * torch.finfo(dtype).eps, rtol=0)
    np.testing.assert_allclose(ref.frequency([0.5, 0.0], 3), expected.double().numpy(), atol=1e-15)


def test_frequency_features_are_contiguous_blocks():
    x = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    y = FrequencyEncoding(3, 5)(x).reshape(3, 10)
    for i in range(3):
        torch.testing.assert_close(y[i], FrequencyEncoding(1, 5)(x[:, i:i + 1])[0])


def _sh_at(v, degree=4):
    x = (np.asarray(v, dtype=np.float64) + 1.0) / 2.0
    return ref.spherical_harmonics(x, degree), SphericalHarmonicsEncoding(3, degree)(torch.tensor(x)).numpy()


# Values from the float literals in tcnn's spherical_harmonics.h (kernel_sh) at axis directions.
SH_KNOWN = [
    ((0, 0, 1), {0: 0.28209479177387814, 2: 0.48860251190291987, 6: 0.94617469575755997 - 0.31539156525251999,
                 12: 2 * 0.3731763325901154}),
    ((1, 0, 0), {0: 0.28209479177387814, 3: -0.48860251190291987, 6: -0.31539156525251999,
                 8: 0.54627421529603959, 13: 0.45704579946446572, 15: -0.59004358992664352}),
    ((0, 1, 0), {0: 0.28209479177387814, 1: -0.48860251190291987, 6: -0.31539156525251999,
                 8: -0.54627421529603959, 9: 0.59004358992664352, 11: 0.45704579946446572}),
    ((1 / math.sqrt(3),) * 3, {4: 1.0925484305920792 / 3, 5: -1.0925484305920792 / 3, 7: -1.0925484305920792 / 3,
                               10: 2.8906114426405538 / (3 * math.sqrt(3)), 14: 0.0, 8: 0.0}),
    ((1 / math.sqrt(2), 0, 1 / math.sqrt(2)), {7: -1.0925484305920792 / 2,
                                               14: 1.4453057213202769 / (2 * math.sqrt(2))}),
]


@pytest.mark.parametrize("v,expected", SH_KNOWN, ids=str)
def test_spherical_harmonics_known_values_from_tcnn(v, expected):
    r, t = _sh_at(v)
    for k in range(16):
        want = expected.get(k, None)
        if want is None and max(abs(c) for c in v) == 1:
            want = 0.0  # every other band-0..3 term vanishes on a coordinate axis
        if want is not None:
            assert r[k] == pytest.approx(want, abs=1e-15), k
            assert t[k] == pytest.approx(want, abs=1e-15), k


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_spherical_harmonics_degree_1_is_constant(dtype):
    x = torch.rand(9, 3, dtype=dtype, requires_grad=True)
    y = SphericalHarmonicsEncoding(3, 1)(x)
    assert y.shape == (9, 1)
    torch.testing.assert_close(y, torch.full((9, 1), 0.28209479177387814, dtype=dtype))
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.all(g == 0)


def test_spherical_harmonics_are_orthonormal_on_the_sphere():
    """Independent check of every constant and sign class: int Y_i Y_j dOmega = delta_ij, by a product
    quadrature (Gauss-Legendre in cos(theta), uniform in phi) exact for these degree <= 6 polynomials."""
    ct, w = np.polynomial.legendre.leggauss(8)
    phi = np.arange(16) * (2 * math.pi / 16)
    st = np.sqrt(1 - ct ** 2)
    v = np.stack([st[:, None] * np.cos(phi), st[:, None] * np.sin(phi), np.broadcast_to(ct[:, None], (8, 16))], -1)
    weights = (w[:, None] * np.full(16, 2 * math.pi / 16)).reshape(-1)
    y = ref.spherical_harmonics((v.reshape(-1, 3) + 1) / 2, 4)
    gram = (y * weights[:, None]).T @ y
    np.testing.assert_allclose(gram, np.eye(16), atol=1e-13)


def test_spherical_harmonics_degrees_are_prefixes():
    x = torch.rand(5, 3, dtype=torch.float64)
    full = SphericalHarmonicsEncoding(3, 4)(x)
    for d in (1, 2, 3):
        torch.testing.assert_close(SphericalHarmonicsEncoding(3, d)(x), full[:, : d * d])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n_bins", [1, 4, 16, 5])
def test_one_blob_rows_sum_to_one(n_bins, dtype):
    x = torch.cat([torch.rand(50, 2, dtype=dtype), torch.tensor([[0.0, 1.0], [0.5, 1 / n_bins]], dtype=dtype)])
    y = OneBlobEncoding(2, n_bins)(x).reshape(-1, 2, n_bins)
    torch.testing.assert_close(y.sum(-1), torch.ones(52, 2, dtype=dtype))
    assert (y >= -torch.finfo(dtype).eps).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_one_blob_known_values(dtype):
    n = 8
    enc = OneBlobEncoding(1, n)
    # Centred in bin 3: the quartic blob of radius 1/n puts Q(1/2) - Q(-1/2) = 203/256 in it and the
    # rest equally in its two neighbours.
    y = enc(torch.tensor([3.5 / n], dtype=dtype))
    expected = torch.zeros(n, dtype=dtype)
    expected[3] = 203 / 256
    expected[2] = expected[4] = 53 / 512
    torch.testing.assert_close(y, expected, atol=8 * n * torch.finfo(dtype).eps, rtol=0)
    # At x = 0 the blob wraps around: half in the first bin, half in the last (tcnn's wrap-around).
    y = enc(torch.tensor([0.0], dtype=dtype))
    expected = torch.zeros(n, dtype=dtype)
    expected[0] = expected[-1] = 0.5
    torch.testing.assert_close(y, expected, atol=8 * n * torch.finfo(dtype).eps, rtol=0)
    np.testing.assert_allclose(ref.one_blob([0.0], n), expected.double().numpy(), atol=1e-15)


def test_identity_known_values_and_gradient():
    enc = IdentityEncoding(2, scale=3.0, offset=-1.0)
    x = torch.tensor([[0.0, 1.0]], requires_grad=True)
    y = enc(x)
    torch.testing.assert_close(y, torch.tensor([[-1.0, 2.0]]))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((1, 2), 3.0))


def test_out_features_and_no_parameters():
    assert FrequencyEncoding(3, 10).out_features == 60
    assert FrequencyEncoding(3).n_frequencies == 12
    assert SphericalHarmonicsEncoding().out_features == 16
    assert SphericalHarmonicsEncoding(degree=2).out_features == 4
    assert OneBlobEncoding(2).out_features == 32
    assert IdentityEncoding(5).out_features == 5
    for m in (FrequencyEncoding(3), SphericalHarmonicsEncoding(), OneBlobEncoding(2), IdentityEncoding(5)):
        assert list(m.parameters()) == [] and m.state_dict() == {}
        assert m.in_features in (2, 3, 5)
    assert "n_frequencies=12" in repr(FrequencyEncoding(3))


# --- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("make,exc,message", [
    (lambda: FrequencyEncoding(0), ValueError, "in_features: expected a positive integer, got 0"),
    (lambda: FrequencyEncoding(3, 0), ValueError, "n_frequencies: expected a positive integer, got 0"),
    (lambda: FrequencyEncoding(3, 2.0), ValueError, "n_frequencies: expected a positive integer, got 2.0"),
    (lambda: FrequencyEncoding(True), ValueError, "in_features: expected a positive integer, got True"),
    (lambda: SphericalHarmonicsEncoding(3, 5), ValueError, "degree: expected an integer in 1..4, got 5"),
    (lambda: SphericalHarmonicsEncoding(3, 0), ValueError, "degree: expected an integer in 1..4, got 0"),
    (lambda: SphericalHarmonicsEncoding(2), ValueError,
     "in_features: expected 3 (spherical harmonics encode 3-D directions), got 2"),
    (lambda: OneBlobEncoding(2, 0), ValueError, "n_bins: expected a positive integer, got 0"),
    (lambda: IdentityEncoding(2, scale=float("nan")), ValueError, "scale: expected a finite number, got nan"),
    (lambda: IdentityEncoding(2, offset="1"), ValueError, "offset: expected a finite number, got '1'"),
])
def test_bad_constructor_arguments(make, exc, message):
    with pytest.raises(exc, match=re.escape(message) + "$"):
        make()


MODULES = [FrequencyEncoding(3, 2), SphericalHarmonicsEncoding(3, 2), OneBlobEncoding(3, 4), IdentityEncoding(3)]


@pytest.mark.parametrize("m", MODULES, ids=lambda m: type(m).__name__)
def test_bad_forward_inputs(m):
    with pytest.raises(ValueError, match=re.escape("x: expected shape (..., 3) (in_features=3), got (5, 2)") + "$"):
        m(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=re.escape("x: expected shape (..., 3) (in_features=3), got ()") + "$"):
        m(torch.tensor(0.5))
    with pytest.raises(TypeError, match=re.escape(
            "x: expected dtype torch.float32 or torch.float64, got torch.float16") + "$"):
        m(torch.zeros(5, 3, dtype=torch.float16))
    with pytest.raises(TypeError, match=re.escape(
            "x: expected dtype torch.float32 or torch.float64, got torch.int64") + "$"):
        m(torch.zeros(5, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match=re.escape("x: expected a torch.Tensor, got ndarray") + "$"):
        m(np.zeros((5, 3)))


def test_reference_bad_arguments():
    with pytest.raises(ValueError, match=re.escape("degree: expected an integer in 1..4, got 5")):
        ref.spherical_harmonics(np.zeros((2, 3)), 5)
    with pytest.raises(ValueError, match=re.escape("x: expected last dimension 3 (a direction), got shape (2, 2)")):
        ref.spherical_harmonics(np.zeros((2, 2)), 2)


# --- torch.compile ---------------------------------------------------------------------------------

@pytest.mark.parametrize("m", MODULES, ids=lambda m: type(m).__name__)
def test_torch_compile_fullgraph(m):
    compiled = torch.compile(m, fullgraph=True)
    x = torch.rand(33, 3, requires_grad=True)
    y = compiled(x)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    x_ref = x.detach().requires_grad_()
    y_ref = m(x_ref)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x_ref)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(g, g_ref)
