"""CPU ISA dispatch and `python -m perceptrons info`."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import perceptrons
from perceptrons import _C


def run_python(code, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, check=True)


def test_generic_is_always_available_and_best_is_default():
    assert "generic" in perceptrons.available_cpu_isas()
    out = run_python("import perceptrons; print(perceptrons.cpu_isa())", PERCEPTRONS_CPU_ISA="")
    assert out.stdout.strip() == _C.cpu_isa_best()


def test_environment_variable_forces_the_generic_path():
    out = run_python("import perceptrons; print(perceptrons.cpu_isa())", PERCEPTRONS_CPU_ISA="generic")
    assert out.stdout.strip() == "generic"


def test_unknown_environment_value_warns_and_falls_back():
    out = run_python("import perceptrons; print(perceptrons.cpu_isa())", PERCEPTRONS_CPU_ISA="sse9")
    assert out.stdout.strip() == _C.cpu_isa_best()
    assert "PERCEPTRONS_CPU_ISA='sse9' is unknown or not supported" in out.stderr


def test_set_cpu_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"isa: expected one of 'generic', 'avx2', 'avx512', got 'neon'"):
        perceptrons.set_cpu_isa("neon")


def test_every_isa_gives_the_same_function():
    from perceptrons import kernels as K
    rng = np.random.default_rng(0)
    spec = K.MLPSpec([8, 64, 64, 3], "relu")
    ws = [rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(spec.widths, spec.widths[1:])]
    x = rng.standard_normal((500, 8))
    outs = []
    before = perceptrons.cpu_isa()
    try:
        for isa in perceptrons.available_cpu_isas():
            perceptrons.set_cpu_isa(isa)
            assert perceptrons.cpu_isa() == isa
            outs.append(K.mlp_forward(spec, x, ws))
    finally:
        perceptrons.set_cpu_isa(before)
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-12, atol=1e-12)


def test_fma_peak_probe_is_positive():
    assert _C.cpu_fma_peak_gflops(perceptrons.cpu_isa(), 0.05) > 0


def test_info_command_reports_the_build():
    out = subprocess.run([sys.executable, "-m", "perceptrons", "info"], capture_output=True, text=True, check=True)
    assert f"perceptrons {perceptrons.__version__}" in out.stdout
    assert f"CPU ISA         {perceptrons.cpu_isa()}" in out.stdout
    assert "CUDA compiled" in out.stdout and "CUDA devices" in out.stdout
    js = subprocess.run([sys.executable, "-m", "perceptrons", "info", "--json"], capture_output=True, text=True,
                        check=True)
    info = json.loads(js.stdout)
    assert info["cpu_isa"] == perceptrons.cpu_isa()
    assert info["cuda_compiled"] == _C.build_info()["cuda"]
    assert isinstance(info["cuda"]["device_count"], int)
