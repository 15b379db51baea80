"""The eager shortcut past the dispatcher (ops/direct_call.py) and the positional apply
(ops/function_signature.py): same bits as the op path, and the op path wherever something watches."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from perceptrons.nn import FusedMLP, KANLinear, RoutedMLP
from perceptrons.nn.encodings import FrequencyEncoding
from perceptrons.ops.direct_call import dispatcher_needed
from perceptrons.ops.function_signature import cache_forward_signature
from perceptrons.ops.mlp import FusedMLPFunction
from perceptrons.routing import ring_gaussian


class OpLog(TorchDispatchMode):
    """Records every op that reaches the dispatcher's Python mode key; changes nothing."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _models():
    torch.manual_seed(0)
    return {
        "fused_mlp": (FusedMLP(5, 3, 16, 2, dtype=torch.float64), torch.randn(9, 5, dtype=torch.float64),
                      ("perceptrons.mlp_forward_train", "perceptrons.mlp_backward")),
        "routed_mlp": (RoutedMLP(4, 5, 3, 16, 2, routing="unit", Q=ring_gaussian(4, 1.0), seed=3),
                       torch.randn(4, 7, 5), ("perceptrons.routed_mlp_forward_train", "perceptrons.routed_mlp_backward")),
        "kan": (KANLinear(5, 3), torch.randn(9, 5), ("perceptrons.kan_forward", "perceptrons.kan_backward")),
        "encoding": (torch.nn.Sequential(FrequencyEncoding(2, 3), torch.nn.Linear(12, 2)), torch.randn(9, 2),
                     ("perceptrons.encoding_forward", "perceptrons.encoding_backward")),
    }


def _step(model, x):
    """Output and every gradient of one training step (x's too)."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    kwargs = {"step": 0} if isinstance(model, RoutedMLP) else {}
    y = model(x, **kwargs)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).view_as(y)).sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("name", ["fused_mlp", "routed_mlp", "kan", "encoding"])
def test_direct_and_dispatched_calls_give_the_same_bits(name):
    model, x, ops = _models()[name]
    direct = _step(model, x)
    log = OpLog()
    with log:
        dispatched = _step(model, x)
    for op in ops:  # the mode really saw the ops: the second step went through the dispatcher
        assert op in log.ops, (op, sorted(set(log.ops)))
    assert len(direct) == len(dispatched)
    for a, b in zip(direct, dispatched):
        assert a is not None and b is not None
        assert torch.equal(a, b)


def test_plain_eager_call_needs_no_dispatcher():
    x, w = torch.randn(3, 2), torch.nn.Parameter(torch.randn(2, 2))
    assert not dispatcher_needed((x, w))


def test_watchers_and_transforms_keep_the_dispatcher():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.overrides import TorchFunctionMode
    x = torch.randn(3, 2)
    with OpLog():
        assert dispatcher_needed((x,))
    with FakeTensorMode():
        assert dispatcher_needed(())
    with TorchFunctionMode():
        assert dispatcher_needed((x,))
    with torch.profiler.profile():
        assert dispatcher_needed((x,))
    seen = []
    torch.func.vmap(lambda r: (seen.append(dispatcher_needed((r,))), r)[1])(x)
    assert seen == [True]

    class Sub(torch.Tensor):
        pass
    assert dispatcher_needed((x.as_subclass(Sub),))


def test_profiles_still_name_the_ops():
    model = FusedMLP(4, 2, 16, 1)
    x = torch.randn(8, 4)
    with torch.profiler.profile() as prof:
        model(x).sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert "perceptrons::mlp_forward_train" in names and "perceptrons::mlp_backward" in names, sorted(names)


def test_positional_apply_keeps_forward_arity_checks():
    with pytest.raises(TypeError):
        FusedMLPFunction.apply(torch.randn(2, 3))


def test_positional_apply_refuses_forward_defaults():
    class WithDefault(torch.autograd.Function):
        @staticmethod
        def forward(x, scale=2.0):
            return x * scale

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

    with pytest.raises(TypeError, match="WithDefault.forward"):
        cache_forward_signature(WithDefault)


def test_plain_eager_calls_take_the_direct_path(monkeypatch):
    # The ops hold the original implementations; only the direct path looks the module names up.
    import perceptrons.ops.mlp as mlp_ops
    calls = []
    for name in ("_mlp_forward_train_cpu", "_mlp_backward_cpu"):
        impl = getattr(mlp_ops, name)
        monkeypatch.setattr(mlp_ops, name, lambda *a, _impl=impl, _name=name: (calls.append(_name), _impl(*a))[1])
    model = FusedMLP(4, 2, 16, 1)
    model(torch.randn(8, 4)).sum().backward()
    assert calls == ["_mlp_forward_train_cpu", "_mlp_backward_cpu"]
    calls.clear()
    with OpLog():
        model(torch.randn(8, 4)).sum().backward()
    assert calls == []


def test_fake_tensor_mode_runs_the_modules_through_the_ops():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        routed = RoutedMLP(4, 5, 3, 16, 2, routing="unit", Q=ring_gaussian(4, 1.0), seed=3)
        y = routed(torch.randn(4, 7, 5), step=0)
        fused = FusedMLP(5, 3, 16, 2)
        z = fused(torch.randn(9, 5))
        routed.eval()
        y_eval = routed(torch.randn(7, 5))
    assert y.shape == (4, 7, 3) and z.shape == (9, 3) and y_eval.shape == (4, 7, 3)


def test_negative_views_are_materialised_by_the_dispatcher():
    # A negative-bit view is a plain Tensor whose memory holds -value: the kernels must not read it raw.
    torch.manual_seed(1)
    model = FusedMLP(4, 2, 16, 1)
    x = torch.randn(8, 4)
    lazy = torch._neg_view(x)
    assert dispatcher_needed((lazy,)) and dispatcher_needed((torch._efficientzerotensor((2, 2)),))
    with torch.no_grad():
        torch.testing.assert_close(model(lazy), model(-x), rtol=0, atol=0)


def test_the_legacy_profiler_also_keeps_the_ops():
    model = FusedMLP(4, 2, 16, 1)
    with torch.autograd.profiler_legacy.profile() as prof:
        model(torch.randn(8, 4)).sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert "perceptrons::mlp_forward_train" in names and "perceptrons::mlp_backward" in names, sorted(names)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cuda_mlp():
    torch.manual_seed(0)
    model = FusedMLP(32, 16, 64, 2).cuda().half()
    return model, torch.randn(300, 32, device="cuda", dtype=torch.float16)


@cuda
def test_cuda_eager_calls_take_the_direct_path(monkeypatch):
    import perceptrons.ops.mlp as mlp_ops
    calls = []
    for name in ("_mlp_forward_cuda", "_mlp_forward_train_cuda", "_mlp_backward_cuda"):
        impl = getattr(mlp_ops, name)
        monkeypatch.setattr(mlp_ops, name, lambda *a, _impl=impl, _name=name: (calls.append(_name), _impl(*a))[1])
    model, x = _cuda_mlp()
    model(x).float().sum().backward()
    with torch.no_grad():
        model(x)
    assert calls == ["_mlp_forward_train_cuda", "_mlp_backward_cuda", "_mlp_forward_cuda"]
    calls.clear()
    log = OpLog()
    with log:
        model(x).float().sum().backward()
        with torch.no_grad():
            model(x)
    assert calls == []
    for op in ("perceptrons.mlp_forward_train", "perceptrons.mlp_backward", "perceptrons.mlp_forward"):
        assert op in log.ops, (op, sorted(set(log.ops)))


@cuda
def test_cuda_direct_and_dispatched_calls_give_the_same_bits():
    model, x = _cuda_mlp()
    direct = _step(model, x)
    with torch.no_grad():
        direct.append(model(x))
    log = OpLog()
    with log:
        dispatched = _step(model, x)
        with torch.no_grad():
            dispatched.append(model(x))
    for op in ("perceptrons.mlp_forward_train", "perceptrons.mlp_backward", "perceptrons.mlp_forward"):
        assert op in log.ops, (op, sorted(set(log.ops)))  # the second run really went through the ops
    assert len(direct) == len(dispatched)
    for a, b in zip(direct, dispatched):
        assert a is not None and b is not None
        assert torch.equal(a, b)  # the CUDA kernels are deterministic (no float atomics)


@cuda
def test_cuda_direct_path_follows_the_current_stream_and_graph_capture():
    model, x = _cuda_mlp()
    with torch.no_grad():
        expected = model(x)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            y = model(x)
        torch.cuda.current_stream().wait_stream(side)
        assert torch.equal(y, expected)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(side):
            model(x)  # warm-up on the side stream, as capture wants
            with torch.cuda.graph(graph):
                captured = model(x)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured, expected)
