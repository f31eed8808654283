"""SHA-256 digests of tensors: the identity of a dataset, an analysis set, a run's inputs or a state dict.

One convention (:func:`hash_tensors`): for each named tensor, a header naming it, its little-endian dtype and
its shape, then its C-contiguous little-endian bytes. Stable across processes, platforms and torch versions.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable

import numpy as np
from torch import Tensor

__all__ = ["hash_tensors"]


def hash_tensors(named: Iterable[tuple[str, Tensor | np.ndarray | None]]) -> str:
    """SHA-256 hex digest of named tensors, stable across processes, platforms and torch versions.

    For each ``(name, t)`` in order the hash absorbs the ASCII header ``"{name}:{dtype}:{shape};"`` — dtype
    as numpy's little-endian type string (e.g. ``<f4``, ``|u1``, ``<i8``), shape as a JSON list — followed
    by the C-contiguous little-endian bytes of ``t``. A ``None`` entry absorbs ``"{name}:none;"``.
    A dataset's ``spec["sha256"]`` (:mod:`sharpness.data`) is this function over
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

