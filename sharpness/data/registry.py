"""Names → loaders: :func:`load_dataset` (checks the name and the arguments, runs the loader, finishes the
result), :func:`dataset_from_spec` (rebuilds a recorded dataset and verifies its hash), :func:`dataset_names`.

Adding a dataset is one module with a ``_load_<name>(*, data_dir, seed, **kwargs) -> _Raw`` function and one
entry in :data:`_LOADERS` (and its aliases in :data:`_ALIASES`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .cifar import _load_cifar10, _load_cifar100
from .dataset import Dataset, _finalize, _short, as_recorded, recorded_sha256
from .digits import _load_digits
from .idx import _load_idx, _load_named_idx
from .mnist1d import _MNIST1D_KEYS, _load_mnist1d
from .npz import _load_npz
from .synthetic import _load_blobs, _load_teacher_student
from .text import _load_text
from .user import USER_CODE, refuse_rebuild


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
    dtype: torch.dtype = torch.float32,
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
        dtype: ``torch.float32`` (training's default) or ``torch.float64`` (a float64 analysis): the dtype
            floating inputs and regression targets are stored in, so a float64 file is never rounded to
            float32 on its way to a float64 analysis. Signed-integer inputs (token ids) stay int64.
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
                     test_subset=None if test_subset is None else int(test_subset), dtype=dtype)


def dataset_from_spec(spec: dict, *, data_dir: str | None = None, dtype: torch.dtype = torch.float32) -> Dataset:
    """Rebuild the dataset a spec describes (e.g. one recorded in a checkpoint) and verify its hash.

    ``dtype`` as for :func:`load_dataset`; the hash is checked on the tensors stored in the dtype the spec
    records (:func:`~sharpness.data.dataset.recorded_sha256`), so a float32 spec rebuilds in float64 too.

    File-based datasets are searched first in ``data_dir``, then in the recorded ``spec["source"]``, then
    in the usual places. For ``npz``, a missing recorded path is retried as ``data_dir/<file name>``.

    Raises:
        InputError: the spec is malformed, the data cannot be found, the rebuilt tensors' SHA-256 (or
            the subset indices' hash) differs from the recorded one, or the spec records a user's data function
            (``"user-code"``: its code is run only when the user names it again, see :mod:`sharpness.data.user`).
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("args", {}), dict):
        raise InputError(f"expected a data spec dict with 'name' and 'args', got {_short(spec)}")
    if spec["name"] == USER_CODE:
        refuse_rebuild(spec)
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
            ds = load_dataset(name, data_dir=d, dtype=dtype, **args)
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
            got = recorded_sha256(ds, spec)
            if want is not None and got != want:
                raise InputError(
                    f"expected dataset {name!r} with sha256 {want[:12]}… as recorded, got {got[:12]}… "
                    f"from {ds.spec.get('source') or 'regeneration'} (different files or library version)"
                )
            return as_recorded(ds, spec)
        except InputError as e:
            first_error = first_error or e
    assert first_error is not None
    raise first_error


# name → (loader, accepted extra keyword arguments)

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
