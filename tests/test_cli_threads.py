"""`--threads` on `train` and `analyze`: the command runs with that many torch threads and gives the caller's back."""

from __future__ import annotations

import torch

from cli_helpers import assert_input_error, run_cli

BLOBS = ["--data", "blobs", "--data-kwargs", '{"n": 60, "n_test": 20, "dim": 3}', "--model", "mlp",
         "--model-kwargs", '{"hidden": [4]}', "--device", "cpu"]


class _SeenThreads:
    """Records torch.get_num_threads() when the command's library call runs."""

    def __init__(self, target):
        self.target, self.seen = target, []

    def __call__(self, *args, **kwargs):
        self.seen.append(torch.get_num_threads())
        return self.target(*args, **kwargs)


def test_train_and_analyze_run_with_the_requested_threads_and_restore_them(tmp_path, capsys, monkeypatch):
    import sharpness.cli.analyze as cli_analyze
    import sharpness.cli.train as cli_train

    before = torch.get_num_threads()
    want = 1 if before > 1 else 2
    seen_train = _SeenThreads(cli_train.run_train)
    monkeypatch.setattr(cli_train, "run_train", seen_train)
    ckpt = tmp_path / "m.pt"
    code, _, err = run_cli(capsys, "train", *BLOBS, "--batch-size", 20, "--epochs", 1, "--threads", want, "--out", ckpt)
    assert code == 0, err
    assert seen_train.seen == [want] and torch.get_num_threads() == before

    seen_analyze = _SeenThreads(cli_analyze.run_analysis)
    monkeypatch.setattr(cli_analyze, "run_analysis", seen_analyze)
    code, _, err = run_cli(capsys, "analyze", ckpt, "--no-trace", "--bottom-k", 0, "--threads", want)
    assert code == 0, err
    assert seen_analyze.seen == [want] and torch.get_num_threads() == before


def test_threads_must_be_positive(tmp_path, capsys):
    assert_input_error(run_cli(capsys, "train", *BLOBS, "--batch-size", 20, "--epochs", 1, "--threads", 0,
                               "--out", tmp_path / "m.pt"), "--threads")
