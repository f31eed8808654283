"""The objective at many parameter points at once: blocks of points under :func:`torch.func.vmap`.

A landscape grid, the draws of average-case sharpness and any other "loss at B points" need the same thing:
stack the points as ``(B, ...)`` parameter tensors and evaluate them in one batched forward pass per chunk,
where that pays (small models: per-point dispatch overhead dominates), or one at a time otherwise. Results stay
on the device, in float64, so a caller fetches a whole run of points to the host once.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..hessian.conv_double_backward import has_convolutions
from .losses import cross_entropy_and_argmax

if TYPE_CHECKING:
    from .core import Objective

#: Points per vmapped block when batching pays (see :func:`default_batch_size`).
BATCH_POINTS = 16
#: Batching pays while one point costs little: numel × samples up to this (a proxy for a forward's FLOPs).
BATCH_WORK_LIMIT = 2e7


def default_batch_size(objective: Objective) -> int:
    """Grid points per vmapped block: :data:`BATCH_POINTS` for small models without convolutions, 1 (a plain
    loop) otherwise.

    Why: blocks amortize the per-point dispatch overhead of small models, but for large ones batched matrix
    products run slower than separate ones and thrash the cache. Hence batching while
    numel × n_samples ≤ :data:`BATCH_WORK_LIMIT`. Convolutions batch badly at any size: ``vmap`` over their
    weights becomes a grouped convolution, and the plain loop beats blocks on convnets
    (``benchmarks/grid_batching.py``; the measurements are in benchmarks/README.md, "Grid batching"). The rule
    depends only on the problem's size and layer types, so a resumed grid makes the same choice.
    """
    small = objective.numel * objective.n_samples <= BATCH_WORK_LIMIT
    return BATCH_POINTS if small and not has_convolutions(objective.module) else 1


def _chunk_sums(
    objective: Objective, params: dict[str, Tensor], batch: Any, w: Tensor | None, fast: bool = False
) -> tuple[Tensor, Tensor]:
    """(Σ w_i ℓ_i, Σ w_i·[argmax = y_i]) over one chunk from a single forward pass.

    ``fast=False`` computes the loss sum exactly as :meth:`Objective.chunk_loss_sum` does, so a point
    evaluated this way reproduces ``objective.value()`` bit for bit. ``fast=True`` (cross-entropy on
    ``(N, C)`` logits of in-memory tensors) gets the loss and the prediction from the one max-reduction that
    :func:`~sharpness.objective.cross_entropy_and_argmax` needs anyway (the same exact formula, so values near
    zero loss keep their digits), instead of a second argmax over classes.
    """
    if not fast:
        return objective.chunk_sums(params, batch, w)
    x, y = batch
    out = objective.forward(params, x)
    if out.ndim != 2:  # sequences: the objective's own per-sample token means
        loss, hit, _ = objective.output_sums(out, batch, w, hits=True)
        return loss, hit
    losses, pred = cross_entropy_and_argmax(out, y)
    loss = losses.sum() if w is None else (losses * w).sum()
    hits = (pred == y).to(loss.dtype)
    return loss, hits.sum() if w is None else (hits * w).sum()


class _Evaluator:
    """Loss and accuracy of an objective at a block of points given as stacked parameter dicts ``(B, ...)``.

    ``batched=True`` evaluates the block under :func:`torch.func.vmap` (one batched forward per chunk); it
    falls back to the loop, with a warning, for models whose ops have no batching rule. ``reference=True``
    evaluates one point at a time exactly as :meth:`Objective.value` does (for the centre and checkpoints).
    """

    def __init__(self, objective: Objective, batched: bool) -> None:
        self.objective = objective
        self.batched = batched
        # class labels in range (no ignore_index) allow the fast cross-entropy
        # The max-trick cross-entropy needs class labels all in range: the per-sample path has no ignored labels,
        # and its construction already refused any label outside [0, classes) — no check (or host sync) here.
        self.fast = objective.loss_kind == "cross-entropy" and objective.inputs is not None and objective.per_sample_path
        self._vmapped = torch.func.vmap(lambda p, batch, w: _chunk_sums(objective, p, batch, w, self.fast), in_dims=(0, None, None))

    def __call__(self, stacked: dict[str, Tensor], count: int, *, reference: bool = False) -> tuple[Tensor, Tensor | None]:
        obj = self.objective
        stacked = {k: v.to(obj.device, obj.dtype if v.is_floating_point() else None) for k, v in stacked.items()}
        with torch.no_grad():
            if self.batched and count > 1 and not reference:
                try:
                    sums = [self._vmapped(stacked, *chunk) for chunk in obj.chunks()]
                    loss = sum(s[0] for s in sums) / obj.total_weight
                    correct = sum(s[1] for s in sums)
                except (RuntimeError, NotImplementedError) as err:
                    warnings.warn(
                        f"batched evaluation unavailable for this model ({str(err).splitlines()[0][:120]}); "
                        "evaluating grid points one at a time",
                        stacklevel=4,
                    )
                    self.batched = False
                    return self(stacked, count)
            else:
                fast = self.fast and not reference
                losses, corrects = [], []
                for i in range(count):
                    params = {k: v[i] for k, v in stacked.items()}
                    sums = [_chunk_sums(obj, params, *chunk, fast) for chunk in obj.chunks()]
                    losses.append(sum(s[0] for s in sums) / obj.total_weight)  # as Objective.value computes it
                    corrects.append(sum(s[1] for s in sums))
                loss, correct = torch.stack(losses), torch.stack(corrects)
        # Still on the device: the sweep fetches a whole run of points at once (no host round trip per block).
        loss = loss.to(torch.float64)
        if not obj.has_accuracy:
            return loss, None
        return loss, correct.to(torch.float64) / obj.total_weight


def _stack(objective: Objective, thetas: Tensor, buffers: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """``(B, P)`` points → ``{name: (B, *shape)}`` (plus per-point buffers, which override the objective's)."""
    B = thetas.shape[0]
    out = {k: t.reshape(B, *s) for k, t, s in zip(objective.names, thetas.split(objective.sizes, dim=1), objective.shapes)}
    return {**out, **(buffers or {})}


def losses_at(objective: Objective, thetas: Tensor, *, batch_size: int | None = None) -> Tensor:
    """Mean loss f(θ_b) at each row of ``thetas`` ``(B, P)``: a ``(B,)`` float64 tensor on the objective's device.

    ``batch_size`` points per vmapped block (default :func:`default_batch_size`); with 1, each point is
    evaluated exactly as :meth:`Objective.value` does (same bits). Batched blocks may differ from that in
    the last bits (batched matrix products round differently; float64 agrees to ~1e-15 relative).
    """
    batch_size = default_batch_size(objective) if batch_size is None else batch_size
    if thetas.ndim != 2 or thetas.shape[1] != objective.numel:
        raise ValueError(f"expected points of shape (B, {objective.numel}), got {tuple(thetas.shape)}")
    evaluator = _Evaluator(objective, batch_size > 1)
    out = []
    for start in range(0, thetas.shape[0], batch_size):
        block = thetas[start : start + batch_size]
        loss, _ = evaluator(_stack(objective, block), block.shape[0], reference=batch_size == 1)
        out.append(loss)
    return torch.cat(out)
