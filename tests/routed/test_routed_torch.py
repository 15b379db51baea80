"""RoutedMLP and the perceptrons::routed_mlp_* custom ops under torch: equality with explicitly gathered
per-stream models (autograd), Q = identity against M independent FusedMLPs, gradcheck/gradgradcheck,
opcheck, torch.compile, optimizers, inference modes and bad inputs."""
import pytest
import torch

from perceptrons import routing as R
from perceptrons.nn import FusedMLP, RoutedMLP
from perceptrons.ops import routed as routed_ops

F64 = torch.float64
GRANULARITIES = ("layer", "unit", "edge")
PER = ("batch", "example")


def model(M=4, granularity="layer", per="batch", Q="ring", bias=True, dtype=F64, activation="tanh",
          output_activation=None, mode="annealed", seed=3, hidden=(5, 6)):
    torch.manual_seed(0)
    q = R.ring_gaussian(M, 1.0) if isinstance(Q, str) and Q == "ring" else Q
    return RoutedMLP(M, 3, 2, list(hidden), activation=activation, output_activation=output_activation, bias=bias,
                     routing=granularity, Q=q, per=per, mode=mode, seed=seed, dtype=dtype)


def gathered_forward(m, x, step, batch_id=0, example_ids=None):
    """The routed forward written with torch indexing: autograd's gradients are the ground truth."""
    ids = None if example_ids is None else torch.as_tensor(example_ids)
    owners = routed_ops.owner_maps(m.routing, m.widths, step, batch_id, ids, x.shape[-2], x.device)
    return routed_ops.composite_routed_forward(x, list(m.weights), list(m.biases) if m.biases is not None
                                               else [None] * len(m.weights), owners, *m.config)


def grads_of(m, x, y_fn, dy=None):
    for p in m.parameters():
        p.grad = None
    x = x.detach().clone().requires_grad_(True)
    y = y_fn(x)
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y) if dy is None else dy)
    return y.detach(), x.grad, [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("per", PER)
@pytest.mark.parametrize("shared_x", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_kernels_match_autograd_on_gathered_models(granularity, per, shared_x, bias):
    m = model(granularity=granularity, per=per, bias=bias)
    B = 7
    x = torch.randn(B, 3, dtype=F64) if shared_x else torch.randn(m.M, B, 3, dtype=F64)
    ids = torch.arange(B) * 5 + 2
    got = grads_of(m, x, lambda xx: m(xx, step=4, batch_id=9, example_ids=ids))
    want = grads_of(m, x, lambda xx: gathered_forward(m, xx, 4, 9, ids))
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-12)
    for g, w in zip(got[2], want[2]):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_identity_Q_is_M_independent_fused_mlps_bit_for_bit(granularity):
    M = 3
    m = model(M=M, granularity=granularity, Q=None, dtype=torch.float32)
    x = torch.randn(M, 11, 3)
    dy = torch.randn(M, 11, 2)
    y, _, grads = grads_of(m, x, lambda xx: m(xx), dy)
    n = len(m.weights)
    for c in range(M):
        f = FusedMLP(3, 2, [5, 6], activation="tanh")
        with torch.no_grad():
            for l, layer in enumerate(f.layers):
                layer.weight.copy_(m.weights[l][c])
                layer.bias.copy_(m.biases[l][c])
        yc, _, gc = grads_of(f, x[c], f, dy[c])
        assert torch.equal(y[c], yc)
        gc_w = gc[0::2]
        gc_b = gc[1::2]
        for l in range(n):
            assert torch.equal(grads[l][c], gc_w[l])
            assert torch.equal(grads[n + l][c], gc_b[l])


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("per", PER)
def test_gradcheck_and_gradgradcheck(granularity, per):
    m = model(granularity=granularity, per=per)
    B = 5 if per == "batch" else 2   # the per-example composite (second derivatives) is slow
    ids = torch.arange(B) * 3
    ints = routed_ops.routing_ints(m.routing, 2, 1)
    tables = routed_ops.sampler_tensors(m.routing)

    def f(x, *params):
        return routed_ops.RoutedMLPFunction.apply(x, ints, tables, ids, m.routing, m.config, 3, *params)[0]

    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    x = torch.randn(m.M, B, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))


def test_annealed_routing_changes_with_the_step_and_quenched_does_not():
    x = torch.randn(4, 6, 3, dtype=F64)
    annealed = model(mode="annealed")
    assert not torch.equal(annealed(x, step=1), annealed(x, step=2))
    quenched = model(mode="quenched")
    assert torch.equal(quenched(x, step=1), quenched(x, step=2))
    # Without an explicit step a training forward advances the module's counter.
    annealed.step = 5
    y = annealed(x)
    assert annealed.step == 6 and torch.equal(y, annealed(x, step=5))


def test_eval_forward_is_unrouted_and_predict_modes():
    m = model(M=3, Q=R.uniform(3), granularity="edge")
    x = torch.randn(8, 3, dtype=F64)
    m.eval()
    y = m(x)
    for c in range(3):
        torch.testing.assert_close(y[c], m.copy_forward(x, c), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(m.predict(x, "copy", copy=c), y[c], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.predict(x, "mean"), y.mean(0), rtol=1e-12, atol=1e-12)
    votes = m.predict(x, "vote")
    assert votes.dtype == torch.int64 and votes.shape == (8,)
    classes = y.argmax(-1)
    for b in range(8):
        counts = torch.bincount(classes[:, b], minlength=2)
        assert votes[b] == counts.argmax()
    center = FusedMLP(3, 2, [5, 6], activation="tanh", dtype=F64)
    with torch.no_grad():
        for l, layer in enumerate(center.layers):
            layer.weight.copy_(m.weights[l].mean(0))
            layer.bias.copy_(m.biases[l].mean(0))
    torch.testing.assert_close(m.predict(x, "center"), center(x), rtol=1e-12, atol=1e-12)


def test_identical_init_and_optimizer_step():
    m = RoutedMLP(4, 3, 2, 8, 1, init="identical", Q=R.uniform(4), routing="unit", dtype=F64)
    for w in m.weights:
        assert all(torch.equal(w[0], w[c]) for c in range(4))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    x, t = torch.randn(4, 16, 3, dtype=F64), torch.randn(4, 16, 2, dtype=F64)
    before = [p.detach().clone() for p in m.parameters()]
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(x), t).backward()
        opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert m.step == 3


def test_empty_batch():
    m = model(per="example")
    x = torch.randn(4, 0, 3, dtype=F64, requires_grad=True)
    y = m(x)
    assert y.shape == (4, 0, 2)
    y.sum().backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in m.parameters())


def test_opcheck():
    m = model(granularity="unit", per="example", dtype=torch.float32)
    x = torch.randn(4, 5, 3)
    ints = routed_ops.routing_ints(m.routing, 1, 0)
    tables = routed_ops.sampler_tensors(m.routing)
    ids = torch.arange(5)
    ws = [w.detach() for w in m.weights]
    bs = [b.detach() for b in m.biases]
    torch.library.opcheck(routed_ops.routed_mlp_forward_train, (x, ws, bs, ints, tables, ids, *m.config))
    y, saved = routed_ops.routed_mlp_forward_train(x, ws, bs, ints, tables, ids, *m.config)
    torch.library.opcheck(routed_ops.routed_mlp_backward,
                          (torch.randn_like(y), x, y, saved, ws, bs, ints, tables, ids, *m.config, True))


def test_torch_compile_fullgraph_runs_the_kernels(monkeypatch):
    from perceptrons import _C
    calls = {"routed_mlp_forward_cpu": 0, "routed_mlp_backward_cpu": 0}
    for name in calls:
        original = getattr(_C, name)

        def counting(*a, _original=original, _name=name):
            calls[_name] += 1
            return _original(*a)
        monkeypatch.setattr(_C, name, counting)
    m = model(granularity="unit", dtype=torch.float32)
    x = torch.randn(4, 9, 3)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    y = compiled(x, step=3)
    y.sum().backward()
    assert calls == {"routed_mlp_forward_cpu": 1, "routed_mlp_backward_cpu": 1}
    eager_grads = [p.grad.clone() for p in m.parameters()]
    for p in m.parameters():
        p.grad = None
    m(x, step=3).sum().backward()
    torch.testing.assert_close(y, m(x, step=3))
    for a, b in zip(eager_grads, m.parameters()):
        torch.testing.assert_close(a, b.grad)


def test_bad_inputs_name_the_argument():
    m = model()
    with pytest.raises(ValueError, match=r"x: expected shape \(4, batch, 3\)"):
        m(torch.randn(3, 5, 3, dtype=F64))
    with pytest.raises(TypeError, match="x: dtype"):
        m(torch.randn(5, 3))
    with pytest.raises(ValueError, match="example_ids"):
        model(per="example")(torch.randn(5, 3, dtype=F64), example_ids=torch.arange(4))
    with pytest.raises(ValueError, match="example_ids"):
        model(per="example")(torch.randn(2, 3, dtype=F64), example_ids=torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="Q: expected a doubly stochastic"):
        RoutedMLP(3, 2, 2, Q=[[1, 0, 0], [1, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"Q: expected shape \(4, 4\)"):
        RoutedMLP(4, 2, 2, Q=R.uniform(3))
    with pytest.raises(ValueError, match="granularity"):
        RoutedMLP(4, 2, 2, routing="row")
    with pytest.raises(ValueError, match="M: expected a positive integer"):
        RoutedMLP(0, 2, 2)
    with pytest.raises(ValueError, match="mode: expected one of"):
        m.predict(torch.randn(2, 3, dtype=F64), mode="median")
    with pytest.raises(ValueError, match="m: expected a copy index"):
        m.copy_forward(torch.randn(2, 3, dtype=F64), 4)


def test_parametrized_weights_are_used():
    # RoutedMLP reads its parameters from the ParameterLists' dicts for speed; a parametrized entry
    # leaves that dict, and the module must then still see it (and in the right place).
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    torch.manual_seed(0)
    net = RoutedMLP(3, 5, 4, 8, 1, routing="unit", Q=R.uniform(3), seed=2)
    plain = RoutedMLP(3, 5, 4, 8, 1, routing="unit", Q=R.uniform(3), seed=2)
    with torch.no_grad():
        for p, q in zip(plain.parameters(), net.parameters()):
            p.copy_(q)
        plain.weights[0].mul_(2)
    parametrize.register_parametrization(net.weights, "0", Double())
    x = torch.randn(3, 6, 5)
    torch.testing.assert_close(net(x, step=0), plain(x, step=0), rtol=0, atol=0)
