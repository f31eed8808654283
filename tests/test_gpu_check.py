"""benchmarks/gpu_check.py: a clean skip without CUDA, and its measuring code end to end on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert [r["model"] for r in data["rows"]] == ["resnet18", "gpt"]
    for row in data["rows"]:
        assert row["hvp_over_grad"] > 0 and row["lambda_max_hvps"] >= 1 and row["trace_probes"] == 10
        assert row["grid_points_per_s_batched"] > 0 and row["grid_points_per_s_unbatched"] > 0
    assert (tmp_path / out.name.replace(".json", ".md")).read_text().count("\n| ") == 3  # header + 2 rows
