"""benchmarks/gpu_check.py: a clean skip without CUDA, its measuring code end to end on the CPU, and the
124 M-parameter scale case on CUDA when there is a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=240)


def test_without_cuda_it_skips_with_one_line_and_exit_0():
    proc = _run(env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["no CUDA device: gpu_check skipped"]


@pytest.mark.slow
def test_quick_cpu_run_measures_everything(tmp_path):
    proc = _run("--device", "cpu", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    [out] = tmp_path.glob("gpu-*-quick.json")
    data = json.loads(out.read_text())
    assert data["meta"]["tests"] == "skipped" and data["meta"]["device"] == "cpu"
    assert [r["model"] for r in data["rows"]] == ["resnet18", "gpt", "mlp-d64"]
    for row in data["rows"][:2]:
        assert row["hvp_over_grad"] > 0 and row["lambda_max_hvps"] >= 1 and row["trace_probes"] == 10
        assert row["grid_points_per_s_batched"] > 0 and row["grid_points_per_s_unbatched"] > 0
    assert data["rows"][2]["lambda_max_hvps"] >= 1 and data["rows"][2]["trace_hvps"] == 20
    assert (tmp_path / out.name.replace(".json", ".md")).read_text().count("\n| ") == 4  # header + 3 rows


def _gpu_check():
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    return gpu_check


def test_the_scale_case_measures_top1_and_trace_on_the_scale_mlp():
    gpu_check = _gpu_check()
    row = gpu_check.measure_scale(torch.device("cpu"), width=16, probes=3)
    assert row["num_params"] == 16**2 + 11 * 16 + 10 and row["model"] == "mlp-d16"
    assert row["lambda_max_hvps"] >= 1 and row["trace_hvps"] == 3 and row["lambda_max"] > 0
    assert "peak_memory_gib" not in row  # CUDA only
    assert gpu_check.SCALE_WIDTH**2 + 11 * gpu_check.SCALE_WIDTH + 10 == 123_999_340  # GPT-2 small's count


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_124m_case_on_cuda():
    gpu_check = _gpu_check()
    row = gpu_check.measure_scale(torch.device("cuda"), width=gpu_check.SCALE_WIDTH)
    assert row["num_params"] == 123_999_340 and row["lambda_max_hvps"] >= 1 and row["trace_hvps"] == 20
    # θ, the model and a product's graph: a few float32 copies of P (0.5 GB each), nowhere near a P × steps basis
    assert 0.4 < row["peak_memory_gib"] < 20
