"""How a run ends: its :class:`TrainResult`, or one of the two exceptions that stop it early."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import InputError
from .config import TrainConfig


class TrainingDiverged(InputError):
    """The loss became NaN/Inf; the last good weights were written to :attr:`checkpoint_path` (if any)."""

    def __init__(self, message: str, *, step: int, epoch: int, loss: float, checkpoint_path: str | None):
        super().__init__(message)
        self.step, self.epoch, self.loss, self.checkpoint_path = step, epoch, loss, checkpoint_path


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C/SIGTERM stopped training after step :attr:`step`; :attr:`resume_path` holds the state (or None)."""

    def __init__(self, message: str, *, step: int, resume_path: str | None):
        super().__init__(message)
        self.step, self.resume_path = step, resume_path


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What :func:`train` returns.

    ``model``: the trained module (a copy when a model was passed in); ``history``: per-epoch records;
    ``metrics``: final train/test loss and accuracy, generalization gaps, distance from the initial weights,
    duration and cost (see :func:`train`); ``config``: the configuration; ``checkpoint_path``: where the
    checkpoint was written (None without ``out``).
    """

    model: nn.Module
    history: list
    metrics: dict
    config: TrainConfig
    checkpoint_path: str | None
