"""Seed statistics, the grid summary (paired comparisons) and `python -m perceptrons mcover`."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from perceptrons.mcover import stats, sweep
from perceptrons.mcover.binary import Arm, Rule


def test_mean_se():
    s = stats.mean_se([1.0, 2.0, 3.0, float("nan")])
    assert s["mean"] == 2.0 and s["n"] == 3 and s["dropped"] == 1
    assert s["se"] == pytest.approx(1.0 / math.sqrt(3))
    one = stats.mean_se([4.0])
    assert one["mean"] == 4.0 and math.isnan(one["se"])


def test_paired_difference_cancels_the_shared_seed_effect():
    base = np.array([0.1, 0.5, 0.9, 0.3])           # large seed-to-seed spread
    arm = base - 0.01                                # the same shift on every seed
    d = stats.difference(arm, base)
    assert d["mean"] == pytest.approx(-0.01) and d["se"] == pytest.approx(0.0, abs=1e-15)
    assert stats.verdict({"mean": -0.01, "se": 0.001}) == "better"
    assert stats.verdict({"mean": -0.01, "se": 0.001}, lower_is_better=False) == "worse"
    assert stats.verdict({"mean": 0.01, "se": 0.006}) == "no difference"
    welch = stats.difference(arm, base, paired=False)
    assert welch["se"] > 0.1
    with pytest.raises(ValueError, match="equal lengths"):
        stats.difference([1.0], [1.0, 2.0])


def test_summarise_pairs_arms_by_seed():
    runs = []
    for seed in range(3):
        runs.append({"alpha": 1.0, "arm": "independent", "seed": seed, "err": 0.3 + 0.1 * seed})
        runs.append({"alpha": 1.0, "arm": "routed", "seed": seed, "err": 0.28 + 0.1 * seed})
    rows = sweep.summarise(runs, ("alpha",), ("err",), compare=("err",))
    routed = next(r for r in rows if r["arm"] == "routed")
    assert routed["stats"]["err"]["mean"] == pytest.approx(0.38)
    assert routed["vs_independent"]["err"]["mean"] == pytest.approx(-0.02)
    assert routed["vs_independent"]["err"]["verdict"] == "better"
    assert "vs_independent" not in next(r for r in rows if r["arm"] == "independent")


def test_write_json_turns_nan_into_null(tmp_path):
    path = stats.write_json(str(tmp_path / "sub" / "r.json"), {"x": float("nan"), "y": np.float32(2.0),
                                                               "z": np.arange(2)})
    body = json.load(open(path))
    assert body["x"] is None and body["y"] == 2.0 and body["z"] == [0, 1]
    assert "perceptrons" in body["environment"]


def test_run_grid_in_parallel_equals_serial():
    kw = dict(grid={"alpha": (0.8,), "M": (3,)}, arms=[Arm("independent"), Arm("routed", "edge", "annealed", None)],
              seeds=[0, 1], rule=Rule(epochs=3), N=21, n_test=50)
    serial = sweep.run_grid(sweep.perceptron_job, jobs=1, **kw)
    parallel = sweep.run_grid(sweep.perceptron_job, jobs=2, **kw)
    assert serial == parallel
    assert [r["arm"] for r in serial] == ["independent", "independent", "edge-annealed-uniform",
                                          "edge-annealed-uniform"]
    with pytest.raises(ValueError, match="jobs"):
        sweep.run_grid(sweep.perceptron_job, jobs=0, **kw)


def test_cli_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "perceptrons", "mcover", "--quick", "--seeds", "2", "--N", "31",
                          "--epochs", "3", "--jobs", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| alpha | arm |" in out.stdout
    for arm in ("independent", "edge-quenched-sigma1", "edge-quenched-uniform", "edge-annealed-uniform",
                "replicated-g0.03"):
        assert f"| {arm} |" in out.stdout


@pytest.mark.parametrize("args, match", [(["--N", "30"], "N: expected an odd"), (["--seeds", "1"], "seeds"),
                                         (["--M", "1"], "M: expected at least 2")])
def test_cli_bad_input(args, match):
    out = subprocess.run([sys.executable, "-m", "perceptrons", "mcover", "--quick", *args], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert match in out.stderr
