"""IDX files (the MNIST format): :func:`read_idx`, and the ``mnist``, ``fashion-mnist`` and ``idx`` loaders."""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import InputError
from .dataset import _Raw
from .files import _candidate_dirs


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
