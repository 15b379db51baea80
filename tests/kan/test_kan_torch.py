"""KANLinear / KAN and the perceptrons::kan_* ops under torch."""
import io

import numpy as np
import pytest
import torch

from perceptrons.nn import KAN, KANLinear
from perceptrons.ops import kan as kan_ops
from perceptrons.ops import kan_linear
from perceptrons.reference import kan as ref

F64 = torch.float64


def layer(in_f=4, out_f=3, G=5, k=3, dtype=F64, seed=0, **kw):
    torch.manual_seed(seed)
    return KANLinear(in_f, out_f, grid_size=G, spline_order=k, dtype=dtype, **kw)


def randomise(m, seed=1):
    """Non-trivial spline weights (the default init makes the spline ~1% of the output)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.spline_weight.copy_(torch.randn(m.spline_weight.shape, generator=g, dtype=m.spline_weight.dtype))
    return m


def test_parameter_names_shapes_and_state_dict_of_efficient_kan():
    m = layer(4, 3, G=5, k=3)
    sd = m.state_dict()
    assert set(sd) == {"base_weight", "spline_weight", "spline_scaler", "grid"}
    assert sd["grid"].shape == (4, 5 + 2 * 3 + 1)
    assert sd["spline_weight"].shape == (3, 4, 8)
    net = KAN([2, 5, 1])
    assert {k.split(".", 2)[2] for k in net.state_dict()} == {"base_weight", "spline_weight", "spline_scaler", "grid"}
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    other = KAN([2, 5, 1])
    other.load_state_dict(torch.load(buf))
    x = torch.randn(7, 2)
    assert torch.equal(net(x), other(x))


def test_grid_matches_reference_construction():
    m = layer(3, 2, G=7, k=2, grid_range=(-2, 3))
    np.testing.assert_allclose(m.grid.numpy(), ref.make_grid(3, 7, 2, (-2.0, 3.0)), rtol=0, atol=1e-14)


@pytest.mark.parametrize("mode", ["pykan", "clamp"])
@pytest.mark.parametrize("scaler", [True, False])
def test_forward_and_gradients_match_reference(mode, scaler):
    m = randomise(layer(5, 4, G=6, k=3, out_of_range=mode, enable_standalone_scale_spline=scaler))
    x = (torch.rand(50, 5, dtype=F64) * 6 - 3).requires_grad_()
    y = m(x)
    args = [t.detach().numpy() for t in (m.grid, m.base_weight, m.spline_weight)]
    ss = m.spline_scaler.detach().numpy() if scaler else None
    y_ref = ref.forward(x.detach().numpy(), args[0], 3, args[1], args[2], ss, mode)
    np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    y.backward(dy)
    dx, dbw, dsw, dss = ref.backward(dy.numpy(), x.detach().numpy(), args[0], 3, args[1], args[2], ss, mode)
    np.testing.assert_allclose(x.grad.numpy(), dx, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(m.base_weight.grad.numpy(), dbw, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(m.spline_weight.grad.numpy(), dsw, rtol=1e-11, atol=1e-11)
    if scaler:
        np.testing.assert_allclose(m.spline_scaler.grad.numpy(), dss, rtol=1e-11, atol=1e-11)


def test_equals_plain_torch_materialised_basis_layer():
    """The layer efficient-kan users run today (written out in torch here) computes the same."""
    m = randomise(layer(6, 5, G=5, k=3, dtype=torch.float32))
    x = torch.rand(300, 6) * 4 - 2

    def materialised(x):
        g, k = m.grid, m.spline_order
        xe = x.unsqueeze(-1)
        b = ((xe >= g[:, :-1]) & (xe < g[:, 1:])).to(x.dtype)
        for p in range(1, k + 1):
            b = ((xe - g[:, : -(p + 1)]) / (g[:, p:-1] - g[:, : -(p + 1)]) * b[..., :-1]
                 + (g[:, p + 1:] - xe) / (g[:, p + 1:] - g[:, 1:-p]) * b[..., 1:])
        w = m.spline_weight * m.spline_scaler.unsqueeze(-1)
        return torch.nn.functional.linear(torch.nn.functional.silu(x), m.base_weight) + \
            torch.nn.functional.linear(b.reshape(x.shape[0], -1), w.reshape(w.shape[0], -1))

    torch.testing.assert_close(m(x), materialised(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("mode", ["pykan", "clamp"])
def test_gradcheck_and_gradgradcheck(k, mode):
    m = randomise(layer(3, 2, G=4, k=k, out_of_range=mode))
    x = (torch.rand(8, 3, dtype=F64) * 5 - 2.5).requires_grad_()
    params = (m.base_weight, m.spline_weight, m.spline_scaler)
    f = lambda x, bw, sw, ss: kan_linear(x, m.grid, bw, sw, ss, k, mode)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))


def test_double_backward_into_parameters_matches_composite():
    m = randomise(layer(3, 1, G=5, k=3))
    x = torch.rand(40, 3, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(m(x).sum(), x, create_graph=True)
    loss = (g ** 2).sum()
    grads = torch.autograd.grad(loss, [m.base_weight, m.spline_weight, m.spline_scaler])
    x2 = x.detach().clone().requires_grad_()
    y2 = kan_ops.composite_forward(x2, m.grid, m.base_weight, m.spline_weight, m.spline_scaler, 3, "pykan")
    (g2,) = torch.autograd.grad(y2.sum(), x2, create_graph=True)
    grads2 = torch.autograd.grad((g2 ** 2).sum(), [m.base_weight, m.spline_weight, m.spline_scaler])
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(a, b)


def test_opcheck():
    m = randomise(layer(3, 2, G=4, k=3))
    x = torch.rand(9, 3, dtype=F64) * 3 - 1.5
    args = (x, m.grid, m.base_weight.detach(), m.spline_weight.detach(), m.spline_scaler.detach(), 3, "pykan")
    torch.library.opcheck(kan_ops.kan_forward, args)
    dy = torch.randn(9, 2, dtype=F64)
    torch.library.opcheck(kan_ops.kan_backward, (dy, *args, True))
    torch.library.opcheck(kan_ops.kan_backward, (dy, x, m.grid, m.base_weight.detach(), m.spline_weight.detach(),
                                                  torch.empty(0, dtype=F64), 3, "clamp", False))


def test_torch_compile_fullgraph_forward_and_backward():
    net = KAN([3, 8, 2], dtype=torch.float32)
    compiled = torch.compile(net, fullgraph=True)
    x = torch.rand(64, 3, requires_grad=True) * 2 - 1
    x = x.detach().requires_grad_()
    y = compiled(x)
    y.square().sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    net_grads = [p.grad.clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = None
    y_ref = net(x_ref)
    y_ref.square().sum().backward()
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    for a, p in zip(net_grads, net.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_torch_func_grad():
    m = randomise(layer(4, 2))
    x = torch.rand(10, 4, dtype=F64)
    g = torch.func.grad(lambda x: m(x).square().sum())(x)
    x2 = x.clone().requires_grad_()
    m(x2).square().sum().backward()
    torch.testing.assert_close(g, x2.grad)


def test_update_grid_preserves_the_function_on_the_samples():
    torch.manual_seed(0)
    m = layer(3, 4, G=10, k=3)
    with torch.no_grad():  # a smooth, sizeable spline part (a bump per edge) and random scalers
        c = torch.arange(13, dtype=F64) - 6.0
        m.spline_weight.copy_(torch.exp(-0.5 * (c / 2.5) ** 2) * torch.randn(4, 3, 1, dtype=F64).abs().add(0.5))
        m.spline_scaler.copy_(torch.rand(4, 3, dtype=F64) * 1.7 + 0.3)
    x = torch.randn(2000, 3, dtype=F64) * 1.5
    before = m(x)
    new_grid, new_sw = ref.update_grid(x.numpy(), m.grid.numpy(), 3, m.base_weight.detach().numpy(),
                                       m.spline_weight.detach().numpy(), m.spline_scaler.detach().numpy(),
                                       grid_eps=0.02, margin=0.01)
    m.update_grid(x)
    after = m(x)
    np.testing.assert_allclose(m.grid.numpy(), new_grid, rtol=0, atol=1e-12)
    np.testing.assert_allclose(m.spline_weight.detach().numpy(), new_sw, rtol=1e-6, atol=1e-8)
    rel = ((after - before).norm() / before.norm()).item()
    assert rel < 0.02, f"update_grid changed the layer's output by {rel:.1%}"
    assert m.grid[:, 3].min() <= x.min() and m.grid[:, -4].max() >= x.max()


def test_kan_forward_with_update_grid_and_regularization_loss():
    net = KAN([2, 6, 1], grid_size=4)
    x = torch.randn(256, 2) * 2
    y = net(x, update_grid=True)
    assert y.shape == (256, 1)
    reg = net.regularization_loss(1.0, 1.0)
    l1 = [layer.spline_weight.abs().mean(-1) for layer in net.layers]
    expected = sum(v.sum() - ((v / v.sum()) * (v / v.sum()).log()).sum() for v in l1)
    torch.testing.assert_close(reg, expected)


def test_edge_activations_sum_to_the_output_and_match_reference():
    m = randomise(layer(3, 2))
    x = torch.rand(20, 3, dtype=F64) * 4 - 2
    e = m.edge_activations(x)
    assert e.shape == (20, 2, 3)
    torch.testing.assert_close(e.sum(-1), m(x))
    np.testing.assert_allclose(e.detach().numpy(), ref.edge_activations(
        x.numpy(), m.grid.numpy(), 3, m.base_weight.detach().numpy(), m.spline_weight.detach().numpy(),
        m.spline_scaler.detach().numpy()), rtol=1e-12, atol=1e-12)


def test_other_base_activation_uses_the_materialised_path():
    m = randomise(layer(3, 2, base_activation=torch.nn.Tanh))
    x = torch.rand(10, 3, dtype=F64)
    w = m.spline_weight * m.spline_scaler.unsqueeze(-1)
    expected = torch.tanh(x) @ m.base_weight.T + torch.einsum("bic,oic->bo", m.b_splines(x), w)
    torch.testing.assert_close(m(x), expected)


def test_plot_writes_a_figure(tmp_path):
    pytest.importorskip("matplotlib")
    m = layer(2, 2)
    fig = m.plot(torch.randn(30, 2, dtype=F64), path=tmp_path / "edges.png")
    assert (tmp_path / "edges.png").stat().st_size > 1000
    assert len(fig.axes) == 4


def test_leading_dimensions():
    m = layer(4, 3)
    x = torch.rand(2, 5, 4, dtype=F64)
    torch.testing.assert_close(m(x), m(x.reshape(10, 4)).reshape(2, 5, 3))


@pytest.mark.parametrize("kwargs,err,message", [
    (dict(grid_size=0), ValueError, r"grid_size: expected a positive integer, got 0"),
    (dict(spline_order=6), ValueError, r"spline_order: expected an integer in 1\.\.5, got 6"),
    (dict(grid_range=(1, -1)), ValueError, r"grid_range: expected finite \(low, high\) with low < high"),
    (dict(out_of_range="wrap"), ValueError, r"out_of_range: expected one of pykan, clamp, got 'wrap'"),
    (dict(dtype=torch.float16), TypeError, r"dtype: expected torch.float32 or torch.float64, got torch.float16"),
])
def test_bad_constructor_arguments(kwargs, err, message):
    with pytest.raises(err, match=message):
        KANLinear(3, 2, **kwargs)


def test_bad_inputs():
    m = layer(4, 3)
    with pytest.raises(ValueError, match=r"x: expected last dimension in_features=4, got \(2, 5\)"):
        m(torch.rand(2, 5, dtype=F64))
    with pytest.raises(TypeError, match=r"grid: dtype torch.float64 does not match x's dtype torch.float32"):
        m(torch.rand(2, 4))
    with pytest.raises(TypeError, match=r"x: expected dtype torch.float32 or torch.float64 .* got torch.float16"):
        kan_linear(torch.rand(2, 4).half(), m.grid, m.base_weight, m.spline_weight)
    with pytest.raises(ValueError, match=r"update_grid needs at least 2 samples"):
        m.update_grid(torch.rand(1, 4, dtype=F64))


@pytest.mark.parametrize("G,k", [(5, 3), (10, 2), (3, 1)])
def test_fused_layer_equals_pykan_kanlayer(G, k):
    """KANLinear with pykan 0.2.8's coefficients (its (in, out, G+k) layout converted) gives pykan's y."""
    pykan_layer = pytest.importorskip("kan.KANLayer")
    before = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        torch.manual_seed(G + k)
        theirs = pykan_layer.KANLayer(in_dim=4, out_dim=3, num=G, k=k)
        with torch.no_grad():
            theirs.coef.normal_()
            theirs.scale_base.normal_()
            theirs.scale_sp.normal_()
        x = torch.rand(200, 4) * 5 - 2.5
        with torch.no_grad():
            y_theirs = theirs(x)[0]
    finally:
        torch.set_default_dtype(before)
    ours = layer(4, 3, G=G, k=k)
    with torch.no_grad():
        ours.grid.copy_(theirs.grid)
        ours.spline_weight.copy_(theirs.coef.permute(1, 0, 2))
        ours.base_weight.copy_(theirs.scale_base.T)
        ours.spline_scaler.copy_(theirs.scale_sp.T)
        torch.testing.assert_close(ours(x), y_theirs, rtol=1e-12, atol=1e-12)
