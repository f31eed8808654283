"""The stopping rule of :mod:`sharpness.linalg.eigen`, applied to the Ritz values of one Lanczos run.

For Ritz pairs (θ_i, y_i) of a run's T, with absolute residuals r_i = ‖A y_i − θ_i y_i‖ = |β_m S[m, i]|:

* r_i is rigorous: some eigenvalue λ of A has |λ − θ_i| ≤ r_i;
* the error estimate of each end's extreme value in a search run is e_i = min(r_i, r_i²/gap_i), gap_i =
  min_{j≠i} (|θ_i − θ_j| − r_j), the Kato–Temple / Saad bound with the gap seen through Ritz values (so an
  estimate); every other value's, and every value of a deflated verification run, is e_i = r_i: an interior
  Ritz value, or one from a short deflated run, can have unresolved eigenvalues between it and its Ritz
  neighbours, and then r²/gap is far too small (on 100 spectra with clustered tops, k = 2–5, tol 1e-3: 13
  wrong values reported converged, 4 beside a miss certificate below 1 %; with e_i = r_i there: 1, uncertified,
  for 10–30 % more products). ``criterion="residual"`` uses e_i = r_i everywhere;
* pair i is converged when e_i ≤ tol·s_i and r_i ≤ √tol·s_i with the scale s_i = max(|θ_i|, c·Λ) (Λ the
  spectral scale, c the scale floor), or when r_i is at the rounding level 10·eps·‖A‖_est.

Ritz values of a ``"local"`` run (no reorthogonalization) include copies of converged values; those are merged
first (:func:`distinct`), so that counts, gaps and verification thresholds see each eigenvalue once; copies
that value alone cannot tell apart are told apart by their Ritz vectors when an end accepts them (:class:`Accepted`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .lanczos import LanczosProcess

#: Rounding level of a Ritz pair's residual and eigenvalue: ROUNDING_FACTOR · eps(dtype) · ‖A‖_est.
ROUNDING_FACTOR = 10.0
SIDES = ("top", "bottom")
#: Two unit Ritz vectors of one end with |yᵢᵀyⱼ| above this are copies of one direction. Ritz vectors of
#: distinct converged eigenvalues are orthogonal up to their errors (the sine of the angle to an eigenvector is
#: at most r/gap), copies of one eigenvector parallel up to the same: 1/2 lies far from both.
COPY_COSINE = 0.5


def errors(theta: np.ndarray, res: np.ndarray, idx: np.ndarray, criterion: str) -> np.ndarray:
    """Absolute eigenvalue-error estimates for Ritz values ``idx`` (module docstring)."""
    if criterion == "residual" or theta.size < 2:
        return res[idx].copy()
    out = np.empty(idx.size)
    for n, i in enumerate(idx):
        d = np.abs(theta - theta[i]) - res
        d[i] = np.inf
        gap = float(d.min())
        r = float(res[i])
        out[n] = min(r, r * r / gap) if gap > 0 else r
    return out


def converged(theta, res, err, tol: float, floor: float, scale_min: float = 0.0) -> np.ndarray:
    """The convergence test of the module docstring, elementwise."""
    scale = np.maximum(np.abs(theta), scale_min)
    ok = (err <= tol * scale) & (res <= math.sqrt(tol) * scale)
    return ok | (res <= floor)


def extreme_indices(theta: np.ndarray, top_k: int, bottom_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``top_k`` largest (descending) and ``bottom_k`` smallest (ascending) values."""
    order = np.argsort(theta, kind="stable")
    return order[::-1][:top_k], order[:bottom_k]


def distinct(theta: np.ndarray, res: np.ndarray, floor: float, converged_level: float) -> np.ndarray:
    """Indices of ``theta`` (ascending) with ghost copies merged. A recurrence that lost orthogonality grows a
    copy of a Ritz value only after that value has converged to about √eps·‖A‖ (Paige 1971): neighbours that agree
    within their residuals (plus rounding) *and* one of which is converged that far (``converged_level``) are one
    eigenvalue seen twice, and the copy with the smallest residual stands for it (Cullum & Willoughby's counting
    of "numerically multiple" Ritz values). Unconverged neighbours are never merged: that would widen the gap
    that the error estimate divides by."""
    keep: list[int] = []
    for i in range(theta.size):
        j = keep[-1] if keep else None
        if (j is not None and theta[i] - theta[j] <= res[i] + res[j] + floor
                and min(res[i], res[j]) <= converged_level):
            if res[i] < res[j]:
                keep[-1] = i
        else:
            keep.append(i)
    return np.asarray(keep, dtype=int)


def beyond(value: float, side: str, tol: float, scale: float, floor: float) -> float:
    """value ± its tolerance tol·max(|value|, scale) + floor: where a missed eigenvalue makes it wrong."""
    t = tol * max(abs(value), scale) + floor
    return value + t if side == "top" else value - t


@dataclass
class RitzCheck:
    """One run's Ritz analysis at a check: values (ascending, ghosts merged for a local run), their
    T-eigenvector columns ``S``, absolute residuals, error estimates and convergence of the wanted values,
    which ``top`` (descending) and ``bottom`` (ascending) index; ``floor`` is the run's rounding level, ``tol``
    and ``scale`` (c·Λ) the convergence test's."""

    proc: LanczosProcess
    theta: np.ndarray
    S: np.ndarray
    res: np.ndarray
    err: np.ndarray
    conv: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    floor: float
    tol: float
    scale: float

    @classmethod
    def of(cls, proc: LanczosProcess, top_k: int, bottom_k: int, *, tol: float, criterion: str,
           scale: float | None, scale_floor: float, verification: bool = False) -> "RitzCheck":
        """Analyse ``proc`` now; ``scale`` is c·Λ, or None to take it from this run's own values;
        ``verification``: a deflated run of :mod:`sharpness.linalg.eigen`, whose values get no gap estimate."""
        theta, S, res = proc.ritz()
        floor = ROUNDING_FACTOR * proc.eps * proc.anorm()
        if not proc.stores_basis:
            keep = distinct(theta, res, floor, math.sqrt(proc.eps) * proc.anorm())
            theta, S, res = theta[keep], S[:, keep], res[keep]
        top, bottom = extreme_indices(theta, top_k, bottom_k)
        idx = np.unique(np.concatenate([top, bottom]).astype(int))
        err, conv = np.zeros(theta.size), np.zeros(theta.size, dtype=bool)
        # + 10·eps·‖A‖: no estimate is better than the rounding in T's eigen-solve and in A @ v itself, and a
        # residual at that level counts as converged (what lets an eigenvalue ≈ 0 converge).
        err[idx] = res[idx] + floor
        # The gap estimate only where the gap seen through Ritz values is the spectrum's (module docstring)
        gap_idx = np.asarray([] if verification else [w[0] for w in (top, bottom) if w.size], dtype=int)
        err[gap_idx] = errors(theta, res, gap_idx, criterion) + floor
        if scale is None:
            scale = scale_floor * float(np.abs(theta).max())
        conv[idx] = converged(theta[idx], res[idx], err[idx], tol, floor, scale)
        if proc.stores_basis and proc.length() >= proc.dim:
            conv[:] = True  # the basis spans the space: T is similar to A there, its Ritz values are exact
        return cls(proc, theta, S, res, err, conv, top, bottom, floor, tol, scale)

    def wanted(self, side: str) -> np.ndarray:
        return self.top if side == "top" else self.bottom

    def all_wanted_converged(self, kmax: int) -> bool:
        return self.theta.size >= kmax and bool(self.conv[np.concatenate([self.top, self.bottom])].all())

    def found(self, side: str, threshold: float) -> np.ndarray:
        """Indices of converged Ritz values beyond ``threshold`` on ``side``."""
        past = self.theta > threshold if side == "top" else self.theta < threshold
        return np.flatnonzero(past & self.conv)


@dataclass
class Accepted:
    """The values one end of :mod:`sharpness.linalg.eigen` reports, each with its residual, error estimate,
    convergence and Ritz vector, gathered from its search and verification runs."""

    values: list[float] = field(default_factory=list)
    res: list[float] = field(default_factory=list)
    err: list[float] = field(default_factory=list)
    conv: list[bool] = field(default_factory=list)
    vectors: list[Tensor | None] = field(default_factory=list)
    miss_bound: float | None = None
    runs: int = 1

    def add(self, check: RitzCheck, idx: np.ndarray, vectors: list[Tensor | None], side: str, k: int,
            norms: np.ndarray | None = None) -> None:
        """Take the values ``idx`` of ``check``, drop copies of one eigenvector, and keep the ``k`` most extreme.

        ``norms`` are ‖Q s_i‖ of a local run's replayed Ritz vectors (not 1 once orthogonality is lost): the
        residual of the unit vector y/‖y‖ is |β_m S[m, i]|/‖y‖, and that is what bounds |λ − θ_i|."""
        res, err, conv = check.res[idx].copy(), check.err[idx].copy(), check.conv[idx].copy()
        if norms is not None:
            res = res / norms
            err = err * np.maximum(1.0 / norms, 1.0)  # never an estimate better than the raw one
            conv &= converged(check.theta[idx], res, err, check.tol, check.floor, check.scale)
        self.values += check.theta[idx].tolist()
        self.res += res.tolist()
        self.err += err.tolist()
        self.conv += conv.tolist()
        self.vectors += vectors
        distinct = self.distinct_vectors()
        keep = [i for i in self.order(side) if i in distinct][:k]
        for name in ("values", "res", "err", "conv", "vectors"):
            items = getattr(self, name)
            setattr(self, name, [items[i] for i in keep])

    def distinct_vectors(self) -> set[int]:
        """Indices of the values whose Ritz vectors are not copies of another's (:mod:`sharpness.linalg.eigen`,
        "Ghost copies"): of two unit vectors with |yᵢᵀyⱼ| > ``COPY_COSINE``, the one with the smaller residual
        stands for their direction. A value without a vector is always distinct."""
        kept: list[int] = []
        for i in sorted(range(len(self.values)), key=lambda i: self.res[i]):
            v = self.vectors[i]
            if v is None or all(abs(float(v @ self.vectors[j])) <= COPY_COSINE for j in kept
                                if self.vectors[j] is not None):
                kept.append(i)
        return set(kept)

    def order(self, side: str) -> np.ndarray:
        return np.argsort(self.values)[::-1] if side == "top" else np.argsort(self.values)
