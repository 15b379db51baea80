"""Forward-mode AD (torch.func.jvp / jacfwd / hessian, forward_ad dual tensors) through every module.

The kernels' autograd.Functions have no jvp rule (Dynamo cannot trace one); under forward mode the ops
run their torch-op composites (perceptrons/ops/transforms.py). These tests pin that a jvp is right,
for trainable and frozen modules alike (a frozen module once took the bare op and got zero tangents)."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

from perceptrons import routing
from perceptrons.nn import EncodedMLP, FrequencyEncoding, FusedMLP, KANLinear, RoutedMLP
from perceptrons.ops.encodings import composite_encode
from perceptrons.ops.kan import composite_forward as kan_composite


def _mlp():
    m = FusedMLP(3, 2, 16, 2, activation="tanh").double()
    return m, m.to_sequential()


def _kan():
    k = KANLinear(3, 2).double()
    return k, lambda a: kan_composite(a, k.grid, k.base_weight, k.spline_weight, k.spline_scaler, k.spline_order,
                                      "pykan")


def _encoded():
    e = EncodedMLP(FrequencyEncoding(3, 2), FusedMLP(12, 2, 16, 1).double())
    seq = e.mlp.to_sequential()
    return e, lambda a: seq(composite_encode(a, e.encoding.spec))


@pytest.mark.parametrize("make", [_mlp, _kan, _encoded], ids=["FusedMLP", "KANLinear", "EncodedMLP"])
@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen"])
def test_jvp_jacfwd_and_dual_tensors(make, frozen):
    torch.manual_seed(0)
    model, reference = make()
    model.requires_grad_(not frozen)
    x = torch.rand(4, 3, dtype=torch.float64)
    t = torch.rand_like(x)
    want = torch.func.jvp(reference, (x,), (t,))[1]
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(torch.func.jvp(model, (x,), (t,))[1], want)
    torch.testing.assert_close(torch.func.jacfwd(model)(x[:2]), torch.func.jacrev(reference)(x[:2]))
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(model(fwAD.make_dual(x, t))).tangent
    torch.testing.assert_close(tangent, want)


def test_hessian_of_a_fused_mlp():
    torch.manual_seed(1)
    model, seq = _mlp()
    x = torch.rand(3, dtype=torch.float64)
    torch.testing.assert_close(torch.func.hessian(lambda a: model(a).sum())(x),
                               torch.func.hessian(lambda a: seq(a).sum())(x))


def test_routed_mlp_jvp_matches_finite_differences():
    torch.manual_seed(2)
    net = RoutedMLP(4, 3, 2, 16, 1, routing="unit", Q=routing.uniform(4), seed=0).double()
    x = torch.rand(5, 3, dtype=torch.float64)
    t = torch.rand_like(x)
    got = torch.func.jvp(lambda a: net(a, step=3), (x,), (t,))[1]
    h = 1e-6
    fd = (net(x + h * t, step=3) - net(x - h * t, step=3)) / (2 * h)
    torch.testing.assert_close(got, fd.detach(), atol=1e-7, rtol=1e-6)
