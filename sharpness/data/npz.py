"""A user's ``.npz`` file: arrays ``x``, ``y`` and optionally ``x_test``, ``y_test``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from .dataset import _check_int, _Raw


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
