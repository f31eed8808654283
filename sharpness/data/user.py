"""Training tensors from what a researcher's data function returned (``--data FILE.py:fn`` for ``train``/``sweep``).

Training draws its own batches from the seeded data order (that is what makes small- and large-batch runs
comparable), so the function's splits are materialized once into ``x, y`` tensors and finished like an ``.npz``
file (:func:`~sharpness.data.dataset._finalize`: ``x`` float32 or int64 token ids, integer labels int64, the same checks and the
same SHA-256): the same tensors give the same :class:`Dataset`, whichever way they arrived.

Accepted: ``(x, y)`` tensors; a map-style ``Dataset`` of ``(x, y)`` samples (read in index order); a
``DataLoader`` (its dataset re-read in order with its ``collate_fn``: its batch size and shuffling are not used;
an ``IterableDataset`` is iterated once as it is); any re-iterable of ``(x, y)`` batches. The first batch is
read again under another RNG seed: a source that changes between passes (random augmentation, shuffling) is
refused, since a run must be trained, resumed and analyzed on the same samples.

The spec records ``name = "user-code"`` and the reference in ``args["ref"]``; it is never rebuilt from a spec
(:func:`~sharpness.data.dataset_from_spec` refuses it): the code runs only when the user names it again.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from ..errors import InputError
from .dataset import Dataset, _finalize, _Raw

#: ``spec["name"]`` of a dataset materialized from a user's data function.
USER_CODE = "user-code"


def user_code_dataset(ref: str, train: Any, test: Any = None, *, subset: int | None = None, seed: int = 0) -> Dataset:
    """The :class:`Dataset` of the ``train`` (and optional ``test``) split objects ``ref``'s function returned."""
    x, y = materialize(train, f"{ref} (train split)")
    xt, yt = (None, None) if test is None else materialize(test, f"{ref} (test split)")
    integer = not y.is_floating_point() and not y.is_complex()
    if yt is not None and integer != (not yt.is_floating_point() and not yt.is_complex()):
        raise InputError(f"expected train and test labels of the same kind from data function {ref!r}, got dtypes "
                         f"{y.dtype} and {yt.dtype}")
    raw = _Raw(x, y, xt, yt, "classification" if integer else "regression", None, {"ref": ref}, source=None)
    return _finalize(USER_CODE, raw, subset=subset, seed=seed)


def refuse_rebuild(spec: dict) -> None:
    """Raise the one-line error for rebuilding a ``user-code`` spec (a recorded reference is never run)."""
    ref = (spec.get("args") or {}).get("ref") or "FILE.py:FN"
    raise InputError(f"expected --data {ref} again: this checkpoint's data came from user code, which runs only "
                     f"when named on the command line, never from a recorded reference")


def materialize(obj: Any, label: str) -> tuple[Tensor, Tensor]:
    """``(x, y)`` tensors: the samples of ``obj`` in order (see the module docstring for what is accepted)."""
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, Tensor) for t in obj):
        return obj[0].detach(), obj[1].detach()
    source = _in_order(obj)
    xs, ys = [], []
    for batch in _batches(source, label):
        xs.append(batch[0])
        ys.append(batch[1])
    if not xs:
        raise InputError(f"expected at least one (x, y) batch from data function {label}, got none")
    # Passes run under a seeded global RNG (sharpness.objective.batches), so a random transform is the same in two passes
    # with one seed: the second pass uses another seed, and torch, NumPy or Python randomness all show.
    again = next(_batches(source, label, seed=1))
    if not (_same(again[0], xs[0]) and _same(again[1], ys[0])):
        raise InputError(f"expected data function {label} to give the same samples on every pass, got another first "
                         "batch on a second pass (random augmentation or shuffling?): training needs fixed samples")
    try:
        return torch.cat(xs), torch.cat(ys)
    except RuntimeError as e:
        raise InputError(f"expected (x, y) batches of one per-sample shape from data function {label}, got "
                         f"{str(e).splitlines()[0]}") from None


def _in_order(obj: Any) -> Any:
    """A DataLoader over a map-style dataset is re-read in index order (its sampler and batch size unused)."""
    from ..objective.batches import BatchSource  # the analysis set's rules for what is iterable (and re-iterable)

    if isinstance(obj, DataLoader) and not isinstance(obj.dataset, IterableDataset):
        collate = obj.collate_fn if obj.batch_size is not None else None  # None: default collation
        obj = DataLoader(obj.dataset, batch_size=obj.batch_size or 256, shuffle=False, collate_fn=collate)
    return BatchSource(obj)


def _batches(source: Any, label: str, seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    for batch in source.passes(seed):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, Tensor) for t in batch)):
            what = (f"dict with keys {sorted(batch)}" if isinstance(batch, dict) else
                    f"{type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__)
            raise InputError(f"expected (x, y) tensor batches from data function {label} for training, got {what}")
        yield batch[0].detach(), batch[1].detach()


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
