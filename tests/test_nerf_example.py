"""Smoke test of examples/nerf_inference.py: --quick into tmp_path (a few seconds)."""
import importlib.util
import json
import os

import pytest
import torch

pytest.importorskip("matplotlib")

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "nerf_inference.py")


@pytest.fixture(scope="module")
def nerf():
    spec = importlib.util.spec_from_file_location("nerf_inference_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_quick_run_writes_results(nerf, tmp_path, device):
    assert nerf.main(["--quick", "--device", device, "--out", str(tmp_path)]) == 0
    suffix = "" if device == "cpu" else "_cuda"
    js, md, png = tmp_path / "nerf_inference.json", tmp_path / "nerf_inference.md", tmp_path / f"nerf_render{suffix}.png"
    for f in (js, md, png):
        assert f.is_file() and f.stat().st_size > 0, f
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = json.loads(js.read_text())
    for key in ("command", "config", "machine", "paths", "fit", "benchmark", "render", "target", "files", "wall_s"):
        assert key in r, key
    assert r["config"]["device"] == device and r["config"]["quick"] is True
    for key in ("perceptrons", "torch", "cpu_isa", "default_threads"):
        assert r["machine"][key]
    assert [b["batch"] for b in r["benchmark"]] == nerf.QUICK["batches"]
    assert any("torch_chunked" in b for b in r["benchmark"])
    for b in r["benchmark"]:
        # The two sides compute the same function (checked before timing, on the timed inputs).
        assert b["agreement"]["passed"]
        assert b["agreement"]["density_raw"]["relative"] <= b["agreement"]["tolerance_relative"]
        for side in ("ours", "torch"):
            assert b[side]["median_s"] > 0 and b[side]["samples_per_s"] > 0
        assert b["speedup"]["median"] > 0
        if b["batch"] > r["config"]["torch_chunk"]:  # plain torch also timed on slices of the batch
            assert b["torch_chunked"]["samples_per_s"] > 0 and b["speedup_vs_torch_chunked"]["median"] > 0
    rd = r["render"]
    assert rd["seconds"]["ours"]["median"] > 0 and rd["seconds"]["torch"]["median"] > 0
    assert rd["max_abs_pixel_diff"] < (1e-3 if device == "cpu" else 5e-2)
    assert abs(rd["psnr_vs_ground_truth"]["ours"] - rd["psnr_vs_ground_truth"]["torch"]) < 0.1
    assert r["fit"]["steps"] == nerf.QUICK["train_steps"]
    assert "| samples | threads |" in md.read_text()


def test_scene_and_sides_agree_on_cpu(nerf):
    """The analytic scene is sane and ours == plain torch on an untrained field, outside the timing code."""
    p01 = torch.rand(4096, 3)
    d01 = (torch.nn.functional.normalize(torch.randn(4096, 3), dim=-1) + 1) / 2
    sigma, rgb, occ = nerf.scene_field(p01, d01)
    assert sigma.shape == (4096,) and rgb.shape == (4096, 3)
    assert 0 <= float(rgb.min()) and float(rgb.max()) <= 1 and 0 < float(occ.mean()) < 0.5
    density, colour = nerf.make_networks(0)
    field = nerf.Field(density, colour, torch.device("cpu"))
    check = nerf.agreement(field, p01, d01)
    assert check["passed"], check
    with torch.no_grad():
        s1, c1 = field.ours(p01, d01)
        s2, c2 = field.plain(p01, d01)
    torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(c1, c2, rtol=1e-4, atol=1e-5)


def test_separate_encoding_composition_on_cpu(nerf):
    """The composition the CUDA path uses (encodings first, then FusedMLPs rebuilt from the plain-torch
    copies), run on the CPU in float32: it computes the same field as the fused EncodedMLPs."""
    density, colour = nerf.make_networks(1)
    fused = nerf.Field(density, colour, torch.device("cpu"))
    split = nerf.Field(density, colour, torch.device("cpu"), separate_encoding=True)
    p01 = torch.rand(2048, 3)
    d01 = (torch.nn.functional.normalize(torch.randn(2048, 3), dim=-1) + 1) / 2
    assert nerf.agreement(split, p01, d01)["passed"]
    with torch.no_grad():
        for a, b in zip(fused.raw_ours(p01, d01), split.raw_ours(p01, d01)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert all("then MLP" in v for v in split.paths().values())
