"""Named datasets → tensors plus a recorded, JSON-able spec. Nothing here downloads.

Every loader returns a :class:`Dataset`: ``x_train, y_train, x_test, y_test`` tensors and a ``spec`` dict
that is enough to rebuild the exact same tensors later (:func:`dataset_from_spec`) and to check that they
*are* the same (a SHA-256 over the tensors' bytes, see :func:`hash_tensors`).

Conventions
-----------
- ``x`` is ``float32``. Images are ``(N, C, H, W)`` scaled to ``[0, 1]``; vectors are ``(N, D)``.
- Classification labels are ``int64`` of shape ``(N,)`` in ``[0, num_classes)``.
- Regression targets are ``float32``; ``teacher-student`` gives ``(N, out_dim)``, an ``npz`` file keeps the
  shape it was saved with. ``spec["num_classes"]`` is ``None`` for regression.
- Randomness is an argument: ``seed`` drives synthetic generation, the digits train/test split and the
  ``subset`` draw. Global RNGs (``torch``, ``numpy.random``, ``random``) are never touched.

Names (:func:`dataset_names`)
-----------------------------
``mnist1d``          Greydanus' MNIST-1D generated in-process (4000 train / 1000 test, 40 features, 10 classes).
``fashion-mnist``    IDX files; searched in ``data_dir``, ``$SHARPNESS_DATA``, torchvision's ``FashionMNIST/raw``
                     layout below either, and ``/usr/share/datasets/fashion-mnist``.
``mnist``            same, with ``mnist`` / ``MNIST/raw`` sub-directories.
``idx``              any directory (``data_dir``) holding ``train-images/labels`` (+ optional ``t10k-*``) IDX files.
``cifar10``          the "python version" pickle batches in ``cifar-10-batches-py``, read by a restricted unpickler.
``cifar100``         ``cifar-100-python/{train,test}``; ``label_mode="fine"`` (100 classes) or ``"coarse"`` (20).
``digits``           scikit-learn's bundled 8×8 digits (1797 samples, 64 features in [0, 1]), seeded 80/20 split.
``npz``              a user file: arrays ``x``, ``y`` and optionally ``x_test``, ``y_test``; a name ending in
                     ``.npz`` is taken as such a path.
``blobs``            Gaussian blobs (classification).
``teacher-student``  regression on the outputs of a random linear or one-hidden-layer tanh teacher plus noise.
``text``             byte-level language modelling: ``x`` = windows of ``context`` bytes (``int64``, ``(N, T)``),
                     ``y`` = the same windows shifted by one byte (next-byte targets), vocabulary 256; the last
                     ``test_fraction`` of the windows is the test split. From ``path`` (any file), or by default
                     from the documentation text every CPython ships: ``pydoc_data.topics`` (the language
                     reference's topics as ``help()`` shows them, 466 117 bytes on CPython 3.11.7), joined in sorted
                     key order and UTF-8 encoded — present wherever ``help("if")`` works, never downloaded. Its
                     SHA-256 and the Python version are recorded (``spec["text_sha256"]``, ``spec["text_source"]``):
                     another Python's docs are another dataset, and rebuilding refuses the mismatch.

Spec layout
-----------
::

    {"name": "fashion-mnist",                 # canonical name
     "args": {"seed": 0, "subset": 1000,      # every argument needed to rebuild (defaults filled in);
              "subset_indices_sha256": "…"},  # present only with a subset
     "n_train": 1000, "n_test": 10000,
     "input_shape": [1, 28, 28],
     "num_classes": 10,                       # None for regression
     "output_dim": 10,                        # model outputs needed: num_classes, or the target width
     "task": "classification",                # or "regression"
     "source": "/usr/share/datasets/fashion-mnist",   # where files were read (None if generated)
     "sha256": "…"}                           # hash_tensors over train and test tensors
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import os
import pickle
import random
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from sharpness.errors import InputError

__all__ = [
    "Dataset",
    "load_dataset",
    "dataset_from_spec",
    "dataset_names",
    "hash_tensors",
    "read_idx",
]

_SYSTEM_DATA_ROOT = "/usr/share/datasets"


# ----------------------------------------------------------------------------------------------------------
# The result type
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Hashing
# ----------------------------------------------------------------------------------------------------------


def hash_tensors(named: Iterable[tuple[str, Tensor | np.ndarray | None]]) -> str:
    """SHA-256 hex digest of named tensors, stable across processes, platforms and torch versions.

    For each ``(name, t)`` in order the hash absorbs the ASCII header ``"{name}:{dtype}:{shape};"`` — dtype
    as numpy's little-endian type string (e.g. ``<f4``, ``|u1``, ``<i8``), shape as a JSON list — followed
    by the C-contiguous little-endian bytes of ``t``. A ``None`` entry absorbs ``"{name}:none;"``.
    A dataset's ``spec["sha256"]`` is this function over
    ``[("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)]``.
    """
    h = hashlib.sha256()
    for name, t in named:
        if t is None:
            h.update(f"{name}:none;".encode())
            continue
        a = t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        h.update(f"{name}:{a.dtype.str}:{json.dumps(list(a.shape))};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _dataset_sha256(x_train, y_train, x_test, y_test) -> str:
    return hash_tensors([("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)])


# ----------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------

_ALIASES = {
    "fashion-mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "mnist": "mnist",
    "mnist1d": "mnist1d",
    "mnist-1d": "mnist1d",
    "idx": "idx",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "cifar100": "cifar100",
    "cifar-100": "cifar100",
    "digits": "digits",
    "npz": "npz",
    "blobs": "blobs",
    "teacher-student": "teacher-student",
    "text": "text",
}


def dataset_names() -> list[str]:
    """Canonical dataset names accepted by :func:`load_dataset` (a path ending in ``.npz`` also works)."""
    return sorted(_LOADERS)


def load_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> Dataset:
    """Load a named dataset as tensors plus a spec (module docstring: names, layout, conventions).

    Args:
        name: one of :func:`dataset_names` (case-insensitive, ``_`` = ``-``) or a path ending in ``.npz``.
        data_dir: directory searched first for file-based datasets (required for ``idx``).
        subset: keep a random subset of this many *training* samples (drawn with ``seed``, sorted by index;
            the test split is kept whole). The indices' SHA-256 is recorded in ``spec["args"]``.
        test_subset: likewise keep a seeded random subset of this many *test* samples (a CPU budget: every
            epoch's evaluation costs a pass over the test split), recorded the same way.
        seed: generation seed for synthetic data, split seed for ``digits``, and the subset draw seed.
        **kwargs: dataset-specific arguments (e.g. ``path=`` for ``npz``, ``n=``/``dim=`` for ``blobs``);
            unknown ones raise :class:`~sharpness.errors.InputError`.

    Raises:
        InputError: unknown name or argument, missing or malformed files, labels out of range, NaN/Inf in
            ``x``, or a subset outside ``[1, n_train]``.
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"expected a dataset name (one of {', '.join(dataset_names())}), got {name!r}")
    if name.lower().endswith(".npz") and name.lower() != "npz":
        if "path" in kwargs and kwargs["path"] is not None:
            raise InputError(f"expected either an .npz dataset name or path=, got both {name!r} and {kwargs['path']!r}")
        kwargs["path"] = name
        name = "npz"
    key = _ALIASES.get(name.strip().lower().replace("_", "-"))
    if key is None:
        raise InputError(
            f"expected a dataset name (one of {', '.join(dataset_names())}) or a path ending in .npz, got {name!r}"
        )
    for what, value in (("subset", subset), ("test_subset", test_subset)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise InputError(f"expected {what} to be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"expected seed to be an integer, got {seed!r}")
    seed = int(seed)
    loader, allowed = _LOADERS[key]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "no extra arguments"
        raise InputError(f"expected arguments for dataset {key!r} among ({expected}), got unknown {', '.join(unknown)}")
    raw = loader(data_dir=data_dir, seed=seed, **kwargs)
    return _finalize(key, raw, subset=None if subset is None else int(subset), seed=seed,
                     test_subset=None if test_subset is None else int(test_subset))


def dataset_from_spec(spec: dict, *, data_dir: str | None = None) -> Dataset:
    """Rebuild the dataset a spec describes (e.g. one recorded in a checkpoint) and verify its hash.

    File-based datasets are searched first in ``data_dir``, then in the recorded ``spec["source"]``, then
    in the usual places. For ``npz``, a missing recorded path is retried as ``data_dir/<file name>``.

    Raises:
        InputError: the spec is malformed, the data cannot be found, or the rebuilt tensors' SHA-256 (or
            the subset indices' hash) differs from the recorded one.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("args", {}), dict):
        raise InputError(f"expected a data spec dict with 'name' and 'args', got {_short(spec)}")
    args = dict(spec.get("args") or {})
    want_subset_hash = args.pop("subset_indices_sha256", None)
    want_test_subset_hash = args.pop("test_subset_indices_sha256", None)
    want = spec.get("sha256")
    name = spec["name"]
    if _ALIASES.get(name) == "npz" and data_dir is not None and isinstance(args.get("path"), str):
        candidate = Path(data_dir) / Path(args["path"]).name
        if not Path(args["path"]).is_file() and candidate.is_file():
            args["path"] = str(candidate)
    source = spec.get("source")
    attempts = [d for d in (data_dir, source) if d] or [None]
    if len(attempts) == 2 and attempts[0] == attempts[1]:
        attempts = attempts[:1]
    first_error: InputError | None = None
    for d in attempts:
        try:
            ds = load_dataset(name, data_dir=d, **args)
            got_subset_hash = ds.spec["args"].get("subset_indices_sha256")
            if want_subset_hash is not None and got_subset_hash != want_subset_hash:
                raise InputError(
                    f"expected subset indices with sha256 {want_subset_hash[:12]}… when rebuilding dataset "
                    f"{name!r}, got {str(got_subset_hash)[:12]}…"
                )
            got_test_hash = ds.spec["args"].get("test_subset_indices_sha256")
            if want_test_subset_hash is not None and got_test_hash != want_test_subset_hash:
                raise InputError(
                    f"expected test subset indices with sha256 {want_test_subset_hash[:12]}… when rebuilding dataset "
                    f"{name!r}, got {str(got_test_hash)[:12]}…"
                )
            if want is not None and ds.spec["sha256"] != want:
                raise InputError(
                    f"expected dataset {name!r} with sha256 {want[:12]}… as recorded, got {ds.spec['sha256'][:12]}… "
                    f"from {ds.spec.get('source') or 'regeneration'} (different files or library version)"
                )
            return ds
        except InputError as e:
            first_error = first_error or e
    assert first_error is not None
    raise first_error


# ----------------------------------------------------------------------------------------------------------
# Shared finishing step: validation, subset, spec
# ----------------------------------------------------------------------------------------------------------


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


def _to_tensor(a, dtype: torch.dtype) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach().to(dtype=dtype, copy=True).contiguous()
    return torch.tensor(np.ascontiguousarray(a), dtype=dtype)


def _finalize(name: str, raw: _Raw, *, subset: int | None, seed: int, test_subset: int | None = None) -> Dataset:
    label = f"dataset {name!r}"
    if raw.task == "language-model":
        return _finalize_tokens(name, raw, subset=subset, seed=seed, test_subset=test_subset)
    if raw.x_test is None and raw.y_test is not None or raw.x_test is not None and raw.y_test is None:
        raise InputError(f"expected both x_test and y_test or neither for {label}, got only one of them")
    x_train = _to_tensor(raw.x_train, torch.float32)
    x_test = None if raw.x_test is None else _to_tensor(raw.x_test, torch.float32)
    for split, x in (("train", x_train), ("test", x_test)):
        if x is None:
            continue
        if x.ndim < 2 or x.shape[0] == 0:
            raise InputError(f"expected {split} x of shape (N, ...) with N ≥ 1 for {label}, got shape {list(x.shape)}")
        bad = ~torch.isfinite(x)
        if bad.any():
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
        if num_classes is None:
            num_classes = ymax + 1
        elif ymax >= num_classes:
            raise InputError(f"expected labels in [0, {num_classes}) for {label}, got label {ymax}")
        output_dim = int(num_classes)
    else:
        y_train = _to_tensor(raw.y_train, torch.float32)
        y_test = None if raw.y_test is None else _to_tensor(raw.y_test, torch.float32)
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

    return _dataset(name, raw, args, x_train, y_train, x_test, y_test, num_classes=num_classes, output_dim=output_dim)


def _dataset(name: str, raw: _Raw, args: dict, x_train: Tensor, y_train: Tensor, x_test: Tensor | None,
             y_test: Tensor | None, *, num_classes: int | None, output_dim: int) -> Dataset:
    """The finished splits with their recorded spec (the one place its keys are written)."""
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


def _finalize_tokens(name: str, raw: _Raw, *, subset: int | None, seed: int, test_subset: int | None = None) -> Dataset:
    """The language-model case of :func:`_finalize`: int64 token windows ``(N, T)`` and next-token targets."""
    x_train, y_train = _to_tensor(raw.x_train, torch.int64), _to_tensor(raw.y_train, torch.int64)
    x_test = None if raw.x_test is None else _to_tensor(raw.x_test, torch.int64)
    y_test = None if raw.y_test is None else _to_tensor(raw.y_test, torch.int64)
    args = dict(raw.args)
    x_train, y_train, x_test, y_test = _subsets(x_train, y_train, x_test, y_test, args, subset=subset,
                                                test_subset=test_subset, seed=seed, label=f"dataset {name!r}")
    return _dataset(name, raw, args, x_train, y_train, x_test, y_test, num_classes=raw.num_classes,
                    output_dim=raw.num_classes)


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


# ----------------------------------------------------------------------------------------------------------
# MNIST-1D (generated; cached per process)
# ----------------------------------------------------------------------------------------------------------

_MNIST1D_KEYS = (
    "num_samples", "train_split", "template_len", "padding", "scale_coeff", "max_translation",
    "corr_noise_scale", "iid_noise_scale", "shear_scale", "shuffle_seq", "final_seq_length",
)


def _mnist1d_defaults() -> dict:
    try:
        from mnist1d.data import get_dataset_args
    except ImportError as e:  # pragma: no cover - mnist1d is a hard dependency
        raise InputError(f"expected the 'mnist1d' package for dataset 'mnist1d', got ImportError: {e}") from None
    d = dict(get_dataset_args(as_dict=True))
    d.pop("url", None)
    d["mnist1d_seed"] = d.pop("seed")
    return d


@functools.lru_cache(maxsize=8)
def _mnist1d_arrays(args_json: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    a = json.loads(args_json)
    a["seed"] = a.pop("mnist1d_seed")
    # make_dataset seeds numpy's and Python's global RNGs; put the caller's state back afterwards.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(ObjectView(a))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    out = (
        np.asarray(d["x"], dtype=np.float32),
        np.asarray(d["y"], dtype=np.int64),
        np.asarray(d["x_test"], dtype=np.float32),
        np.asarray(d["y_test"], dtype=np.int64),
    )
    for arr in out:
        arr.setflags(write=False)
    return out


def _load_mnist1d(*, data_dir, seed, **kwargs) -> _Raw:
    args = _mnist1d_defaults()
    for k, v in kwargs.items():
        args[k] = list(v) if isinstance(v, tuple) else v
    _check_int("num_samples", args["num_samples"], minimum=10, label="dataset 'mnist1d'")
    x, y, xt, yt = _mnist1d_arrays(json.dumps(_jsonable(args), sort_keys=True))
    return _Raw(x, y, xt, yt, "classification", 10, args)


# ----------------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST, any directory)
# ----------------------------------------------------------------------------------------------------------

_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_STEMS = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"expected a readable file at {path}, got {type(e).__name__}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise InputError(f"expected a complete gzip file at {path}, got a corrupt or truncated one ({e})") from None
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array of its native shape.

    Format: magic ``00 00 TT NN`` (``TT`` the element type, 0x08 = ubyte, 0x09 = byte, 0x0B = int16,
    0x0C = int32, 0x0D = float32, 0x0E = float64; ``NN`` the number of dimensions), then ``NN`` big-endian
    uint32 sizes, then the data in C order, big-endian.

    Raises:
        InputError: wrong magic, unknown type code, or a data length that does not match the header.
    """
    path = Path(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        got = raw[:4].hex() if raw else "an empty file"
        raise InputError(f"expected an IDX file (magic 0x0000TTNN, TT in 08/09/0b/0c/0d/0e, NN ≥ 1) at {path}, got magic {got}")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"expected {header} header bytes in IDX file {path}, got {len(raw)} (truncated)")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    need = math.prod(dims) * dtype.itemsize
    have = len(raw) - header
    if have != need:
        raise InputError(
            f"expected {need} data bytes for IDX dims {list(dims)} in {path}, got {have} "
            f"({'truncated' if have < need else 'trailing bytes'})"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx_file(d: Path, key: str) -> Path | None:
    for stem in _IDX_STEMS[key]:
        for suffix in ("", ".gz"):
            p = d / (stem + suffix)
            if p.is_file():
                return p
    return None


def _candidate_dirs(data_dir, subdirs: Iterable[str], system: Iterable[str]) -> list[Path]:
    bases = [b for b in (data_dir, os.environ.get("SHARPNESS_DATA")) if b]
    out: list[Path] = []
    for b in bases:
        for s in subdirs:
            out.append(Path(b) / s if s else Path(b))
    out.extend(Path(_SYSTEM_DATA_ROOT) / s for s in system)
    seen, uniq = set(), []
    for p in out:
        if str(p) not in seen:
            seen.add(str(p))
            uniq.append(p)
    return uniq


def _idx_images_labels(images: Path, labels: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim < 2:
        raise InputError(f"expected an images IDX file with ≥ 2 dims for {label}, got dims {list(x.shape)} in {images}")
    if y.ndim != 1:
        raise InputError(f"expected a labels IDX file with 1 dim for {label}, got dims {list(y.shape)} in {labels}")
    if x.shape[0] != y.shape[0]:
        raise InputError(f"expected as many labels as images for {label}, got {x.shape[0]} images ({images.name}) vs {y.shape[0]} labels ({labels.name})")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    else:
        x = x.astype(np.float32)
    if x.ndim == 3:
        x = x[:, None, :, :]
    return x, y.astype(np.int64)


def _load_idx_dir(d: Path, label: str, *, require_test: bool) -> _Raw:
    tr_i, tr_l = _find_idx_file(d, "train_images"), _find_idx_file(d, "train_labels")
    te_i, te_l = _find_idx_file(d, "test_images"), _find_idx_file(d, "test_labels")
    missing = [k for k, p in (("train-images", tr_i), ("train-labels", tr_l)) if p is None]
    if require_test or (te_i is None) != (te_l is None):
        missing += [k for k, p in (("t10k-images", te_i), ("t10k-labels", te_l)) if p is None]
    if missing:
        raise InputError(f"expected IDX files {', '.join(m + '-idx?-ubyte[.gz]' for m in missing)} for {label} in {d}, got none")
    x, y = _idx_images_labels(tr_i, tr_l, label)
    xt = yt = None
    if te_i is not None:
        xt, yt = _idx_images_labels(te_i, te_l, label)
    return _Raw(x, y, xt, yt, "classification", None, {}, source=str(d.resolve()))


def _load_named_idx(key: str, subdirs: tuple[str, ...], system: tuple[str, ...]):
    def loader(*, data_dir, seed) -> _Raw:
        label = f"dataset {key!r}"
        dirs = _candidate_dirs(data_dir, subdirs, system)
        for d in dirs:
            if all(_find_idx_file(d, k) is not None for k in _IDX_STEMS):
                raw = _load_idx_dir(d, label, require_test=True)
                raw.num_classes = 10
                return raw
        raise InputError(
            f"expected {key} IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-…) "
            f"in one of: {', '.join(map(str, dirs))}; got none (pass data_dir or set $SHARPNESS_DATA)"
        )

    return loader


def _load_idx(*, data_dir, seed) -> _Raw:
    if not data_dir:
        raise InputError("expected data_dir pointing to a directory of IDX files for dataset 'idx', got none")
    d = Path(data_dir)
    if not d.is_dir():
        raise InputError(f"expected a directory of IDX files for dataset 'idx', got {str(d)!r} (not a directory)")
    return _load_idx_dir(d, "dataset 'idx'", require_test=False)


# ----------------------------------------------------------------------------------------------------------
# CIFAR (python pickle batches, restricted unpickler)
# ----------------------------------------------------------------------------------------------------------


def _numpy_pickle_globals() -> dict[tuple[str, str], Any]:
    """The only globals a pickled numpy array needs, under every module path numpy has used."""
    a = np.zeros(1, dtype=np.uint8)
    reconstruct = a.__reduce__()[0]  # numpy(._core|.core).multiarray._reconstruct
    frombuffer = a.__reduce_ex__(5)[0]  # numpy(._core|.core).numeric._frombuffer (protocol 5)
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{pkg}.numeric", "_frombuffer")] = frombuffer
    # Python 3 writes ``bytes`` at protocol ≤ 2 as ``_codecs.encode(str, "latin1")``; it only makes bytes.
    import _codecs

    allowed[("_codecs", "encode")] = _codecs.encode
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, str, numbers and numpy arrays; refuses every other global."""

    _allowed = _numpy_pickle_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"references {module}.{name}, which is not allowed") from None


def _unpickle_batch(path: Path, label: str) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as e:
        raise InputError(
            f"expected a CIFAR batch of plain arrays/lists in {path} for {label}, got a pickle that {e} "
            "(refusing to run code from data files)"
        ) from None
    except Exception as e:  # truncated or foreign file: any decoding error means "not a CIFAR batch"
        raise InputError(f"expected a CIFAR python pickle batch at {path} for {label}, got an unreadable file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise InputError(f"expected a dict in CIFAR batch {path} for {label}, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_arrays(paths: list[Path], label_key: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for p in paths:
        b = _unpickle_batch(p, label)
        if "data" not in b or label_key not in b:
            raise InputError(f"expected keys 'data' and {label_key!r} in CIFAR batch {p} for {label}, got {sorted(map(str, b))}")
        data = b["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            got = f"{type(data).__name__} {getattr(data, 'dtype', '')} {list(getattr(data, 'shape', []))}"
            raise InputError(f"expected 'data' as a uint8 array of shape (N, 3072) in {p} for {label}, got {got}")
        labels = np.asarray(b[label_key])
        if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"expected {data.shape[0]} integer labels in {p} for {label}, got {labels.dtype} {list(labels.shape)}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels.astype(np.int64))
    x = np.concatenate(xs).astype(np.float32) / np.float32(255.0)
    return x, np.concatenate(ys)


def _load_cifar10(*, data_dir, seed) -> _Raw:
    label = "dataset 'cifar10'"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    dirs = _candidate_dirs(data_dir, ("", "cifar-10-batches-py"), ("cifar-10-batches-py", "cifar10/cifar-10-batches-py"))
    for d in dirs:
        if all((d / n).is_file() for n in names):
            x, y = _cifar_arrays([d / n for n in names[:5]], "labels", label)
            xt, yt = _cifar_arrays([d / "test_batch"], "labels", label)
            return _Raw(x, y, xt, yt, "classification", 10, {}, source=str(d.resolve()))
    raise InputError(
        f"expected CIFAR-10 python batches (data_batch_1..5, test_batch) in one of: {', '.join(map(str, dirs))}; "
        "got none (pass data_dir or set $SHARPNESS_DATA)"
    )


def _load_cifar100(*, data_dir, seed, label_mode: str = "fine") -> _Raw:
    label = "dataset 'cifar100'"
    if label_mode not in ("fine", "coarse"):
        raise InputError(f"expected label_mode 'fine' or 'coarse' for {label}, got {label_mode!r}")
    dirs = _candidate_dirs(data_dir, ("", "cifar-100-python"), ("cifar-100-python", "cifar100/cifar-100-python"))
    for d in dirs:
        if (d / "train").is_file() and (d / "test").is_file():
            key = f"{label_mode}_labels"
            x, y = _cifar_arrays([d / "train"], key, label)
            xt, yt = _cifar_arrays([d / "test"], key, label)
            n = 100 if label_mode == "fine" else 20
            return _Raw(x, y, xt, yt, "classification", n, {"label_mode": label_mode}, source=str(d.resolve()))
    raise InputError(
        f"expected CIFAR-100 python files (train, test) in one of: {', '.join(map(str, dirs))}; "
        "got none (pass data_dir or set $SHARPNESS_DATA)"
    )


# ----------------------------------------------------------------------------------------------------------
# scikit-learn digits
# ----------------------------------------------------------------------------------------------------------


def _load_digits(*, data_dir, seed, test_fraction: float = 0.2) -> _Raw:
    label = "dataset 'digits'"
    test_fraction = _check_float("test_fraction", test_fraction, minimum=0.0, label=label)
    if test_fraction >= 1.0:
        raise InputError(f"expected test_fraction in [0, 1) for {label}, got {test_fraction}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise InputError(f"expected scikit-learn to be installed for {label} (pip install scikit-learn), got ImportError") from None
    d = load_digits()
    x = np.asarray(d.data, dtype=np.float32) / np.float32(16.0)
    y = np.asarray(d.target, dtype=np.int64)
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    n_test = int(round(n * test_fraction))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    xt, yt = (x[te], y[te]) if n_test else (None, None)
    return _Raw(x[tr], y[tr], xt, yt, "classification", 10, {"test_fraction": test_fraction})


# ----------------------------------------------------------------------------------------------------------
# User .npz file
# ----------------------------------------------------------------------------------------------------------


def _load_npz(*, data_dir, seed, path: str | None = None, num_classes: int | None = None) -> _Raw:
    if not path:
        raise InputError("expected path=FILE.npz for dataset 'npz', got none")
    p = Path(path).expanduser()
    label = f"dataset file {str(p)!r}"
    if not p.is_file():
        raise InputError(f"expected an existing .npz file, got {str(p)!r} (not found)")
    if num_classes is not None:
        num_classes = _check_int("num_classes", num_classes, minimum=1, label=label)
    if not zipfile.is_zipfile(p):
        raise InputError(f"expected a NumPy .npz archive (a zip of .npy arrays) at {p}, got another kind of file")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise InputError(f"expected numeric arrays in {label}, got object arrays needing pickle ({e})") from None
    except Exception as e:
        raise InputError(f"expected a NumPy .npz archive at {p}, got an unreadable file ({type(e).__name__}: {e})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise InputError(f"expected arrays 'x' and 'y' (optional 'x_test', 'y_test') in {label}, got {sorted(arrays)}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise InputError(f"expected both 'x_test' and 'y_test' or neither in {label}, got {sorted(arrays)}")
    x, y = arrays["x"], arrays["y"]
    xt, yt = arrays.get("x_test"), arrays.get("y_test")
    for k, a in (("x", x), ("x_test", xt)):
        if a is not None and not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise InputError(f"expected a numeric array {k!r} in {label}, got dtype {a.dtype}")
    for k, a in (("y", y), ("y_test", yt)):
        if a is not None and not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise InputError(f"expected a numeric array {k!r} in {label}, got dtype {a.dtype}")
        if a is not None and a.ndim == 0:
            raise InputError(f"expected array {k!r} of shape (N, ...) in {label}, got a scalar")
    if x.ndim == 1:  # one feature per sample
        x = x[:, None]
    if xt is not None and xt.ndim == 1:
        xt = xt[:, None]
    for split, xa, ya in (("train", x, y), ("test", xt, yt)):
        if xa is not None and xa.shape[0] != ya.shape[0]:
            raise InputError(f"expected as many {split} labels as samples in {label}, got {xa.shape[0]} x vs {ya.shape[0]} y")
    is_int = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
    if yt is not None and is_int != (np.issubdtype(yt.dtype, np.integer) or yt.dtype == np.bool_):
        raise InputError(f"expected 'y' and 'y_test' of the same kind in {label}, got dtypes {y.dtype} and {yt.dtype}")
    task = "classification" if is_int else "regression"
    if task == "regression" and num_classes is not None:
        raise InputError(f"expected integer labels when num_classes is given for {label}, got float dtype {y.dtype}")
    args = {"path": str(p.resolve()), "num_classes": num_classes}
    return _Raw(x, y, xt, yt, task, num_classes, args, source=None)


# ----------------------------------------------------------------------------------------------------------
# Synthetic
# ----------------------------------------------------------------------------------------------------------


def _load_blobs(
    *, data_dir, seed, n: int = 600, n_test: int = 200, dim: int = 2, classes: int = 3,
    std: float = 1.0, center_scale: float = 3.0,
) -> _Raw:
    """Gaussian blobs: class centres ~ N(0, center_scale² I); samples = centre + N(0, std² I).

    Labels cycle ``0..classes-1`` (balanced) and are shuffled; train and test come from one generator.
    """
    label = "dataset 'blobs'"
    n = _check_int("n", n, minimum=1, label=label)
    n_test = _check_int("n_test", n_test, minimum=0, label=label)
    dim = _check_int("dim", dim, minimum=1, label=label)
    classes = _check_int("classes", classes, minimum=2, label=label)
    std = _check_float("std", std, minimum=0.0, label=label)
    center_scale = _check_float("center_scale", center_scale, minimum=0.0, label=label)
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g, dtype=torch.float64) * center_scale

    def draw(m: int) -> tuple[Tensor, Tensor]:
        y = (torch.arange(m) % classes)[torch.randperm(m, generator=g)]
        x = centers[y] + std * torch.randn(m, dim, generator=g, dtype=torch.float64)
        return x.float(), y

    x, y = draw(n)
    xt, yt = draw(n_test) if n_test else (None, None)
    args = {"n": n, "n_test": n_test, "dim": dim, "classes": classes, "std": std, "center_scale": center_scale}
    return _Raw(x, y, xt, yt, "classification", classes, args)


def _load_teacher_student(
    *, data_dir, seed, n: int = 1000, n_test: int = 250, dim: int = 10, out_dim: int = 1,
    teacher: str = "linear", hidden: int = 32, noise: float = 0.1,
) -> _Raw:
    """Regression on a random teacher: x ~ N(0, I_dim), y = f(x) + noise·N(0, I_out_dim), y of shape (N, out_dim).

    ``teacher="linear"``: f(x) = W x with W_ij ~ N(0, 1/dim).
    ``teacher="mlp"``: f(x) = V tanh(W x) with W_ij ~ N(0, 1/dim), V_ij ~ N(0, 1/hidden).
    """
    label = "dataset 'teacher-student'"
    n = _check_int("n", n, minimum=1, label=label)
    n_test = _check_int("n_test", n_test, minimum=0, label=label)
    dim = _check_int("dim", dim, minimum=1, label=label)
    out_dim = _check_int("out_dim", out_dim, minimum=1, label=label)
    hidden = _check_int("hidden", hidden, minimum=1, label=label)
    noise = _check_float("noise", noise, minimum=0.0, label=label)
    if teacher not in ("linear", "mlp"):
        raise InputError(f"expected teacher 'linear' or 'mlp' for {label}, got {teacher!r}")
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    if teacher == "linear":
        w = torch.randn(out_dim, dim, generator=g, dtype=f64) / math.sqrt(dim)

        def f(x):
            return x @ w.T
    else:
        w1 = torch.randn(hidden, dim, generator=g, dtype=f64) / math.sqrt(dim)
        w2 = torch.randn(out_dim, hidden, generator=g, dtype=f64) / math.sqrt(hidden)

        def f(x):
            return torch.tanh(x @ w1.T) @ w2.T

    def draw(m: int) -> tuple[Tensor, Tensor]:
        x = torch.randn(m, dim, generator=g, dtype=f64)
        y = f(x) + noise * torch.randn(m, out_dim, generator=g, dtype=f64)
        return x.float(), y.float()

    x, y = draw(n)
    xt, yt = draw(n_test) if n_test else (None, None)
    args = {"n": n, "n_test": n_test, "dim": dim, "out_dim": out_dim, "teacher": teacher, "hidden": hidden, "noise": noise}
    return _Raw(x, y, xt, yt, "regression", None, args)


# name → (loader, accepted extra keyword arguments)
def default_text() -> tuple[bytes, str]:
    """The text every CPython ships (module docstring, ``text``) and a description of where it came from."""
    import platform

    try:
        from pydoc_data.topics import topics
    except ImportError:  # a stripped-down Python without its docs
        raise InputError("expected Python's bundled docs (pydoc_data.topics) for dataset 'text', got none in this "
                         "Python; pass path= (--data-kwargs '{\"path\": \"FILE\"}') to use a file of your own") from None
    text = "".join(topics[k] for k in sorted(topics)).encode("utf-8")
    return text, f"pydoc_data.topics of Python {platform.python_version()}"


def _load_text(*, data_dir, seed, path: str | None = None, context: int = 64, max_bytes: int | None = None,
               test_fraction: float = 0.1) -> _Raw:
    context = _check_int("context", context, minimum=1, label="dataset 'text'")
    test_fraction = _check_float("test_fraction", test_fraction, minimum=0.0, label="dataset 'text'")
    if test_fraction >= 1:
        raise InputError(f"expected test_fraction in [0, 1) for dataset 'text', got {test_fraction}")
    if path is None:
        text, where = default_text()
        source = None
    else:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"expected a text file for dataset 'text', got {str(p)!r} (not found)")
        text, where, source = p.read_bytes(), str(p.resolve()), str(p.resolve())
    if max_bytes is not None:
        text = text[: _check_int("max_bytes", max_bytes, minimum=2, label="dataset 'text'")]
    tokens = torch.tensor(np.frombuffer(text, dtype=np.uint8).astype(np.int64))
    n = (tokens.numel() - 1) // context
    n_test = math.ceil(test_fraction * n) if test_fraction else 0
    if n - n_test < 1:
        raise InputError(f"expected at least one training window of {context + 1} bytes for dataset 'text', got "
                         f"{tokens.numel()} bytes")
    x = tokens[: n * context].reshape(n, context)
    y = tokens[1 : n * context + 1].reshape(n, context)
    split = n - n_test
    return _Raw(x[:split], y[:split], x[split:] if n_test else None, y[split:] if n_test else None,
                task="language-model", num_classes=256,
                args={"path": path, "context": context, "max_bytes": max_bytes, "test_fraction": test_fraction},
                source=source, extra={"text_sha256": hashlib.sha256(text).hexdigest(), "text_source": where,
                                      "vocabulary": "bytes"})


_LOADERS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "mnist1d": (_load_mnist1d, _MNIST1D_KEYS + ("mnist1d_seed",)),
    "fashion-mnist": (
        _load_named_idx("fashion-mnist", ("", "fashion-mnist", "FashionMNIST/raw", "fashion_mnist"), ("fashion-mnist", "FashionMNIST/raw")),
        (),
    ),
    "mnist": (_load_named_idx("mnist", ("", "mnist", "MNIST/raw"), ("mnist", "MNIST/raw")), ()),
    "idx": (_load_idx, ()),
    "cifar10": (_load_cifar10, ()),
    "cifar100": (_load_cifar100, ("label_mode",)),
    "digits": (_load_digits, ("test_fraction",)),
    "npz": (_load_npz, ("path", "num_classes")),
    "blobs": (_load_blobs, ("n", "n_test", "dim", "classes", "std", "center_scale")),
    "teacher-student": (_load_teacher_student, ("n", "n_test", "dim", "out_dim", "teacher", "hidden", "noise")),
    "text": (_load_text, ("path", "context", "max_bytes", "test_fraction")),
}
