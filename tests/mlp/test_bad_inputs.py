"""Bad input gets a clear exception naming the argument, what was expected and what came."""
import numpy as np
import pytest
import torch

from perceptrons import _C
from perceptrons import kernels as K
from perceptrons.nn import FusedMLP
from perceptrons.ops import fused_mlp


@pytest.fixture
def model():
    torch.manual_seed(0)
    return FusedMLP(4, 2, 16, 2)


def test_wrong_last_dimension(model):
    with pytest.raises(ValueError, match=r"weights\[0\]: expected 5 input features \(x's last dimension\), "
                                         r"got shape \(16, 4\)"):
        model(torch.randn(3, 5))


def test_unsupported_dtype(model):
    with pytest.raises(TypeError, match=r"x: expected dtype torch.float32 or torch.float64 .* got torch.float16"):
        model(torch.randn(3, 4).half())
    with pytest.raises(TypeError, match=r"x: expected dtype .* got torch.int64"):
        model(torch.ones(3, 4, dtype=torch.long))


def test_dtype_mismatch_between_input_and_parameters(model):
    with pytest.raises(TypeError, match=r"weights\[0\]: dtype torch.float32 does not match x's dtype torch.float64"):
        model(torch.randn(3, 4, dtype=torch.float64))


def test_device_without_kernel_is_an_error_not_a_copy():
    x = torch.randn(3, 4, device="meta")
    w = [torch.randn(16, 4), torch.randn(2, 16)]
    with pytest.raises(RuntimeError, match=r"weights\[0\]: is on cpu but x is on meta; tensors are never copied"):
        fused_mlp(x, w)


def test_meta_tensors_give_shapes():
    model = FusedMLP(4, 2, 16, 2, device="meta")
    assert model(torch.empty(7, 4, device="meta")).shape == (7, 2)


def test_unsupported_hidden_width():
    limit = _C.MLP_MAX_HIDDEN_WIDTH
    with pytest.raises(ValueError, match=rf"hidden_features: width {limit + 1} is not supported; .* up to {limit}"):
        FusedMLP(4, 2, limit + 1, 1)
    w = [torch.randn(limit + 1, 4), torch.randn(2, limit + 1)]
    with pytest.raises(ValueError, match=rf"weights\[0\]: hidden width {limit + 1} is not supported"):
        fused_mlp(torch.randn(3, 4), w)
    with pytest.raises(ValueError, match=rf"widths\[1\]: hidden width {limit + 1} is not supported"):
        K.MLPSpec([4, limit + 1, 2])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"in_features: expected a positive integer, got 0"):
        FusedMLP(0, 2)
    with pytest.raises(ValueError, match=r"hidden_layers: expected >= 0, got -1"):
        FusedMLP(3, 2, 16, -1)
    with pytest.raises(ValueError, match=r"activation: unknown activation 'gelu'; expected one of none, relu"):
        FusedMLP(3, 2, activation="gelu")
    with pytest.raises(ValueError, match=r"activation_param: leaky_relu negative slope must be >= 0, got -0.1"):
        FusedMLP(3, 2, activation="leaky_relu", activation_param=-0.1)
    with pytest.raises(ValueError, match=r"output_activation_param: activation 'tanh' takes no parameter"):
        FusedMLP(3, 2, output_activation="tanh", output_activation_param=2.0)
    with pytest.raises(TypeError, match=r"dtype: expected torch.float32, float64, float16 or bfloat16, got torch.int32"):
        FusedMLP(3, 2, dtype=torch.int32)


def test_bad_weights_and_biases():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"weights: expected at least one weight matrix, got none"):
        fused_mlp(x, [])
    with pytest.raises(ValueError, match=r"weights\[0\]: expected a 2-d tensor \(out, in\), got \(4,\)"):
        fused_mlp(x, [torch.randn(4)])
    with pytest.raises(ValueError, match=r"biases\[0\]: expected shape \(8,\), got \(7,\)"):
        fused_mlp(x, [torch.randn(8, 4)], [torch.randn(7)])
    with pytest.raises(ValueError, match=r"biases: expected 1 entries \(None for no bias\), got 2"):
        fused_mlp(x, [torch.randn(8, 4)], [None, None])
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got ndarray"):
        fused_mlp(np.zeros((3, 4)), [torch.randn(8, 4)])


def test_numpy_front_rejects_bad_arrays():
    spec = K.MLPSpec([4, 8, 2])
    ws = [np.zeros((8, 4), np.float32), np.zeros((2, 8), np.float32)]
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 4\), got \(3, 5\)"):
        K.mlp_forward(spec, np.zeros((3, 5), np.float32), ws)
    with pytest.raises(TypeError, match=r"x: expected float32 or float64, got int32"):
        K.mlp_forward(spec, np.zeros((3, 4), np.int32), ws)
    with pytest.raises(TypeError, match=r"weights\[0\]: expected dtype float64, got float32"):
        K.mlp_forward(spec, np.zeros((3, 4)), ws)
    with pytest.raises(ValueError, match=r"weights\[0\]: expected shape \(8, 4\), got \(4, 8\)"):
        K.mlp_forward(spec, np.zeros((3, 4), np.float32), [ws[0].T.copy(), ws[1]])
    with pytest.raises(ValueError, match=r"widths\[0\]: expected a positive width, got 0"):
        K.MLPSpec([0, 8, 2])


def test_compiled_module_checks_its_arguments_too():
    """The bindings validate again, so a direct call cannot reach the kernel with nonsense."""
    with pytest.raises(ValueError, match=r"widths\[1\]: expected a positive width, got -3"):
        _C.mlp_forward_cpu(0, [4, -3, 2], 1, 0.0, 0, 0.0, 1, 0, [0, 0], [], 0, [])
    with pytest.raises(ValueError, match=r"activation: unknown code 42"):
        _C.mlp_forward_cpu(0, [4, 3, 2], 42, 0.0, 0, 0.0, 1, 0, [0, 0], [], 0, [])
    with pytest.raises(ValueError, match=r"weights: expected 2 pointers, got 1"):
        _C.mlp_forward_cpu(0, [4, 3, 2], 1, 0.0, 0, 0.0, 1, 0, [0], [], 0, [])
    with pytest.raises(ValueError, match=r"mlp_forward_cpu: a required data pointer is null"):
        _C.mlp_forward_cpu(0, [4, 3, 2], 1, 0.0, 0, 0.0, 1, 0, [0, 0], [], 0, [])
    with pytest.raises(ValueError, match=r"unsupported layer width"):
        _C.mlp_forward_cpu(0, [4, 5000, 2], 1, 0.0, 0, 0.0, 1, 0, [0, 0], [], 0, [])


def test_python_cuda_dispatch_rule_mirrors_the_compiled_one():
    """ops.mlp decides CUDA dispatch in plain Python (so torch.compile traces it); it must agree with
    csrc/mlp/mlp_cuda_layout.h's cuda_supported on every kind of configuration."""
    from perceptrons import _C
    from perceptrons.ops import mlp as mlp_ops
    cases = [[3, 64, 4], [3, 64, 64, 4], [3, 48, 4], [3, 64, 32, 4], [3, 4], [256, 128, 256], [257, 16, 3],
             [3, 16, 16, 16, 300], [1, 32, 1], [64, 128, 128, 128, 64]]
    for widths in cases:
        for dtype, code in ((torch.float16, 2), (torch.bfloat16, 3)):
            python_says = mlp_ops._cuda_unsupported(dtype, widths) == ""
            compiled_says = _C.mlp_cuda_unsupported(code, widths) == ""
            assert python_says == compiled_says, widths
    assert mlp_ops._cuda_unsupported(torch.float32, [3, 64, 4]) != ""
