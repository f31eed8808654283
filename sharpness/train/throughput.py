"""What a batch size costs in time: measured training throughput, and the wall-clock to reach a target loss.

"Is the biggest batch that fits the best?" has two halves. Generalization is measured at the solution
(:mod:`sharpness.analysis.report`); speed is measured here, on the machine at hand:

* :func:`measure_throughput` times the optimizer steps of a short run of :func:`sharpness.train.train` at
  one batch size (the per-epoch evaluation excluded, so only what training itself costs is counted) and
  reports steps/s and samples/s = steps/s × B, the fastest of several repeats. On a CPU samples/s stops
  growing once one batch fills the cores; on a GPU it keeps growing much longer. That is the "bigger computes
  faster" half of the answer (Goyal et al. 2017; Shallue et al. 2019, "Measuring the Effects of Data
  Parallelism on Neural Network Training", who measure steps-to-result the same way).
* :func:`time_to_target` reads a run's recorded history: the first evaluated epoch whose training loss is
  below the target, its optimizer steps, and those steps at the measured steps/s, i.e. the wall-clock
  training would take on this machine without the evaluations. A run that never got there returns
  ``reached=False`` with the steps it spent (a lower bound on what the target would cost).

Both are plain functions of recorded data, so a trade-off study's figure is redrawn from saved results.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..errors import InputError
from . import TrainConfig, _device, resolve_batch_size, train


@dataclass(frozen=True)
class Throughput:
    """Measured speed of training at one batch size: ``steps_per_second`` and ``samples_per_second`` (the
    fastest of ``repeats`` timed runs of ``steps`` optimizer steps each), ``median_steps_per_second``, every
    repeat's steps/s in ``per_repeat``, and where it was measured (``device``, ``threads``)."""

    batch_size: int
    steps_per_second: float
    samples_per_second: float
    median_steps_per_second: float
    steps: int
    repeats: int
    per_repeat: tuple[float, ...]
    device: str
    threads: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _StepClock:
    """A :class:`~sharpness.train.Callback` summing the wall time between consecutive optimizer-step ends
    (and from the start to the first): the steps, not the evaluation that ends each epoch."""

    def __init__(self, sync) -> None:
        self.sync, self.seconds, self.steps, self.last = sync, 0.0, 0, None

    def on_train_begin(self, state) -> None:
        self.sync()
        self.last = time.perf_counter()

    def on_step_end(self, state) -> None:
        self.sync()
        now = time.perf_counter()
        self.seconds += now - self.last
        self.steps += 1
        self.last = now

    def on_epoch_end(self, state) -> None:  # the time since the last step was the evaluation: not counted
        self.sync()
        self.last = time.perf_counter()


def measure_throughput(config: TrainConfig, *, dataset: Any = None, steps: int = 30, repeats: int = 5,
                       warmup: bool = True) -> Throughput:
    """Steps/s and samples/s of training ``config`` (its batch size, model, optimizer, device) on this machine.

    Each repeat trains a fresh copy for ``steps`` optimizer steps (same seed, so the same work) and times
    the steps only. The fastest repeat is reported, as ``timeit`` does: other load on a shared machine only
    ever slows a run down, so the best of several is the closest to what the batch size itself costs (on a
    busy machine repeats of one batch size differ severalfold; benchmarks/README.md); the median is kept beside
    it.
    ``warmup`` runs a few untimed steps first (the first optimizer construction imports and compiles
    things once per process). On CUDA the clock synchronizes the device at every step boundary.

    Raises:
        InputError: ``steps`` or ``repeats`` below 1.
    """
    if steps < 1 or repeats < 1:
        raise InputError(f"expected steps ≥ 1 and repeats ≥ 1, got steps={steps}, repeats={repeats}")
    base = dataclasses.replace(config, epochs=None, until_train_loss=None, until_train_accuracy=None,
                               max_epochs=None, steps=steps,
                               eval_every=10**9, save_every=None, resume=False)
    device = _device(base.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    if warmup:
        train(dataclasses.replace(base, steps=min(steps, 3)), dataset=dataset)
    rates, batch = [], None
    for _ in range(repeats):
        clock = _StepClock(sync)
        metrics = train(base, dataset=dataset, callbacks=[clock]).metrics
        batch = int(metrics["batch_size"])
        rates.append(clock.steps / clock.seconds)
    best = max(rates)
    return Throughput(batch_size=batch, steps_per_second=best, samples_per_second=best * batch,
                      median_steps_per_second=statistics.median(rates), steps=steps, repeats=repeats,
                      per_repeat=tuple(rates), device=str(device), threads=torch.get_num_threads())


@dataclass(frozen=True)
class TimeToTarget:
    """When a run first had training loss below ``target``: ``epochs`` and optimizer ``steps`` (those it
    spent in all when ``reached`` is False), and ``seconds`` = steps / steps_per_second (None without a
    throughput)."""

    target: float
    reached: bool
    epochs: float
    steps: int
    seconds: float | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def time_to_target(history: Sequence[Mapping[str, Any]], target: float,
                   steps_per_second: float | None = None) -> TimeToTarget:
    """The first record of ``history`` (a run's per-epoch records, see :func:`sharpness.train.train`) whose
    ``train_loss`` is below ``target``; records that were not evaluated (``train_loss`` None) are skipped.

    Raises:
        InputError: an empty history, or a non-positive ``steps_per_second``.
    """
    if not history:
        raise InputError("expected a training history with at least one record, got none")
    if steps_per_second is not None and not steps_per_second > 0:
        raise InputError(f"expected a positive steps_per_second, got {steps_per_second}")
    hit = next((h for h in history if h.get("train_loss") is not None and h["train_loss"] < target), None)
    record, reached = (hit, True) if hit is not None else (history[-1], False)
    steps = int(record["step"])
    seconds = steps / steps_per_second if steps_per_second is not None else None
    return TimeToTarget(target=float(target), reached=reached, epochs=float(record["epoch"]), steps=steps,
                        seconds=seconds)


def fraction_batch_sizes(n_train: int, smallest: float, *, factor: int = 2) -> list[int]:
    """Batch sizes from ``smallest`` × n_train (e.g. 1/500) up to the full batch, growing by ``factor``:
    ``fraction_batch_sizes(4000, 1/500)`` → ``[8, 16, 32, ..., 2048, 4000]``.

    Raises:
        InputError: ``smallest`` outside (0, 1] or ``factor`` below 2.
    """
    if not 0 < smallest <= 1 or factor < 2:
        raise InputError(f"expected 0 < smallest ≤ 1 and factor ≥ 2, got smallest={smallest}, factor={factor}")
    b = resolve_batch_size(f"{100 * smallest:.10g}%", n_train)
    sizes = []
    while b < n_train:
        sizes.append(b)
        b *= factor
    return sizes + [int(n_train)]
