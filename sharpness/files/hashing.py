"""SHA-256 digests of tensors: the identity of a dataset, an analysis set, a run's inputs or a state dict.

Every digest here absorbs, for each array in order, a text header describing it and then its C-contiguous
bytes (:func:`_absorb`, the one place the bytes are fed). The convention for anything new is
:func:`hash_tensors`: a header ``"{name}:{dtype}:{shape};"`` with numpy's little-endian dtype string and the
shape as a JSON list, then the little-endian bytes; stable across processes, platforms and torch versions.

Two older headers are kept, on purpose, because their values are recorded where users compare against them:
:func:`tensor_sha256` is the ``analysis_set.sha256`` of every ``sharpness.report/1`` JSON (a gate compares a
new report's against a saved baseline's, ``sharpness.analysis.gate``), and :func:`array_digest` is the input hash in
run-directory manifests (a rerun resumes only when its manifest matches the one on disk). Moving them to the
:func:`hash_tensors` header would make every saved baseline and half-finished run directory disagree with the
same data; a new schema version is the time to do it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

__all__ = ["hash_tensors", "tensor_sha256", "array_digest"]


def _absorb(h: Any, header: str, a: np.ndarray) -> None:
    h.update(header.encode())
    h.update(np.ascontiguousarray(a).tobytes())


def hash_tensors(named: Iterable[tuple[str, Tensor | np.ndarray | None]]) -> str:
    """SHA-256 hex digest of named tensors, stable across processes, platforms and torch versions.

    For each ``(name, t)`` in order the hash absorbs the ASCII header ``"{name}:{dtype}:{shape};"`` — dtype
    as numpy's little-endian type string (e.g. ``<f4``, ``|u1``, ``<i8``), shape as a JSON list — followed
    by the C-contiguous little-endian bytes of ``t``. A ``None`` entry absorbs ``"{name}:none;"``.
    A dataset's ``spec["sha256"]`` (:mod:`sharpness.data`) is this function over
    ``[("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)]``.

        >>> hash_tensors([("x", torch.zeros(2))]) == hash_tensors([("x", np.zeros(2, dtype="<f4"))])
        True
    """
    h = hashlib.sha256()
    for name, t in named:
        if t is None:
            h.update(f"{name}:none;".encode())
            continue
        a = t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        _absorb(h, f"{name}:{a.dtype.str}:{json.dumps(list(a.shape))};", a)
    return h.hexdigest()


def tensor_sha256(*tensors: Tensor) -> str:
    """The analysis-set identity recorded in reports: per tensor the header ``"{shape tuple}:{torch dtype}"``
    (e.g. ``"(64, 4):torch.float32"``), then its bytes (bfloat16 as its 16-bit patterns)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        _absorb(h, f"{tuple(t.shape)}:{t.dtype}", (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy())
    return h.hexdigest()


def array_digest(*arrays: Any) -> str:
    """SHA-256 over the dtype, shape and bytes of arrays or tensors (in order): a manifest's input hash.

    Per array the header is numpy's dtype string and the shape tuple (``"<f8(3,)"``), then its bytes.
    """
    h = hashlib.sha256()
    for a in arrays:
        if hasattr(a, "detach"):  # a torch tensor: hash the values, wherever they live
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(np.asarray(a))
        _absorb(h, f"{a.dtype.str}{a.shape}", a)
    return h.hexdigest()
