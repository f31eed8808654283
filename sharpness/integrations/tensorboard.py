"""Write :class:`~sharpness.tracking.SharpnessTracker` records as TensorBoard scalars.

    tracker = SharpnessTracker(every=20, listeners=[TensorBoardWriter("runs/lb")])   # live, as measured
    TensorBoardWriter("runs/lb").write_all(tracker.records)                         # or afterwards

Each record becomes the scalars of :func:`sharpness.tracking.record_scalars` (``sharpness/lambda_max``,
``sharpness/eos_threshold``, ``sharpness/lambda_max_ratio``, ...) at ``global_step = record["step"]``, so
λ_max and its stability threshold share an x-axis with the training curves. It uses
``torch.utils.tensorboard.SummaryWriter``, which needs the ``tensorboard`` package; that import happens when
a writer is created without ``writer=``, never when this module is imported.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from ..tracking import record_scalars

__all__ = ["TensorBoardWriter"]


def _summary_writer(log_dir: str | os.PathLike | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # torch's module imports the tensorboard package at import time
        raise ImportError(
            f"TensorBoardWriter needs the 'tensorboard' package (pip install tensorboard), got ImportError: {err}"
        ) from None
    return SummaryWriter(log_dir=None if log_dir is None else os.fspath(log_dir))


class TensorBoardWriter:
    """A tracker listener that writes each record as scalars to a TensorBoard log directory.

    Args:
        log_dir: where the event files go (``SummaryWriter``'s default ``runs/…`` when None).
        writer: any object with ``add_scalar(tag, value, global_step)`` (and optionally ``flush``/``close``),
            e.g. an existing ``SummaryWriter``; then ``log_dir`` is ignored and nothing is imported.
        prefix: tag prefix (default ``"sharpness/"``).

    It is also a :func:`sharpness.train.train` callback: ``on_train_end`` flushes the writer.
    """

    def __init__(self, log_dir: str | os.PathLike | None = None, *, writer: Any = None, prefix: str = "sharpness/") -> None:
        self.writer = writer if writer is not None else _summary_writer(log_dir)
        self.prefix = prefix

    def __call__(self, record: Mapping[str, Any]) -> None:
        """Write one record's scalars at its step."""
        step = int(record["step"])
        for tag, value in record_scalars(record, prefix=self.prefix).items():
            self.writer.add_scalar(tag, value, global_step=step)

    def write_all(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write every record (e.g. ``tracker.records`` after training) and flush."""
        for record in records:
            self(record)
        self.flush()

    def flush(self) -> None:
        if callable(getattr(self.writer, "flush", None)):
            self.writer.flush()

    def close(self) -> None:
        if callable(getattr(self.writer, "close", None)):
            self.writer.close()

    def on_train_end(self, state: Any) -> None:
        self.flush()
