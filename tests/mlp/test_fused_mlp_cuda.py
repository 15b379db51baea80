"""The CUDA fused MLP (tensor cores, float16/bfloat16) against the float64 numpy reference and the
CPU kernel, plus streams, CUDA graphs, torch.compile, opcheck, higher derivatives and bad inputs.

Runs where a CUDA device is present and the build has CUDA kernels; skipped elsewhere (CI has no GPU;
the GPU machine runs this file, see bench/results/h100/).

The reference is the float64 numpy network with the kernels' rounding points put back: every hidden
output (and what the training forward saves), the output, and every backpropagated gradient are
rounded to the storage dtype where the kernels store them in 16 bits. Without them, a float64
reference differs from any float16 computation (torch's included) by far more than eps wherever a
ReLU input lies within rounding of zero, and the tolerance would have to be loose enough to hide
bugs. With them, what remains is float32-versus-float64 accumulation, so the tolerance is one unit
of the dtype's rounding: two computations that round at the same points differ only where a
float32-versus-float64 difference carries a value across a rounding boundary, one unit there, so
the relative Frobenius error stays below 2 eps. A wrong index, a missed term or a wrong derivative
gives errors of order 1e-2 to 1.

ReLU and leaky ReLU have a kink at 0: their derivative is decided by the sign of z, and where |z| is
within the float32 accumulation error of the tensor cores (which do not round like IEEE float32 adds,
about 2^-23 of sum |h w|), the kernel and the float64 reference may take different sides. One such unit
changes its whole row's gradient below it (a relative error of order 1 / sqrt(batch), seen as 1e-3 to
7e-3 in float16 on the H100). For these activations the reference takes the derivative's 0/1 pattern
from the kernel's own hidden outputs (read back through the inference kernel, `kernel_hidden_outputs`),
after checking those outputs against float64 computed from the kernel's own layer inputs: where the
signs differ, |z| must be within float32 accumulation error of 0, so the kernel cannot hide a wrong
sign behind this, only a tie. (Against the reference's own inputs the ties reach 1e-4..6e-4: a layer
input that rounded to the neighbouring 16-bit value moves z by up to one unit of h w.)
"""
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from perceptrons import _C
from perceptrons.activations import NAMES, NEEDS_PREACTIVATION
from perceptrons.kernels import MLPSpec
from perceptrons.nn import FusedMLP
from perceptrons.ops import fused_mlp
from perceptrons.ops import mlp as mlp_ops

from perceptrons.reference import activations as ref_act

from .helpers import make_net, reference

HAVE_CUDA = torch.cuda.is_available() and _C.build_info()["cuda"]
pytestmark = pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device and a build with the CUDA kernels")

DTYPES = [torch.float16, torch.bfloat16]
EPS = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
WIDTHS = [16, 32, 64, 128]


def tol(dtype, n_layers, factor=8.0):
    """For comparisons with an unrounded reference (other paths than the fused kernels)."""
    return factor * EPS[dtype] * n_layers


def round_to(a, dtype):
    """float64 values rounded to float16 or bfloat16 (round to nearest even), back in float64."""
    a = np.asarray(a, dtype=np.float64)
    if dtype == torch.float16:
        return a.astype(np.float16).astype(np.float64)
    bits = a.astype(np.float32).view(np.uint32)
    bits = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return bits.view(np.float32).astype(np.float64)


KINKED = ("relu", "leaky_relu")  # derivative decided by the sign of z (module docstring)


def rounded_reference(spec, x, ws, bs, dy, dtype, masks=None):
    """(y, dx, dWs, dbs) in float64 with the fused kernels' 16-bit rounding points (module docstring).
    masks: for relu/leaky_relu, each hidden layer's z > 0 pattern to take the derivative from (the
    kernel's, see kernel_hidden_masks); None takes it from the reference's own values."""
    r = lambda a: round_to(a, dtype)  # noqa: E731
    act, p = spec.activation, spec.activation_param
    oact, op = spec.output_activation, spec.output_activation_param
    pre = act in NEEDS_PREACTIVATION
    n = len(ws)
    bias = [0.0 if b is None else b for b in bs]
    h, zs, saved = x, [], []
    for l in range(n - 1):
        z = h @ ws[l].T + bias[l]
        h = r(ref_act.forward(act, z, p))
        zs.append(z)
        saved.append(r(z) if pre else h)
    y = r(ref_act.forward(oact, h @ ws[-1].T + bias[-1], op))

    def layer_input(l):  # what the backward stages as layer l's input (x for l = 0)
        if l == 0:
            return x
        return r(ref_act.forward(act, saved[l - 1], p)) if pre else saved[l - 1]

    dws, dbs = [None] * n, [None] * n
    hin = layer_input(n - 1)
    g = r(dy * ref_act.derivative(oact, hin @ ws[-1].T + bias[-1], op))
    for l in range(n - 1, -1, -1):
        if l < n - 1:
            if masks is not None and act in KINKED:
                deriv = np.where(masks[l], 1.0, 0.0 if act == "relu" else p)
            elif pre:
                deriv = ref_act.derivative(act, saved[l], p)
            else:
                deriv = derivative_from_output(act, saved[l], p)
            g = r(a * deriv)
        dws[l] = r(g.T @ layer_input(l))
        dbs[l] = r(g.sum(axis=0))
        a = g @ ws[l]
    return y, r(a), dws, dbs


def derivative_from_output(name, y, p):
    """f'(z) written from y = f(z), as the kernels take it from the saved (rounded) output."""
    return {"none": lambda: np.ones_like(y), "relu": lambda: (y > 0).astype(np.float64),
            "leaky_relu": lambda: np.where(y > 0, 1.0, p), "sigmoid": lambda: y * (1 - y),
            "tanh": lambda: 1 - y * y, "softplus": lambda: 1 - np.exp(-p * y), "exp": lambda: y}[name]()


def kernel_hidden_outputs(x, tw, tb, activation):
    """Each hidden layer's output h_l as the fused kernel computed it (float64 numpy): the inference
    kernel on the network cut after hidden layer l, with an identity output layer (whose float32 sums
    of one exact product each return h_l unchanged), so the hidden layers run the same code."""
    n, w = len(tw), tw[0].shape[0]
    eye = torch.eye(w, device=x.device, dtype=x.dtype)
    zero = torch.zeros(w, device=x.device, dtype=x.dtype)
    hs = []
    with torch.no_grad():
        for l in range(n - 1):
            h = fused_mlp(x, list(tw[:l + 1]) + [eye], list(tb[:l + 1]) + [zero], activation, "none")
            hs.append(h.double().cpu().numpy())
    return hs


def check_kink_ties(x, ws, bs, hs, activation, param, dtype, where):
    """The kernel's hidden layers against float64 from the kernel's own layer inputs: each h_l equals
    the rounded activation of z_l = h_{l-1} W_l^T + b_l to 2 eps, and where the kernel's sign of z_l
    (h_l > 0) differs from this z_l's, |z_l| lies within float32 accumulation error of 0 (2^-18 of
    sum |h w| + |b|: 32 float32 units). Returns how many units differ in sign."""
    r = lambda a: round_to(a, dtype)  # noqa: E731
    hin, ties = x, 0
    for l, h in enumerate(hs):
        b = 0.0 if bs[l] is None else bs[l]
        z = hin @ ws[l].T + b
        assert rel_err(h, r(ref_act.forward(activation, z, param))) <= 2 * EPS[dtype], f"{where}: hidden layer {l}"
        scale = np.abs(hin) @ np.abs(ws[l]).T + np.abs(b)
        differ = (h > 0) != (z > 0)
        too_far = differ & (np.abs(z) > 2.0 ** -18 * scale)
        assert not too_far.any(), (f"{where}: hidden layer {l}: the kernel's sign of z differs at {int(too_far.sum())} "
                                   f"units with |z| up to {np.abs(z[too_far]).max():.3g}")
        ties += int(differ.sum())
        hin = h
    return ties


def rel_err(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), "non-finite values in the result"
    if want.size == 0:
        return 0.0
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def cuda_net(widths, dtype, seed, activation, bias=True):
    """Random network on the GPU in `dtype`, plus the same (rounded) values in float64 numpy."""
    rng = np.random.default_rng(seed)
    ws, bs = make_net(widths, np.float64, rng, activation, bias)
    tw = [torch.from_numpy(w).to("cuda", dtype) for w in ws]
    tb = [None if b is None else torch.from_numpy(b).to("cuda", dtype) for b in bs]
    ws64 = [w.double().cpu().numpy() for w in tw]
    bs64 = [None if b is None else b.double().cpu().numpy() for b in tb]
    return tw, tb, ws64, bs64


def run_and_compare(widths, dtype, activation, output_activation, batch, seed, bias=True):
    tw, tb, ws64, bs64 = cuda_net(widths, dtype, seed, activation, bias)
    for w in tw + [b for b in tb if b is not None]:
        w.requires_grad_(True)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, widths[0], generator=g, dtype=torch.float64) * 2 - 1).to("cuda", dtype).requires_grad_(True)
    dy = (torch.rand(batch, widths[-1], generator=g, dtype=torch.float64) * 2 - 1).to("cuda", dtype)
    assert mlp_ops.cuda_path(x, tw) == "fused"
    y = fused_mlp(x, tw, tb, activation, output_activation)
    params = [x] + tw + [b for b in tb if b is not None]
    grads = torch.autograd.grad(y, params, dy)
    spec = MLPSpec(widths, activation, output_activation)
    x64 = x.detach().double().cpu().numpy()
    where = f"widths={widths} {dtype} act={activation} out={output_activation} batch={batch}"
    masks = None
    if activation in KINKED and len(widths) > 2:
        hs = kernel_hidden_outputs(x.detach(), tw, tb, activation)
        ties = check_kink_ties(x64, ws64, bs64, hs, spec.activation, spec.activation_param, dtype, where)
        assert ties <= max(2, batch * (len(widths) - 2) * widths[1] // 10_000), f"{where}: {ties} sign ties"
        masks = [h > 0 for h in hs]
    want_y, want_dx, want_dws, want_dbs = rounded_reference(spec, x64, ws64, bs64, dy.double().cpu().numpy(),
                                                            dtype, masks)
    n = len(widths) - 1
    t = 2 * EPS[dtype]
    errs = {"y": rel_err(y.detach().double().cpu(), want_y), "dx": rel_err(grads[0].double().cpu(), want_dx)}
    for l in range(n):
        errs[f"dW[{l}]"] = rel_err(grads[1 + l].double().cpu(), want_dws[l])
        if bias:
            errs[f"db[{l}]"] = rel_err(grads[1 + n + l].double().cpu(), want_dbs[l])
    bad = {k: f"{v:.2e}" for k, v in errs.items() if not v <= t}
    assert not bad, f"{where}: relative errors above {t:.2e}: {bad}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("hidden_layers", [1, 2, 4])
@pytest.mark.parametrize("activation", NAMES)
def test_forward_and_every_gradient_match_the_reference(dtype, width, hidden_layers, activation):
    seed = zlib.crc32(f"{dtype}-{width}-{hidden_layers}-{activation}".encode())
    for batch in (0, 1, 7):
        run_and_compare([3] + [width] * hidden_layers + [4], dtype, activation, "none", batch, seed)
    for io in [(3, 4), (width, width), (33, 17)]:
        run_and_compare([io[0]] + [width] * hidden_layers + [io[1]], dtype, activation, "none", 1000, seed)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("activation", ["relu", "silu", "sine"])
def test_large_odd_batch(dtype, width, activation):
    run_and_compare([width] * 4, dtype, activation, "none", 2 ** 16 + 3, seed=width)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("output_activation", NAMES)
def test_output_activations(dtype, output_activation):
    run_and_compare([5, 64, 64, 6], dtype, "relu", output_activation, 777, seed=3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_without_biases(dtype):
    run_and_compare([16, 64, 64, 64, 16], dtype, "relu", "none", 1000, seed=4, bias=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("width", [32, 128])
@pytest.mark.parametrize("out", [8, 24, 128])
def test_outputs_staged_through_shared_memory(dtype, width, out):
    # y widths that are multiples of 8 go out through shared memory in 16-byte row segments: 8 and 24
    # end in a half 16-column tile (its upper half lands in the row padding), 128 is the widest staged
    # one; width 128 also stages into the prefetched x buffer. Batch tails inside a 32-row tile.
    for batch in (1, 7, 33, 1000):
        run_and_compare([16, width, width, out], dtype, "relu", "none", batch, seed=out + width)
        run_and_compare([16, width, width, out], dtype, "silu", "tanh", batch, seed=out + width + 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("inp", [8, 24, 40, 64, 96, 256])
def test_inputs_read_as_row_segments(dtype, inp):
    # x widths that are multiples of 8 are read as 16-byte row segments with layer 0 packed k-permuted
    # (inference; the training forward too above 128 columns, where x is not prefetched): 8 .. 24 and
    # 40 end inside a 32-column block, 256 is the widest input.
    for batch in (1, 7, 1000):
        run_and_compare([inp, 64, 64, 16], dtype, "relu", "none", batch, seed=inp)
        tw, tb, ws64, bs64 = cuda_net([inp, 32, 32, 8], dtype, inp + 1, "tanh")
        x = (torch.rand(batch, inp, dtype=torch.float64) * 2 - 1).to(dtype)
        with torch.no_grad():
            y = fused_mlp(x.cuda(), tw, tb, "tanh", "none")
        spec = MLPSpec([inp, 32, 32, 8], "tanh", "none")
        want = rounded_reference(spec, x.double().numpy(), ws64, bs64, np.zeros((batch, 8)), dtype, None)[0]
        assert rel_err(y.double().cpu(), want) <= 2 * EPS[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_misaligned_input_takes_the_scalar_path_with_the_same_result(dtype):
    tw, tb, _, _ = cuda_net([64, 64, 64, 16], dtype, 11, "relu")
    x = torch.rand(999, 64, device="cuda", dtype=dtype) * 2 - 1
    flat = torch.empty(999 * 64 + 1, device="cuda", dtype=dtype)
    shifted = flat[1:].view(999, 64)  # 2-byte aligned: no 16-byte row segments
    shifted.copy_(x)
    assert shifted.data_ptr() % 16 != 0 and mlp_ops.cuda_path(shifted, tw) == "fused"
    with torch.no_grad():
        y = fused_mlp(x, tw, tb, "relu", "none")
        y_shifted = fused_mlp(shifted, tw, tb, "relu", "none")
    # The same products summed in another k order inside the tensor cores: float32-level differences.
    assert rel_err(y_shifted.double().cpu(), y.double().cpu()) <= 2 * EPS[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("widths", [[16, 64, 16], [16, 64, 64, 16]])
def test_relu_of_negative_zero_is_positive_zero_on_cuda(dtype, widths):
    # Weights and biases of -0.0 with x = 1: every pre-activation is -0.0 exactly; relu gives +0.0 in
    # the reference and in the kernels' hidden and output epilogues alike.
    ws = [torch.full((o, i), -0.0, dtype=dtype, device="cuda") for i, o in zip(widths[:-1], widths[1:])]
    bs = [torch.full((o,), -0.0, dtype=dtype, device="cuda") for o in widths[1:]]
    x = torch.ones(37, widths[0], dtype=dtype, device="cuda")
    assert mlp_ops.cuda_path(x, ws) == "fused"
    with torch.no_grad():
        y = fused_mlp(x, ws, bs, "relu", "relu")
    assert not torch.signbit(y).any(), "relu(-0.0) kept its sign"
    assert (y == 0).all()
    # The hidden epilogue (relu and rounding in one cvt) shows in what the training forward saves: the
    # hidden outputs, which the backward's weight gradients multiply (a -0 there could turn an all-zero
    # dW sum to -0).
    y_train, saved = mlp_ops.mlp_forward_train(x, ws, bs, "relu", 0.0, "relu", 0.0, [])
    assert torch.equal(y_train, y)
    for l, s in enumerate(saved):
        assert not torch.signbit(s).any(), f"hidden layer {l}: relu(-0.0) kept its sign"
        assert (s == 0).all()


def test_wide_io_widths_up_to_the_limit():
    limit = _C.MLP_CUDA_MAX_IO_WIDTH
    run_and_compare([limit, 32, 32, limit], torch.float16, "tanh", "sigmoid", 500, seed=5)


def test_matches_the_cpu_kernel():
    torch.manual_seed(0)
    cpu = FusedMLP(32, 8, hidden_features=64, hidden_layers=3, activation="silu")
    gpu = FusedMLP(32, 8, hidden_features=64, hidden_layers=3, activation="silu").to("cuda", torch.float16)
    gpu.load_state_dict({k: v.to(torch.float16) for k, v in cpu.state_dict().items()})
    cpu.load_state_dict({k: v.to(torch.float16).float() for k, v in cpu.state_dict().items()})  # same rounded values
    x = torch.rand(4099, 32) * 2 - 1
    y_cpu = cpu(x.half().float())
    y_gpu = gpu(x.to("cuda", torch.float16))
    assert rel_err(y_gpu.detach().double().cpu(), y_cpu.detach().double()) <= tol(torch.float16, 4)


def test_gradients_are_deterministic():
    tw, tb, _, _ = cuda_net([64, 64, 64, 64], torch.float16, 7, "relu")
    for w in tw + tb:
        w.requires_grad_(True)
    x = torch.rand(100_003, 64, device="cuda", dtype=torch.float16)
    dy = torch.rand(100_003, 64, device="cuda", dtype=torch.float16)
    first = torch.autograd.grad(fused_mlp(x, tw, tb), tw + tb, dy)
    second = torch.autograd.grad(fused_mlp(x, tw, tb), tw + tb, dy)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def module_and_input(dtype=torch.float16, batch=3000):
    torch.manual_seed(1)
    model = FusedMLP(32, 16, hidden_features=64, hidden_layers=3, activation="relu").to("cuda", dtype)
    x = torch.rand(batch, 32, device="cuda", dtype=dtype)
    return model, x


def test_non_default_stream():
    model, x = module_and_input()
    want = model(x)
    want_grads = torch.autograd.grad(want.float().square().sum(), list(model.parameters()))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = model(x)
        got_grads = torch.autograd.grad(got.float().square().sum(), list(model.parameters()))
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(got, want)
    for a, b in zip(got_grads, want_grads):
        assert torch.equal(a, b)


def test_cuda_graph_capture_inference_and_training_step():
    model, x = module_and_input()
    params = list(model.parameters())
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up outside the capture
            with torch.no_grad():
                model(static_x)
            loss = model(static_x).float().square().mean()
            torch.autograd.grad(loss, params)
    torch.cuda.current_stream().wait_stream(side)

    infer = torch.cuda.CUDAGraph()
    with torch.cuda.graph(infer):
        with torch.no_grad():
            static_y = model(static_x)
    train = torch.cuda.CUDAGraph()
    with torch.cuda.graph(train):
        static_loss = model(static_x).float().square().mean()
        static_grads = torch.autograd.grad(static_loss, params)

    new_x = torch.rand_like(x)
    static_x.copy_(new_x)
    infer.replay()
    train.replay()
    torch.cuda.synchronize()
    with torch.no_grad():
        assert torch.equal(static_y, model(new_x))
    want = torch.autograd.grad(model(new_x).float().square().mean(), params)
    for a, b in zip(static_grads, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_torch_compile(mode):
    model, x = module_and_input()
    compiled = torch.compile(model, mode=mode, fullgraph=True)
    with torch.no_grad():
        want = model(x)
        for _ in range(3):  # reduce-overhead records its graph after warm-up calls
            got = compiled(x)
    assert torch.equal(got, want)
    params = list(model.parameters())
    want_grads = torch.autograd.grad(model(x).float().square().sum(), params)
    for _ in range(3):
        got_grads = torch.autograd.grad(compiled(x).float().square().sum(), params)
    for a, b in zip(got_grads, want_grads):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_on_cuda(dtype):
    tw, tb, _, _ = cuda_net([5, 32, 32, 3], dtype, 2, "tanh")
    x = torch.rand(37, 5, device="cuda", dtype=dtype)
    args = ("tanh", 0.0, "sigmoid", 0.0)
    torch.library.opcheck(mlp_ops.mlp_forward, (x, tw, tb, *args, []))
    torch.library.opcheck(mlp_ops.mlp_forward_train, (x, tw, tb, *args, []))
    y, saved = mlp_ops.mlp_forward_train(x, tw, tb, *args, [])
    dy = torch.rand_like(y)
    torch.library.opcheck(mlp_ops.mlp_backward, (dy, x, y, saved, tw, tb, *args, True, []))
    torch.library.opcheck(mlp_ops.mlp_backward, (dy, x, y, saved, tw, tb, *args, False, []))


def test_double_backward_and_torch_func_on_cuda():
    torch.manual_seed(2)
    model = FusedMLP(3, 1, hidden_features=32, hidden_layers=2, activation="silu").to("cuda", torch.float16)
    x = torch.rand(500, 3, device="cuda", dtype=torch.float16, requires_grad=True)
    (gx,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    penalty = (gx.float().norm(dim=1) - 1).square().mean()
    params = list(model.parameters())[:-1]  # the output bias does not reach dy/dx
    grads = torch.autograd.grad(penalty, params)
    seq = model.to_sequential().double()
    x64 = x.detach().double().requires_grad_(True)
    (gx64,) = torch.autograd.grad(seq(x64).sum(), x64, create_graph=True)
    want = torch.autograd.grad((gx64.norm(dim=1) - 1).square().mean(), list(seq.parameters())[:-1])
    for a, b in zip(grads, want):
        assert rel_err(a.double().cpu(), b.cpu()) <= tol(torch.float16, 3, 16)
    fx = torch.func.grad(lambda inp: model(inp).float().sum())(x.detach())
    assert rel_err(fx.detach().double().cpu(), gx64.detach().cpu()) <= tol(torch.float16, 3, 16)


def test_unsupported_configurations_run_as_torch_ops():
    tw, tb, ws64, bs64 = cuda_net([8, 48, 48, 4], torch.float16, 9, "relu")  # width 48: no fused kernel
    x = torch.rand(100, 8, device="cuda", dtype=torch.float16)
    assert mlp_ops.cuda_path(x, tw).startswith("torch: ")
    y = fused_mlp(x, tw, tb)
    want = rounded_reference(MLPSpec([8, 48, 48, 4]), x.double().cpu().numpy(), ws64, bs64,
                             np.zeros((100, 4)), torch.float16)[0]
    assert rel_err(y.double().cpu(), want) <= 2 * EPS[torch.float16]
    model = FusedMLP(8, 4, hidden_features=32, hidden_layers=2).to("cuda")  # float32: torch ops
    assert mlp_ops.cuda_path(x.float(), model.weights).startswith("torch: ")
    assert model(x.float()).shape == (100, 4)


def test_bad_inputs_on_cuda():
    tw, tb, _, _ = cuda_net([8, 32, 32, 4], torch.float16, 0, "relu")
    x = torch.rand(10, 8, device="cuda", dtype=torch.float16)
    with pytest.raises(RuntimeError, match=r"weights\[0\].*cpu.*cuda"):
        fused_mlp(x, [tw[0].cpu()] + tw[1:], tb)
    with pytest.raises(RuntimeError, match=r"biases\[1\]"):
        fused_mlp(x, tw, [tb[0], tb[1].cpu(), tb[2]])
    with pytest.raises(TypeError, match=r"x: expected a floating dtype"):
        fused_mlp(x.to(torch.int32), tw, tb)
    with pytest.raises(TypeError, match=r"weights\[0\]: dtype"):
        fused_mlp(x, [tw[0].float()] + tw[1:], tb)
    with pytest.raises(TypeError, match=r"CUDA devices only"):
        fused_mlp(x.cpu(), [w.cpu() for w in tw], [b.cpu() for b in tb])
