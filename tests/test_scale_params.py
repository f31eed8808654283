"""Smoke tests of ``benchmarks/scale_params.py`` (nothing timed): the skip rule for peers, a child task on a tiny
MLP, and the table's rows for every outcome (run, refused, not started, failed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale_params.py"


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("scale_params_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_peers_are_not_started_where_their_known_memory_exceeds_the_limit(scale):
    P = scale._num_params(11130)
    assert P == 123_999_340
    need = {task: scale.PEER_BYTES_PER_PARAM[task] * P / 1e9 for task in scale.PEER_TASKS}
    # ARPACK's 23 float64 vectors alone are 23 GB at 124 M; PyHessian's few float32 copies are 4.5 GB
    assert need["curvlinops-top1"] > scale.RSS_LIMIT_GB and need["curvlinops-trace"] > scale.RSS_LIMIT_GB
    assert need["pyhessian-top1"] < scale.RSS_LIMIT_GB and need["pyhessian-trace"] < scale.RSS_LIMIT_GB
    assert all(b * scale._num_params(7000) / 1e9 < scale.RSS_LIMIT_GB for b in scale.PEER_BYTES_PER_PARAM.values())


def test_the_subspace_task_runs_and_every_outcome_has_a_row(scale):
    row = scale._child(12, "subspace", 1)
    assert row["task"] == "subspace" and row["epsilon_space"] == "random" and row["function_evals"] >= 1
    assert row["subspace"] == "stored (A and its QR)"  # 12² + 11·12 + 10 = 286 parameters: A fits
    rows = [row, {"width": 12, "task": "curvlinops-top1", "skipped": "needs ≈ 26 GB resident"},
            {"width": 12, "task": "pyhessian-top1", "failed": "timed out after 900 s"},
            {"width": 12, "task": "trace", "refused": "memory: …; expected --memory 9GiB or more", "peak_rss_gb": 0.3},
            {**row, "subspace": "generated, tiles of 16 rows", "passes": 4.0, "column_draw_seconds": 0.5}]
    table = scale._table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert "not started: needs ≈ 26 GB" in table[3] and "failed: timed out" in table[4]
    assert "refused up front: expected --memory 9GiB" in table[5]
    assert "4 passes over A" in table[6] and "draws ≈ 200 s" in table[6]  # 4 passes × 100 columns × 0.5 s
