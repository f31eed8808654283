"""CIFAR-10 and CIFAR-100 from their "python version" pickle batches, read by a restricted unpickler that
accepts plain arrays and lists only (a data file never runs code)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .dataset import _Raw
from .files import _candidate_dirs


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
