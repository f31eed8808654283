"""scikit-learn's bundled 8×8 digits with a seeded train/test split."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .dataset import _check_float, _Raw


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
