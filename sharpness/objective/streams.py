"""A streamed analysis set: finite by contract, cut to ``samples=`` in a fixed order, and visible while read.

The objective passes over its analysis set many times (a first pass counts and hashes it, every product reads
it again), so the set must be finite and fixed. The contract for what is not in-memory tensors:

* a set whose ``len()`` works (a ``DataLoader`` over a map-style ``Dataset``, a list of batches, an
  ``IterableDataset`` with ``__len__``) is read whole;
* a set without ``len()`` (a ``DataLoader`` over an ``IterableDataset``, a class with only ``__iter__``) may
  never end, so it is refused unless ``samples=N`` (``--samples N``) caps it;
* ``samples=N`` on a map-style ``Dataset`` is a seeded random subset, as on tensors
  (:func:`sharpness.objective.subsets.dataset_subset`); on a ``DataLoader`` or another iterable it is the first ``N``
  samples in the order the loader yields under a fixed seed (a shuffling loader's order for that seed, the same
  on every pass), the last batch cut to fit. A loader has no random access, so "first N" is the subset it can
  give without reading everything; a set shorter than ``N`` is refused with the message tensors get.

A first pass that takes longer than :data:`FIRST_PROGRESS_SECONDS` prints a line with the samples read so
far, then one every :data:`PROGRESS_SECONDS`, so a slow loader is never silent (and a fast one, or a refusal,
stays one line).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data import Dataset as TorchDataset

from .batches import _rng_pass, batch_size, slice_batch
from ..errors import InputError
from .subsets import check_samples, dataset_subset

#: Seconds of a first pass before its first progress line, and between two of them.
FIRST_PROGRESS_SECONDS = 2.0
PROGRESS_SECONDS = 10.0


def has_len(data: Any) -> bool:
    """True when ``len(data)`` works (a DataLoader over an IterableDataset without ``__len__`` raises)."""
    try:
        len(data)
    except TypeError:
        return False
    return True


def analysis_stream(data: Any, *, samples: int | None, seed: int, split: str, batch_size: int,
                    batch_size_fn: Callable[[Any], int] | None = None,
                    progress: Callable[[str], None] | None = None) -> tuple[Any, Any, str]:
    """``(source, subset indices or None, kind)`` for a streamed analysis set under the module's contract.

    ``batch_size`` batches a ``Dataset`` (as the objective would); ``kind`` names what the user passed (for the
    report's ``analysis_set.source``). What the objective refuses anyway (a one-shot iterator, a string) is
    returned as it is, so its message stays the objective's."""
    idx = None
    if isinstance(data, TorchDataset) and not isinstance(data, (IterableDataset, DataLoader)) and has_len(data):
        if samples is not None:
            data, idx = dataset_subset(data, samples, seed, split=split)
            samples = None  # the subset is the cap
        kind = type(data).__name__
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    elif isinstance(data, IterableDataset):
        kind = type(data).__name__
        data = DataLoader(data, batch_size=batch_size)
    else:
        kind = type(data).__name__
        if not isinstance(data, DataLoader) and (isinstance(data, (str, bytes)) or not hasattr(data, "__iter__")
                                                 or iter(data) is data):
            return data, None, kind
    if samples is None and not has_len(data):
        raise InputError(f"expected a finite analysis set: a {kind} without len() may never end, so pass "
                         "samples=N (--samples N) to analyze its first N samples")
    return _Stream(data, kind=kind, cap=samples, seed=seed, split=split, batch_size_fn=batch_size_fn,
                   progress=progress), idx, kind


class _Stream:
    """The user's loader, cut at ``cap`` samples and announcing its first pass (module docstring)."""

    def __init__(self, data: Any, *, kind: str, cap: int | None, seed: int, split: str,
                 batch_size_fn: Callable[[Any], int] | None, progress: Callable[[str], None] | None) -> None:
        self.data, self.kind, self.cap, self.seed, self.split = data, kind, cap, seed, split
        self.batch_size_fn, self.progress = batch_size_fn, progress
        self._passes = 0

    # What batches._rng_pass saves and restores: the loader's own generators, as if it were passed directly.
    @property
    def generator(self) -> Any:
        return getattr(self.data, "generator", None)

    @property
    def sampler(self) -> Any:
        return getattr(self.data, "sampler", None)

    @property
    def batch_sampler(self) -> Any:
        return getattr(self.data, "batch_sampler", None)

    def __iter__(self) -> Iterator[Any]:
        first = self._passes == 0
        self._passes += 1
        if self.cap is None:
            yield from self._read(first)
            return
        # One order for every pass (whatever seed the pass runs under), so every pass cuts the same N samples.
        with _rng_pass(self.data, self.seed):
            yield from self._read(first)

    def _read(self, first: bool) -> Iterator[Any]:
        say = self.progress if first else None
        cut = f" (its first {self.cap})" if self.cap is not None else ""
        n, start = 0, time.perf_counter()
        wait, last = FIRST_PROGRESS_SECONDS, start
        for raw in self.data:
            b = batch_size(raw, self.batch_size_fn)
            if self.cap is not None and n + b > self.cap:
                if self.batch_size_fn is not None:
                    raise InputError(f"expected --samples {self.cap} to end on a batch boundary with batch_size_fn "
                                     f"(a batch it counts cannot be cut), got one from {n} to {n + b} samples")
                raw, b = slice_batch(raw, slice(0, self.cap - n), b), self.cap - n
            n += b
            yield raw
            if say and time.perf_counter() - last >= wait:
                wait, last = PROGRESS_SECONDS, time.perf_counter()
                say(f"first pass over the {self.kind}{cut}: {n} samples counted and hashed ({last - start:.0f} s)")
            if self.cap is not None and n >= self.cap:
                return
        if self.cap is not None:
            check_samples(self.cap, n, self.split)
