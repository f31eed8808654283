"""What defines a training run: :class:`TrainConfig`, its checks, and how a batch size becomes samples.

``batch_size`` may be an integer, a percentage of the training split (``"10%"``) or ``"full"``;
:func:`resolve_batch_size` turns it into samples once the split is known, and :func:`micro_batch_sizes` cuts
one batch into the forward passes that gradient accumulation or ghost batch norm need.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..numerics.dtypes import DTYPES
from ..errors import InputError

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCALINGS = ("none", "linear", "sqrt")
SCHEDULES = ("constant", "cosine", "step")

#: The "train until" stopping rules: the config field, the epoch record's value it watches, whether the target
#: is reached below it (a loss) or at or above it (an accuracy), what a valid target is, and its upper bound.
UNTIL_RULES = {
    "until_train_loss": ("train_loss", "below", "a finite number > 0", math.inf),
    "until_train_accuracy": ("train_acc", "at_least", "a fraction in (0, 1]", 1.0),
}


def until_reached(rule: str, value: float, target: float) -> bool:
    """Whether an epoch's ``value`` meets ``rule``'s ``target`` (loss strictly below it, accuracy at or above)."""
    return value < target if UNTIL_RULES[rule][1] == "below" else value >= target


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; each ``sharpness train`` option is the field of the same name.

    What to train: ``data`` (a :func:`sharpness.data.load_dataset` name, with ``data_kwargs``, ``data_dir``,
    ``subset``, or a user's ``"file.py:fn"`` data function read once into tensors,
    :func:`sharpness.files.loading.load_user_training_data`; the dataset's own generation seed is ``data_kwargs["seed"]``, default 0, independent of the
    training seed), ``model`` (a built-in name or ``"file.py:fn"`` factory, with ``model_kwargs``), ``loss``
    (``auto``: cross-entropy for integer labels, else mean squared error, as in
    :class:`~sharpness.objective.Objective`).

    Batches: ``batch_size`` (an int, ``"10%"`` of the training samples, or ``"full"``), ``drop_last``,
    ``accumulate`` / ``max_micro_batch`` (gradient accumulation), ``ghost_batch`` (ghost batch norm).

    Optimizer: ``optimizer`` (``sgd``, ``adam``, ``adamw``), ``lr``, ``momentum`` and ``nesterov`` (SGD only),
    ``weight_decay`` (L2 added to the gradient for SGD/Adam, decoupled for AdamW).

    Learning-rate rule: ``lr_scaling``, ``base_batch_size``, ``warmup_epochs``, ``schedule``, ``milestones``
    (epochs; default half and three quarters of the run for ``step``), ``gamma`` (see :class:`LRSchedule`).

    Duration: exactly one of ``epochs``, ``steps``, ``until_train_loss`` (stop at the first epoch whose
    full-train-split loss is below it) or ``until_train_accuracy`` (… whose train accuracy, a fraction, is at
    least it); the two "until" rules need ``max_epochs``, the cap.

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
    until_train_accuracy: float | None = None
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
        _check(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a finite number ≥ 0",
               self.weight_decay)
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
        _check(math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0, "warmup_epochs", "a finite number ≥ 0",
               self.warmup_epochs)
        _check(0 < self.gamma <= 1, "gamma", "a number in (0, 1]", self.gamma)
        ms = self.milestones
        _check(all(0 < m < math.inf for m in ms) and list(ms) == sorted(set(ms)), "milestones", "increasing epochs > 0", list(ms))
        if self.accumulate is not None and self.max_micro_batch is not None:
            raise InputError(f"expected accumulate or max_micro_batch, not both; got {self.accumulate} and {self.max_micro_batch}")
        if self.ghost_batch is not None and (self.accumulate is not None or self.max_micro_batch is not None):
            raise InputError("expected ghost_batch without accumulate/max_micro_batch (each virtual batch is already "
                             f"its own forward pass), got ghost_batch={self.ghost_batch} with accumulation")
        durations = ("epochs", "steps", *UNTIL_RULES)
        given = [n for n in durations if getattr(self, n) is not None]
        if len(given) != 1:
            raise InputError(f"expected exactly one of {', '.join(durations[:-1])} or {durations[-1]}, got {given or 'none'}")
        rule = self.until
        if rule is not None:
            target = getattr(self, rule)
            ok = isinstance(target, (int, float)) and not isinstance(target, bool) and math.isfinite(target) and target > 0
            _check(ok and target <= UNTIL_RULES[rule][3], rule, UNTIL_RULES[rule][2], target)
            if self.max_epochs is None:
                raise InputError(f"expected max_epochs (the cap) with {rule}, got none")
        elif self.max_epochs is not None:
            raise InputError(f"expected max_epochs only with {' or '.join(UNTIL_RULES)}, got max_epochs={self.max_epochs} "
                             f"with {given[0]}")

    @property
    def until(self) -> str | None:
        """The "train until" rule in use (a key of :data:`UNTIL_RULES`), or None for ``epochs``/``steps``."""
        return next((rule for rule in UNTIL_RULES if getattr(self, rule) is not None), None)

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
