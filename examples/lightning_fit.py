"""A Lightning `Trainer.fit` with `SharpnessCallback`: λ_max every few optimizer steps, in the Trainer's loggers.

    pip install sharpness[lightning]
    python examples/lightning_fit.py [--steps 40] [--every 10] [--logs lightning_logs/]

The callback measures at the start, after every `--every`-th optimizer step and at the end, on a fixed analysis
batch drawn once from the training loader, and sends each record to the Trainer's loggers (here a CSVLogger:
`sharpness/lambda_max`, `sharpness/eos_threshold`, ... in `metrics.csv`). The model is deep-copied for each
measurement, so the run trains exactly as it would without the callback. CPU, a few seconds.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl

from sharpness.integrations.lightning import SharpnessCallback


class Classifier(pl.LightningModule):
    """A small MLP; `forward` maps inputs to logits, which is all the callback needs."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 3))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = nn.functional.cross_entropy(self(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--logs", help="logger directory (default: a temporary one)")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    torch.manual_seed(0)
    callback = SharpnessCallback(every=args.every, analysis_samples=128, held_out=False)
    trainer = pl.Trainer(max_steps=args.steps, callbacks=[callback], accelerator="cpu", devices=1,
                         logger=pl.loggers.CSVLogger(args.logs or tempfile.mkdtemp(), name="sharpness"),
                         log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Classifier(), loader)
    for r in callback.tracker.records:
        print(f"step {r['step']:>3}: λ_max {r['lambda_max']:.4g}  (2/η = {r['eos_threshold']:.4g}), loss {r['loss']:.4f}")
    return callback.tracker.records


if __name__ == "__main__":
    main()
