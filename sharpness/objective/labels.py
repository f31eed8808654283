"""Class-label checks of an :class:`~sharpness.objective.Objective` with a built-in cross-entropy loss:
labels in ``[0, classes)`` (ignored tokens aside) and model outputs shaped ``(N, classes)`` or ``(N, T, V)``."""

from __future__ import annotations

from torch import Tensor

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

    def _check_labels(self, output: Tensor, y: Tensor) -> None:
        if output.ndim < 2 or output.shape[:-1] != y.shape:
            raise InputError(
                f"cross-entropy expects model outputs of shape (N, classes) or (N, T, vocabulary) matching targets "
                f"{tuple(y.shape)}, got {tuple(output.shape)}"
            )
        self._check_labels_range(self.targets if self.source is None else y, output.shape[-1])
