"""Byte-level language modelling windows, from a file or from the documentation text every CPython ships."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .dataset import _check_float, _check_int, _Raw


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
