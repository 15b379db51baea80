"""Smoke test of the main demo (`python -m perceptrons demo`): a few steps on a tiny image."""
import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from perceptrons import demo


def test_demo_runs_and_writes_results(tmp_path):
    r = demo.run_demo(steps=12, size=24, out=str(tmp_path), batch=256, eval_every=4, progress=False,
                      log=lambda *a: None)
    png, js = tmp_path / "demo_inr.png", tmp_path / "demo_inr.json"
    assert png.is_file() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(js.read_text())
    for name in ("fused", "torch"):
        losses = data["losses"][name]
        assert len(losses) == 12 and all(np.isfinite(losses))
        assert np.mean(losses[-3:]) < np.mean(losses[:3])  # training makes progress
        assert data["final_psnr_db"][name] > data["checkpoints"][0]["psnr"][name]
        assert data["step_time_s"][name]["median"] > 0
    assert [c["step"] for c in data["checkpoints"]] == [0, 4, 8, 12]
    # Same initial weights, same batches: the two fits agree closely after a few steps.
    assert abs(data["final_psnr_db"]["fused"] - data["final_psnr_db"]["torch"]) < 0.5
    assert data["speedup"]["median_of_step_ratios"] > 0
    assert r["json"] == str(js)


def test_demo_cli_and_user_image(tmp_path):
    import matplotlib.pyplot as plt
    from perceptrons.__main__ import main

    img = demo.procedural_image(40)
    path = tmp_path / "in.png"
    plt.imsave(path, img)
    out = tmp_path / "out"
    assert main(["demo", "--image", str(path), "--steps", "3", "--size", "20", "--out", str(out), "--seed", "1"]) == 0
    data = json.loads((out / "demo_inr.json").read_text())
    assert (data["config"]["width"], data["config"]["height"]) == (20, 20)
    assert (out / "demo_inr.png").is_file()


def test_resize_and_procedural_image():
    img = demo.procedural_image(64)
    assert img.shape == (64, 64, 3) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    small = demo.resize(np.ones((100, 50, 3)), 20)
    assert small.shape == (20, 10, 3) and np.allclose(small, 1.0)
