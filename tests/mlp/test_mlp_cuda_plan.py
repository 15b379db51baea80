"""The CUDA backward's launch plan (warps per block, prefetch depth, shared memory), computed for the
limits of each GPU generation the build targets, without a GPU: every configuration the CUDA kernels
accept must get a plan that fits the device's opt-in shared memory. (A plan that asked for more
failed every backward of that configuration with an invalid-configuration error on that GPU.)

Runs wherever the module was built with the CUDA kernels (CI builds them; no device is needed)."""
import pytest

from perceptrons import _C
from perceptrons.activations import CODES

HAVE_CUDA_BUILD = _C.build_info()["cuda"]
pytestmark = pytest.mark.skipif(not HAVE_CUDA_BUILD, reason="module built without the CUDA kernels")

FP16, BF16 = 2, 3
# (SMs, opt-in shared memory per block in bytes), from the CUDA programming guide's tables.
DEVICES = {"sm_80 A100": (108, 166912), "sm_86 RTX 30": (84, 101376), "sm_89 RTX 40": (128, 101376),
           "sm_90 H100": (132, 232448)}
IO = [(3, 4), (16, 16), (64, 64), (99, 3), (32, 4), (128, 128), (255, 17), (17, 255), (256, 256)]
SMALL = ("sm_86 RTX 30", "sm_89 RTX 40")


def may_be_refused(device, io):
    # The backward stages 128 rows of the input and of the output gradient in shared memory: on the 99 KB
    # GPUs, input or output widths near the 256 limit (with width 128, or both wide) do not fit there.
    # Those are refused with a clear error (test_widest_io_on_99kb_gpus_is_refused_clearly); everything
    # else must get a plan.
    return device in SMALL and max(io) > 128


def plan(widths, activation="relu", batch=1 << 21, device="sm_90 H100", prefetchable=True, dtype=FP16):
    sms, optin = DEVICES[device]
    return _C.mlp_cuda_plan_backward(dtype, widths, CODES[activation], batch, sms, optin, prefetchable,
                                     prefetchable)


@pytest.mark.parametrize("device", list(DEVICES))
@pytest.mark.parametrize("width", [16, 32, 64, 128])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_every_supported_configuration_gets_a_plan_that_fits(device, width, activation):
    sms, optin = DEVICES[device]
    for io in IO:
        for hidden_layers in (1, 4):
            widths = [io[0]] + [width] * hidden_layers + [io[1]]
            for prefetchable in (True, False):
                try:
                    p = plan(widths, activation, device=device, prefetchable=prefetchable)
                except ValueError as e:
                    assert may_be_refused(device, io) and "no launch plan fits" in str(e), (device, widths, str(e))
                    continue
                where = f"{device} widths={widths} {activation} prefetchable={prefetchable}: {p}"
                assert 0 < p["smem_bytes"] <= optin, where
                assert p["warps"] in (8, 12), where
                assert p["warps"] == 8 or (activation == "relu" and width <= 64), where
                assert 0 <= p["depth"] <= min(3, len(widths) - 2), where
                assert p["grid"] == min(sms, -(-(1 << 21) // (16 * p["warps"]))), where
                if not prefetchable or p["depth"] == 0:
                    assert not p["x_prefetched"] and not p["dy_prefetched"], where


def test_the_h100_plans_the_benchmarks_measured():
    # bench/results/h100: ReLU w64x4 takes 12 warps with the accumulators in shared memory and a
    # depth-2 stream that carries x and dy too (since they share the saved tiles' slots; run 8's plan
    # read them from global memory); other activations 8 warps, depth 3, x and dy through the stream.
    relu = plan([64] * 6, "relu")
    assert (relu["warps"], relu["depth"], relu["acc_in_smem"], relu["x_prefetched"], relu["dy_prefetched"]) == \
        (12, 2, True, True, True)
    tanh = plan([64] * 6, "tanh")
    assert (tanh["warps"], tanh["depth"], tanh["acc_in_smem"], tanh["x_prefetched"], tanh["dy_prefetched"]) == \
        (8, 3, True, True, True)
    wide = plan([128] * 6, "relu")  # 348 KB of accumulators: the global slab
    assert (wide["warps"], wide["acc_in_smem"]) == (8, False)


# n-tiles per unit of the weight-gradient reduction, worked out by hand from the hidden layers' tiles
# (width / 16 m-tiles by width / 8 + 1 n-tiles, the bias column making the extra one) and the block's
# warps; a warp's cost is the n-tiles of its units plus one per unit (its A operand's load). Width 64,
# 12 warps, 4 x 9 tiles: units of 4 give warps 0-7 a 4-tile unit and warps 8-11 the bias tile
# (busiest 5), units of 3 give every warp one 3-tile unit (4), units of 2 give warp 0 two of 2 (6).
# Width 64, 8 warps: units of 4 give warps 0-3 a 4-tile unit and a bias tile (7), units of 3 two
# 3-tile units (8). Width 32, 12 warps, 2 x 5: ten single tiles (2) against units of 2 (3).
# Width 32, 8 warps: units of 2 give at most one unit each (3), single tiles two each (4).
# Width 16: 1 x 3, single tiles (2). Width 128, 8 warps, 8 x 17: units of 4 give each warp four
# 4-tile units and a bias tile (22), units of 3 five 3-tile units and a 2-tile one (23).
@pytest.mark.parametrize("width,activation,warps,unit", [
    (16, "relu", 12, 1), (16, "tanh", 8, 1), (32, "relu", 12, 1), (32, "tanh", 8, 2),
    (64, "relu", 12, 3), (64, "tanh", 8, 4), (128, "relu", 8, 4), (128, "tanh", 8, 4)])
def test_reduction_units_balance_the_warps(width, activation, warps, unit):
    p = plan([width] * 6, activation)
    assert (p["warps"], p["reduce_unit_tiles"]) == (warps, unit)


def test_small_shared_memory_falls_back_instead_of_failing():
    # Width 128 on a 99 KB GPU: the staging of 8 warps (76 KB) leaves no room for one saved-tile slot
    # per warp, so the backward reads straight from global memory (depth 0).
    p = plan([64] + [128] * 4 + [64], "relu", device="sm_86 RTX 30")
    assert (p["warps"], p["depth"], p["acc_in_smem"]) == (8, 0, False)
    # ReLU w64 with a 256-wide input on the same GPU: 12 warps' staging alone (141 KB) does not fit -> 8.
    p = plan([256] + [64] * 4 + [64], "relu", device="sm_86 RTX 30")
    assert p["warps"] == 8 and p["smem_bytes"] <= DEVICES["sm_86 RTX 30"][1]


@pytest.mark.parametrize("device", SMALL)
def test_widest_io_on_99kb_gpus_is_refused_clearly(device):
    with pytest.raises(ValueError, match="no launch plan fits 101376 bytes of shared memory"):
        plan([256] + [64] * 4 + [256], "relu", device=device)


def test_batch_sizes_and_bad_arguments():
    assert plan([64] * 6, batch=0)["grid"] == 0
    assert plan([64] * 6, batch=1)["grid"] == 1
    assert plan([64] * 6, batch=200)["grid"] == 2  # 192 rows per chunk with 12 warps
    with pytest.raises(ValueError, match="mlp config"):
        plan([64, 48, 48, 64])  # width 48: not a CUDA configuration
    with pytest.raises(ValueError, match="dtype: expected 2 .float16. or 3 .bfloat16."):
        _C.mlp_cuda_plan_backward(0, [64] * 6, CODES["relu"], 10, 132, 232448, True, True)  # float32
    with pytest.raises(ValueError, match="mlp_cuda_plan_backward"):
        _C.mlp_cuda_plan_backward(FP16, [64] * 6, CODES["relu"], 10, 0, 232448, True, True)  # no SMs
