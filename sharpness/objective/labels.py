"""Target checks of an :class:`~sharpness.objective.Objective` with a built-in loss: a target row per sample
(checked before the forward pass), and for cross-entropy labels in ``[0, classes)`` (ignored tokens aside) and
model outputs shaped ``(N, classes)`` or ``(N, T, V)`` (checked before the loss, on every batch of a stream)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from . import batches as B
from ..errors import InputError


class LabelChecks:
    """Mixin of :class:`~sharpness.objective.Objective`: refuses labels and outputs that cannot match."""

    def _check_labels_range(self, y: Tensor, classes: int | None = None) -> None:
        valid = y[y != self.ignore_index] if not self._plain else y
        if valid.numel() == 0:
            return
        low, high = int(valid.min()), int(valid.max())
        if low < 0 or (classes is not None and high >= classes):
            raise InputError(
                f"expected class labels in [0, {classes}) for a model with {classes} outputs, got labels in [{low}, {high}]"
            )

    def _check_batch(self, batch: Any, where: str) -> None:
        """A built-in loss needs a target per sample: a batch whose x and y lengths differ is named as such,
        before the model sees it (not as a logits-versus-labels mismatch after)."""
        y = self._target(batch)
        n = B.batch_size(batch, self.batch_size_fn)
        if not isinstance(y, Tensor) or y.ndim == 0 or y.shape[0] != n:
            got = f"targets of shape {tuple(y.shape)}" if isinstance(y, Tensor) else f"a {type(y).__name__} target"
            raise InputError(f"expected {where} to hold one target per sample, got {n} samples and {got} "
                             f"({B.describe(batch)})")

    def _check_labels(self, output: Tensor, y: Tensor) -> None:
        if output.ndim < 2 or output.shape[:-1] != y.shape:
            raise InputError(
                f"cross-entropy expects model outputs of shape (N, classes) or (N, T, vocabulary) matching targets "
                f"{tuple(y.shape)}, got {tuple(output.shape)}"
            )
        self._check_labels_range(self.targets if self.source is None else y, output.shape[-1])
