"""One behaviour for API and CLI on the bring-your-own paths (issues #32 and #33): the finite-set contract,
``samples=`` on every kind of set, numbers checked before any work, and the eval-mode notice."""

from __future__ import annotations

import logging
import textwrap
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import sharpness
from sharpness.objective import streams
from sharpness.errors import InputError

from cli_helpers import assert_input_error, run_cli

USER = textwrap.dedent('''
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, IterableDataset

    class Endless(IterableDataset):
        def __iter__(self):
            g = torch.Generator().manual_seed(0)
            while True:
                yield torch.randn(4, generator=g, dtype=torch.float64), torch.randint(0, 3, (), generator=g)

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()

    def endless():
        return DataLoader(Endless(), batch_size=8)
''')


class Endless(IterableDataset):
    """A stream that never ends (a real pipeline's infinite sampler)."""

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        while True:
            yield torch.randn(4, generator=g, dtype=torch.float64), torch.randint(0, 3, (), generator=g)


def _data(n: int = 40):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _net(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Dropout(dropout), nn.Linear(5, 3)).double()


FAST = dict(top_k=1, bottom_k=0, trace=False, tol=1e-10, dtype="float64")


@pytest.fixture
def user(tmp_path):
    (tmp_path / "user.py").write_text(USER)
    ns: dict = {}
    exec(USER, ns)
    torch.save(ns["net"]().state_dict(), tmp_path / "w.pt")
    return tmp_path


# --- samples= -------------------------------------------------------------------------------------------------
def test_more_samples_than_the_set_holds_is_refused_alike_for_tensors_a_dataset_and_a_loader():
    x, y = _data()
    messages = []
    for data in ((x, y), TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=16)):
        with pytest.raises(InputError) as info:
            sharpness.analyze(_net().eval(), data, samples=10000, **FAST)
        messages.append(str(info.value))
    assert messages == ["expected --samples ≤ 40 (the size of the train split), got 10000"] * 3


def test_samples_on_a_loader_takes_its_first_samples_in_a_fixed_order():
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # 16 + 9 of the first 25: the last batch is cut
    got = sharpness.analyze(_net().eval(), loader, samples=25, **FAST)
    want = sharpness.analyze(_net().eval(), x[:25], y[:25], **FAST)
    assert got.analysis_set["n_samples"] == 25 and got.analysis_set["subset"] == "first"
    assert got.analysis_set["sample_sha256"] == want.analysis_set["sample_sha256"]
    assert got.loss == pytest.approx(want.loss, rel=1e-12)
    assert got.hessian["top"]["values"][0] == pytest.approx(want.hessian["top"]["values"][0], rel=1e-9)
    # a shuffling loader: one seed's order on every pass (the verify pass would refuse two different cuts)
    shuffled = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    a = sharpness.analyze(_net().eval(), shuffled, samples=25, **FAST)
    b = sharpness.analyze(_net().eval(), shuffled, samples=25, **FAST)
    assert a.analysis_set["sample_sha256"] == b.analysis_set["sample_sha256"] != want.analysis_set["sample_sha256"]


# --- an endless loader ------------------------------------------------------------------------------------------
@pytest.fixture
def chatty(monkeypatch):
    """Progress lines from the first batch on (a slow loader's lines, without waiting for one)."""
    monkeypatch.setattr(streams, "FIRST_PROGRESS_SECONDS", 0.0)
    monkeypatch.setattr(streams, "PROGRESS_SECONDS", 0.0)


def test_an_endless_loader_is_refused_at_once_and_capped_by_samples(chatty):
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="without len.*samples=N"):
        sharpness.analyze(_net().eval(), DataLoader(Endless(), batch_size=8), **FAST)
    with pytest.raises(InputError, match="without len"):
        sharpness.analyze(_net().eval(), Endless(), **FAST)
    assert time.perf_counter() - t0 < 5
    lines = []
    report = sharpness.analyze(_net().eval(), DataLoader(Endless(), batch_size=8), samples=50, progress=lines.append,
                               **FAST)
    assert report.analysis_set["n_samples"] == 50
    assert lines[0] == "first pass over the DataLoader (its first 50): 8 samples counted and hashed (0 s)"
    assert "50 samples counted" in lines[6] and not lines[7].startswith("first pass")  # the first pass only


def test_an_endless_loader_on_the_command_line(capsys, user, chatty):
    args = ("analyze", user / "w.pt", "--model", f"{user / 'user.py'}:net", "--data", f"{user / 'user.py'}:endless")
    t0 = time.perf_counter()
    assert_input_error(run_cli(capsys, *args, "--no-trace"), "finite analysis set", "--samples N")
    assert time.perf_counter() - t0 < 10
    code, out, err = run_cli(capsys, *args, "--no-trace", "--samples", "40", "--bottom-k", "0")
    assert code == 0, err
    assert "first pass over the DataLoader (its first 40)" in err and "40 samples" in out


# --- numbers before work ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option, value", [("--epsilon", "nan"), ("--epsilon", "inf"), ("--rho", "nan"),
                                           ("--adaptive-rho", "inf"), ("--tol", "nan"), ("--weight-decay", "inf"),
                                           ("--label-smoothing", "nan"), ("--max-eigenvalue", "nan"),
                                           ("--scale-floor", "nan"), ("--max-trace", "inf")])
def test_a_non_finite_number_is_refused_before_any_stage_line(capsys, user, option, value):
    result = run_cli(capsys, "analyze", user / "w.pt", "--model", f"{user / 'user.py'}:net",
                     "--data", f"{user / 'user.py'}:endless", "--samples", "16", option, value)
    assert_input_error(result, option, value)  # one line: no stage line ("… done") came before it


def test_non_finite_numbers_are_refused_by_the_api_before_any_work(monkeypatch):
    x, y = _data()
    calls = []
    monkeypatch.setattr(sharpness.Objective, "evaluate", lambda self: calls.append(1))
    for bad in (dict(epsilon=float("nan")), dict(epsilon=(1e-3, float("inf"))), dict(rho=-1.0),
                dict(average_rho=float("nan")), dict(weight_decay=float("inf")), dict(max_trace=float("nan")),
                dict(density_steps=1), dict(samples=0)):
        with pytest.raises(InputError, match="expected " + next(iter(bad))):
            sharpness.analyze(_net().eval(), x, y, **bad)
    assert calls == []


def test_landscape_and_train_refuse_non_finite_numbers(capsys, user, tmp_path):
    ckpt = ("--model", f"{user / 'user.py'}:net", "--data", f"{user / 'user.py'}:endless")
    assert_input_error(run_cli(capsys, "landscape", user / "w.pt", *ckpt, "--range", "-inf,1", "--out", tmp_path / "l"),
                       "--range", "finite")
    base = ("train", "--data", "blobs", "--model", "mlp", "--epochs", "1", "--out", tmp_path / "t.pt")
    for option in ("--weight-decay", "--warmup-epochs", "--momentum", "--lr"):
        assert_input_error(run_cli(capsys, *base, option, "inf"), option.lstrip("-").replace("-", "_"), "inf")
        assert_input_error(run_cli(capsys, *base, option, "nan"), option.lstrip("-").replace("-", "_"), "nan")


# --- the eval-mode notice -----------------------------------------------------------------------------------------
def test_a_train_mode_model_with_dropout_gets_one_notice_and_is_left_in_train_mode(caplog):
    x, y = _data()
    model = _net(dropout=0.5)
    assert model.training
    with caplog.at_level(logging.WARNING, logger="sharpness"):
        sharpness.analyze(model, x, y, **FAST)
    notices = [r.getMessage() for r in caplog.records if "train mode" in r.getMessage()]
    assert len(notices) == 1 and "1 dropout layer off" in notices[0] and "\n" not in notices[0]
    assert model.training and all(m.training for m in model.modules())  # the user's model is untouched
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sharpness"):
        sharpness.analyze(model.eval(), x, y, **FAST)  # in eval mode already: nothing changes, nothing said
        sharpness.analyze(_net(dropout=0.0), x, y, **FAST)  # p = 0: dropout does nothing in either mode
    assert not [r for r in caplog.records if "train mode" in r.getMessage()]
    bn = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3)).double()
    with caplog.at_level(logging.WARNING, logger="sharpness"):
        sharpness.analyze(bn, x, y, **FAST)
    assert any("1 batch norm on running statistics" in r.getMessage() for r in caplog.records)


# --- labels and batch rows, checked before they can blame the model -------------------------------------------------
class Tokens(nn.Module):
    """(B, T) token ids → (B, T, 10) logits: a vocabulary of 10."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 6)
        self.out = nn.Linear(6, 10)

    def forward(self, input_ids):
        return self.out(torch.tanh(self.emb(input_ids)))


def _token_batches(bad_label: int | None = None):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 10, (12, 5), generator=g)
    labels = torch.randint(0, 10, (12, 5), generator=g)
    labels[3, 1] = -100  # ignored: never out of range
    if bad_label is not None:
        labels[7, 2] = bad_label
    return [{"input_ids": ids[i:i + 4], "labels": labels[i:i + 4]} for i in range(0, 12, 4)]


def test_token_labels_out_of_range_get_the_class_label_message_on_dict_batches():
    sharpness.analyze(Tokens().double(), _token_batches(), **FAST)  # -100 is ignored
    for loss in ("cross-entropy", "causal-lm"):
        with pytest.raises(InputError, match=r"expected class labels in \[0, 10\).*got labels in \[\d+, 20\]"):
            sharpness.analyze(Tokens().double(), _token_batches(bad_label=20), loss=loss, **FAST)


def test_token_labels_out_of_range_on_the_command_line(capsys, tmp_path):
    (tmp_path / "tok.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn
        class Tokens(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(10, 6)
                self.out = nn.Linear(6, 10)
            def forward(self, input_ids):
                return self.out(torch.tanh(self.emb(input_ids)))
        def net():
            torch.manual_seed(0)
            return Tokens()
        def data():
            ids = torch.randint(0, 10, (8, 5), generator=torch.Generator().manual_seed(0))
            labels = ids.clone()
            labels[5, 3] = 20
            return [{"input_ids": ids[:4], "labels": labels[:4]}, {"input_ids": ids[4:], "labels": labels[4:]}]
    '''))
    ns: dict = {}
    exec((tmp_path / "tok.py").read_text(), ns)
    torch.save(ns["net"]().state_dict(), tmp_path / "w.pt")
    result = run_cli(capsys, "analyze", tmp_path / "w.pt", "--model", f"{tmp_path / 'tok.py'}:net",
                     "--data", f"{tmp_path / 'tok.py'}:data", "--no-trace")
    assert_input_error(result, "expected class labels in [0, 10)", ", 20]")


def test_a_batch_with_more_inputs_than_targets_is_named_as_such():
    x, y = _data(16)
    with pytest.raises(InputError, match=r"expected batch 0 to hold one target per sample, got 16 samples and "
                                         r"targets of shape \(12,\)"):
        sharpness.analyze(_net().eval(), [(x, y[:12])], **FAST)
    with pytest.raises(InputError, match="16 samples and targets of shape"):
        sharpness.analyze(Tokens().double(), [{"input_ids": torch.zeros(16, 5, dtype=torch.long),
                                               "labels": torch.zeros(12, 5, dtype=torch.long)}], **FAST)


def test_landscape_holds_the_same_contract_for_an_endless_loader(capsys, user, tmp_path):
    args = ("landscape", user / "w.pt", "--model", f"{user / 'user.py'}:net", "--data", f"{user / 'user.py'}:endless",
            "--dims", "1", "--points", "3")
    assert_input_error(run_cli(capsys, *args, "--out", tmp_path / "a"), "finite analysis set", "--samples N")
    code, _, err = run_cli(capsys, *args, "--samples", "24", "--out", tmp_path / "b")
    assert code == 0, err
    assert (tmp_path / "b" / "landscape_1d.npz").is_file()


def test_the_cli_builds_a_checkpoints_model_in_eval_mode_so_no_notice_is_due(capsys, tmp_path):
    (tmp_path / "drop.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn
        def net():
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Dropout(0.5), nn.Linear(5, 3))
    '''))
    ns: dict = {}
    exec((tmp_path / "drop.py").read_text(), ns)
    torch.save(ns["net"]().state_dict(), tmp_path / "w.pt")
    x, y = _data()
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    code, _, err = run_cli(capsys, "analyze", tmp_path / "w.pt", "--model", f"{tmp_path / 'drop.py'}:net",
                           "--data", tmp_path / "d.npz", "--no-trace")
    assert code == 0, err
    assert "train mode" not in err  # a checkpoint holds weights, not a mode


def test_a_sweeps_analysis_options_are_checked_before_the_first_run_trains(tmp_path):
    from sharpness.data import load_dataset
    from sharpness.sweep import sweep
    from sharpness.train import TrainConfig

    base = TrainConfig(model="mlp", data="blobs", epochs=1, batch_size=8, model_kwargs={"hidden": [4]})
    blobs = load_dataset("blobs", n=40, n_test=10, dim=3, classes=3, seed=5)
    with pytest.raises(InputError, match="epsilon"):
        sweep(base, batch_sizes=[8], seeds=[0], out_dir=tmp_path / "s", analyze=True, dataset=blobs,
              analyze_options={"epsilon": (float("nan"),)})
    assert not list((tmp_path / "s").glob("runs/*.pt"))  # nothing trained
