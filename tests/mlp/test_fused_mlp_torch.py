"""FusedMLP and the perceptrons::mlp_* custom ops under torch: equality with nn.Sequential,
gradcheck/gradgradcheck, opcheck, torch.compile, torch.func, conversions and state_dict."""
import io
import warnings

import pytest
import torch
from torch import nn

from perceptrons.activations import NAMES
from perceptrons.nn import Exp, FusedMLP, Sine
from perceptrons.ops import fused_mlp
from perceptrons.ops import mlp as mlp_ops

from ..conftest import ISAS, cpu_isa

F64 = torch.float64


def small_model(activation="tanh", output_activation="sigmoid", dtype=F64, bias=True, seed=0):
    torch.manual_seed(seed)
    return FusedMLP(3, 2, hidden_features=8, hidden_layers=2, activation=activation,
                    output_activation=output_activation, bias=bias, dtype=dtype)


def as_function(model):
    """fused_mlp as a function of (x, *params), for gradcheck over every parameter."""
    n = len(model.layers)
    has_bias = [layer.bias is not None for layer in model.layers]

    def f(x, *params):
        weights = params[:n]
        rest = iter(params[n:])
        biases = [next(rest) if hb else None for hb in has_bias]
        return fused_mlp(x, weights, biases, model.activation, model.output_activation, model.activation_param,
                         model.output_activation_param)

    params = [layer.weight for layer in model.layers] + [layer.bias for layer in model.layers if layer.bias is not None]
    return f, params


@pytest.mark.parametrize("activation", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_matches_nn_sequential_forward_and_gradients(activation, dtype):
    model = small_model(activation, "tanh" if activation != "tanh" else "softplus", dtype)
    model = FusedMLP(5, 3, 32, 3, activation=activation, output_activation=model.output_activation, dtype=dtype)
    if activation == "exp":  # keep exp(exp(exp(.))) finite in float32
        with torch.no_grad():
            for layer in model.layers:
                layer.weight.mul_(0.2)
    seq = model.to_sequential()
    x = torch.randn(257, 5, dtype=dtype)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = model(x1), seq(x2)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y1, y2, **tol)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, **tol)
    for p1, p2 in zip(model.parameters(), seq.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, **tol)


@pytest.mark.parametrize("activation,output_activation",
                         [("relu", "none"), ("leaky_relu", "exp"), ("sigmoid", "relu"), ("tanh", "sigmoid"),
                          ("softplus", "tanh"), ("silu", "sine"), ("sine", "silu"), ("exp", "leaky_relu"),
                          ("none", "softplus")])
def test_gradcheck_and_gradgradcheck(activation, output_activation):
    model = small_model(activation, output_activation)
    if activation == "exp":
        with torch.no_grad():
            for layer in model.layers:
                layer.weight.mul_(0.3)
    f, params = as_function(model)
    # relu's kinks: keep inputs away from them with a generous margin is impossible in general; the
    # finite-difference step (1e-6) is far smaller than typical distances to a kink here.
    x = torch.randn(6, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))


def test_gradcheck_without_bias_and_on_every_isa():
    for isa in ISAS:
        with cpu_isa(isa):
            model = small_model("silu", "none", bias=False)
            f, params = as_function(model)
            x = torch.randn(9, 3, dtype=F64, requires_grad=True)
            assert torch.autograd.gradcheck(f, (x, *params)), isa


def test_gradcheck_through_the_small_batch_paths_on_every_isa():
    """16 rows, widths multiples of 16: the forward runs feature-major (W read in place) and the
    backward's single gradient slot writes dW straight into the output arrays."""
    for isa in ISAS:
        with cpu_isa(isa):
            torch.manual_seed(1)
            model = FusedMLP(32, 8, hidden_features=32, hidden_layers=2, activation="tanh", dtype=F64)
            f, params = as_function(model)
            x = torch.randn(16, 32, dtype=F64, requires_grad=True)
            assert torch.autograd.gradcheck(f, (x, *params)), isa


def test_double_backward_eikonal_into_parameters_matches_sequential():
    """grad of y w.r.t. x with create_graph, then a loss on it back into the parameters (SDF training)."""
    model = FusedMLP(3, 1, 32, 2, activation="softplus", activation_param=10.0, dtype=F64)
    seq = model.to_sequential()
    x = torch.randn(64, 3, dtype=F64)
    grads = []
    for m in (model, seq):
        xi = x.clone().requires_grad_()
        y = m(xi)
        (g,) = torch.autograd.grad(y.sum(), xi, create_graph=True)
        loss = ((g.norm(dim=-1) - 1) ** 2).mean()
        # The last bias does not change dy/dx: it is unused in this graph, for both models.
        grads.append(torch.autograd.grad(loss, list(m.parameters()), allow_unused=True))
    assert grads[0][-1] is None and grads[1][-1] is None
    for a, b in zip(grads[0][:-1], grads[1][:-1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_inference_path_under_no_grad_returns_plain_tensor():
    model = small_model()
    x = torch.randn(10, 3, dtype=F64)
    with torch.no_grad():
        y = model(x)
    assert y.grad_fn is None
    torch.testing.assert_close(y, model.to_sequential()(x))


def test_leading_dimensions_and_1d_input():
    model = small_model()
    seq = model.to_sequential()
    x = torch.randn(2, 5, 7, 3, dtype=F64)
    torch.testing.assert_close(model(x), seq(x))
    torch.testing.assert_close(model(x[0, 0, 0]), seq(x[0, 0, 0]))


def test_non_contiguous_input():
    model = small_model()
    x = torch.randn(20, 6, dtype=F64)[:, ::2]
    assert not x.is_contiguous()
    torch.testing.assert_close(model(x), model(x.contiguous()))


def test_empty_batch():
    model = small_model()
    x = torch.zeros(0, 3, dtype=F64, requires_grad=True)
    y = model(x)
    assert y.shape == (0, 2)
    y.sum().backward()
    assert x.grad.shape == (0, 3)
    assert all(not p.grad.any() for p in model.parameters())


def test_nn_linear_initialisation_and_layout():
    torch.manual_seed(123)
    model = FusedMLP(7, 3, 16, 2)
    torch.manual_seed(123)
    ref = [nn.Linear(7, 16), nn.Linear(16, 16), nn.Linear(16, 3)]
    for layer, lin in zip(model.layers, ref):
        assert layer.weight.shape == lin.weight.shape
        torch.testing.assert_close(layer.weight, lin.weight)
        torch.testing.assert_close(layer.bias, lin.bias)


def test_siren_initialisation_bounds():
    model = FusedMLP(2, 1, 64, 3, activation="sine")
    w0 = model.activation_param
    assert model.layers[0].weight.abs().max() <= 1 / 2
    for layer in model.layers[1:]:
        assert layer.weight.abs().max() <= (6 / layer.weight.shape[1]) ** 0.5 / w0


def test_from_sequential_to_sequential_round_trip_is_exact():
    seq = nn.Sequential(nn.Linear(4, 32), nn.LeakyReLU(0.1), nn.Linear(32, 16), nn.LeakyReLU(0.1),
                        nn.Linear(16, 2, bias=False), nn.Sigmoid()).double()
    model = FusedMLP.from_sequential(seq)
    assert model.widths == [4, 32, 16, 2]
    assert (model.activation, model.activation_param, model.output_activation) == ("leaky_relu", 0.1, "sigmoid")
    back = model.to_sequential()
    assert [type(m) for m in back] == [type(m) for m in seq]
    for a, b in zip(seq.parameters(), back.parameters()):
        assert torch.equal(a, b)
    x = torch.randn(50, 4, dtype=F64)
    torch.testing.assert_close(model(x), seq(x))
    again = FusedMLP.from_sequential(back)
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_from_sequential_custom_activations_and_no_output_activation():
    seq = nn.Sequential(nn.Linear(2, 16), Sine(10.0), nn.Linear(16, 16), Sine(10.0), nn.Linear(16, 1))
    model = FusedMLP.from_sequential(seq)
    assert (model.activation, model.activation_param, model.output_activation) == ("sine", 10.0, "none")
    x = torch.randn(30, 2)
    torch.testing.assert_close(model(x), seq(x), rtol=1e-5, atol=1e-6)
    seq2 = nn.Sequential(nn.Linear(2, 8), nn.Softplus(beta=2.0), nn.Linear(8, 3), Exp())
    torch.testing.assert_close(FusedMLP.from_sequential(seq2)(x), seq2(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seq,message", [
    (nn.Sequential(nn.ReLU()), r"seq\[0\]: expected nn.Linear, got ReLU"),
    (nn.Sequential(nn.Linear(2, 4), nn.Dropout(), nn.Linear(4, 1)), r"seq\[1\]: Dropout is not supported"),
    (nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1)),
     r"seq\[3\]: every hidden activation must be the same"),
    (nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(5, 1)), r"layer 1 expects 5 inputs but the previous"),
    (nn.Sequential(nn.Linear(2, 4), nn.Softplus(threshold=5.0), nn.Linear(4, 1)), r"threshold=5.0 is not supported"),
])
def test_from_sequential_rejects_what_it_cannot_fuse(seq, message):
    with pytest.raises(ValueError, match=message):
        FusedMLP.from_sequential(seq)


def test_state_dict_save_and_load():
    model = small_model()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = small_model(seed=99)
    other.load_state_dict(torch.load(buf))
    x = torch.randn(5, 3, dtype=F64)
    assert torch.equal(model(x), other(x))
    assert set(model.state_dict()) == {f"layers.{i}.{k}" for i in range(3) for k in ("weight", "bias")}


def test_torch_compile_fullgraph_forward_and_backward_use_the_fused_kernels(monkeypatch):
    model = FusedMLP(6, 4, 32, 2, activation="silu", dtype=torch.float32)
    seq = model.to_sequential()
    calls = {"mlp_backward_cpu": 0, "mlp_forward_cpu": 0}
    real = mlp_ops._C

    class Counting:  # counts the kernel calls the custom ops make
        def __getattr__(self, name):
            attr = getattr(real, name)
            if name not in calls:
                return attr

            def counted(*args, **kwargs):
                calls[name] += 1
                return attr(*args, **kwargs)
            return counted

    monkeypatch.setattr(mlp_ops, "_C", Counting())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(100, 6, requires_grad=True)
    y = compiled(x)
    torch.testing.assert_close(y, seq(x), rtol=1e-5, atol=1e-6)
    y.square().sum().backward()
    assert calls == {"mlp_forward_cpu": 1, "mlp_backward_cpu": 1}, "the compiled graph must run the fused kernels"
    x_ref = x.detach().clone().requires_grad_()
    seq(x_ref).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    for p1, p2 in zip(model.parameters(), seq.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), seq(x), rtol=1e-5, atol=1e-6)


def test_torch_compile_inductor_fullgraph():
    model = FusedMLP(6, 4, 32, 2, activation="relu")
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(100, 6, requires_grad=True)
    y = compiled(x)
    y.sum().backward()
    torch.testing.assert_close(y, model(x))
    x2 = torch.randn(37, 6)  # a new batch size (recompiles or goes dynamic) must still be right
    torch.testing.assert_close(compiled(x2), model.to_sequential()(x2), rtol=1e-5, atol=1e-6)


def test_torch_func_grad_and_vjp():
    model = small_model("tanh", "none")
    seq = model.to_sequential()
    x = torch.randn(8, 3, dtype=F64)
    g1 = torch.func.grad(lambda x: model(x).square().sum())(x)
    g2 = torch.func.grad(lambda x: seq(x).square().sum())(x)
    torch.testing.assert_close(g1, g2)
    params = dict(model.named_parameters())
    gp = torch.func.grad(lambda p: torch.func.functional_call(model, p, (x,)).sum())(params)
    gs = torch.func.grad(lambda p: torch.func.functional_call(seq, p, (x,)).sum())(dict(seq.named_parameters()))
    torch.testing.assert_close(gp["layers.0.weight"], gs["0.weight"])


def test_opcheck_on_every_op():
    x = torch.randn(9, 3, dtype=F64)
    weights = [torch.randn(8, 3, dtype=F64), torch.randn(2, 8, dtype=F64)]
    biases = [torch.randn(8, dtype=F64), torch.empty(0, dtype=F64)]
    args = ("silu", 0.0, "sine", 30.0)
    torch.library.opcheck(mlp_ops.mlp_forward, (x, weights, biases, *args, []))
    torch.library.opcheck(mlp_ops.mlp_forward_train, (x, weights, biases, *args, []))
    y, saved = mlp_ops.mlp_forward_train(x, weights, biases, *args, [])
    dy = torch.randn_like(y)
    torch.library.opcheck(mlp_ops.mlp_backward, (dy, x, y, saved, weights, biases, *args, True, []))
    torch.library.opcheck(mlp_ops.mlp_backward, (dy, x, y, saved, weights, biases, *args, False, []))


def test_parametrized_and_weight_normed_layers_are_used():
    """FusedMLP reads its layers' tensors from their parameter dicts for speed; a parametrized weight
    (torch.nn.utils.parametrize, parametrizations.weight_norm) is not there, and the fused forward must
    still use it, exactly as the layers' own nn.Sequential does; so must a bias-free layer."""
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    torch.manual_seed(0)
    m = FusedMLP(5, 3, 8, 2, bias=[True, False, True], dtype=torch.float64)
    parametrize.register_parametrization(m.layers[0], "weight", Double())
    parametrize.register_parametrization(m.layers[2], "bias", Double())
    m.layers[1] = torch.nn.utils.parametrizations.weight_norm(m.layers[1])
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    seq = nn.Sequential(m.layers[0], nn.ReLU(), m.layers[1], nn.ReLU(), m.layers[2])
    want = seq(x)
    got = m(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(got)
    want_grads = torch.autograd.grad(want, [x, *m.parameters()], g)
    got_grads = torch.autograd.grad(got, [x, *m.parameters()], g)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(m(x), seq(x), rtol=1e-12, atol=1e-12)


def test_layers_with_forward_hooks_are_refused():
    """The kernel never calls the layers, so a hook (here the old hook-based weight_norm, which
    recomputes .weight before each layer call) would silently be skipped: an error names the layer."""
    m = FusedMLP(5, 3, 8, 2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in favour of parametrizations.weight_norm
        m.layers[1] = torch.nn.utils.weight_norm(m.layers[1])
    with pytest.raises(RuntimeError, match=r"layers\[1\]: has forward hooks"):
        m(torch.randn(4, 5, dtype=torch.float64))
    m2 = FusedMLP(5, 3, 8, 1, dtype=torch.float64)
    m2.layers[0].register_forward_hook(lambda mod, inp, out: out * 2)
    with pytest.raises(RuntimeError, match=r"layers\[0\]: has forward hooks"):
        m2(torch.randn(4, 5, dtype=torch.float64))
