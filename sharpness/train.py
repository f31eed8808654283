"""One training loop for small- and large-batch training: the batch size is a number, never a code path.

Keskar et al. (ICLR 2017) compare small-batch (SB, 256) and large-batch (LB, 10 % of the data) training from
the same initial weights; Goyal et al. (2017) keep large batches trainable with the linear learning-rate
scaling rule and a gradual warmup; Smith & Le (2018) and Jastrzębski et al. (2017) tie the SGD noise scale to
η/B. :func:`train` runs all of these from one :class:`TrainConfig`:

* **Batches.** The training split lives on the device as tensors. Each epoch draws a permutation from a
  ``torch.Generator`` seeded with the recorded data-order seed, and step ``b`` of the epoch uses samples
  ``perm[b·B : (b+1)·B]`` (no DataLoader). With ``drop_last=True`` (default) every step sees exactly B
  samples, so the noise scale η/B is the same for every step; the few left-over samples change every epoch.
* **Gradient accumulation.** A batch that does not fit in memory is cut into micro-batches
  (``accumulate=k`` near-equal parts, or as many parts of at most ``max_micro_batch`` as needed). Each
  micro-batch back-propagates ``Σ_{i∈micro} ℓ_i / B``, so the accumulated gradient is exactly the gradient
  of the batch mean ``(1/B) Σ_{i∈batch} ℓ_i`` whatever the micro-batch sizes (unequal parts are weighted
  by their size, not averaged as means). See :func:`accumulate_gradients`.
* **BatchNorm.** In train mode BatchNorm normalizes with the statistics of the samples in one forward pass.
  Default (``ghost_batch=None``): one forward pass per micro-batch, so *with accumulation the statistics
  are those of each micro-batch, not of the whole batch*; a true large-batch BN would need all B samples in
  one pass. ``ghost_batch=G`` is Hoffer et al.'s (NeurIPS 2017) ghost batch norm: every batch is cut into
  virtual batches of G samples (the last one smaller if G does not divide B), each forwarded on its own, so
  BatchNorm normalizes with G-sample statistics and updates its running averages once per virtual batch,
  while the gradient is still the mean over all B samples. It makes a large batch see small-batch BN noise.
  Since each virtual batch is already its own pass, ``ghost_batch`` excludes ``accumulate``.
* **Learning rate** (:class:`LRSchedule`): the peak η̂ is ``lr`` scaled for the batch relative to
  ``base_batch_size`` (``lr_scaling`` = ``none``: η̂ = η; ``linear``: η̂ = η·B/B₀ (Goyal et al.);
  ``sqrt``: η̂ = η·√(B/B₀) (Krizhevsky 2014; Hoffer et al. 2017)); a linear warmup over ``warmup_epochs``;
  then ``constant``, ``cosine`` (to 0 at the last step) or ``step`` (× ``gamma`` at each of ``milestones``).
* **Stopping.** ``epochs=E`` or ``steps=S``, or ``until_train_loss=L`` (stop at the end of the first epoch
  whose full-train-split loss is below L, at most ``max_epochs``) to compare minima at matched training loss.
* **Evaluation.** Every ``eval_every`` epochs (and at the end) the full train and test splits are evaluated
  without gradients in eval mode (BatchNorm running statistics, no dropout) in chunks of ``eval_chunk``.
  With ``until_train_loss`` the train split is evaluated every epoch (it is the stopping rule).
* **Randomness.** ``seed`` draws the initial weights (:func:`sharpness.models.build_model`) and, unless
  ``data_seed`` is given, the data order. In-model randomness (dropout) runs on the global RNG inside
  ``torch.random.fork_rng`` seeded from the data-order seed, so the caller's RNG state is never changed.
  Same configuration and seed → bit-identical weights on CPU; runs with the same ``seed`` (or the same
  ``init_from``) start from bit-identical weights whatever their batch size.
* **Failure and interruption.** A non-finite loss stops training before the update that would use it; the
  weights at the end of the last good epoch are written to ``out`` and :class:`TrainingDiverged` (an
  :class:`~sharpness.errors.InputError`, CLI exit 2) names the step. Ctrl-C (SIGINT) or SIGTERM is deferred
  to the end of the current step; then model, optimizer, RNG and data-order states, position and history are
  written atomically to ``out + ".resume"`` and :class:`TrainingInterrupted` is raised. ``resume=True``
  continues from that file and ends with the same weights, bit for bit, as an uninterrupted run.

Callbacks (the hook a sharpness tracker builds on) are described in :class:`Callback`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import load_state_strict, load_checkpoint, save_checkpoint
from .data import Dataset, hash_tensors, load_dataset
from .errors import InputError
from .models import build_model, model_spec
from .objective import per_sample_loss
from .rundir import atomic_write, check_writable

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "Callback",
    "LRSchedule",
    "TrainingDiverged",
    "TrainingInterrupted",
    "train",
    "lr_schedule",
    "resolve_batch_size",
    "micro_batch_sizes",
    "accumulate_gradients",
    "resume_path",
    "snapshot_path",
]

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCALINGS = ("none", "linear", "sqrt")
SCHEDULES = ("constant", "cosine", "step")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
RESUME_FORMAT = "sharpness.train-resume/1"


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


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; each ``sharpness train`` option is the field of the same name.

    What to train: ``data`` (a :func:`sharpness.data.load_dataset` name, with ``data_kwargs``, ``data_dir``,
    ``subset``; the dataset's own generation seed is ``data_kwargs["seed"]``, default 0, independent of the
    training seed), ``model`` (a built-in name or ``"file.py:fn"`` factory, with ``model_kwargs``), ``loss``
    (``auto``: cross-entropy for integer labels, else mean squared error, as in
    :class:`~sharpness.objective.Objective`).

    Batches: ``batch_size`` (an int, ``"10%"`` of the training samples, or ``"full"``), ``drop_last``,
    ``accumulate`` / ``max_micro_batch`` (gradient accumulation), ``ghost_batch`` (ghost batch norm).

    Optimizer: ``optimizer`` (``sgd``, ``adam``, ``adamw``), ``lr``, ``momentum`` and ``nesterov`` (SGD only),
    ``weight_decay`` (L2 added to the gradient for SGD/Adam, decoupled for AdamW).

    Learning-rate rule: ``lr_scaling``, ``base_batch_size``, ``warmup_epochs``, ``schedule``, ``milestones``
    (epochs; default half and three quarters of the run for ``step``), ``gamma`` (see :class:`LRSchedule`).

    Duration: exactly one of ``epochs``, ``steps`` or ``until_train_loss`` (which needs ``max_epochs``).

    Randomness and start: ``seed``, ``data_seed``, ``init_from`` (a checkpoint whose weights start the run).

    Output: ``eval_every``, ``eval_chunk``, ``save_every`` (snapshots ``out_stem.epoch{k}.pt``), ``resume``.
    Where: ``device`` (``auto``, ``cpu``, ``cuda[:i]``), ``dtype`` (``float32`` or ``float64``).
    """

    data: str = "mnist1d"
    model: str = "mlp"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    data_kwargs: Mapping[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    subset: int | None = None
    loss: str = "auto"

    batch_size: int | str = 32
    drop_last: bool = True
    accumulate: int | None = None
    max_micro_batch: int | None = None
    ghost_batch: int | None = None

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    lr_scaling: str = "none"
    base_batch_size: int = 256
    warmup_epochs: float = 0.0
    schedule: str = "constant"
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1

    epochs: int | None = None
    steps: int | None = None
    until_train_loss: float | None = None
    max_epochs: int | None = None

    seed: int = 0
    data_seed: int | None = None
    init_from: str | None = None

    eval_every: int = 1
    eval_chunk: int = 4096
    save_every: int | None = None
    resume: bool = False
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("model_kwargs", dict(self.model_kwargs or {}))
        set_("data_kwargs", dict(self.data_kwargs or {}))
        set_("milestones", tuple(float(m) for m in (self.milestones or ())))
        set_("batch_size", _parse_batch_size(self.batch_size))
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"expected optimizer one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr_scaling not in LR_SCALINGS:
            raise InputError(f"expected lr_scaling one of {', '.join(LR_SCALINGS)}, got {self.lr_scaling!r}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"expected schedule one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"expected dtype float32 or float64, got {self.dtype!r}")
        if self.loss not in ("auto", "cross-entropy", "mse"):
            raise InputError(f"expected loss auto, cross-entropy or mse, got {self.loss!r}")
        _check(isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0, "lr", "a finite number > 0", self.lr)
        _check(0 <= self.momentum < 1, "momentum", "a number in [0, 1)", self.momentum)
        _check(self.weight_decay >= 0, "weight_decay", "a number ≥ 0", self.weight_decay)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise InputError(f"expected nesterov only with optimizer sgd and momentum > 0, got optimizer "
                             f"{self.optimizer!r} with momentum {self.momentum}")
        if self.momentum and self.optimizer != "sgd":
            raise InputError(f"expected momentum only with optimizer sgd (Adam has betas), got optimizer {self.optimizer!r}")
        for name in ("base_batch_size", "eval_every", "eval_chunk"):
            _check(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an integer ≥ 1", getattr(self, name))
        for name in ("accumulate", "max_micro_batch", "ghost_batch", "epochs", "steps", "max_epochs", "save_every", "subset"):
            value = getattr(self, name)
            _check(value is None or (_is_int(value) and value >= 1), name, "an integer ≥ 1 or None", value)
        for name in ("seed", "data_seed"):
            value = getattr(self, name)
            _check(value is None and name == "data_seed" or _is_int(value), name, "an integer", value)
        _check(self.warmup_epochs >= 0, "warmup_epochs", "a number ≥ 0", self.warmup_epochs)
        _check(0 < self.gamma <= 1, "gamma", "a number in (0, 1]", self.gamma)
        ms = self.milestones
        _check(all(m > 0 for m in ms) and list(ms) == sorted(set(ms)), "milestones", "increasing epochs > 0", list(ms))
        if self.accumulate is not None and self.max_micro_batch is not None:
            raise InputError(f"expected accumulate or max_micro_batch, not both; got {self.accumulate} and {self.max_micro_batch}")
        if self.ghost_batch is not None and (self.accumulate is not None or self.max_micro_batch is not None):
            raise InputError("expected ghost_batch without accumulate/max_micro_batch (each virtual batch is already "
                             f"its own forward pass), got ghost_batch={self.ghost_batch} with accumulation")
        given = [n for n in ("epochs", "steps", "until_train_loss") if getattr(self, n) is not None]
        if len(given) != 1:
            raise InputError(f"expected exactly one of epochs, steps or until_train_loss, got {given or 'none'}")
        if self.until_train_loss is not None:
            _check(math.isfinite(self.until_train_loss) and self.until_train_loss > 0, "until_train_loss",
                   "a finite number > 0", self.until_train_loss)
            if self.max_epochs is None:
                raise InputError("expected max_epochs (the cap) with until_train_loss, got none")
        elif self.max_epochs is not None:
            raise InputError(f"expected max_epochs only with until_train_loss, got max_epochs={self.max_epochs} with {given[0]}")

    def to_dict(self) -> dict:
        """Plain JSON-able values (tuples → lists), as recorded in checkpoints."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`InputError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(f"expected TrainConfig fields, got unknown {', '.join(unknown)}")
        return cls(**dict(values))

    @property
    def order_seed(self) -> int:
        """The data-order (and dropout) seed: ``data_seed`` if given, else ``seed``."""
        return self.seed if self.data_seed is None else self.data_seed


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise InputError(f"expected {name} to be {expected}, got {got!r}")


def _parse_batch_size(value: int | str) -> int | str:
    """Normalize ``32``, ``"32"``, ``"10%"``, ``"full"``; the fraction is resolved later against n_train."""
    if _is_int(value):
        if value < 1:
            raise InputError(f"expected batch_size ≥ 1, a percentage like '10%' or 'full', got {value}")
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "full":
            return "full"
        if text.endswith("%"):
            try:
                pct = float(text[:-1])
            except ValueError:
                pct = float("nan")
            if not 0 < pct <= 100:
                raise InputError(f"expected a batch_size percentage in (0%, 100%], got {value!r}")
            return f"{pct:g}%"
        if text.isdigit():
            return _parse_batch_size(int(text))
    raise InputError(f"expected batch_size as an integer ≥ 1, a percentage like '10%' or 'full', got {value!r}")


def resolve_batch_size(batch_size: int | str, n_train: int) -> int:
    """The batch size in samples: an int as is, ``"p%"`` → round(p/100 · n_train) (≥ 1), ``"full"`` → n_train.

    Raises:
        InputError: unparsable, ≤ 0, or larger than the ``n_train`` training samples.
    """
    spec = _parse_batch_size(batch_size)
    if spec == "full":
        return int(n_train)
    if isinstance(spec, str):
        return max(1, int(math.floor(float(spec[:-1]) / 100 * n_train + 0.5)))
    if spec > n_train:
        raise InputError(f"expected batch_size ≤ the {n_train} training samples, got {spec}")
    return spec


def micro_batch_sizes(
    batch: int, *, accumulate: int | None = None, max_micro_batch: int | None = None, ghost_batch: int | None = None
) -> list[int]:
    """How one batch of ``batch`` samples is split into forward passes (sizes sum to ``batch``).

    ``accumulate=k``: k near-equal parts (the first ``batch % k`` one larger); ``max_micro_batch=M``:
    ⌈batch/M⌉ near-equal parts; ``ghost_batch=G``: parts of G and a smaller remainder; none: one part.
    """
    if ghost_batch is not None:
        full, rest = divmod(batch, ghost_batch)
        return [ghost_batch] * full + ([rest] if rest else [])
    parts = 1
    if accumulate is not None:
        if accumulate > batch:
            raise InputError(f"expected accumulate ≤ batch size {batch}, got {accumulate}")
        parts = accumulate
    elif max_micro_batch is not None:
        parts = -(-batch // max_micro_batch)
    base, extra = divmod(batch, parts)
    return [base + 1] * extra + [base] * (parts - extra)


# ----------------------------------------------------------------------------------------------------------
# Learning-rate schedule
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate of every step, a pure function of the step index t = 0, 1, … (the t-th update).

    With peak η̂, warmup length W steps, start s and total T steps:

        t < W:  lr(t) = s + (η̂ − s)·(t + 1)/W                       (linear warmup, Goyal et al. 2017 §2.2)
        t ≥ W:  constant  η̂
                cosine    η̂ · ½(1 + cos(π (t − W)/(T − W)))
                step      η̂ · γ^(number of milestone steps ≤ t)

    The warmup starts from the unscaled reference rate s = min(η, η̂) when a scaling rule is active (Goyal
    et al. ramp from η to kη), and from s = 0 without one (so a warmup still means something).
    """

    peak: float
    start: float
    warmup_steps: int
    total_steps: int
    schedule: str
    milestone_steps: tuple[int, ...]
    gamma: float

    def __call__(self, t: int) -> float:
        if t < self.warmup_steps:
            return self.start + (self.peak - self.start) * (t + 1) / self.warmup_steps
        if self.schedule == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            return self.peak * 0.5 * (1.0 + math.cos(math.pi * min(t - self.warmup_steps, span) / span))
        if self.schedule == "step":
            return self.peak * self.gamma ** sum(1 for m in self.milestone_steps if m <= t)
        return self.peak


def lr_schedule(config: TrainConfig, *, batch_size: int, steps_per_epoch: int) -> LRSchedule:
    """The :class:`LRSchedule` of ``config`` for a resolved ``batch_size`` and ``steps_per_epoch``.

    The horizon T is ``epochs``·steps_per_epoch, ``steps``, or ``max_epochs``·steps_per_epoch for
    ``until_train_loss`` (the cap). Warmup and milestones are given in epochs and rounded to steps.
    """
    ratio = batch_size / config.base_batch_size
    scale = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[config.lr_scaling]
    peak = config.lr * scale
    start = 0.0 if config.lr_scaling == "none" else min(config.lr, peak)
    if config.steps is not None:
        total = config.steps
    else:
        total = (config.epochs if config.epochs is not None else config.max_epochs) * steps_per_epoch
    milestones = config.milestones
    if config.schedule == "step" and not milestones:
        milestones = (0.5 * total / steps_per_epoch, 0.75 * total / steps_per_epoch)
    return LRSchedule(
        peak=peak, start=start, warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
        total_steps=int(total), schedule=config.schedule,
        milestone_steps=tuple(int(round(m * steps_per_epoch)) for m in milestones), gamma=config.gamma,
    )


# ----------------------------------------------------------------------------------------------------------
# One step's gradient
# ----------------------------------------------------------------------------------------------------------


def resolve_loss(loss: str, targets: Tensor) -> str:
    """``auto`` → ``cross-entropy`` for integer targets, ``mse`` for floating ones."""
    if loss == "auto":
        return "mse" if targets.is_floating_point() else "cross-entropy"
    return loss


def accumulate_gradients(
    model: nn.Module, inputs: Tensor, targets: Tensor, *, sizes: Sequence[int] | None = None, loss: str = "auto"
) -> Tensor:
    """Add ∇_θ (1/B) Σ_i ℓ(model(x_i), y_i) over the B = ``len(inputs)`` samples to the parameters' ``.grad``.

    The batch is forwarded in consecutive parts of ``sizes`` samples (default: one pass); part p
    back-propagates Σ_{i∈p} ℓ_i / B, so the accumulated gradient is the gradient of the batch mean for any
    split, equal or not (up to floating-point summation order). ``model`` runs in whatever mode it is in:
    in train mode each part's BatchNorm uses that part's statistics (module docstring). The loss is
    ``cross-entropy`` or ``mse`` (per-sample mean over outputs), the same definition the analysis
    :class:`~sharpness.objective.Objective` uses.

    Returns:
        the batch mean loss (a detached 0-dim tensor).
    """
    total = int(inputs.shape[0])
    sizes = [total] if sizes is None else list(sizes)
    if sum(sizes) != total or any(s < 1 for s in sizes):
        raise ValueError(f"expected positive micro-batch sizes summing to {total}, got {sizes}")
    kind = resolve_loss(loss, targets)
    loss_sum = None
    start = 0
    for size in sizes:
        part = slice(start, start + size)
        start += size
        summed = per_sample_loss(kind, model(inputs[part]), targets[part]).sum()
        (summed / total).backward()
        loss_sum = summed.detach() if loss_sum is None else loss_sum + summed.detach()
    return loss_sum / total


# ----------------------------------------------------------------------------------------------------------
# Callbacks
# ----------------------------------------------------------------------------------------------------------


class TrainState:
    """The live view of a run that callbacks receive (one object, updated in place).

    Attributes:
        model: the module being trained (in train mode during steps).
        optimizer: the ``torch.optim`` optimizer.
        config: the :class:`TrainConfig`.
        step: number of optimizer updates done so far (0 before the first).
        epoch: number of completed epochs.
        batch: index of the next batch within the current epoch (0 … ``steps_per_epoch``).
        lr: learning rate of the last update (of the next one in ``on_train_begin``).
        loss: mean loss of the last batch, computed *before* that update (``None`` before the first step).
        batch_size, steps_per_epoch, total_steps: the resolved sizes (``total_steps`` is the cap).
        history: the per-epoch records so far (list of dicts, see :func:`train`).
        x_train, y_train, x_test, y_test: the splits as tensors on the training device/dtype.
        data_spec: the dataset spec; ``device``, ``dtype``: where training runs.
        resumed: True when this run continued from a ``.resume`` file.
        stop: set to True to end training after the current step (recorded as ``stopped_by="callback"``).
    """

    def __init__(self, **values: Any) -> None:
        self.stop = False
        self.loss: float | None = None
        self.__dict__.update(values)


class Callback(Protocol):
    """Hooks called by :func:`train`; every method is optional (only those present are called).

    ``on_train_begin(state)``: after the weights are initialized (or restored on resume), before step 1;
    ``state.step`` is 0 on a fresh run. ``on_step_end(state)``: after each optimizer update, with
    ``state.step`` = k after the k-th update (so measuring "at step k" means ``state.step == k`` here).
    ``on_epoch_end(state)``: after each epoch's evaluation, ``state.history[-1]`` is that epoch's record.
    ``on_train_end(state)``: after the last evaluation, before the checkpoint is written.
    ``checkpoint_extra() -> dict`` (optional): plain values merged into the checkpoint's ``extra``.

    Contract (what keeps training bit-identical with and without the callback):

    * never change ``state.model``'s parameters, buffers, mode or ``requires_grad``, nor the optimizer;
      measure on a copy, e.g. ``sharpness.objective.Objective(state.model, state.x_train, state.y_train)``,
      which deep-copies the model, runs it in eval mode and uses ``torch.func``.
    * do not forward ``state.model`` itself in train mode: BatchNorm would update its running statistics.
    * draw random numbers only from your own ``torch.Generator``: the global RNG inside training is the
      dropout stream, and consuming from it changes the run.
    * raising an exception aborts training; ``KeyboardInterrupt`` is handled like Ctrl-C (state saved).

    Resumable callbacks: if a callback also has ``state_dict()`` (returning tensors and plain values) and
    ``load_state_dict(d)``, its state is saved with the ``.resume`` file and given back on resume.
    """

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


def _call(callbacks: Sequence[Any], hook: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(state)


class _ProgressBar:
    """tqdm on stderr over the step budget, with the last loss and the latest evaluation."""

    def __init__(self, total: int | None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, file=sys.stderr, unit="step", dynamic_ncols=True, leave=False)
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, state: TrainState) -> None:
        self.bar.update(state.step - self.bar.n)

    def on_step_end(self, state: TrainState) -> None:
        self.bar.update(1)
        if state.step % 20 == 0:
            self.postfix["loss"] = f"{state.loss:.4g}"
            self.bar.set_postfix(self.postfix, refresh=False)

    def on_epoch_end(self, state: TrainState) -> None:
        rec = state.history[-1]
        self.postfix["ep"] = str(rec["epoch"])
        for key in ("train_acc", "test_acc"):
            if rec.get(key) is not None:
                self.postfix[key] = f"{100 * rec[key]:.1f}%"
        self.bar.set_postfix(self.postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------------------------------------
# Result and paths
# ----------------------------------------------------------------------------------------------------------


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


def resume_path(out: str | os.PathLike) -> str:
    """Where an interrupted run keeps its state: ``out + ".resume"``."""
    return f"{os.fspath(out)}.resume"


def snapshot_path(out: str | os.PathLike, epoch: int) -> str:
    """``out_stem.epoch{k}.pt`` for ``out = out_stem.pt``."""
    path = os.fspath(out)
    stem = path[:-3] if path.endswith(".pt") else path
    return f"{stem}.epoch{epoch}.pt"


# ----------------------------------------------------------------------------------------------------------
# Signals: defer Ctrl-C / SIGTERM to a step boundary
# ----------------------------------------------------------------------------------------------------------


class _DeferredInterrupt:
    """While active (main thread only), the first SIGINT/SIGTERM only sets a flag that :meth:`check` turns
    into ``KeyboardInterrupt`` at the next step boundary, where the saved state is consistent. A second
    signal interrupts at once (mid-step or mid-evaluation: nothing is saved)."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        log.warning("interrupt received: stopping after this step (press again to stop at once, unsaved)")

    def check(self) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration, restored afterwards. Used on CPU, where it costs nothing (the
    kernels on this path already are). On CUDA the caller's setting is kept: bit-identical GPU runs also need
    ``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts, and slower kernels, a choice left to the user."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------


def _device(name: str) -> torch.device:
    """``auto`` → CUDA when available; the CLI has already checked the name (``cli.options.resolve_device``)."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"expected an available device, got {name!r} (CUDA is not available)")
    return device


def _derived_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for a named stream of ``seed`` (so order and dropout do not share one)."""
    return int(np.random.SeedSequence([int(seed) % 2**63, stream]).generate_state(2, dtype=np.uint64)[0] >> 1)


def _make_optimizer(config: TrainConfig, params: Sequence[Tensor]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def _flat_params(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _state_sha256(state_dict: Mapping[str, Tensor]) -> str:
    return hash_tensors(sorted(state_dict.items()))


@torch.no_grad()
def _evaluate(model: nn.Module, x: Tensor, y: Tensor, kind: str, chunk: int) -> tuple[float, float | None]:
    """Mean loss and accuracy over a whole split in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        for start in range(0, x.shape[0], chunk):
            out = model(x[start:start + chunk])
            target = y[start:start + chunk]
            loss_sum += per_sample_loss(kind, out, target).sum().double()
            if kind == "cross-entropy":
                correct += (out.argmax(dim=1) == target).sum()
    finally:
        model.train(was_training)
    n = x.shape[0]
    return float(loss_sum) / n, (int(correct) / n if kind == "cross-entropy" else None)


def load_data(config: TrainConfig) -> Dataset:
    return load_dataset(config.data, data_dir=config.data_dir, subset=config.subset, **config.data_kwargs)


def _initial_state(config: TrainConfig, model: nn.Module, init_state: Mapping[str, Tensor] | None) -> str | None:
    """Load the starting weights into ``model``; returns where they came from (None: fresh seeded init)."""
    if init_state is not None:
        load_state_strict(model, init_state, config.model, "init_state")
        return "init_state"
    if config.init_from is not None:
        ckpt = load_checkpoint(config.init_from)
        load_state_strict(model, ckpt.state_dict, config.model, config.init_from)
        return os.fspath(config.init_from)
    return None


def train(
    config: TrainConfig,
    *,
    dataset: Dataset | None = None,
    model: nn.Module | None = None,
    init_state: Mapping[str, Tensor] | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = False,
    out: str | os.PathLike | None = None,
    keep_state: bool = False,
) -> TrainResult:
    """Train ``config.model`` on ``config.data`` as the module docstring describes; write a checkpoint to ``out``.

    Args:
        config: the run (:class:`TrainConfig`).
        dataset: use these tensors instead of loading ``config.data`` (its spec is recorded).
        model: train a deep copy of this module instead of building ``config.model`` (the checkpoint still
            records ``config.model``/``model_kwargs`` as the architecture, so keep them consistent).
        init_state: a ``state_dict`` to start from (takes precedence over ``config.init_from``).
        callbacks: objects following the :class:`Callback` protocol.
        progress: show a tqdm bar on stderr.
        out: checkpoint path (written atomically when training ends); also the stem for ``save_every``
            snapshots and the ``.resume`` file. Without it nothing is written and Ctrl-C saves nothing.
        keep_state: also write the ``.resume`` state (atomically) at the end of every epoch, so that a process
            killed without warning (SIGKILL, a lost machine: no Ctrl-C handler runs) continues from its last
            finished epoch with ``resume=True``, bit-identically, instead of from scratch. The file is removed
            when the run finishes. A sweep trains every run this way.

    History: one record per epoch (and one for the initial weights, epoch 0, and a last one for a run that
    stops mid-epoch by ``steps``) with ``epoch, step, lr, train_loss, train_acc, test_loss, test_acc,
    wall_time`` (seconds since the start, evaluation included) and ``dist_from_init`` (‖θ − θ₀‖₂ over the
    parameters); losses and accuracies are ``None`` in epochs that were not evaluated.

    Metrics: ``train_loss, train_acc, test_loss, test_acc, generalization_gap`` (test − train loss),
    ``accuracy_gap`` (train − test accuracy), ``dist_from_init, epochs, steps, batch_size, steps_per_epoch,
    peak_lr, stopped_by`` (``epochs|steps|until_train_loss|max_epochs|callback``, or ``diverged`` in the
    checkpoint a divergence leaves), ``reached_train_loss`` (with ``until_train_loss``), ``train_seconds``
    (optimizer steps and step callbacks), ``eval_seconds``, ``wall_time``, ``samples_per_second`` (training
    samples per training second).

    Raises:
        InputError: bad configuration or data (batch size larger than the data, unwritable output,
            ``init_from`` of a different architecture, a ``.resume`` file from another configuration).
        TrainingDiverged: the loss became NaN/Inf (the last good weights are in ``out``).
        TrainingInterrupted: Ctrl-C/SIGTERM (the state is in ``resume_path(out)``).
    """
    if not isinstance(config, TrainConfig):
        raise InputError(f"expected a TrainConfig, got {type(config).__name__}")
    out = None if out is None else os.fspath(out)
    if out is not None:
        check_writable(out)
    device = _device(config.device)
    dtype = DTYPES[config.dtype]
    dataset = dataset if dataset is not None else load_data(config)
    spec = dict(dataset.spec)
    x_train, y_train = dataset.split("train")
    n_train = int(x_train.shape[0])
    batch = resolve_batch_size(config.batch_size, n_train)
    sizes = micro_batch_sizes(batch, accumulate=config.accumulate, max_micro_batch=config.max_micro_batch,
                              ghost_batch=config.ghost_batch)
    steps_per_epoch = n_train // batch if config.drop_last else -(-n_train // batch)
    schedule = lr_schedule(config, batch_size=batch, steps_per_epoch=steps_per_epoch)
    kind = resolve_loss(config.loss, y_train)

    def to_device(x: Tensor | None, y: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        if x is None or y is None:
            return None, None
        y = y.to(device, dtype=dtype) if y.is_floating_point() else y.to(device)
        return x.to(device, dtype=dtype), y

    x_train, y_train = to_device(x_train, y_train)
    x_test, y_test = to_device(dataset.x_test, dataset.y_test)

    arch = model_spec(config.model, spec.get("input_shape"), spec.get("output_dim", spec.get("num_classes")),
                      **config.model_kwargs)
    if model is None:
        net = build_model(config.model, input_shape=spec.get("input_shape"),
                          num_classes=spec.get("output_dim", spec.get("num_classes")), seed=config.seed,
                          **config.model_kwargs)
    else:
        net = copy.deepcopy(model)
    init_source = _initial_state(config, net, init_state)
    net = net.to(device=device, dtype=dtype)
    net.train()
    init_sha = _state_sha256({k: v.detach().cpu() for k, v in net.state_dict().items()})
    optimizer = _make_optimizer(config, list(net.parameters()))

    run = _Run(config=config, net=net, optimizer=optimizer, schedule=schedule, sizes=sizes, batch=batch,
               steps_per_epoch=steps_per_epoch, kind=kind, x_train=x_train, y_train=y_train, x_test=x_test,
               y_test=y_test, spec=spec, device=device, dtype=dtype, out=out, arch=arch,
               init_sha=init_sha, init_source=init_source, callbacks=list(callbacks), keep_state=keep_state)
    bar = _ProgressBar(run.total_steps) if progress else None
    if bar is not None:
        run.callbacks.append(bar)
    try:
        with _DeferredInterrupt() as guard, _deterministic(device.type == "cpu"), \
                torch.random.fork_rng(devices=_rng_devices(device)):
            run.guard = guard
            run.run()
    finally:
        if bar is not None:
            bar.close()
    return run.finish()


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _seed_global(device: torch.device, seed: int) -> None:
    """Seed the RNG streams that ``fork_rng`` protects: the CPU one and, when training there, the CUDA device's
    (``torch.manual_seed`` would also reseed every other CUDA device, outside the fork)."""
    torch.default_generator.manual_seed(seed)
    for index in _rng_devices(device):
        with torch.cuda.device(index):
            torch.cuda.manual_seed(seed)


class _Run:
    """The mutable state of one training run (kept out of :func:`train` so resume/divergence are methods)."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)
        c: TrainConfig = self.config
        self.total_steps = self.schedule.total_steps
        self.step = self.epoch = self.position = 0
        self.perm: Tensor | None = None
        self.history: list[dict] = []
        self.train_seconds = self.eval_seconds = 0.0
        self.elapsed_before = 0.0
        self.stopped_by: str | None = None
        self.last_lr = self.schedule(0)
        self.theta0 = _flat_params(self.net).clone()
        self.good: dict | None = None
        self.unsafe = False  # True while the state is between two consistent points (mid-step, mid-evaluation)
        self.resumed = False
        self.generator = torch.Generator().manual_seed(_derived_seed(c.order_seed, 0))
        self.state = TrainState(
            model=self.net, optimizer=self.optimizer, config=c, step=0, epoch=0, batch=0, lr=self.last_lr,
            batch_size=self.batch, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
            history=self.history, x_train=self.x_train, y_train=self.y_train, x_test=self.x_test,
            y_test=self.y_test, data_spec=self.spec, device=self.device, dtype=self.dtype, resumed=False,
        )

    # --- start / resume -----------------------------------------------------------------------------------
    def run(self) -> None:
        """Start (or resume), train until a stopping rule fires; Ctrl-C/SIGTERM saves the state and re-raises."""
        self.t0 = time.perf_counter()
        try:
            path = resume_path(self.out) if self.out is not None else None
            if self.config.resume and path is not None and os.path.exists(path):
                self._restore(path)
            else:
                _seed_global(self.device, _derived_seed(self.config.order_seed, 1))
                self._close_epoch(initial=True)
            self._sync_state()
            log.info("training %s on %s: batch %d (%d micro-batch(es)), %d steps per epoch, peak lr %g, from step %d",
                     self.config.model, self.spec.get("name"), self.batch, len(self.sizes), self.steps_per_epoch,
                     self.schedule.peak, self.step)
            _call(self.callbacks, "on_train_begin", self.state)
            self.loop()
        except KeyboardInterrupt:
            self._interrupted()
        _call(self.callbacks, "on_train_end", self.state)

    def _resume_payload(self) -> dict:
        cbs = {str(i): cb.state_dict() for i, cb in enumerate(self.callbacks)
               if callable(getattr(cb, "state_dict", None)) and callable(getattr(cb, "load_state_dict", None))}
        return {
            "format": RESUME_FORMAT,
            "config": _comparable(self.config),
            "data_sha256": self.spec.get("sha256"),
            "model_state": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "optimizer_state": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "generator": self.generator.get_state(),
            "perm": None if self.perm is None else self.perm.cpu(),
            "step": self.step, "epoch": self.epoch, "position": self.position, "stopped_by": self.stopped_by,
            "history": self.history, "theta0": self.theta0.cpu(), "good": self.good,
            "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
            "elapsed": self._elapsed(), "init_sha256": self.init_sha, "init_source": self.init_source,
            "callbacks": cbs,
        }

    def _restore(self, path: str) -> None:
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise InputError(f"expected a resumable training state in {path!r}, got an unreadable file ({type(e).__name__})") from None
        if not isinstance(saved, dict) or saved.get("format") != RESUME_FORMAT:
            raise InputError(f"expected a {RESUME_FORMAT} file at {path!r}, got something else; delete it to start over")
        want = _comparable(self.config)
        diff = sorted(k for k in set(want) | set(saved["config"]) if want.get(k) != saved["config"].get(k))
        if diff or saved["data_sha256"] != self.spec.get("sha256"):
            what = ", ".join(f"{k}={saved['config'].get(k)!r} there vs {want.get(k)!r} now" for k in diff[:3]) or "different data"
            raise InputError(f"expected {path!r} to come from the same configuration, got {what}; "
                             "rerun with the original arguments or delete the .resume file")
        self.net.load_state_dict(saved["model_state"])
        self.optimizer.load_state_dict(saved["optimizer_state"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
        self.generator.set_state(saved["generator"])
        self.perm = None if saved["perm"] is None else saved["perm"].to(self.device)
        self.step, self.epoch, self.position = saved["step"], saved["epoch"], saved["position"]
        self.stopped_by = saved["stopped_by"]
        self.history[:] = saved["history"]
        self.theta0 = saved["theta0"].to(self.device, self.dtype)
        self.good = saved["good"]
        self.train_seconds, self.eval_seconds = saved["train_seconds"], saved["eval_seconds"]
        self.elapsed_before = saved["elapsed"]
        self.init_sha, self.init_source = saved["init_sha256"], saved["init_source"]
        for i, cb in enumerate(self.callbacks):
            if str(i) in saved["callbacks"]:
                cb.load_state_dict(saved["callbacks"][str(i)])
        self.last_lr = self.schedule(max(self.step - 1, 0))
        self.resumed = True
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)

    # --- the loop -----------------------------------------------------------------------------------------
    def loop(self) -> None:
        while self.stopped_by is None:
            if self.perm is None:
                self.perm = torch.randperm(self.x_train.shape[0], generator=self.generator).to(self.device)
            t0 = time.perf_counter()
            while self.position < self.steps_per_epoch and not self._step_limit() and not self.state.stop:
                self._one_step()
                self._sync_state()
                _call(self.callbacks, "on_step_end", self.state)
                self.guard.check()
            self.train_seconds += time.perf_counter() - t0
            if self.position == self.steps_per_epoch:  # a whole epoch is done (else: stopped mid-epoch)
                self.epoch, self.position, self.perm = self.epoch + 1, 0, None
            self.unsafe = True  # a second Ctrl-C during evaluation would leave a half-closed epoch
            self._close_epoch()
            self.unsafe = False
            self._sync_state()
            _call(self.callbacks, "on_epoch_end", self.state)
            if self.state.stop and self.stopped_by is None:  # asked for in on_epoch_end: this epoch is the last
                self.stopped_by = "callback"
                self._complete_last_record()
            if self.keep_state and self.out is not None and self.stopped_by is None:
                # The state a Ctrl-C right here would save: resuming from it continues bit-identically.
                payload = self._resume_payload()
                atomic_write(resume_path(self.out), lambda fh: torch.save(payload, fh))
            self.guard.check()

    def _step_limit(self) -> bool:
        return self.config.steps is not None and self.step >= self.config.steps

    def _one_step(self) -> None:
        b = self.batch
        idx = self.perm[self.position * b:(self.position + 1) * b]
        sizes = self.sizes if idx.shape[0] == b else self._short_batch_sizes(int(idx.shape[0]))
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.unsafe = True
        self.optimizer.zero_grad(set_to_none=True)
        loss = accumulate_gradients(self.net, self.x_train[idx], self.y_train[idx], sizes=sizes, loss=self.kind)
        value = float(loss)
        if not math.isfinite(value):
            self.unsafe = False
            self._diverged(value, f"at step {self.step + 1} (epoch {self.epoch + 1})")
        self.optimizer.step()
        self.step += 1
        self.position += 1
        self.last_lr = lr
        self.state.loss = value
        self.unsafe = False

    def _short_batch_sizes(self, n: int) -> list[int]:
        """Micro-batches for the short last batch of an epoch (``drop_last=False``)."""
        c = self.config
        return micro_batch_sizes(n, accumulate=None if c.accumulate is None else min(c.accumulate, n),
                                 max_micro_batch=c.max_micro_batch, ghost_batch=c.ghost_batch)

    def _sync_state(self) -> None:
        s = self.state
        s.step, s.epoch, s.batch, s.lr, s.resumed = self.step, self.epoch, self.position, self.last_lr, self.resumed

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    # --- epoch ends ---------------------------------------------------------------------------------------
    def _close_epoch(self, *, initial: bool = False) -> None:
        """Evaluate (when due), record history, keep the last good weights, snapshot, decide to stop."""
        c = self.config
        partial = self.position != 0
        if not initial:
            if c.epochs is not None and self.epoch >= c.epochs:
                self.stopped_by = "epochs"
            elif self._step_limit():
                self.stopped_by = "steps"
            elif self.state.stop:
                self.stopped_by = "callback"
        final = self.stopped_by is not None
        due = initial or final or self.epoch % c.eval_every == 0
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"epoch": self.epoch + (1 if partial else 0), "step": self.step, "lr": self.last_lr,
                               "train_loss": None, "train_acc": None, "test_loss": None, "test_acc": None}
        if due or c.until_train_loss is not None:
            rec["train_loss"], rec["train_acc"] = _evaluate(self.net, self.x_train, self.y_train, self.kind, c.eval_chunk)
        if due and self.x_test is not None:
            rec["test_loss"], rec["test_acc"] = _evaluate(self.net, self.x_test, self.y_test, self.kind, c.eval_chunk)
        theta = _flat_params(self.net)
        rec["dist_from_init"] = float(torch.linalg.vector_norm((theta - self.theta0).double()))
        self.eval_seconds += time.perf_counter() - t0
        rec["wall_time"] = self._elapsed()
        if rec["train_loss"] is not None and not math.isfinite(rec["train_loss"]) or not math.isfinite(rec["dist_from_init"]):
            bad = rec["train_loss"] if rec["train_loss"] is not None else float("nan")
            self._diverged(bad, f"at step {self.step} (end of epoch {rec['epoch']})", what="train loss")
        if c.until_train_loss is not None and not initial and not final:
            if rec["train_loss"] < c.until_train_loss:
                self.stopped_by = "until_train_loss"
            elif self.epoch >= c.max_epochs:
                self.stopped_by = "max_epochs"
        self.history.append(rec)
        if self.stopped_by is not None:
            self._complete_last_record()
        self.good = {"state": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
                     "history_len": len(self.history), "epoch": rec["epoch"], "step": self.step}
        if self.out is not None and c.save_every is not None and not initial and not partial and self.epoch % c.save_every == 0:
            self._write(snapshot_path(self.out, self.epoch), self.net.state_dict(), self.history, self._metrics())

    def _complete_last_record(self) -> None:
        """The final record carries both evaluations, whatever ``eval_every`` skipped."""
        rec, c = self.history[-1], self.config
        t0 = time.perf_counter()
        if rec["train_loss"] is None:
            rec["train_loss"], rec["train_acc"] = _evaluate(self.net, self.x_train, self.y_train, self.kind, c.eval_chunk)
        if rec["test_loss"] is None and self.x_test is not None:
            rec["test_loss"], rec["test_acc"] = _evaluate(self.net, self.x_test, self.y_test, self.kind, c.eval_chunk)
        self.eval_seconds += time.perf_counter() - t0

    # --- outcomes -----------------------------------------------------------------------------------------
    def _metrics(self) -> dict:
        last = self.history[-1]
        train_loss, test_loss = last["train_loss"], last["test_loss"]
        train_acc, test_acc = last["train_acc"], last["test_acc"]
        seconds = self.train_seconds
        return {
            "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "generalization_gap": None if None in (train_loss, test_loss) else test_loss - train_loss,
            "accuracy_gap": None if None in (train_acc, test_acc) else train_acc - test_acc,
            "dist_from_init": last["dist_from_init"], "epochs": last["epoch"], "steps": last["step"],
            "batch_size": self.batch, "steps_per_epoch": self.steps_per_epoch, "peak_lr": self.schedule.peak,
            "stopped_by": self.stopped_by,
            "reached_train_loss": None if self.config.until_train_loss is None else self.stopped_by == "until_train_loss",
            "train_seconds": seconds, "eval_seconds": self.eval_seconds, "wall_time": self._elapsed(),
            "samples_per_second": self.step * self.batch / seconds if seconds > 0 else None,
        }

    def _extra(self, **more: Any) -> dict:
        # A callback with checkpoint_extra() (e.g. the SharpnessTracker's series) records into the checkpoint.
        from_callbacks = {k: v for cb in self.callbacks if callable(getattr(cb, "checkpoint_extra", None))
                          for k, v in cb.checkpoint_extra().items()}
        return {"init_sha256": self.init_sha, "init_from": self.init_source, "data_order_seed": self.config.order_seed,
                "device": str(self.device), "resumed": self.resumed, **from_callbacks, **more}

    def _write(self, path: str, state_dict: Mapping[str, Tensor], history: list, metrics: dict, **extra: Any) -> None:
        save_checkpoint(path, model=self.arch, state_dict=state_dict, data=self.spec,
                        train_config=self.config.to_dict(), metrics=metrics, history=history,
                        seed=self.config.seed, extra=self._extra(**extra))

    def _diverged(self, value: float, where: str, *, what: str = "loss") -> None:
        good = self.good
        path = None
        if self.out is not None and good is not None:
            history = self.history[:good["history_len"]]
            self.history[:] = history
            metrics = {**self._metrics(), "stopped_by": "diverged"}
            self._write(self.out, good["state"], history, metrics,
                        diverged={"step": self.step + 1, "epoch": self.epoch + 1, "loss": str(value)})
            path = self.out
        kept = (f"kept the last good weights (epoch {good['epoch']}, step {good['step']}) in {path}" if path
                else "no output path, nothing kept")
        raise TrainingDiverged(f"{what} became {value} {where}; {kept}; try a smaller learning rate",
                               step=self.step + 1, epoch=self.epoch + 1, loss=value, checkpoint_path=path)

    def _interrupted(self) -> None:
        path = None
        if self.out is not None and not self.unsafe:
            path = resume_path(self.out)
            payload = self._resume_payload()
            atomic_write(path, lambda fh: torch.save(payload, fh))
        where = f"saved the state to {path}; rerun with --resume to continue" if path else "nothing saved"
        raise TrainingInterrupted(f"interrupted after step {self.step} (epoch {self.epoch}); {where}",
                                  step=self.step, resume_path=path)

    def finish(self) -> TrainResult:
        metrics = self._metrics()
        if self.out is not None:
            self._write(self.out, self.net.state_dict(), self.history, metrics)
            leftover = resume_path(self.out)
            if os.path.exists(leftover):
                os.unlink(leftover)
        return TrainResult(model=self.net, history=list(self.history), metrics=metrics, config=self.config,
                           checkpoint_path=self.out)


def _comparable(config: TrainConfig) -> dict:
    """The fields a resumed run must share with the one that wrote the state (all but ``resume``)."""
    d = config.to_dict()
    d.pop("resume")
    return d
