"""Track sharpness during ``lightning.Trainer.fit``: a Lightning callback around :class:`SharpnessTracker`.

    from sharpness.integrations.lightning import SharpnessCallback
    trainer = L.Trainer(callbacks=[SharpnessCallback(every=20)], ...)
    trainer.fit(module, datamodule=dm)
    records = trainer.callbacks[0].tracker.records

Works with ``lightning.pytorch`` (Lightning ≥ 2) or, if only that is installed, ``pytorch_lightning``; this
module imports whichever is present and raises an ``ImportError`` saying what to install otherwise.

* **The model** is the LightningModule itself: its ``forward`` must map a batch of inputs to outputs (logits
  for cross-entropy, predictions for MSE), as for any model the toolkit analyzes. The tracker deep-copies it
  (Lightning ≥ 2 leaves the Trainer out of copies; for 1.x the module's own guard is used), so training is
  untouched, bit for bit.
* **The analysis batch** is drawn once, at ``on_train_start``, from ``inputs``/``targets`` if given, else from
  the datamodule's ``train_dataloader()`` (else the Trainer's training loader): batches are read until
  ``analysis_samples`` are collected (``batch_to_xy`` maps a batch to ``(x, y)``; default: its first two
  entries), then the tracker's seeded draw picks them. Reading the loader happens with the global RNG states
  saved and restored, so the training run's shuffling is not shifted. Pass tensors to control it exactly.
* **When**: after every ``every``-th optimizer step (``trainer.global_step``; with gradient accumulation the
  hook fires per micro-batch but each step is measured once), at the start and at the end; on global rank 0
  only. Each record is also sent to the Trainer's loggers as ``sharpness/…`` scalars (``log=True``).
* **Checkpoints**: the tracker's records and warm-start vectors are saved in Lightning checkpoints through
  the callback's ``state_dict``, so a resumed fit continues the series.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import Tensor

from ..errors import InputError
from ..tracking import SharpnessTracker, preserved_rng, record_scalars

try:
    from lightning.pytorch import Callback as _LightningCallback

    FLAVOR = "lightning"
except ImportError:
    try:
        from pytorch_lightning import Callback as _LightningCallback

        FLAVOR = "pytorch_lightning"
    except ImportError:
        raise ImportError(
            "sharpness.integrations.lightning needs Lightning (pip install lightning, or pytorch-lightning); "
            "got neither 'lightning' nor 'pytorch_lightning'"
        ) from None

__all__ = ["SharpnessCallback", "FLAVOR"]


def first_two(batch: Any) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of a batch that is a tuple/list whose first two entries are the inputs and targets."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise InputError(f"expected batches as (inputs, targets, ...) tuples, got {type(batch).__name__}; "
                     "pass batch_to_xy= or inputs/targets tensors")


class SharpnessCallback(_LightningCallback):
    """Runs a :class:`~sharpness.tracking.SharpnessTracker` during ``Trainer.fit``.

    Args:
        inputs: a tensor to draw the analysis batch from (default: the training loader, module docstring).
        targets: the targets of ``inputs``.
        every: measure after every ``every``-th optimizer step. Default 20.
        tracker: a configured tracker to use (then the tracker options below must be left out).
        batch_to_xy: maps a loader batch to ``(inputs, targets)``; default: its first two entries.
        log: send each record's scalars to ``trainer.loggers``.
        **tracker_options: keyword arguments of :class:`SharpnessTracker` (``analysis_samples``, ``top_k``,
            ``lambda_min``, ``trace``, ``tol``, ``seed``, ``listeners``, ...).

    Attributes:
        tracker: the tracker; ``tracker.records`` holds the series.
    """

    def __init__(
        self,
        inputs: Tensor | None = None,
        targets: Tensor | None = None,
        *,
        every: int = 20,
        tracker: SharpnessTracker | None = None,
        batch_to_xy: Callable[[Any], tuple[Tensor, Tensor]] = first_two,
        log: bool = True,
        **tracker_options: Any,
    ) -> None:
        super().__init__()
        if tracker is not None and (tracker_options or inputs is not None):
            raise InputError("expected either tracker= or tracker options/inputs, got both")
        self.tracker = tracker if tracker is not None else SharpnessTracker(inputs, targets, every=every, **tracker_options)
        self.batch_to_xy = batch_to_xy
        self.log = log

    # --- data ---------------------------------------------------------------------------------------------
    def _loader(self, trainer: Any) -> Any:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and callable(getattr(datamodule, "train_dataloader", None)):
            return datamodule.train_dataloader()
        loader = getattr(trainer, "train_dataloader", None)
        if loader is None:
            raise InputError("expected a datamodule or a training dataloader to draw the analysis batch from, got "
                             "neither; pass inputs/targets to SharpnessCallback")
        return loader

    def _collect(self, trainer: Any) -> tuple[Tensor, Tensor]:
        want = self.tracker.analysis_samples
        xs, ys, n = [], [], 0
        with preserved_rng():  # a shuffling sampler draws its seed from the global RNG
            for batch in self._loader(trainer):
                x, y = self.batch_to_xy(batch)
                xs.append(x.detach().cpu())
                ys.append(y.detach().cpu())
                n += int(x.shape[0])
                if want is not None and n >= want:
                    break
        if not xs:
            raise InputError("expected a non-empty training dataloader for the analysis batch, got no batches")
        return torch.cat(xs), torch.cat(ys)

    # --- hooks ----------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        if not self.tracker.has_analysis_batch:
            self.tracker.set_data(*((None, None) if self.tracker.has_source else self._collect(trainer)))
        step = int(trainer.global_step)
        if self.tracker.measure_at_start and not self.tracker.measured_at(step):
            self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, *_: Any) -> None:
        # (*_: pytorch_lightning 1.x passed a dataloader index too)
        if trainer.is_global_zero and self.tracker.due(int(trainer.global_step)):
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero and self.tracker.measure_at_end and not self.tracker.measured_at(int(trainer.global_step)):
            self._measure(trainer, pl_module)

    def _measure(self, trainer: Any, pl_module: Any) -> None:
        optimizers = list(getattr(trainer, "optimizers", None) or [])
        optimizer = optimizers[0] if len(optimizers) == 1 else None  # several optimizers: no single threshold
        step = int(trainer.global_step)
        with _without_trainer_in_copies(pl_module):
            record = self.tracker.measure(pl_module, step, epoch=int(trainer.current_epoch), optimizer=optimizer)
        if self.log:
            scalars = record_scalars(record)
            for logger in getattr(trainer, "loggers", None) or []:
                logger.log_metrics(scalars, step=step)

    # --- checkpoints ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return self.tracker.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.tracker.load_state_dict(state_dict)


def _without_trainer_in_copies(pl_module: Any) -> Any:
    """Lightning 1.x deep-copies the Trainer with the module unless this (private) guard is on; ≥ 2 never does."""
    guard = getattr(pl_module, "_prevent_trainer_and_dataloaders_deepcopy", None)
    return guard() if callable(guard) else contextlib.nullcontext()
