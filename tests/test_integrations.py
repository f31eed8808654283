"""Tests for sharpness.integrations: lazy imports, TensorBoard scalars, the Lightning callback.

Neither ``tensorboard`` nor Lightning is a dependency of the core; CI installs them (the ``[all]`` extra) and the
tests against the real packages skip only where they are missing. The callback's and the writer's logic is also
tested against small stand-ins, and the "not installed" messages with the packages hidden from the import system,
so every test here runs whether or not the packages are installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest
import torch
from torch import nn

from import_helpers import hide
from sharpness.tracking import SharpnessTracker, record_scalars


def have(*names: str) -> bool:
    return any(importlib.util.find_spec(n) is not None for n in names)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def test_importing_the_package_never_imports_the_optional_tools():
    import sharpness.integrations as integrations

    assert set(integrations.__all__) == {"SharpnessCallback", "TensorBoardWriter", "WandbWriter",
                                         "SharpnessTrainerCallback", "gate", "load_pretrained"}
    importlib.import_module("sharpness.integrations.tensorboard")  # imports no tensorboard until a writer is made
    with pytest.raises(AttributeError, match="no attribute"):
        integrations.nothing_here


# --- TensorBoard ------------------------------------------------------------------------------------------------


class FakeSummaryWriter:
    def __init__(self):
        self.scalars: list[tuple[str, float, int]] = []
        self.flushed = 0

    def add_scalar(self, tag, value, global_step=None):
        self.scalars.append((tag, value, global_step))

    def flush(self):
        self.flushed += 1


def test_tensorboard_writer_writes_each_record_at_its_step(data):
    from sharpness.integrations.tensorboard import TensorBoardWriter

    fake = FakeSummaryWriter()
    writer = TensorBoardWriter(writer=fake)
    tracker = SharpnessTracker(*data, top_k=2, listeners=[writer])
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in (0, 7):
        tracker.measure(model, step, optimizer=opt)
    expected = [(tag, value, r["step"]) for r in tracker.records for tag, value in record_scalars(r).items()]
    assert fake.scalars == expected
    tags = {t for t, _, _ in fake.scalars}
    assert {"sharpness/lambda_max", "sharpness/lambda_2", "sharpness/eos_threshold", "sharpness/lambda_max_ratio"} <= tags
    assert ("sharpness/eos_threshold", 4.0, 7) in fake.scalars  # 2/0.5
    writer.on_train_end(None)
    assert fake.flushed == 1


def test_tensorboard_writer_without_tensorboard_says_what_to_install(tmp_path, monkeypatch):
    from sharpness.integrations.tensorboard import TensorBoardWriter

    hide(monkeypatch, "tensorboard")
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardWriter(tmp_path)


def test_tensorboard_writer_real_event_files(tmp_path, data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sharpness.integrations.tensorboard import TensorBoardWriter

    tracker = SharpnessTracker(*data)
    tracker.measure(tiny_model(), 3, lr=0.1)
    writer = TensorBoardWriter(tmp_path)
    writer.write_all(tracker.records)
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    (point,) = events.Scalars("sharpness/lambda_max")
    assert point.step == 3 and point.value == pytest.approx(tracker.records[0]["lambda_max"], rel=1e-6)  # float32 in the file


# --- Weights & Biases -------------------------------------------------------------------------------------------


class FakeRun:
    def __init__(self):
        self.logged: list[dict] = []
        self.metrics: list[tuple[str, str | None]] = []

    def log(self, row):
        self.logged.append(row)

    def define_metric(self, name, step_metric=None):
        self.metrics.append((name, step_metric))


def test_wandb_writer_logs_each_record_on_its_own_step_axis(data):
    from sharpness.integrations.wandb import WandbWriter

    run = FakeRun()
    tracker = SharpnessTracker(*data, top_k=2, listeners=[WandbWriter(run)])
    model = tiny_model()
    for step in (0, 5):
        tracker.measure(model, step, lr=0.5)
    assert run.metrics == [("sharpness/step", None), ("sharpness/*", "sharpness/step")]
    assert run.logged == [{"sharpness/step": r["step"], **record_scalars(r)} for r in tracker.records]
    with pytest.raises(TypeError, match="both"):
        WandbWriter(run, project="x")


def test_wandb_writer_without_wandb_says_what_to_install(monkeypatch):
    from sharpness.integrations.wandb import WandbWriter

    hide(monkeypatch, "wandb")
    with pytest.raises(ImportError, match="pip install wandb"):
        WandbWriter(mode="offline")


def read_wandb_records(path) -> list:
    """The records of an offline run's ``run-*.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    LevelDB-log chunks in 32 KiB blocks (4-byte CRC, 2-byte length, 1-byte type: 1 full, 2 first, 3 middle,
    4 last), each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    pos, block, pieces, records = 7, 32768, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # the tail of a block too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(raw[pos + 4:pos + 6], "little"), raw[pos + 6]
        pieces += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            records.append(record)
    return records


def read_wandb_history(run_dir) -> list[dict]:
    """The history rows of an offline run, once its file is complete: ``run.finish()`` returns before W&B's
    service has written the file (seen: only the header, at load 5), so wait for the closing ``exit`` record."""
    import json
    import time
    from pathlib import Path

    (path,) = Path(run_dir).glob("run-*.wandb")
    deadline = time.monotonic() + 60
    while True:
        records = read_wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]


def test_wandb_offline_run_files_hold_the_records(tmp_path, data, monkeypatch):
    pytest.importorskip("wandb")
    from sharpness.integrations.wandb import WandbWriter

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("CACHE", "CONFIG", "DATA"):  # W&B's own logs and settings stay in tmp_path, not in ~/.cache
        monkeypatch.setenv(f"WANDB_{name}_DIR", str(tmp_path / name.lower()))
    writer = WandbWriter(project="sharpness-test", dir=str(tmp_path), mode="offline")
    run_dir = writer.run.dir.removesuffix("/files")
    tracker = SharpnessTracker(*data, listeners=[writer])
    for step in (0, 4, 8):
        tracker.measure(tiny_model(step), step, lr=0.1)
    writer.close()
    rows = [r for r in read_wandb_history(run_dir) if "sharpness/lambda_max" in r]
    assert [r["sharpness/step"] for r in rows] == [0, 4, 8]
    assert [r["sharpness/lambda_max"] for r in rows] == [r["lambda_max"] for r in tracker.records]  # JSON: exact
    assert all(r["sharpness/eos_threshold"] == pytest.approx(20.0) for r in rows)


def test_importing_sharpness_and_its_cli_imports_no_integration_package():
    import subprocess

    code = ("import sys, sharpness, sharpness.cli, sharpness.integrations, sharpness.integrations.tensorboard, "
            "sharpness.integrations.wandb, sharpness.integrations.pretrained; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'wandb', 'transformers', 'lightning', "
            "'pytorch_lightning', 'tensorboard', 'safetensors'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# --- Lightning --------------------------------------------------------------------------------------------------


def test_lightning_module_without_lightning_says_what_to_install(monkeypatch):
    hide(monkeypatch, "lightning", "pytorch_lightning")
    monkeypatch.delitem(sys.modules, "sharpness.integrations.lightning", raising=False)
    with pytest.raises(ImportError, match="pip install lightning"):
        importlib.import_module("sharpness.integrations.lightning")


@pytest.fixture
def stub_lightning(monkeypatch):
    """A stand-in ``lightning.pytorch`` exposing only ``Callback``, so the callback's logic is testable without
    Lightning; the module is imported fresh against it and forgotten afterwards."""
    pytorch = types.ModuleType("lightning.pytorch")
    pytorch.Callback = type("Callback", (), {})
    root = types.ModuleType("lightning")
    root.pytorch = pytorch
    monkeypatch.setitem(sys.modules, "lightning", root)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", pytorch)
    monkeypatch.delitem(sys.modules, "sharpness.integrations.lightning", raising=False)
    module = importlib.import_module("sharpness.integrations.lightning")
    yield module
    sys.modules.pop("sharpness.integrations.lightning", None)


class FakeTrainer:
    """What the callback reads from a Trainer: rank, step, epoch, optimizers, loggers and the datamodule."""

    def __init__(self, optimizer, loader):
        self.is_global_zero = True
        self.global_step = self.current_epoch = 0
        self.optimizers = [optimizer]
        self.datamodule = types.SimpleNamespace(train_dataloader=lambda: loader)
        self.logged: list[tuple[dict, int]] = []
        self.loggers = [types.SimpleNamespace(log_metrics=lambda m, step: self.logged.append((m, step)))]


def test_lightning_callback_logic_with_a_stand_in(stub_lightning, data):
    x, y = data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.25)
    trainer = FakeTrainer(opt, loader)
    callback = stub_lightning.SharpnessCallback(every=2, analysis_samples=40, held_out=False)
    rng = torch.get_rng_state()
    callback.on_train_start(trainer, model)
    assert torch.equal(torch.get_rng_state(), rng)  # reading the shuffled loader did not shift the global RNG
    assert callback.tracker.analysis_set["n_samples"] == 40 and callback.tracker.analysis_set["n_available"] == 48
    for batch_idx in range(5):  # gradient accumulation over 2 micro-batches: global_step advances every other call
        trainer.global_step = (batch_idx + 1) // 2
        callback.on_train_batch_end(trainer, model, None, None, batch_idx)
    trainer.global_step = 3
    callback.on_train_end(trainer, model)
    records = callback.tracker.records
    assert [r["step"] for r in records] == [0, 2, 3]  # start, every 2nd optimizer step once, end
    assert all(r["eos_threshold"] == pytest.approx(8.0) for r in records)  # 2/0.25
    assert [step for _, step in trainer.logged] == [0, 2, 3]
    assert trainer.logged[1][0] == record_scalars(records[1])

    state = callback.state_dict()
    again = stub_lightning.SharpnessCallback(every=2)
    again.load_state_dict(state)
    assert again.tracker.records == records


def test_lightning_callback_in_a_real_fit_leaves_training_bit_identical(data, tmp_path):
    pl = pytest.importorskip("lightning.pytorch") if have("lightning") else pytest.importorskip("pytorch_lightning")
    from sharpness.integrations.lightning import SharpnessCallback

    x, y = data

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = tiny_model()

        def forward(self, inputs):
            return self.net(inputs)

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def fit(callbacks, logger=False):
        torch.manual_seed(0)
        module = Module()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
        trainer = pl.Trainer(max_steps=8, callbacks=callbacks, logger=logger, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                             deterministic=True)
        trainer.fit(module, loader)
        return module

    plain = fit([])
    callback = SharpnessCallback(x, y, every=4, analysis_samples=32)
    logger = pl.loggers.CSVLogger(str(tmp_path), name="fit")  # Lightning's own logger, read back below
    tracked = fit([callback], logger)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), tracked.state_dict().values()))
    records = callback.tracker.records
    assert [r["step"] for r in records] == [0, 4, 8]
    assert records[1]["eos_threshold"] == pytest.approx(3.8 / 0.1)
    import csv

    with open(f"{logger.log_dir}/metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("sharpness/lambda_max")]
    assert [int(r["step"]) for r in rows] == [0, 4, 8]
    assert [float(r["sharpness/lambda_max"]) for r in rows] == pytest.approx([r["lambda_max"] for r in records], rel=1e-12)
