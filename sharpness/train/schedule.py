"""The learning rate of every step: peak scaled for the batch size, linear warmup, then a schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import TrainConfig


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
    ``until_train_loss`` / ``until_train_accuracy`` (the cap). Warmup and milestones are given in epochs and rounded to steps.
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
