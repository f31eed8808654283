"""The result type of every loader (:class:`Dataset`) and the one finishing step they all share: validation,
the seeded train/test subsets, and the recorded spec with its SHA-256 (the package docstring lists the layout).

A loader returns a :class:`_Raw` (numpy arrays or tensors plus what it knows: task, classes, arguments,
source); :func:`_finalize` checks and converts it, so the conventions hold for every dataset in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..files.hashing import hash_tensors


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train (and optional test) tensors plus the JSON-able ``spec`` that rebuilds them."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor | None
    y_test: Tensor | None
    spec: dict = field(default_factory=dict)

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of the ``"train"`` or ``"test"`` split."""
        if name == "train":
            return self.x_train, self.y_train
        if name == "test":
            if self.x_test is None or self.y_test is None:
                raise InputError(
                    f"expected a dataset with a test split, got {self.spec.get('name')!r} with a train split only"
                )
            return self.x_test, self.y_test
        raise InputError(f"expected split 'train' or 'test', got {name!r}")

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"Dataset(name={s.get('name')!r}, n_train={s.get('n_train')}, n_test={s.get('n_test')}, "
            f"input_shape={s.get('input_shape')}, num_classes={s.get('num_classes')}, task={s.get('task')!r})"
        )


def _dataset_sha256(x_train, y_train, x_test, y_test) -> str:
    return hash_tensors([("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)])


@dataclass
class _Raw:
    x_train: np.ndarray | Tensor
    y_train: np.ndarray | Tensor
    x_test: np.ndarray | Tensor | None
    y_test: np.ndarray | Tensor | None
    task: str
    num_classes: int | None
    args: dict
    source: str | None = None
    extra: dict = field(default_factory=dict)


#: Floating dtypes a dataset's inputs and regression targets may be stored in (``load_dataset(dtype=)``).
FLOAT_DTYPES = (torch.float32, torch.float64)


def _to_tensor(a, dtype: torch.dtype) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach().to(dtype=dtype, copy=True).contiguous()
    return torch.tensor(np.ascontiguousarray(a), dtype=dtype)


def _dtype_name(a) -> str:
    """``"float64"``, ``"int32"``, ... for a NumPy array, a tensor (what the source stored) or a torch dtype."""
    return str(a if isinstance(a, torch.dtype) else a.dtype).removeprefix("torch.")


def _is_token_ids(a) -> bool:
    """Signed integer inputs are token ids (an embedding's indices) and stay integers; ``uint8`` and ``bool``
    are pixels and masks, which models read as numbers (they become floating, as every image loader does)."""
    if isinstance(a, Tensor):
        return not a.is_floating_point() and not a.is_complex() and a.dtype not in (torch.uint8, torch.bool)
    return np.issubdtype(a.dtype, np.signedinteger)


def _floating(a, dtype: torch.dtype) -> torch.dtype:
    """Where floating values are stored: float64 only when asked for and the source holds float64 (a float32 or
    integer source is exact in float32, so its tensors and hash are the same in float32 and float64 analyses)."""
    wide = a.dtype == torch.float64 if isinstance(a, Tensor) else np.asarray(a).dtype == np.float64
    return torch.float64 if dtype == torch.float64 and wide else torch.float32


def _inputs(a, dtype: torch.dtype) -> Tensor:
    """``x`` as stored: token ids as int64, everything else as :func:`_floating` says."""
    return _to_tensor(a, torch.int64 if _is_token_ids(a) else _floating(a, dtype))


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in FLOAT_DTYPES:
        raise InputError(f"expected a dataset dtype of torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _finalize(name: str, raw: _Raw, *, subset: int | None, seed: int, test_subset: int | None = None,
              dtype: torch.dtype = torch.float32) -> Dataset:
    """Checked tensors and their spec. Floating ``x`` and regression targets are stored in ``dtype`` (float32
    for training, float64 for a float64 analysis: it never sees a float32 rounding of the user's data);
    signed-integer ``x`` (token ids) stays int64; the spec records both dtypes (:func:`_dataset`)."""
    label = f"dataset {name!r}"
    dtype = _check_dtype(dtype)
    if raw.task == "language-model":
        return _finalize_tokens(name, raw, subset=subset, seed=seed, test_subset=test_subset, dtype=dtype)
    if raw.x_test is None and raw.y_test is not None or raw.x_test is not None and raw.y_test is None:
        raise InputError(f"expected both x_test and y_test or neither for {label}, got only one of them")
    x_train = _inputs(raw.x_train, dtype)
    x_test = None if raw.x_test is None else _inputs(raw.x_test, dtype)
    for split, x in (("train", x_train), ("test", x_test)):
        if x is None:
            continue
        if x.ndim < 2 or x.shape[0] == 0:
            raise InputError(f"expected {split} x of shape (N, ...) with N ≥ 1 for {label}, got shape {list(x.shape)}")
        bad = ~torch.isfinite(x) if x.is_floating_point() else None
        if bad is not None and bad.any():
            kind = "NaN" if torch.isnan(x).any() else "Inf"
            raise InputError(f"expected finite {split} x for {label}, got {kind} in {int(bad.sum())} entries")
    if x_test is not None and x_test.shape[1:] != x_train.shape[1:]:
        raise InputError(
            f"expected test x with per-sample shape {list(x_train.shape[1:])} like train for {label}, "
            f"got {list(x_test.shape[1:])}"
        )

    num_classes = raw.num_classes
    if raw.task == "classification":
        y_train = _labels(raw.y_train, label, "train")
        y_test = None if raw.y_test is None else _labels(raw.y_test, label, "test")
        ymax = max(int(y_train.max()), -1 if y_test is None else int(y_test.max()))
        inferred = None
        if num_classes is None:  # recorded: training builds this many outputs (label_gap says so when it gaps)
            num_classes = ymax + 1
            seen = torch.unique(y_train if y_test is None else torch.cat([y_train, y_test]))
            inferred = {"from": "largest label + 1", "distinct_labels": int(len(seen))}
        elif ymax >= num_classes:
            raise InputError(f"expected labels in [0, {num_classes}) for {label}, got label {ymax}")
        output_dim = int(num_classes)
    else:
        y_train = _to_tensor(raw.y_train, _floating(raw.y_train, dtype))
        y_test = None if raw.y_test is None else _to_tensor(raw.y_test, _floating(raw.y_test, dtype))
        for split, y in (("train", y_train), ("test", y_test)):
            if y is not None and not torch.isfinite(y).all():
                raise InputError(f"expected finite {split} regression targets for {label}, got NaN/Inf")
        num_classes = None
        output_dim = int(math.prod(y_train.shape[1:]))
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x is not None and y is not None and x.shape[0] != y.shape[0]:
            raise InputError(f"expected as many {split} labels as samples for {label}, got {x.shape[0]} x vs {y.shape[0]} y")

    args = dict(raw.args)
    x_train, y_train, x_test, y_test = _subsets(x_train, y_train, x_test, y_test, args, subset=subset,
                                                test_subset=test_subset, seed=seed, label=label)

    ds = _dataset(name, raw, args, x_train, y_train, x_test, y_test, num_classes=num_classes, output_dim=output_dim,
                  dtype=dtype)
    if raw.task == "classification" and inferred is not None:
        ds.spec["num_classes_inferred"] = inferred
    return ds


def _dataset(name: str, raw: _Raw, args: dict, x_train: Tensor, y_train: Tensor, x_test: Tensor | None,
             y_test: Tensor | None, *, num_classes: int | None, output_dim: int, dtype: torch.dtype) -> Dataset:
    """The finished splits with their recorded spec (the one place its keys are written). ``x_dtype`` and
    ``y_dtype`` are the tensors' dtypes (the hash is over them as stored), ``stored_x_dtype`` what the source
    held (a float64 file read for training is ``float64`` → ``float32``)."""
    spec = {
        "name": name,
        "args": _jsonable(args),
        "n_train": int(x_train.shape[0]),
        "n_test": None if x_test is None else int(x_test.shape[0]),
        "input_shape": [int(d) for d in x_train.shape[1:]],
        "num_classes": None if num_classes is None else int(num_classes),
        "output_dim": int(output_dim),
        "task": raw.task,
        "source": raw.source,
        **raw.extra,
        "x_dtype": _dtype_name(x_train),
        "y_dtype": _dtype_name(y_train),
        "stored_x_dtype": _dtype_name(raw.x_train),
        "sha256": _dataset_sha256(x_train, y_train, x_test, y_test),
    }
    return Dataset(x_train, y_train, x_test, y_test, spec)


def _subsets(x_train: Tensor, y_train: Tensor, x_test: Tensor | None, y_test: Tensor | None, args: dict, *,
             subset: int | None, test_subset: int | None, seed: int, label: str):
    """The seeded ``subset`` of the training split and ``test_subset`` of the test split (indices sorted), each
    recorded in ``args`` with its indices' SHA-256 so that a spec rebuilds exactly these samples. ``test_subset``
    is recorded only when used, so the specs of existing checkpoints do not change."""
    args["seed"] = seed
    args["subset"] = subset
    for what, size, split_seed in (("subset", subset, seed), ("test_subset", test_subset, seed + 1)):
        if size is None:
            continue
        x, y = (x_train, y_train) if what == "subset" else (x_test, y_test)
        n = 0 if x is None else x.shape[0]
        if not 1 <= size <= n:
            split = "train" if what == "subset" else "test"
            raise InputError(f"expected {what} in [1, {n}] (the {split} size of {label}), got {size}")
        # the test draw uses another seed than the training draw's, so the two are not the same positions
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))[:size].sort().values
        x, y = x[idx].contiguous(), y[idx].contiguous()
        if what == "subset":
            x_train, y_train = x, y
        else:
            x_test, y_test = x, y
            args["test_subset"] = size
        args[f"{what}_indices_sha256"] = hash_tensors([("indices", idx.to(torch.int64))])
    return x_train, y_train, x_test, y_test


def _finalize_tokens(name: str, raw: _Raw, *, subset: int | None, seed: int, test_subset: int | None = None,
                     dtype: torch.dtype = torch.float32) -> Dataset:
    """The language-model case of :func:`_finalize`: int64 token windows ``(N, T)`` and next-token targets."""
    x_train, y_train = _to_tensor(raw.x_train, torch.int64), _to_tensor(raw.y_train, torch.int64)
    x_test = None if raw.x_test is None else _to_tensor(raw.x_test, torch.int64)
    y_test = None if raw.y_test is None else _to_tensor(raw.y_test, torch.int64)
    args = dict(raw.args)
    x_train, y_train, x_test, y_test = _subsets(x_train, y_train, x_test, y_test, args, subset=subset,
                                                test_subset=test_subset, seed=seed, label=f"dataset {name!r}")
    return _dataset(name, raw, args, x_train, y_train, x_test, y_test, num_classes=raw.num_classes,
                    output_dim=raw.num_classes, dtype=dtype)


def recorded_sha256(ds: Dataset, spec: dict) -> str:
    """The SHA-256 of ``ds`` with its floating tensors in the dtypes ``spec`` records (``x_dtype``, ``y_dtype``;
    a spec written before dtypes were recorded held every ``x`` and floating ``y`` in float32): a float64
    rebuild of a float32 spec verifies against the float32 hash, since rounding to float32 is deterministic."""
    legacy = _legacy(spec)

    def stored(t: Tensor | None, key: str) -> Tensor | None:
        if t is None or not (t.is_floating_point() or key == "x_dtype" and legacy):
            return t
        return t.to(getattr(torch, spec.get(key, "float32")))

    return _dataset_sha256(stored(ds.x_train, "x_dtype"), stored(ds.y_train, "y_dtype"),
                           stored(ds.x_test, "x_dtype"), stored(ds.y_test, "y_dtype"))


def _legacy(spec: dict) -> bool:
    """A spec written before dtypes were recorded: its integer inputs were stored (and trained on) as float32."""
    return "x_dtype" not in spec and spec.get("task") != "language-model"


def as_recorded(ds: Dataset, spec: dict) -> Dataset:
    """``ds`` with the inputs' kind ``spec`` records: a legacy spec's integer ``x`` becomes floating again, so a
    model trained on those numbers is analyzed on them."""
    if not _legacy(spec) or ds.x_train.is_floating_point():
        return ds
    x_test = None if ds.x_test is None else ds.x_test.to(torch.float32)
    return Dataset(ds.x_train.to(torch.float32), ds.y_train, x_test, ds.y_test, {**ds.spec, "x_dtype": "float32"})


def label_gap(ds: Dataset) -> str | None:
    """One line when the class count was inferred (largest label + 1) and fewer labels occur (a stray label 50
    among 0–9 gives 51 classes, so training builds a 51-output model), else ``None``. Said by training, where the
    count builds the model; an analysis takes its classes from the model."""
    inferred, n = ds.spec.get("num_classes_inferred"), ds.spec.get("num_classes")
    if not inferred or inferred["distinct_labels"] == n:
        return None
    k = inferred["distinct_labels"]
    return (f"dataset {ds.spec.get('name')!r}: {n} classes inferred from the largest label {n - 1}, but only {k} "
            f"distinct labels occur ({n - k} of [0, {n}) never do); relabel to [0, {k}), or pass num_classes={n} "
            f"(--data-kwargs '{{\"num_classes\": {n}}}') to confirm it")


def _labels(y, label: str, split: str) -> Tensor:
    a = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if a.dtype == np.bool_:
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"expected integer {split} labels for {label}, got dtype {a.dtype}")
    if a.ndim != 1:
        raise InputError(f"expected {split} labels of shape (N,) for {label}, got shape {list(a.shape)}")
    if a.size and a.min() < 0:
        raise InputError(f"expected non-negative {split} labels for {label}, got label {int(a.min())}")
    return torch.tensor(a.astype(np.int64))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _short(obj, n: int = 80) -> str:
    s = repr(obj)
    return s if len(s) <= n else s[: n - 1] + "…"


def _check_int(name: str, value, *, minimum: int, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"expected {name} to be an integer ≥ {minimum} for {label}, got {value!r}")
    return int(value)


def _check_float(name: str, value, *, minimum: float, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value) or value < minimum:
        raise InputError(f"expected {name} to be a finite number ≥ {minimum} for {label}, got {value!r}")
    return float(value)
