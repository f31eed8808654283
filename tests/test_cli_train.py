"""`sharpness train` / `sharpness sweep` end to end through the real entry point (exit codes, streams, files)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from sharpness.checkpoint import load_checkpoint, save_checkpoint
from sharpness.cli import main
from sharpness.models import build_model, model_spec

from cli_helpers import run_cli

BLOBS = ["--data", "blobs", "--data-kwargs", '{"n": 120, "n_test": 40, "dim": 3}', "--model", "mlp",
         "--model-kwargs", '{"hidden": [8]}', "--device", "cpu"]


def run(argv, capsys):
    """(exit code, stdout, stderr) of ``sharpness *argv`` (the shared runner, argument order of these tests)."""
    return run_cli(capsys, *argv)


def one_line_error(code, err, pattern):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


def test_train_mnist1d_end_to_end(tmp_path, capsys):
    out = tmp_path / "sb.pt"
    code, stdout, err = run(["train", "--data", "mnist1d", "--model", "mlp", "--batch-size", 32, "--epochs", 1,
                             "--subset", 320, "--model-kwargs", '{"hidden": [32]}', "--seed", 0, "--device", "cpu",
                             "--out", out, "--json", tmp_path / "sb.json"], capsys)
    assert code == 0, err
    assert re.match(r"1 epochs, 10 steps at batch 32 \(peak lr 0.1, stopped by epochs\) \| train loss [\d.]+ acc "
                    r"[\d.]+% \| test loss .* → .*sb.pt$", stdout.strip())
    assert err == ""  # stderr is not a terminal here: no progress bar
    ckpt = load_checkpoint(out)
    assert ckpt.data["name"] == "mnist1d" and ckpt.data["n_train"] == 320 and ckpt.train_config["batch_size"] == 32
    report = json.loads((tmp_path / "sb.json").read_text())
    assert report["metrics"]["steps"] == 10 and len(report["history"]) == 2


def test_train_json_to_stdout_and_options_reach_the_config(tmp_path, capsys):
    code, stdout, err = run(["train", *BLOBS, "--batch-size", "25%", "--optimizer", "sgd", "--momentum", 0.9,
                             "--nesterov", "--weight-decay", 1e-4, "--lr-scaling", "linear", "--base-batch-size", 10,
                             "--warmup-epochs", 1, "--schedule", "step", "--milestones", "2", "--gamma", 0.5,
                             "--epochs", 3, "--eval-every", 2, "--data-seed", 7, "--save-every", 3,
                             "--out", tmp_path / "r.pt", "--json", "-"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    c = result["config"]
    assert (c["batch_size"], c["nesterov"], c["milestones"], c["data_seed"], c["lr_scaling"]) == ("25%", True, [2.0], 7, "linear")
    assert result["metrics"]["batch_size"] == 30 and result["metrics"]["peak_lr"] == pytest.approx(0.3)
    assert (tmp_path / "r.epoch3.pt").exists()


@pytest.mark.parametrize("batch, pattern", [
    ("500", r"batch_size ≤ the 120 training samples, got 500"),
    ("0", r"batch_size ≥ 1, a percentage like '10%' or 'full', got 0"),
    ("-4", r"batch_size as an integer ≥ 1, a percentage like '10%' or 'full', got '-4'"),
    ("lots", r"batch_size as an integer ≥ 1, a percentage like '10%' or 'full', got 'lots'"),
    ("120%", r"batch_size percentage in \(0%, 100%\], got '120%'"),
])
def test_bad_batch_sizes(tmp_path, capsys, batch, pattern):
    code, _, err = run(["train", *BLOBS, "--batch-size", batch, "--epochs", 1, "--out", tmp_path / "x.pt"], capsys)
    one_line_error(code, err, pattern)


def test_unknown_optimizer_and_missing_duration(tmp_path, capsys):
    code, _, err = run(["train", *BLOBS, "--optimizer", "rmsprop", "--epochs", 1, "--out", tmp_path / "x.pt"], capsys)
    one_line_error(code, err, r"'rmsprop' is not one of 'sgd', 'adam', 'adamw'")
    code, _, err = run(["train", *BLOBS, "--out", tmp_path / "x.pt"], capsys)
    one_line_error(code, err, r"exactly one of epochs, steps, until_train_loss or until_train_accuracy")
    code, _, err = run(["train", *BLOBS, "--until-train-accuracy", 1.5, "--max-epochs", 2, "--out", tmp_path / "x.pt"], capsys)
    one_line_error(code, err, r"until_train_accuracy to be a fraction in \(0, 1\], got 1.5")


def test_nan_learning_rate_exits_2_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "x.pt"
    code, stdout, err = run(["train", *BLOBS, "--lr", 1e12, "--epochs", 2, "--out", out], capsys)
    one_line_error(code, err, r"loss became (nan|inf) at step \d+ \(epoch 1\); kept the last good weights "
                              r"\(epoch 0, step 0\) in .*x.pt")
    assert stdout == ""
    kept = load_checkpoint(out)
    assert kept.metrics["stopped_by"] == "diverged"
    assert all(torch.isfinite(t).all() for t in kept.state_dict.values())


def test_init_from_a_different_architecture(tmp_path, capsys):
    other = tmp_path / "other.pt"
    net = build_model("mlp", input_shape=[3], num_classes=3, hidden=[5], seed=0)
    save_checkpoint(other, model=model_spec("mlp", [3], 3, hidden=[5]), state_dict=net.state_dict())
    code, _, err = run(["train", *BLOBS, "--epochs", 1, "--init-from", other, "--out", tmp_path / "x.pt"], capsys)
    one_line_error(code, err, r"expected checkpoint .*other.pt.* to match model 'mlp', got .*shape mismatch")


def test_unwritable_output_directory(tmp_path, capsys):
    (tmp_path / "plain-file").write_text("")
    code, _, err = run(["train", *BLOBS, "--epochs", 1, "--out", tmp_path / "plain-file" / "run.pt"], capsys)
    one_line_error(code, err, r"expected a writable output directory for .*run.pt")


def test_resume_flag_continues_an_interrupted_run(tmp_path, capsys):
    from sharpness.train import TrainConfig, TrainingInterrupted, resume_path, train

    class Stop:
        def on_step_end(self, state):
            if state.step == 4:
                raise KeyboardInterrupt

    out = tmp_path / "r.pt"
    args = ["--batch-size", 16, "--epochs", 2, "--lr", 0.1]
    config = TrainConfig(data="blobs", data_kwargs={"n": 120, "n_test": 40, "dim": 3}, model="mlp",
                         model_kwargs={"hidden": [8]}, batch_size=16, epochs=2, lr=0.1, device="cpu")
    with pytest.raises(TrainingInterrupted):
        train(config, out=out, callbacks=[Stop()])
    assert (tmp_path / "r.pt.resume").exists()
    code, stdout, err = run(["train", *BLOBS, *args, "--resume", "--out", out], capsys)
    assert code == 0, err
    assert not (tmp_path / "r.pt.resume").exists() and load_checkpoint(out).extra["resumed"] is True
    fresh = tmp_path / "fresh.pt"
    assert run(["train", *BLOBS, *args, "--out", fresh], capsys)[0] == 0
    a, b = load_checkpoint(out).state_dict, load_checkpoint(fresh).state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resume_path(out) == f"{out}.resume"


def test_sweep_cli_table_json_and_manifest_refusal(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", *BLOBS, "--batch-sizes", "10,50%", "--seeds", "0,1", "--epochs", 1, "--out", out]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert lines[0].split()[:5] == ["run", "batch_size", "seed", "lr", "status"]
    assert [line.split()[0] for line in lines[1:5]] == ["bs10_seed0", "bs60_seed0", "bs10_seed1", "bs60_seed1"]
    assert lines[-1].startswith("4 runs (4 trained, 0 resumed, 0 already done)")
    code, stdout, err = run([*argv, "--json", "-"], capsys)
    assert code == 0 and json.loads(stdout)["skipped"] == ["bs10_seed0", "bs60_seed0", "bs10_seed1", "bs60_seed1"]
    code, _, err = run(["sweep", *BLOBS, "--batch-sizes", "10,50%", "--seeds", "0,1", "--epochs", 2, "--out", out], capsys)
    one_line_error(code, err, r"holds a different run \(manifest differs in: config.train.epochs, config_hash\)")


def test_sweep_cli_analyze(tmp_path, capsys):
    code, stdout, err = run(["sweep", *BLOBS, "--batch-sizes", "20", "--epochs", 1, "--analyze",
                             "--out", tmp_path / "s", "--json", tmp_path / "s.json"], capsys)
    assert code == 0, err
    row = json.loads((tmp_path / "s.json").read_text())["rows"][0]
    assert row["lambda_max"] > 0 and row["lambda_min"] <= row["lambda_max"]
    assert row["trace"] is not None and "lambda_max" in stdout.splitlines()[0]
    # a line per run and the analysis's stage lines on stderr (a full sweep --analyze ran 12 minutes silently)
    assert "sharpness: [1/1] bs20_seed0: training" in err and "sharpness: [1/1] bs20_seed0: analyzing" in err
    assert "λ_max/λ_min (Lanczos" in err.split("analyzing", 1)[1], err


def test_track_every_records_the_series(tmp_path, capsys):
    out, csv = tmp_path / "gd.pt", tmp_path / "track.csv"
    code, stdout, err = run(["train", "--data", "blobs", "--model", "mlp", "--model-kwargs", '{"hidden": [16]}',
                             "--batch-size", "full", "--optimizer", "sgd", "--lr", "0.05", "--steps", "20",
                             "--track-every", "5", "--track-full", "--track-out", str(csv), "--out", str(out),
                             "--json", "-"], capsys)
    assert code == 0, err
    tracking = json.loads(stdout)["tracking"]
    steps = [r["step"] for r in tracking["records"]]
    assert steps == [0, 5, 10, 15, 20]
    assert all(r["two_over_lr"] == pytest.approx(40.0) for r in tracking["records"])
    assert all(r["lambda_max"] > 0 for r in tracking["records"])
    assert sum(bool(r["verified"]) for r in tracking["records"]) == 0  # the default checks every 10th: none in 5
    assert csv.read_text().count("\n") == len(steps) + 1
    # The series is also in the checkpoint, and `sharpness plot` draws it from there without recomputing.
    assert [r["step"] for r in load_checkpoint(out).extra["tracking"]["records"]] == steps
    code, stdout, err = run(["plot", str(out), "--out", str(tmp_path / "track")], capsys)
    assert code == 0, err
    assert (tmp_path / "track.png").stat().st_size > 0 and (tmp_path / "track.pdf").stat().st_size > 0
    code, _, err = run(["train", "--data", "blobs", "--model", "mlp", "--steps", "2", "--track-out", str(csv),
                        "--out", str(out)], capsys)
    one_line_error(code, err, "--track-every")


def test_track_verify_every_reaches_the_tracker(tmp_path, capsys):
    code, stdout, err = run(["train", "--data", "blobs", "--model", "mlp", "--model-kwargs", '{"hidden": [8]}',
                             "--batch-size", "full", "--lr", "0.05", "--steps", "8", "--track-every", "2",
                             "--track-full", "--track-verify-every", "2", "--out", tmp_path / "v.pt", "--json", "-"], capsys)
    assert code == 0, err
    records = json.loads(stdout)["tracking"]["records"]
    checked = [r["step"] for r in records if r["verified"]]
    assert checked and all(r["cold_lambda_max"] is not None for r in records if r["verified"])


def test_resume_without_a_saved_state_is_refused(tmp_path, capsys):
    out = tmp_path / "r.pt"
    code, _, err = run(["train", *BLOBS, "--epochs", 1, "--resume", "--out", out], capsys)
    one_line_error(code, err, r"expected a saved state .*r\.pt\.resume to continue with --resume, got none; drop --resume")
    assert not out.exists()
    assert run(["train", *BLOBS, "--epochs", 1, "--out", out], capsys)[0] == 0
    code, _, err = run(["train", *BLOBS, "--epochs", 1, "--resume", "--out", out], capsys)
    one_line_error(code, err, r"got none; .*r\.pt is a finished run")


def test_sweep_help_advertises_only_options_it_has(capsys):
    code, out, _ = run(["sweep", "--help"], capsys)
    assert code == 0 and "--resume" not in out and "rerun the same command" in " ".join(out.split())


def test_train_json_path_is_checked_before_training(tmp_path, capsys):
    (tmp_path / "plain-file").write_text("")
    code, _, err = run(["train", *BLOBS, "--epochs", 1, "--out", tmp_path / "r.pt", "--json",
                        tmp_path / "plain-file" / "m.json"], capsys)
    one_line_error(code, err, r"--json .*plain-file")
    assert not (tmp_path / "r.pt").exists()


def test_killed_sweep_leaves_a_summary_marked_partial_and_resumes_the_killed_run_from_its_last_epoch(
        tmp_path, capsys, monkeypatch):
    import csv

    import importlib

    train_module = importlib.import_module("sharpness.train")  # the module (the package exports train())

    class Killed(BaseException):
        """What SIGKILL looks like from inside: no handler runs, nothing is saved on the way out."""

    original = train_module._Run._close_epoch

    def dies_in_epoch_2(self, *, initial=False):
        original(self, initial=initial)
        if not initial and self.batch == 20 and self.epoch == 2:
            raise Killed

    out = tmp_path / "sweep"
    argv = ["sweep", *BLOBS, "--batch-sizes", "10,20", "--epochs", 3, "--out", out]
    monkeypatch.setattr(train_module._Run, "_close_epoch", dies_in_epoch_2)
    with pytest.raises(Killed):
        main([str(a) for a in argv])
    monkeypatch.undo()
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["run"], r["status"]) for r in rows] == [("bs10_seed0", "ok"), ("bs20_seed0", "pending")]
    assert rows[1]["test_acc"] == "" and rows[1]["checkpoint"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and (summary["runs_finished"], summary["runs_total"]) == (1, 2)
    saved = torch.load(out / "runs" / "bs20_seed0.pt.resume", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 6)  # the end of the last finished epoch, not step 0

    code, stdout, err = run([*argv, "-v"], capsys)
    assert code == 0, err
    assert "1 resumed, 1 already done" in stdout
    assert "resumed from" in err and "at step 6 (epoch 1)" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and [r["status"] for r in summary["rows"]] == ["ok", "ok"]
    # Bit-identical to a sweep nobody killed.
    assert run(["sweep", *BLOBS, "--batch-sizes", "10,20", "--epochs", 3, "--out", tmp_path / "clean"], capsys)[0] == 0
    a = load_checkpoint(out / "runs" / "bs20_seed0.pt")
    b = load_checkpoint(tmp_path / "clean" / "runs" / "bs20_seed0.pt")
    assert a.extra["resumed"] is True and b.extra["resumed"] is False
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not (out / "runs" / "bs20_seed0.pt.resume").exists()


def test_more_tracked_eigenvalues_than_parameters_is_refused(tmp_path, capsys):
    code, _, err = run(["train", *BLOBS, "--epochs", 1, "--track-every", 2, "--track-top-k", 5000,
                        "--out", tmp_path / "t.pt"], capsys)
    one_line_error(code, err, r"expected --track-top-k \(top_k\) ≤ 59, .* got 5000")
    assert not (tmp_path / "t.pt").exists()


def test_train_refuses_float_labels_for_cross_entropy(tmp_path, capsys):
    import numpy as np

    g = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", x=g.normal(size=(40, 3)).astype(np.float32), y=g.integers(0, 3, 40).astype(np.float32))
    code, _, err = run(["train", "--data", tmp_path / "f.npz", "--model", "mlp", "--loss", "cross-entropy",
                        "--epochs", 1, "--out", tmp_path / "r.pt"], capsys)
    one_line_error(code, err, r"cross-entropy expects .* integer labels, got .* float targets")
    assert not (tmp_path / "r.pt").exists()


def test_killed_train_resumes_from_its_last_finished_epoch_bit_identically(tmp_path, capsys, monkeypatch):
    import importlib

    train_module = importlib.import_module("sharpness.train")

    class Killed(BaseException):
        """SIGKILL from inside: no handler runs (not a KeyboardInterrupt), nothing is saved on the way out."""

    original = train_module._Run._close_epoch

    def dies_after_epoch_2(self, *, initial=False):
        original(self, initial=initial)
        if not initial and self.epoch == 2:
            raise Killed

    argv = ["train", *BLOBS, "--batch-size", 20, "--optimizer", "adam", "--lr", 0.01, "--epochs", 4]

    def killed(out, *more):
        monkeypatch.setattr(train_module._Run, "_close_epoch", dies_after_epoch_2)
        with pytest.raises(Killed):
            main([str(a) for a in [*argv, *more, "--out", out]])
        monkeypatch.undo()
        assert not out.exists()

    assert run([*argv, "--out", tmp_path / "clean.pt"], capsys)[0] == 0
    clean = load_checkpoint(tmp_path / "clean.pt")

    def same_as_clean(path):
        got = load_checkpoint(path)
        return all(torch.equal(got.state_dict[k], clean.state_dict[k]) for k in clean.state_dict)

    out = tmp_path / "r.pt"
    killed(out)  # --keep-state is the default
    saved = torch.load(tmp_path / "r.pt.resume", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 6)  # the last state written is epoch 1's end: epoch 2 never closed
    code, _, err = run([*argv, "--resume", "--out", out, "-v"], capsys)
    assert code == 0, err
    assert "resumed from" in err and "at step 6 (epoch 1)" in err
    assert same_as_clean(out) and load_checkpoint(out).extra["resumed"] is True
    assert not (tmp_path / "r.pt.resume").exists()

    # Without the per-epoch state a kill loses the run, and --resume says there is nothing to continue.
    bare = tmp_path / "bare.pt"
    killed(bare, "--no-keep-state")
    assert not (tmp_path / "bare.pt.resume").exists()
    code, _, err = run([*argv, "--resume", "--out", bare], capsys)
    one_line_error(code, err, r"expected a saved state .*bare\.pt\.resume to continue with --resume, got none")

    # Starting over on a killed run's state says what it replaces, then trains from scratch.
    killed(bare)
    code, _, err = run([*argv, "--out", bare], capsys)
    assert code == 0 and re.fullmatch(r"sharpness: warning: .*bare\.pt\.resume holds an unfinished run; starting "
                                      r"over replaces it \(--resume continues it instead\)\n", err), err
    assert same_as_clean(bare) and load_checkpoint(bare).extra["resumed"] is False
