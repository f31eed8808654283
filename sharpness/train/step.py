"""One optimizer step's gradient (exact over any micro-batch split) and the no-gradient evaluation of a split."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..objective.losses import per_sample_hits, per_sample_loss


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


@torch.no_grad()
def _evaluate(model: nn.Module, x: Tensor, y: Tensor, kind: str, chunk: int) -> tuple[float, float | None]:
    """Mean loss and accuracy over a whole split in eval mode (the model's mode is restored).

    Not :meth:`sharpness.objective.Objective.evaluate`: an Objective deep-copies the model and checks
    determinism with extra forward passes when it is built, a cost every evaluated epoch would pay, and it
    weights and chunks by its own policy (per-example weights, its chunk size), so the recorded histories
    are not guaranteed to stay bit-identical.
    """
    was_training = model.training
    model.eval()
    try:
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], chunk):
            out = model(x[start:start + chunk])
            target = y[start:start + chunk]
            loss_sum += per_sample_loss(kind, out, target).sum().double()
            hits = per_sample_hits(kind, out, target)  # token accuracy for sequences
            if hits is not None:
                correct += hits.double().sum()
    finally:
        model.train(was_training)
    n = x.shape[0]
    return float(loss_sum) / n, (float(correct) / n if kind in ("cross-entropy", "bce") else None)
