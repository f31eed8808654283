"""``SharpnessCallback`` in a real two-process Lightning DDP fit on CPU (gloo): rank 0 measures and logs, rank 1
does not, nothing deadlocks, and the tracked λ_max is the synchronized model's (DDP over 2 shards of 8 equals one
process on batches of 16). Skipped only without Lightning (CI installs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from sharpness.integrations.lightning import SharpnessCallback  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parent.parent

COMMON = '''
import torch
from torch import nn
import lightning.pytorch as pl


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y
'''

SCRIPT = COMMON + '''
import json, os, sys
from sharpness.integrations.lightning import SharpnessCallback


class Report(pl.Callback):
    def __init__(self, out, tracking):
        self.out, self.tracking = out, tracking

    def on_train_end(self, trainer, pl_module):
        records = self.tracking.tracker.records
        with open(os.path.join(self.out, f"rank{trainer.global_rank}.json"), "w") as fh:
            json.dump({"steps": [r["step"] for r in records], "lambda_max": [r["lambda_max"] for r in records],
                       "world_size": trainer.world_size}, fh)


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = sys.argv[1]
    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    tracking = SharpnessCallback(x, y, every=2, analysis_samples=32)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", devices=2, strategy="ddp", precision="64-true",
                         callbacks=[tracking, Report(out, tracking)], logger=pl.loggers.CSVLogger(out, name="ddp"),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1)
    trainer.fit(Module(), loader)
'''


def test_two_process_ddp_fit_measures_on_rank_zero_the_synchronized_model(tmp_path):
    (tmp_path / "fit.py").write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(tmp_path / "fit.py"), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["steps"] == [0, 2, 4] and rank1["steps"] == []  # measured once, on the main process
    (metrics,) = tmp_path.glob("ddp/version_*/metrics.csv")
    import csv

    with open(metrics) as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("sharpness/lambda_max")]
    assert [float(r["sharpness/lambda_max"]) for r in rows] == pytest.approx(rank0["lambda_max"], rel=1e-12)

    # One process on batches of 16 in the order the two ranks saw: Lightning gives a training loader a shuffling
    # DistributedSampler (seed 0, epoch 0): rank r takes order[r::2] of order = randperm(64), so step k's two
    # shards of 8 are order[16k:16k+16], and the mean of the two shard gradients is that batch's gradient. The
    # same weights up to float64 rounding of the all-reduce, so the same λ_max far within Lanczos' tol.
    namespace: dict = {}
    exec(COMMON, namespace)
    x, y = namespace["data"]()
    single = SharpnessCallback(x, y, every=2, analysis_samples=32)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", devices=1, precision="64-true", callbacks=[single],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[order], y[order]), batch_size=16)
    trainer.fit(namespace["Module"](), loader)
    assert [r["step"] for r in single.tracker.records] == [0, 2, 4]
    assert rank0["lambda_max"] == pytest.approx([r["lambda_max"] for r in single.tracker.records], rel=1e-9)
