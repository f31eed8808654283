"""How one chunk's model outputs become the sums an :class:`~sharpness.objective.Objective` adds up.

(Σ w ℓ, Σ w·hit, Σ w) over the examples of a chunk: the exact per-sample path of the toolkit's own data
(in-memory tensors, a built-in per-sample loss), or the general one (token weights, ignored labels, label
smoothing, a user's loss callable returning ``losses`` or ``(losses, weights)``). Nothing is divided here:
chunks add up exactly and the objective divides by the total weight once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import batches as B
from ..errors import InputError
from .losses import example_losses, per_sample_hits, per_sample_loss
from .loss_modules import CONTRACT


class LossSums:
    """Mixin of :class:`~sharpness.objective.Objective`: per-chunk sums, the total weight, evaluation errors."""

    def _target(self, batch: Any) -> Tensor:
        return B.batch_target(batch, self.target_key)

    def output_sums(self, out: Tensor, batch: Any, w: Tensor | None, *, hits: bool) -> tuple[Tensor, Tensor | None, Any]:
        """(Σ w ℓ, Σ w·hit or None, Σ w) over the examples of one chunk from its model outputs ``out`` (weights
        ``w`` per sample, times the loss's); the hit sum is None unless ``hits`` and accuracy is defined."""
        if self._plain:
            y = self._target(batch)
            losses = per_sample_loss(self.loss_kind, out, y)
            loss_sum = losses.sum() if w is None else (losses * w).sum()
            weight = float(losses.shape[0]) if w is None else w.sum()
            hit_sum = None
            if hits and self.has_accuracy:
                h = per_sample_hits(self.loss_kind, out, y).to(self.dtype)
                hit_sum = h.sum() if w is None else (h * w).sum()
            return loss_sum, hit_sum, weight
        if self._loss_fn is not None:
            losses, lw = self._call_loss(out, batch)
            # Only a loss module (loss_modules.py) has accuracy among the callables.
            h = self._loss_fn.hits(out, batch) if hits and self.has_accuracy else None
        else:
            target = self._target(batch)
            if self.loss_kind not in ("cross-entropy", "causal-lm"):
                target = target.to(self.dtype)
            losses, lw, h = example_losses(self.loss_kind, out, target, ignore_index=self.ignore_index,
                                           label_smoothing=self.label_smoothing)
        if w is not None:
            wb = w.reshape(w.shape[0], *([1] * (losses.ndim - 1))).to(losses.dtype)
            lw = wb.expand_as(losses) if lw is None else lw * wb
        if lw is None:
            loss_sum = losses.sum()
            weight = float(losses.numel())
            hit_sum = None if not (hits and h is not None) else h.sum()
        else:
            lw = lw.detach()
            loss_sum = (losses * lw).sum()
            weight = lw.sum()
            hit_sum = None if not (hits and h is not None) else (h * lw).sum()
        return loss_sum, hit_sum, weight

    def _call_loss(self, out: Tensor, batch: Any) -> tuple[Tensor, Tensor | None]:
        try:
            res = self._loss_fn(out, batch)
        except TypeError as err:  # the usual sign of a loss written for (outputs, targets) instead of the contract
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise InputError(f"loss {self.loss_kind.removeprefix('callable:')} failed on (outputs, batch): {first}; "
                             f"expected {CONTRACT}") from None
        losses, lw = (res if isinstance(res, tuple) and len(res) == 2 else (res, None))
        n = B.batch_size(batch, self.batch_size_fn)
        if not isinstance(losses, Tensor) or losses.ndim == 0 or losses.shape[0] != n:
            got = "a scalar" if isinstance(losses, Tensor) and losses.ndim == 0 else (
                f"shape {tuple(losses.shape)}" if isinstance(losses, Tensor) else type(losses).__name__)
            raise InputError(
                f"loss {self.loss_kind.removeprefix('callable:')} must return per-example losses of shape ({n}, ...) "
                f"(reduction='none'), optionally with weights, got {got}"
            )
        if lw is not None and (not isinstance(lw, Tensor) or lw.shape != losses.shape):
            got = f"shape {tuple(lw.shape)}" if isinstance(lw, Tensor) else type(lw).__name__
            raise InputError(f"loss {self.loss_kind.removeprefix('callable:')} must return weights shaped like its "
                             f"losses {tuple(losses.shape)}, got {got}")
        return losses, (None if lw is None else lw.to(losses.dtype))

    def _weight_pass(self) -> float:
        """Σ of the example weights over the local chunks (the loss's masks, times the sample weights)."""
        return sum(self._batch_weight(batch, w) for batch, w in self.chunks())

    def _batch_weight(self, batch: Any, w: Tensor | None = None, *, where: str = "the first batch") -> float:
        builtin = self._loss_fn is None
        if builtin:
            self._check_batch(batch, where)
        with torch.no_grad():
            try:
                out = self.forward(self._point(None), batch)
                if builtin and self.loss_kind in ("cross-entropy", "causal-lm"):
                    # labels against the outputs' classes before the loss indexes with them (its IndexError
                    # would blame the model), with the tensor path's message
                    self._check_labels(out, self._target(batch))
                _, _, weight = self.output_sums(out, batch, w, hits=False)
            except InputError:
                raise
            except (RuntimeError, IndexError, ValueError, TypeError, KeyError) as err:
                raise self._eval_error(err, batch, where) from None
        return float(weight)

    def _eval_error(self, err: BaseException, batch: Any, where: str) -> InputError:
        # The first contact of model and data: a shape or label mismatch is the user's input, not a bug.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return InputError(f"the model could not be evaluated on {where} ({B.describe(batch)}): {first}")
