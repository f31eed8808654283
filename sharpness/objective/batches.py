"""The researcher's own data: batches that are any nest, sources that are anything re-iterable.

A *batch* is a tensor, or a tuple, list or dict nesting tensors (and per-sample lists such as strings). Its
*batch size* B is the length of the first tensor's leading dimension unless a ``batch_size_fn`` says
otherwise; every tensor whose leading dimension is B is sliced and hashed per sample.

An *analysis set* (:func:`as_source`) is in-memory tensors ``(x, y)``, a map-style
``torch.utils.data.Dataset`` (batched here, in order), a ``DataLoader``, or any re-iterable of batches (a list
of batches, an object whose ``__iter__`` starts over). A one-shot iterator or generator is refused: the
objective passes over the set many times and must see the same samples every time.

Default conventions, each replaceable by a callable:

* the model call (:func:`default_forward`): ``model(x)`` for a tensor or ``(x, y)``, ``model(x1, …, xk)`` for
  ``(x1, …, xk, y)``, ``model(**batch)`` for a dict without its target key; a ``.logits`` attribute or key,
  or the first element of a tuple, is taken as the output;
* the target (:func:`batch_target`): the last element of a tuple/list, ``batch[target_key]`` of a dict.

Fingerprint (:func:`sample_digests`): one SHA-256 per sample over the path, dtype, shape and bytes of each of
its leaves; the analysis set's content hash is the SHA-256 of the *sorted* digests, so it is independent of
the order (a shuffling loader has one fingerprint) and of the batching (batch sizes 1, 7 and N agree), and it
changes when any sample changes (an augmenting loader has a new one on every pass).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data import Dataset as TorchDataset

from ..errors import InputError

Batch = Any


# --- nests ---------------------------------------------------------------------------------------------------
def _like(mapping: Mapping, items: dict) -> Mapping:
    """``items`` as the type of ``mapping`` where that type can be rebuilt from a dict (else a plain dict)."""
    if type(mapping) is dict:
        return items
    try:
        return type(mapping)(items)
    except Exception:
        return items


def _is_container(obj: Any) -> bool:
    if isinstance(obj, Mapping):
        return True
    return isinstance(obj, (list, tuple)) and any(isinstance(v, (Tensor, dict, list, tuple)) for v in obj)


def tensors(batch: Batch) -> Iterator[tuple[str, Tensor]]:
    """``(path, tensor)`` for every tensor leaf, depth first (dict keys in their order, sequence indices)."""
    def walk(obj: Any, path: str) -> Iterator[tuple[str, Tensor]]:
        if isinstance(obj, Tensor):
            yield path, obj
        elif isinstance(obj, Mapping):
            for k, v in obj.items():
                yield from walk(v, f"{path}/{k}")
        elif _is_container(obj):
            for i, v in enumerate(obj):
                yield from walk(v, f"{path}/{i}")
    yield from walk(batch, "")


def tree_map(fn: Callable[[Tensor], Tensor], batch: Batch) -> Batch:
    """The same nest with ``fn`` applied to every tensor leaf (named tuples keep their type)."""
    if isinstance(batch, Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return _like(batch, {k: tree_map(fn, v) for k, v in batch.items()})
    if _is_container(batch):
        items = [tree_map(fn, v) for v in batch]
        if isinstance(batch, tuple) and hasattr(batch, "_fields"):
            return type(batch)(*items)
        return type(batch)(items)
    return batch


def to_device(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """Every tensor moved to ``device``; floating tensors cast to ``dtype``, integer and bool ones kept."""
    return tree_map(lambda t: t.to(device, dtype=dtype if t.is_floating_point() else None), batch)


def batch_size(batch: Batch, fn: Callable[[Batch], int] | None = None) -> int:
    """B of ``batch``: ``fn(batch)`` if given, else the leading dimension of its first tensor."""
    if fn is not None:
        n = fn(batch)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(f"batch_size_fn must return a non-negative integer, got {n!r}")
        return int(n)
    for _, t in tensors(batch):
        if t.ndim == 0:
            raise InputError(f"expected batch tensors with a leading batch dimension, got a 0-dim tensor in {describe(batch)}")
        return int(t.shape[0])
    raise InputError(f"expected a batch holding at least one tensor, got {describe(batch)}")


def slice_batch(batch: Batch, sl: slice, n: int) -> Batch:
    """Samples ``sl`` of a batch of ``n``: tensors (and per-sample lists) whose leading length is ``n``."""
    if isinstance(batch, Tensor):
        return batch[sl] if batch.ndim and batch.shape[0] == n else batch
    if isinstance(batch, Mapping):
        return _like(batch, {k: slice_batch(v, sl, n) for k, v in batch.items()})
    if _is_container(batch):
        items = [slice_batch(v, sl, n) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    if isinstance(batch, list) and len(batch) == n:
        return batch[sl]
    return batch


def describe(batch: Batch) -> str:
    """A short description of a batch's structure for error messages."""
    if isinstance(batch, Tensor):
        return f"a tensor of shape {tuple(batch.shape)}"
    if isinstance(batch, Mapping):
        return f"a dict with keys {sorted(map(str, batch))}"
    if isinstance(batch, (list, tuple)):
        parts = ", ".join(f"{tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__ for v in list(batch)[:4])
        return f"a {type(batch).__name__} of {len(batch)} ({parts})"
    return f"a {type(batch).__name__}"


# --- the default model call and target ------------------------------------------------------------------------
def batch_target(batch: Batch, target_key: str = "labels") -> Tensor:
    """The target of a batch: the last element of a tuple/list, ``batch[target_key]`` of a dict."""
    if isinstance(batch, Mapping):
        if target_key not in batch:
            raise InputError(f"expected a batch with target key {target_key!r}, got {describe(batch)}")
        return batch[target_key]
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[-1]
    raise InputError(
        f"expected a batch (inputs, targets) or a dict with key {target_key!r} for a built-in loss, got {describe(batch)}"
    )


def model_inputs(batch: Batch, target_key: str = "labels") -> tuple[tuple, dict]:
    """``(args, kwargs)`` of the default model call for ``batch`` (see the module docstring)."""
    if isinstance(batch, Tensor):
        return (batch,), {}
    if isinstance(batch, Mapping):
        return (), {k: v for k, v in batch.items() if k != target_key}
    if isinstance(batch, (list, tuple)):
        if len(batch) == 1:
            return (batch[0],), {}
        return tuple(batch[:-1]), {}
    raise InputError(f"expected a batch that is a tensor, tuple, list or dict, got {describe(batch)}")


def unpack_outputs(out: Any) -> Tensor:
    """The tensor the loss sees: ``out`` itself, ``out.logits``, ``out["logits"]`` or ``out[0]``."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, Mapping) and isinstance(out.get("logits"), Tensor):
        return out["logits"]
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise InputError(f"expected model outputs that are a tensor, have .logits, or are a tuple starting with one, got {type(out).__name__}")


# --- fingerprints -----------------------------------------------------------------------------------------------
def _rows(t: Tensor, n: int) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.reshape(n, -1).numpy()


def sample_digests(batch: Batch, n: int) -> list[bytes]:
    """One SHA-256 digest per sample of a batch of ``n`` (module docstring)."""
    leaves: list[tuple[bytes, Any]] = []
    for path, t in tensors(batch):
        if t.ndim and t.shape[0] == n:
            leaves.append((f"{path}:{str(t.dtype).removeprefix('torch.')}:{tuple(t.shape[1:])}".encode(), _rows(t, n)))
        else:  # a tensor shared by the whole batch: part of every sample
            leaves.append((f"{path}:shared".encode(), np.broadcast_to(_rows(t.reshape(1, -1), 1), (n, max(t.numel(), 1)))))
    digests = []
    for i in range(n):
        h = hashlib.sha256()
        for header, rows in leaves:
            h.update(header)
            h.update(rows[i].tobytes())
        digests.append(h.digest())
    return digests


def combine_digests(digests: Iterable[bytes]) -> str:
    """The order-independent content hash: SHA-256 of the sorted per-sample digests."""
    h = hashlib.sha256()
    for d in sorted(digests):
        h.update(d)
    return h.hexdigest()


# --- sources ----------------------------------------------------------------------------------------------------
DATA_POLICIES = ("verify", "cache", "trust")


@contextmanager
def _rng_pass(data: Any, seed: int) -> Iterator[None]:
    """One pass over ``data`` that leaves the caller's random state as it was.

    A shuffling ``DataLoader`` draws its order (and its workers' seeds) from the global torch RNG or from its own
    ``generator``; the pass runs inside :func:`torch.random.fork_rng` seeded with ``seed`` and restores the
    loader's generators afterwards, so iterating neither advances the user's RNG nor changes their loader, and
    passes with the same ``seed`` visit the samples in the same order (bitwise-reproducible sums).
    """
    gens = []
    for owner in (data, getattr(data, "sampler", None), getattr(data, "batch_sampler", None),
                  getattr(getattr(data, "batch_sampler", None), "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h, _ in gens):
            gens.append((g, g.get_state()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            yield
        finally:
            for g, state in gens:
                g.set_state(state)


class BatchSource:
    """A re-iterable of raw batches from the user's analysis set (not yet moved to the device).

    Args:
        data: a ``DataLoader``, a map-style ``Dataset`` (batched in order, ``batch_size`` samples at a time,
            with PyTorch's default collation), an ``IterableDataset`` (likewise), or any re-iterable of batches.
        batch_size: samples per batch for a ``Dataset`` (default 256); ignored otherwise.
    """

    def __init__(self, data: Any, *, batch_size: int | None = None) -> None:
        self.kind = type(data).__name__
        if isinstance(data, DataLoader):
            self.data = data
        elif isinstance(data, (TorchDataset, IterableDataset)):
            if not isinstance(data, IterableDataset) and not hasattr(data, "__len__"):
                raise InputError(f"expected a map-style Dataset with __len__, got {type(data).__name__} without it")
            self.data = DataLoader(data, batch_size=batch_size or 256, shuffle=False)
        elif isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
            raise InputError(
                "expected an analysis set that is tensors (x, y), a Dataset, a DataLoader or a re-iterable of batches, "
                f"got {type(data).__name__}"
            )
        else:
            if iter(data) is data:
                raise InputError(
                    f"expected a re-iterable analysis set (a DataLoader, Dataset or list of batches), got a one-shot "
                    f"{type(data).__name__} that is exhausted after one pass; wrap it in list(...) or pass a DataLoader"
                )
            self.data = data

    def passes(self, seed: int = 0, shard: tuple[int, int] | None = None) -> Iterator[Batch]:
        """One pass over the raw batches, in the order ``seed`` fixes for a shuffling loader.

        ``shard=(rank, W)``: only batches ``rank, rank + W, …`` of that pass. A ``DataLoader`` over a map-style
        dataset (with automatic batching) then loads only those batches' samples: its batch sampler is walked
        whole (indices only, drawing the same random numbers as an unsharded pass, so the W shards of one
        ``seed`` partition the batches of the one-process pass) and the others are never fetched. Any other
        source is iterated whole and the other batches are dropped as they arrive.
        """
        rank, world = shard or (0, 1)
        view = self._strided(rank, world) if world > 1 else None
        with _rng_pass(self.data, seed):
            if view is not None:
                yield from view
            else:
                for i, batch in enumerate(self.data):
                    if i % world == rank:
                        yield batch

    def _strided(self, rank: int, world: int) -> DataLoader | None:
        """The loader that fetches only this rank's batches (kept: it is re-iterable), or None if none can."""
        loader = self.data
        if not (isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset)
                and loader.batch_sampler is not None):
            return None
        key = (rank, world)
        views = self.__dict__.setdefault("_views", {})
        if key not in views:
            workers = loader.num_workers
            views[key] = DataLoader(
                loader.dataset, batch_sampler=_StridedBatches(loader.batch_sampler, rank, world), num_workers=workers,
                collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, timeout=loader.timeout,
                worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context,
                generator=loader.generator, prefetch_factor=loader.prefetch_factor if workers else None,
                persistent_workers=loader.persistent_workers if workers else False,
                pin_memory_device=getattr(loader, "pin_memory_device", ""), in_order=getattr(loader, "in_order", True))
        return views[key]


class _StridedBatches:
    """Batches ``rank, rank + W, …`` of a batch sampler's pass (every batch's indices drawn, a W-th kept)."""

    def __init__(self, inner: Any, rank: int, world: int) -> None:
        self.inner, self.rank, self.world = inner, rank, world

    def __iter__(self) -> Iterator[Any]:
        for i, indices in enumerate(self.inner):
            if i % self.world == self.rank:
                yield indices

    def __len__(self) -> int:
        return max(0, (len(self.inner) - self.rank + self.world - 1) // self.world)


class CachedSource:
    """The batches of one pass, kept in memory: the objective fixed to one draw of an augmenting loader.
    Under ``torchrun`` each rank keeps only its own batches, so ``shard`` is already applied."""

    def __init__(self, batches: list[Batch], kind: str) -> None:
        self.batches = batches
        self.kind = kind

    def passes(self, seed: int = 0, shard: tuple[int, int] | None = None) -> Iterator[Batch]:
        yield from self.batches
