"""Mean with its uncertainty: the one place a sample mean, standard deviation and standard error are computed.

Both use the sample standard deviation (Bessel's n − 1) in float64. :func:`mean_stderr` is what an estimator
reports (stochastic trace, average-case sharpness: the mean of i.i.d. draws ± std/√n); :func:`mean_std` is what
a results table prints over seeds (Keskar et al. report mean ± standard deviation over trials).

    >>> mean_stderr([1.0, 2.0, 3.0, 4.0])
    (2.5, 0.6454972243679028)
    >>> mean_std([1.0, None, float("nan"), 3.0])
    (2.0, 1.4142135623730951, 2)
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from torch import Tensor

__all__ = ["mean_stderr", "mean_std"]


def mean_stderr(values: Tensor | Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error ``std(ddof=1) / √n`` of ``n`` values; the error is ``None`` for fewer than two."""
    x = values.detach().double().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values, dtype=np.float64)
    x = x.reshape(-1)
    if x.size < 2:
        return float(x.mean()), None
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def mean_std(values: Iterable[float | None]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (n − 1; 0 for one value) and count of the finite values (NaN if none).

    Keskar et al. report mean ± standard deviation over 5 trials; we use the same convention.
    """
    xs = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    if xs.size == 0:
        return math.nan, math.nan, 0
    return float(xs.mean()), float(xs.std(ddof=1)) if xs.size > 1 else 0.0, int(xs.size)
