"""`torchrun --nproc-per-node 2 -m sharpness analyze` gives the one-process report (float64, CPU, gloo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cli_helpers import run_cli
from test_cli import toolkit_ckpt  # noqa: F401  (module fixture: a small toolkit checkpoint)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_two_ranks_reproduce_the_single_process_report(capsys, toolkit_ckpt, tmp_path):  # noqa: F811
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    args = ["analyze", str(toolkit_ckpt), "--dtype", "float64", "--top-k", "2", "--bottom-k", "1",
            "--trace-probes", "30", "--samples", "117"]  # 117 samples: shards of 59 and 58
    one = tmp_path / "one.json"
    assert run_cli(capsys, *args, "--json", one)[0] == 0
    two = tmp_path / "two.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "sharpness", *args, "--json", str(two)],
        env=env, capture_output=True, text=True, timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("λ top") == 1  # only rank 0 prints the table
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert b["environment"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert a["analysis_set"] == b["analysis_set"]
    # Only the order of the per-sample sums differs between 1 and 2 ranks: float64 rounding, ~1e-15 relative;
    # 1e-10 leaves room for a Lanczos run that stops one step apart at tol 1e-4 (not observed).
    for key in ("top", "bottom"):
        assert b["hessian"][key]["values"] == pytest.approx(a["hessian"][key]["values"], rel=1e-10)
    assert b["hessian"]["trace"]["value"] == pytest.approx(a["hessian"]["trace"]["value"], rel=1e-10)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-12)
    assert b["accuracy"] == a["accuracy"]


def test_sweep_runs_split_across_two_ranks_give_the_one_process_summary(capsys, tmp_path):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    args = ["sweep", "--data", "blobs", "--model", "mlp", "--model-kwargs", '{"hidden": [8]}', "--optimizer", "sgd",
            "--lr", "0.1", "--batch-sizes", "16,64,full", "--seeds", "0", "--epochs", "2", "--json", "-"]
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "one")
    assert code == 0, err
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "sharpness", *args[:-2], "--out", str(tmp_path / "two")],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "summary.json").read_text())["rows"]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())["rows"]
    assert [r["run"] for r in two] == [r["run"] for r in one] and len(one) == 3
    # Each run is seeded and independent of which rank trains it: bit-identical metrics.
    for a, b in zip(one, two):
        for key in ("train_loss", "test_loss", "train_acc", "test_acc", "dist_from_init"):
            assert a[key] == b[key], (a["run"], key)


def test_landscape_grid_split_across_two_ranks_equals_one_process(capsys, toolkit_ckpt, tmp_path):  # noqa: F811
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    from sharpness.landscape import PlaneResult

    args = ["landscape", str(toolkit_ckpt), "--dims", "2", "--points", "7", "--dtype", "float64"]
    assert run_cli(capsys, *args, "--out", tmp_path / "one")[0] == 0
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "sharpness", *args, "--out", str(tmp_path / "two")],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = PlaneResult.load(tmp_path / "one" / "landscape_2d.npz")
    two = PlaneResult.load(tmp_path / "two" / "landscape_2d.npz")
    assert two.complete
    # Every point is evaluated by exactly one rank on the whole analysis set: identical arithmetic.
    np.testing.assert_array_equal(two.train_loss, one.train_loss)
    np.testing.assert_array_equal(two.test_acc, one.test_acc)
