"""The encodings benchmark runs end to end (tiny batch, three rounds) and reports every candidate."""
import json

import torch

from perceptrons.benchmarks import encodings_cpu

from ..conftest import num_threads


def test_quick_run_writes_a_complete_report(tmp_path):
    torch_threads = torch.get_num_threads()
    try:
        with num_threads(1):  # run() sets both thread counts; put them back afterwards
            result = encodings_cpu.run(batch=300, threads=1, quick=True, out=str(tmp_path))
    finally:
        torch.set_num_threads(torch_threads)
    assert len(result["records"]) == 2 * len(encodings_cpu.CONFIGS)
    for rec in result["records"]:
        assert set(rec["median_ms"]) == {"mlp only", "fused", "separate", "torch"}
        assert all(v > 0 for v in rec["median_ms"].values())
    saved = json.loads((tmp_path / "encodings_cpu.json").read_text())
    assert saved["records"][0]["config"] in encodings_cpu.CONFIGS
    assert "| network" in (tmp_path / "encodings_cpu.md").read_text()
