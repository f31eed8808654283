"""Rank correlation between a measure and a generalization gap: Kendall's τ, Jiang's granulated Ψ, intervals.

* :func:`kendall_tau` — Kendall's τ_b (``scipy.stats.kendalltau``): for n models,
  τ_b = (n_c − n_d) / √((n₀ − n₁)(n₀ − n₂)), with n_c / n_d the concordant / discordant pairs, n₀ = n(n−1)/2 and
  n₁, n₂ the pairs tied in the measure / in the gap (a pair tied in either counts in neither n_c nor n_d).
  Without ties it is Jiang et al.'s τ (ICLR 2020, "Fantastic Generalization Measures and Where to Find Them",
  eq. 2); τ_b is the standard extension to ties.
* :func:`granulated_psi` — Jiang et al. 2020 eq. 3: for each hyperparameter axis i,
  Ψ_i = mean over the groups of models that share every *other* hyperparameter (and the seed) of τ within the
  group, i.e. the average τ when only axis i varies; Ψ = mean_i Ψ_i. Each Ψ_i carries the number of groups and
  of pairs (Σ_g n_g(n_g − 1)/2) behind it; a group of one model, or whose τ is undefined (a constant column),
  contributes nothing and is counted as such.
* :func:`bootstrap_tau` — a percentile interval of τ from resampling the models with replacement (seeded).

Example (four models: batch size 8/16 × lr 0.1/0.2; with lr fixed, the measure orders the gap once right and
once wrong, so Ψ_batch_size = 0; with the batch size fixed, both times right, so Ψ_lr = 1):
    >>> round(kendall_tau([1, 1, 2, 3], [1, 2, 2, 3]), 12)   # one pair tied in each: 4 / √(5·5)
    0.8
    >>> rows = [{"batch_size": b, "lr": lr, "seed": 0, "m": m, "gap": g}
    ...         for b, lr, m, g in [(8, 0.1, 1, 1), (16, 0.1, 2, 2), (8, 0.2, 3, 4), (16, 0.2, 4, 3)]]
    >>> psi = granulated_psi(rows, "m", "gap", ("batch_size", "lr"))
    >>> psi["axes"]["batch_size"]["psi"], psi["axes"]["batch_size"]["pairs"], psi["axes"]["lr"]["psi"], psi["psi"]
    (0.0, 2, 1.0, 0.5)
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["kendall_tau", "granulated_psi", "bootstrap_tau"]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ_b of two equally long sequences (NaN when fewer than 2 values or a constant column)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"expected two sequences of the same length, got {x.shape} and {y.shape}")
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(stats.kendalltau(x, y, variant="b").statistic)


def granulated_psi(rows: Sequence[Mapping[str, Any]], measure: str, gap: str, axes: Sequence[str],
                   fixed: Sequence[str] = ("seed",)) -> dict:
    """Jiang's granulated τ (module docstring) of ``measure`` against ``gap`` over ``rows`` (dicts).

    ``axes``: the hyperparameters varied (e.g. ``("batch_size", "lr")``); ``fixed``: keys that are never an
    axis but must match within a group (the seed). Returns ``{"psi": mean of the defined Ψ_i (NaN if none),
    "axes": {axis: {"psi", "groups", "groups_used", "pairs", "taus"}}}``.
    """
    out: dict[str, Any] = {}
    for axis in axes:
        others = [a for a in axes if a != axis] + list(fixed)
        groups: dict[tuple, list[Mapping[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(row.get(k) for k in others), []).append(row)
        taus, pairs = [], 0
        for members in groups.values():
            tau = kendall_tau([m[measure] for m in members], [m[gap] for m in members])
            if not math.isnan(tau):
                taus.append(tau)
                pairs += len(members) * (len(members) - 1) // 2
        out[axis] = {"psi": float(np.mean(taus)) if taus else math.nan, "groups": len(groups),
                     "groups_used": len(taus), "pairs": pairs, "taus": taus}
    defined = [v["psi"] for v in out.values() if not math.isnan(v["psi"])]
    return {"psi": float(np.mean(defined)) if defined else math.nan, "axes": out}


def bootstrap_tau(x: Sequence[float], y: Sequence[float], *, resamples: int = 1000, level: float = 0.95,
                  seed: int = 0) -> dict:
    """Percentile bootstrap interval of τ_b: models resampled with replacement ``resamples`` times from a
    ``numpy`` generator seeded with ``seed``; resamples whose τ is undefined (all one model) are skipped and
    counted. Returns ``{"low", "high", "level", "resamples", "undefined"}``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(resamples):
        idx = rng.integers(0, x.size, x.size)
        tau = kendall_tau(x[idx], y[idx])
        if not math.isnan(tau):
            taus.append(tau)
    alpha = (1 - level) / 2
    low, high = (np.quantile(taus, [alpha, 1 - alpha]) if taus else (math.nan, math.nan))
    return {"low": float(low), "high": float(high), "level": level, "resamples": resamples,
            "undefined": resamples - len(taus)}
