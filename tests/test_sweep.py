"""Tests for sharpness.sweep: shared initial weights, kill-and-rerun resumes, manifest refusal, analysis."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from sharpness.checkpoint import build_model_from_checkpoint, load_checkpoint
from sharpness.data import load_dataset
from sharpness.errors import InputError
from sharpness.hessian import dense_hessian
from sharpness.objective import Objective
from sharpness.sweep import SUMMARY_FIELDS, run_name, sweep
from sharpness.train import TrainConfig, TrainingInterrupted, resume_path

from test_train import cfg

BATCH_SIZES = [8, 25, "full"]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def blobs():
    return load_dataset("blobs", n=100, n_test=40, dim=3, classes=3, seed=5)


def base(**kw) -> TrainConfig:
    return cfg(**{"model_kwargs": {"hidden": [6]}, "momentum": 0.9, **kw})


class KillDuringRun:
    """Ctrl-C at step ``step`` of the ``run``-th training run this object sees (counting from 1)."""

    def __init__(self, run: int, step: int):
        self.run, self.step, self.seen = run, step, 0

    def on_train_begin(self, state):
        self.seen += 1

    def on_step_end(self, state):
        if self.seen == self.run and state.step == self.step:
            raise KeyboardInterrupt


def comparable(rows):
    """Summary rows without what legitimately differs between two directories (paths, wall time)."""
    return [{k: v for k, v in r.items() if k not in ("wall_time", "checkpoint")} for r in rows]


def test_killed_sweep_resumes_skips_finished_runs_and_matches_an_uninterrupted_one(blobs, tmp_path):
    reference = sweep(base(), batch_sizes=BATCH_SIZES, seeds=SEEDS, out_dir=tmp_path / "ref", dataset=blobs)
    assert reference.trained == tuple(run_name(b, s) for s in SEEDS for b in (8, 25, 100))

    out = tmp_path / "killed"
    with pytest.raises(TrainingInterrupted):  # 4th run = bs8_seed1, killed at its step 5
        sweep(base(), batch_sizes=BATCH_SIZES, seeds=SEEDS, out_dir=out, dataset=blobs, callbacks=[KillDuringRun(4, 5)])
    finished = sorted(p for p in os.listdir(out / "runs") if p.endswith(".pt"))
    assert finished == ["bs100_seed0.pt", "bs25_seed0.pt", "bs8_seed0.pt"]
    assert os.path.exists(resume_path(out / "runs" / "bs8_seed1.pt"))
    mtimes = {p: os.stat(out / "runs" / p).st_mtime_ns for p in finished}

    again = sweep(base(), batch_sizes=BATCH_SIZES, seeds=SEEDS, out_dir=out, dataset=blobs)
    assert again.skipped == ("bs8_seed0", "bs25_seed0", "bs100_seed0")
    assert again.resumed == ("bs8_seed1",) and again.trained == ("bs25_seed1", "bs100_seed1")
    assert {p: os.stat(out / "runs" / p).st_mtime_ns for p in finished} == mtimes  # untouched
    assert comparable(again.rows) == comparable(reference.rows)
    for name in ("bs8_seed1", "bs100_seed1"):  # bit-identical weights, resumed or not
        a = load_checkpoint(out / "runs" / f"{name}.pt").state_dict
        b = load_checkpoint(tmp_path / "ref" / "runs" / f"{name}.pt").state_dict
        assert all(torch.equal(a[k], b[k]) for k in a)

    on_disk = json.loads((out / "summary.json").read_text())
    assert comparable(on_disk["rows"]) == comparable(reference.rows)
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[: len(SUMMARY_FIELDS)] == list(SUMMARY_FIELDS) and len(csv_lines) == 7

    rerun = sweep(base(), batch_sizes=BATCH_SIZES, seeds=SEEDS, out_dir=out, dataset=blobs)
    assert len(rerun.skipped) == 6 and not rerun.trained and not rerun.resumed


def test_each_seed_shares_one_initialization_across_batch_sizes(blobs, tmp_path):
    result = sweep(base(epochs=1), batch_sizes=[10, "50%"], seeds=SEEDS, out_dir=tmp_path, dataset=blobs)
    init = {r["run"]: load_checkpoint(r["checkpoint"]).extra["init_sha256"] for r in result.rows}
    assert init["bs10_seed0"] == init["bs50_seed0"] != init["bs10_seed1"] == init["bs50_seed1"]
    start = load_checkpoint(tmp_path / "init_seed1.pt")
    assert load_checkpoint(result.rows[2]["checkpoint"]).train_config["init_from"] == str(tmp_path / "init_seed1.pt")
    assert start.seed == 1
    assert [r["batch_size"] for r in result.rows] == [10, 50, 10, 50]


def test_learning_rates_extend_the_grid_and_names(blobs, tmp_path):
    result = sweep(base(epochs=1), batch_sizes=[20], seeds=[0], lrs=[0.01, 0.1], out_dir=tmp_path, dataset=blobs)
    assert [r["run"] for r in result.rows] == ["bs20_seed0_lr0.01", "bs20_seed0_lr0.1"]
    assert [r["lr"] for r in result.rows] == [0.01, 0.1]


def test_a_different_sweep_in_the_same_directory_is_refused(blobs, tmp_path):
    sweep(base(epochs=1), batch_sizes=[20], seeds=[0], out_dir=tmp_path, dataset=blobs)
    with pytest.raises(InputError, match=r"holds a different run \(manifest differs in: config.train.epochs, config_hash\)"):
        sweep(base(epochs=2), batch_sizes=[20], seeds=[0], out_dir=tmp_path, dataset=blobs)
    with pytest.raises(InputError, match=r"differs in: config.batch_sizes, config.batch_sizes_resolved, config_hash"):
        sweep(base(epochs=1), batch_sizes=[20, 40], seeds=[0], out_dir=tmp_path, dataset=blobs)
    assert sweep(base(epochs=1), batch_sizes=[20], seeds=[0], out_dir=tmp_path, dataset=blobs).skipped == ("bs20_seed0",)


def test_bad_grids_are_refused(blobs, tmp_path):
    with pytest.raises(InputError, match="both resolving to 10 samples"):
        sweep(base(), batch_sizes=[10, "10%"], out_dir=tmp_path / "a", dataset=blobs)
    with pytest.raises(InputError, match="batch_size ≤ the 100 training samples, got 500"):
        sweep(base(), batch_sizes=[500], out_dir=tmp_path / "b", dataset=blobs)
    with pytest.raises(InputError, match=r"distinct seeds, got \[1, 1\]"):
        sweep(base(), batch_sizes=[10], seeds=[1, 1], out_dir=tmp_path / "c", dataset=blobs)


def test_diverged_runs_are_recorded_not_fatal(blobs, tmp_path):
    result = sweep(base(lr=1e12, momentum=0.0), batch_sizes=[10], seeds=[0], out_dir=tmp_path, dataset=blobs)
    assert result.rows[0]["status"] == "diverged"


def test_analyze_adds_curvature_that_matches_the_dense_hessian(blobs, tmp_path):
    result = sweep(base(epochs=2, model_kwargs={"hidden": [4]}, dtype="float64"), batch_sizes=[20], seeds=[0],
                   out_dir=tmp_path, dataset=blobs, analyze=True)
    row = result.rows[0]
    model = build_model_from_checkpoint(load_checkpoint(row["checkpoint"]))
    H = dense_hessian(Objective(model, blobs.x_train.double(), blobs.y_train, dtype=torch.float64))
    eig = np.linalg.eigvalsh(H.numpy())
    # Lanczos converges to the default relative tolerance 1e-4; 1e-3 leaves room for it.
    assert row["lambda_max"] == pytest.approx(eig[-1], rel=1e-3)
    assert row["lambda_min"] == pytest.approx(eig[0], rel=1e-3, abs=1e-3 * abs(eig[-1]))
    # The trace is a Hutch++ estimate (99 matvecs ≫ P = 31 parameters here: essentially exact).
    assert row["trace"] == pytest.approx(eig.sum(), rel=1e-2)
    assert (tmp_path / "runs" / "bs20_seed0.report.json").exists()


def test_a_large_learning_rate_names_a_valid_run(blobs, tmp_path):
    # f"{1e12:g}" is "1e+12", and "+" is not allowed in a run directory's keys: `sweep --lrs 1e12` was a traceback.
    assert run_name(8, 0, 1e12) == "bs8_seed0_lr1e12" and run_name(8, 0, 1e-5) == "bs8_seed0_lr1e-05"
    result = sweep(base(epochs=1), batch_sizes=[50], lrs=[1e12], out_dir=tmp_path, dataset=blobs)
    assert [r["run"] for r in result.rows] == ["bs50_seed0_lr1e12"]
