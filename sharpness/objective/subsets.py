"""Which samples an analysis uses: all of a split, or a seeded subset whose sorted indices are recorded.

:func:`select_analysis_set` is the one rule for tensors (``sharpness analyze --samples``, the landscape
command and the λ_max tracker use it, so they analyze the same samples); :func:`dataset_subset` applies the
same rule to a map-style ``Dataset``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import InputError


def select_analysis_set(
    inputs: Tensor, targets: Tensor, *, samples: int | None, seed: int, split: str = "train"
) -> tuple[Tensor, Tensor, Tensor | None]:
    """All samples, or a seeded subset of ``samples`` of them (indices sorted, so order is canonical).

    More samples than the ``split`` holds is refused: clamping silently would analyze another set than the
    one asked for (and a report would claim a size nobody requested)."""
    n = inputs.shape[0]
    check_samples(samples, n, split)
    if samples is None or samples == n:
        return inputs, targets, None
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:samples].sort().values
    return inputs[idx], targets[idx], idx


def check_samples(samples: int | None, n: int, split: str = "train") -> None:
    """Refuse more samples than the set holds, with the one message every path (tensors, a ``Dataset``, a
    loader, API and CLI) gives: clamping silently would analyze another set than the one asked for."""
    if samples is not None and samples > n:
        raise InputError(f"expected --samples ≤ {n} (the size of the {split} split), got {samples}")


def dataset_subset(data: Any, samples: int, seed: int, split: str = "train") -> tuple[Any, Tensor | None]:
    """A seeded ``Subset`` of ``samples`` items of a map-style Dataset (indices sorted), or all of it; more
    than it holds is refused (:func:`check_samples`)."""
    from torch.utils.data import Dataset as TorchDataset, Subset

    if not isinstance(data, TorchDataset) or not hasattr(data, "__len__"):
        raise InputError(f"samples= needs tensors or a map-style Dataset, got a {type(data).__name__}; "
                         "subset it yourself (torch.utils.data.Subset) or drop samples=")
    n = len(data)
    check_samples(samples, n, split)
    if samples == n:
        return data, None
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples].sort().values
    return Subset(data, idx.tolist()), idx
