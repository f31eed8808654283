"""Extreme eigenvalues of a symmetric operator by Lanczos with full reorthogonalization.

"Top" means the largest *algebraic* eigenvalues (λ₁ ≥ λ₂ ≥ …, sorted descending) and "bottom" the smallest
algebraic ones (sorted ascending) — never the largest magnitude: for a Hessian at a saddle, λ_max and λ_min
are different facts and both are reported by name. One Lanczos run serves both ends of the spectrum.

Stopping rule (checked every ``check_every`` steps on the Ritz pairs of the current tridiagonal T):

* the absolute residual of Ritz pair (θ_i, y_i) is r_i = ‖A y_i − θ_i y_i‖ = |β_m S[m, i]| (exact under
  full reorthogonalization); some eigenvalue λ of A satisfies |λ − θ_i| ≤ r_i (rigorous);
* the eigenvalue error estimate is e_i = min(r_i, r_i² / gap_i) with gap_i = min_{j≠i} (|θ_i − θ_j| − r_j),
  the distance to the nearest other Ritz value shrunk by that value's own uncertainty (the Kato–Temple /
  Saad "gap" bound; Ritz values converge quadratically in the residual, so this typically halves the steps).
  The gap is estimated from Ritz values, so e_i is an estimate, not a guarantee; ``criterion="residual"``
  uses e_i = r_i instead, which is rigorous (up to a missed eigenvalue, see below);
* pair i is converged when e_i ≤ tol·s_i and r_i ≤ √tol·s_i (the gap estimate is never trusted beyond
  that), with the scale s_i = max(|θ_i|, c·Λ), Λ = max_j |θ_j| the spectral scale seen so far (a lower
  bound on ‖A‖₂ that reaches it as the extreme Ritz values converge) and c = ``scale_floor``
  (``SCALE_FLOOR`` = 10⁻², 0 restores a purely relative rule); or when r_i is at rounding level,
  r_i ≤ 10·eps(dtype)·‖A‖_est (nothing better is attainable). The floor c·Λ is for eigenvalues near zero:
  a λ_min of −10⁻⁴·λ_max held to tol·|λ_min| asks for an absolute accuracy of 10⁻⁸·λ_max and took 208 steps
  on an MLP Hessian, whose bulk piles up at 0; with the floor it is held to tol·10⁻²·λ_max, while any value
  above 1 % of the spectral scale keeps its relative tolerance. ``error_bounds`` and ``residuals`` stay
  relative to |θ_i| (the residual is the rigorous one), and :attr:`EigenResult.tolerance_scale` says
  what c·Λ was;
* the run stops when every requested Ritz value is converged, or at ``max_steps`` (default min(P, 300)) with
  a :class:`ConvergenceWarning`. A run that reaches dimension P has spanned the space: its Ritz values are
  the exact eigenvalues up to rounding and all count as converged.

Breakdown (β ≈ 0: the Krylov space is invariant) makes the Ritz values found so far exact, but they are
extreme only within that subspace (e.g. a warm start that is exactly a non-top eigenvector). The run then
restarts from a random vector orthogonal to the basis, and keeps restarting while a new block still adds a
value to the requested set — which also recovers exact multiplicities of matrices with few distinct
eigenvalues. The same verification runs when the stopping rule is met while β_m ≤ eps^(2/3)·‖A‖_est
(nearly invariant, e.g. a rotated matrix with repeated eigenvalues, invariant only up to rounding): there
every Ritz value looks converged whether or not it is extreme. Limitation: a single-vector Krylov method
sees one copy of an exactly repeated eigenvalue until its space becomes (nearly) invariant, so a
multiplicity inside a large, otherwise generic spectrum can be missed; nearby but distinct (clustered)
eigenvalues are resolved, given enough steps.

Miss certificate (cold starts): no test on T can see an eigenvalue whose share of the random start has not
yet been amplified, so a cold start is held to k + ``COLD_START_MIN_STEPS`` (10) steps unless the run itself
shows that nothing can be hiding. It can: the Lanczos vectors are polynomials in A applied to the start q₁,
q_{m+1} = p_m(A) q₁ with p_m(λ) = det(λI − T_m) / (β₁ ⋯ β_m), so for any eigenpair (λ, u) of A,
uᵀq_{m+1} = p_m(λ)·uᵀq₁, and |uᵀq_{m+1}| ≤ 1 gives |uᵀq₁| ≤ 1/|p_m(λ)|. A reported top value θ₁ is wrong by
more than its tolerance t only if some eigenvalue lies above θ₁ + t (λ_max ≥ θ₁ always); for top-k, in the
region R = [θ_k + t_k, ∞) minus the tolerance intervals around θ₁ … θ_{k−1}. R holds no Ritz value (no root of
p_m), so log|p_m| is concave on each of its pieces and monotone on the unbounded one: its minimum over R is at
an endpoint. The component of a Gaussian start along a fixed unit vector, |z₁|/‖z‖, has a density at most
√(2P/π), so P(|uᵀq₁| ≤ ε) ≤ ε·√(2P/π), and the chance that a wrong value is reported is at most

    δ = k · √(2P/π) · max_{λ ∈ endpoints of R} 1 / |p_m(λ)|     (the same on the bottom side, and added),

whatever the spectrum (Kuczyński & Woźniakowski 1992 bound the same event a priori, far more loosely). A cold
start that meets the stopping rule may stop before the floor when δ ≤ ``MISS_PROBABILITY`` (1 %): a large
observed gap and a loose tolerance pass after few steps (the CNN benchmark Hessian: 8 products at tol 10⁻³,
was 11), a cluster at the top never does (the floor's regression spectrum still takes 11). The bound is
conservative by orders of magnitude (δ ≈ 1.5 after 11 steps on that spectrum, where 0 of 1 000 starts are
wrong), so it only ever shortens runs; :attr:`EigenResult.miss_bound` reports δ at the stop. It covers the
first Krylov block of a cold start (not a warm start, whose v0 is not random, or a restart).

Warm starts: ``v0`` close to the wanted eigenvector saves most of the matvecs (tracking λ_max during
training from the previous top eigenvector). But a warm start must earn its convergence: no Krylov method
can see, from inside its subspace, an eigenvalue it has not yet amplified, and a ``v0`` that is nearly an
eigenvector of a *non-extreme* eigenvalue passes every test at once. Seen: λ₁ = 12, λ₂ = 10, a bulk of 998
eigenvalues in [0, 2], v0 = u₂ + 10⁻³·u₁ (+ 10⁻³ of bulk): 10.000003 reported converged, error estimate 10⁻⁷,
after 2 products — yesterday's top eigenvector, now second, at a crossing. Two safeguards, for the two ways a
start can hide λ₁:

* a random component: the start vector is v0/‖v0‖ + w·z/‖z‖ with z Gaussian and w =
  ``WARM_START_RANDOM_WEIGHT`` = 0.1 (1 % of its energy, so a good warm start stays good). Its component
  along *every* eigenvector u_i is then v0's plus w·z_i/‖z‖, which is ~w/√P whatever v0 is: a warm start is
  never less informative than a cold start shrunk by w, a factor the Krylov space makes up in a few steps
  (Chebyshev growth ½·exp(2m√γ) at relative gap γ), where v0 alone may be exactly orthogonal to the new top
  eigenvector (only an exactly invariant v0 is caught by the breakdown restart). Mixing costs no product; a
  block of random vectors beside v0 would cost one more product per vector and step;
* a minimum Krylov dimension: convergence is not declared before k + ``WARM_START_MIN_STEPS`` (5) steps,
  half the cold start's ``COLD_START_MIN_STEPS`` (10, at every tolerance): enough for the Krylov space to amplify a new top
  direction at a gap like the one above from either source (measured over 40 bulks × 16 starts whose
  component along u₁ is 10⁻² to exactly 0: never λ₂, 6–8 products; with 4 steps 5 of the 640 stop at λ₂,
  without the random component 120 do, without either 639). A crossing of nearly equal eigenvalues (gaps of
  1–3 %, seen on an edge-of-stability run) can still stop at λ₂, as a cold start occasionally does there.

So a warm-started value is still a lower bound that is right with high probability, not a certificate:
compare with a random start now and then (:class:`sharpness.tracking.SharpnessTracker` does, every
``verify_every`` measurements).

Memory: the basis is P × (steps) in A's dtype, allocated as it grows.

References: C. Lanczos (1950); J. Kuczyński & H. Woźniakowski, SIAM J. Matrix Anal. Appl. 13 (1992);
B. N. Parlett, *The Symmetric Eigenvalue Problem* (1998), ch. 11–13; Y. Saad, *Numerical Methods for Large
Eigenvalue Problems* (2011), §6.6; Ghorbani, Krishnan & Xiao (2019).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._operator import Seed, make_generator, operator_size
from .lanczos import LanczosProcess, start_vector

__all__ = [
    "EigenResult",
    "ConvergenceWarning",
    "extreme_eigenvalues",
    "top_eigenvalues",
    "bottom_eigenvalues",
    "DEFAULT_MAX_STEPS",
    "SCALE_FLOOR",
]

#: Default cap on Lanczos steps (and so on stored basis vectors), before the cap at P.
DEFAULT_MAX_STEPS = 300
CRITERIA = ("gap", "residual")
#: Extra Lanczos steps (beyond k) before a cold start may declare convergence without a miss certificate. A
#: well-separated λ₂ can pass the gap test before the Krylov space has amplified λ₁'s ~1/√P share of a random
#: start, and the Ritz values cannot show it. A fixed floor of 6 at tol ≥ 1e-3 was tried (2026-12-02) and
#: reverted: re-measuring the 177 saved study analyses (benchmarks/study_eigen_recheck.py) it reported λ₂ as λ₁
#: in 4 of them (3.4 % and 20 % low, "converged"), and on a spectrum shaped like one of them 21 of 200 starts did
#: (10 extra: 0). Earlier stops need the certificate below (MISS_PROBABILITY).
COLD_START_MIN_STEPS = 10
#: A cold start may stop before k + COLD_START_MIN_STEPS steps only when the bound on the probability that its
#: random start hid an eigenvalue outside the tolerance of the reported ones (module docstring, "Miss
#: certificate") is at most this. The bound is loose: on the study-shaped spectrum of the floor's regression
#: test it is still 1.2–1.8 after 11 steps, where 0 of 1 000 starts are wrong.
MISS_PROBABILITY = 1e-2
#: c in the convergence scale max(|θ|, c·Λ) (module docstring): eigenvalues below 1 % of the spectral
#: scale are judged against that 1 %, not against themselves.
SCALE_FLOOR = 1e-2
#: The same for a warm start (v0 given); see "Warm starts" in the module docstring.
WARM_START_MIN_STEPS = 5
#: Weight w of the random unit vector added to a unit-norm v0: the start's component along every
#: eigenvector is then at least ~w/√P, so none is hidden (module docstring).
WARM_START_RANDOM_WEIGHT = 0.1
#: A block whose β_m ≤ eps^(2/3)·‖A‖_est at convergence is treated as (nearly) invariant and verified by a
#: restart. Between rounding (eps) and the smallest β a Hessian's bulk next to its outliers shows in float32.
NEAR_INVARIANT_POWER = 2.0 / 3.0
#: Rounding level of a Ritz pair's residual and eigenvalue: ROUNDING_FACTOR · eps(dtype) · ‖A‖_est.
ROUNDING_FACTOR = 10.0
_TINY = np.finfo(np.float64).tiny


class ConvergenceWarning(RuntimeWarning):
    """An estimator returned a number that did not meet its requested tolerance."""


@dataclass(frozen=True)
class EigenResult:
    """Eigenvalue estimates for one end of the spectrum, with their uncertainty and cost.

    Attributes:
        values: float64, shape (k,). Top: descending; bottom: ascending.
        residuals: relative residual norms ‖A y_i − θ_i y_i‖ / |θ_i|, shape (k,). Rigorous: some eigenvalue
            of A lies within ``residuals[i] * |values[i]|`` of ``values[i]``.
        converged: bool, shape (k,): whether value i met the stopping rule (see module docstring).
        num_matvecs: products with A used by the whole run (shared by both ends; do not add them up).
        vectors: Ritz vectors, shape (P, k), unit norm, in A's dtype and device (sign fixed so the largest
            entry is positive), or ``None`` when not requested.
        num_steps: Lanczos steps taken (the dimension of the Krylov space, summed over restarts).
        error_bounds: estimated relative eigenvalue error (min(r, r²/gap) + 10·eps·‖A‖)/|θ|, shape (k,)
            (r instead of min(r, r²/gap) under ``criterion="residual"``). Typically far below ``residuals``.
        tolerance_scale: c·Λ, the absolute scale below which a value was judged against c·Λ instead of
            |θ| (converged when its absolute error estimate ≤ tol·max(|θ|, c·Λ); module docstring).
        scale_floor: c, as requested (0: every value held to tol relative to itself).
        lanczos: the run's :class:`~sharpness.linalg.lanczos.LanczosProcess` (its orthonormal basis and
            tridiagonal T) when ``keep_lanczos=True`` was asked, e.g. for :func:`~sharpness.linalg.deflated_trace`
            to continue instead of building its own; ``None`` otherwise (it holds a P × steps basis).
        miss_bound: for a cold start that needed no restart, an upper bound on the probability over its random
            start vector that an eigenvalue was missed which makes one of this end's values wrong by more than
            its tolerance (module docstring, "Miss certificate"); ``None`` for warm starts, restarted runs and
            an end with k = 0. A run may stop early only when the two ends' bounds add up to ≤ 1 %.
    """

    values: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    num_matvecs: int
    vectors: Tensor | None
    num_steps: int
    error_bounds: np.ndarray
    tolerance_scale: float = 0.0
    scale_floor: float = 0.0
    lanczos: Any = field(default=None, repr=False, compare=False)
    miss_bound: float | None = None

    def to_dict(self) -> dict:
        """Plain-Python view for JSON reports (vectors left out)."""
        return {
            "values": self.values.tolist(),
            "residuals": self.residuals.tolist(),
            "error_bounds": self.error_bounds.tolist(),
            "converged": [bool(c) for c in self.converged],
            "num_matvecs": self.num_matvecs,
            "num_steps": self.num_steps,
            "tolerance_scale": self.tolerance_scale,
            "scale_floor": self.scale_floor,
            "miss_bound": self.miss_bound,
        }


@dataclass(frozen=True)
class _Block:
    """Ritz data of one Krylov block [start, start + n) of the basis."""

    start: int
    theta: np.ndarray  # (n,) ascending
    S: np.ndarray  # (n, n)
    res: np.ndarray  # (n,) absolute residual norms


def _check_count(name: str, k: Any, P: int, lo: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not lo <= k <= P:
        raise ValueError(f"{name} must be in [{lo}, {P}], got {k!r}")
    return int(k)


def _errors(theta: np.ndarray, res: np.ndarray, idx: np.ndarray, criterion: str) -> np.ndarray:
    """Absolute eigenvalue-error estimates for Ritz values ``idx`` (see the module docstring)."""
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


def _converged(theta, res, err, tol: float, floor: float, scale_min: float = 0.0) -> np.ndarray:
    scale = np.maximum(np.abs(theta), scale_min)
    ok = (err <= tol * scale) & (res <= math.sqrt(tol) * scale)
    return ok | (res <= floor)


def _extreme_indices(theta: np.ndarray, top_k: int, bottom_k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(theta, kind="stable")
    return order[::-1][:top_k], order[:bottom_k]


def _adds_extremes(new: np.ndarray, prev: np.ndarray, top_k: int, bottom_k: int, tol: float, floor: float) -> bool:
    """Whether a just-closed Krylov block put a value into the requested top/bottom set of the earlier ones
    (then another block might hold yet another copy, so the run restarts)."""
    if top_k:
        if prev.size < top_k:
            return True
        kth = np.sort(prev)[-top_k]
        if new.max() > kth + tol * abs(kth) + floor:
            return True
    if bottom_k:
        if prev.size < bottom_k:
            return True
        kth = np.sort(prev)[bottom_k - 1]
        if new.min() < kth - tol * abs(kth) - floor:
            return True
    return False


def _endpoints(order: np.ndarray, theta: np.ndarray, t: np.ndarray, side: int) -> list[float]:
    """Endpoints of the region where a missed eigenvalue would make one end's reported values wrong.

    ``order`` indexes the requested Ritz values from the extreme inwards, ``t`` their absolute tolerances and
    ``side`` is +1 for the top, −1 for the bottom. The region is {λ : side·λ ≥ side·θ_(k) + t_(k)} minus the
    open tolerance intervals around θ_(1) … θ_(k−1): it holds no Ritz value, so on each of its pieces
    log|det(λ − T)| is concave (or monotone, on the unbounded piece) and smallest at an endpoint.
    """
    edge = side * theta[order[-1]] + t[order[-1]]  # in the side-flipped coordinate μ = side·λ
    holes = [(side * theta[i] - t[i], side * theta[i] + t[i]) for i in order[:-1]]
    candidates = [edge] + [b for _, b in holes] + [a for a, _ in holes]
    keep = [c for c in candidates if c >= edge and not any(a < c < b for a, b in holes)]
    return [side * c for c in keep]


def _miss_bound(theta: np.ndarray, betas: np.ndarray, top: np.ndarray, bottom: np.ndarray, t: np.ndarray,
                P: int) -> float:
    """Upper bound on the probability, over a Gaussian start vector, that the Krylov block with Ritz values
    ``theta`` (ascending) and Lanczos β₁…β_m (``betas``, the last one its closing residual) missed an
    eigenvalue that makes a reported value wrong by more than its tolerance ``t`` (module docstring,
    "Miss certificate"). ``top``/``bottom`` index the requested values, extreme first."""
    if betas.size != theta.size or np.any(betas <= 0):
        return math.inf
    log_beta = float(np.log(betas).sum())
    worst = -math.inf  # max over the region's endpoints of log(1/|p_m(λ)|)
    count = 0
    for order, side in ((top, 1), (bottom, -1)):
        if order.size == 0:
            continue
        count += order.size
        for lam in _endpoints(order, theta, t, side):
            dist = np.abs(lam - theta)
            if np.any(dist == 0):
                return math.inf
            worst = max(worst, log_beta - float(np.log(dist).sum()))
    return min(1.0, count * math.sqrt(2.0 * P / math.pi) * math.exp(min(worst, 0.0)))


def _run(
    A: Any,
    top_k: int,
    bottom_k: int,
    tol: float,
    max_steps: int | None,
    seed: Seed,
    v0: Tensor | None,
    return_vectors: bool,
    check_every: int,
    criterion: str,
    stacklevel: int,
    scale_floor: float = SCALE_FLOOR,
    keep_lanczos: bool = False,
) -> tuple[EigenResult, EigenResult]:
    P = operator_size(A)
    top_k = _check_count("top_k", top_k, P, 0)
    bottom_k = _check_count("bottom_k", bottom_k, P, 0)
    if top_k + bottom_k == 0:
        raise ValueError(f"top_k + bottom_k must be >= 1, got top_k={top_k}, bottom_k={bottom_k}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    kmax = max(top_k, bottom_k)
    if max_steps is None:
        max_steps = min(P, max(DEFAULT_MAX_STEPS, kmax))
    elif isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < kmax:
        raise ValueError(f"max_steps must be an int >= {kmax} (the number of requested eigenvalues), got {max_steps!r}")
    max_steps = min(max_steps, P)  # the Krylov space cannot outgrow R^P
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be an int >= 1, got {check_every!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if isinstance(scale_floor, bool) or not isinstance(scale_floor, (int, float)) or not 0 <= scale_floor <= 1:
        raise ValueError(f"scale_floor must be in [0, 1], got {scale_floor!r}")

    # A cold start's component along λ_max is only ~1/√P; until the Krylov space has amplified it, a
    # well-separated λ₂ can pass the gap test alone (seen on an MLP Hessian: λ₂ reported after 6 products).
    # Chebyshev growth after m steps is ~exp(2m·√gap), so ten steps lift a 10 % relative gap by ~500×.
    # A warm start carries a large component along the directions v0 is near, but may carry none along a new
    # top eigenvector (a crossing): it gets a random component and a shorter minimum (module docstring).
    min_steps = min(P, kmax + (COLD_START_MIN_STEPS if v0 is None else WARM_START_MIN_STEPS))
    # A cold start may stop sooner, from k + 1 steps on, when its miss certificate holds (module docstring).
    first_check = min(P, kmax + 1) if v0 is None else min_steps
    generator = make_generator(seed, A.device)  # also needed with v0: the mix and restarts draw from it
    start = start_vector(P, v0, generator, A.dtype, A.device)
    if v0 is not None:
        z = start_vector(P, None, generator, A.dtype, A.device)
        start = start / torch.linalg.vector_norm(start) + WARM_START_RANDOM_WEIGHT * z / torch.linalg.vector_norm(z)
    proc = LanczosProcess(A, start, max_steps=max_steps)

    closed: list[_Block] = []
    cur_start = 0

    def is_open() -> bool:
        return proc.length() > cur_start and not (closed and closed[-1].start == cur_start)

    def current() -> list[_Block]:
        if not is_open():
            return []
        theta, S, res = proc.block_ritz(0, cur_start, proc.length())
        return [_Block(cur_start, theta, S, res)]

    def assess(blocks: list[_Block]):
        theta = np.concatenate([b.theta for b in blocks])
        res = np.concatenate([b.res for b in blocks])
        top, bottom = _extreme_indices(theta, top_k, bottom_k)
        # The open block's own extremes must converge too: after a restart, a requested set made only of
        # exact values from closed blocks says nothing about what the new block may still find.
        open_ext = np.zeros(0, dtype=int)
        if is_open():
            n_open = blocks[-1].theta.size
            t_o, b_o = _extreme_indices(blocks[-1].theta, min(top_k, n_open), min(bottom_k, n_open))
            open_ext = np.concatenate([t_o, b_o]) + (theta.size - n_open)
        idx = np.unique(np.concatenate([top, bottom, open_ext]).astype(int))
        err = np.zeros(theta.size)
        conv = np.zeros(theta.size, dtype=bool)
        # + 10·eps·‖A‖: no estimate is better than the rounding in T's eigen-solve and in A @ v itself,
        # and a residual at that level counts as converged (what lets an eigenvalue ≈ 0 converge).
        floor = ROUNDING_FACTOR * proc.eps * proc.anorm()
        err[idx] = _errors(theta, res, idx, criterion) + floor
        conv[idx] = _converged(theta[idx], res[idx], err[idx], tol, floor, scale_floor * float(np.abs(theta).max()))
        if proc.length() >= P:
            conv[:] = True  # the basis spans R^P: T is similar to A, all Ritz values are exact up to rounding
        return theta, res, err, conv, top, bottom, open_ext

    def miss_bound(blocks: list[_Block], theta: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> float | None:
        """The miss certificate of a cold start's one Krylov block (None for a warm start or a restarted run)."""
        if v0 is not None or len(blocks) != 1:
            return None
        m = proc.length()
        if m >= P:
            return 0.0
        floor = ROUNDING_FACTOR * proc.eps * proc.anorm()
        t = tol * np.maximum(np.abs(theta), scale_floor * float(np.abs(theta).max())) + floor
        return _miss_bound(theta, proc.betas()[:m], top, bottom, t, P)

    def certified(bound: float | None) -> bool:
        return bound is not None and bound <= MISS_PROBABILITY

    near_invariant = proc.eps**NEAR_INVARIANT_POWER
    while True:
        broke = proc.step()
        m = proc.length()
        if not broke:
            if not proc.active():  # max_steps
                break
            invariant = proc.betas()[-1] <= near_invariant * proc.anorm()
            if (m - cur_start) % check_every or (m < first_check and not invariant):
                continue
            blocks = closed + current()  # one tridiagonal eigen-solve per check
            theta, res, err, conv, top, bottom, open_ext = assess(blocks)
            if not (theta.size >= kmax and conv[top].all() and conv[bottom].all() and conv[open_ext].all()):
                continue
            if m < min_steps and not invariant and not certified(miss_bound(blocks, theta, top, bottom)):
                continue
            # Converged. If β_m is tiny the block is (nearly) invariant and *every* Ritz value in it looks
            # converged, including a non-extreme one reached from a special start vector, or a lone copy
            # of a repeated eigenvalue. Treat that like a breakdown: close the block and verify below.
            if not invariant:
                break
        # Breakdown (or near-invariance at convergence): the block's Ritz values are exact, but only
        # extreme within the block. Restart from a random vector orthogonal to the basis while a new
        # block still adds a value to the requested set (the first block always does).
        (blk,) = current()
        prev = np.concatenate([b.theta for b in closed]) if closed else np.zeros(0)
        closed.append(blk)
        if m < P and _adds_extremes(blk.theta, prev, top_k, bottom_k, tol, proc.rounding_level()):
            if proc.restart(0, generator):
                cur_start = m
                continue
        break

    blocks = closed + current()
    theta, res, err, conv, top, bottom, open_ext = assess(blocks)
    none = np.zeros(0, dtype=int)
    if len(blocks) > 1 and open_ext.size and not conv[open_ext].all():
        conv[top] = conv[bottom] = False  # an unfinished restart block may still hold a more extreme value

    block_of = np.concatenate([np.full(b.theta.size, n) for n, b in enumerate(blocks)])
    local = np.concatenate([np.arange(b.theta.size) for b in blocks])
    basis = proc.basis() if return_vectors else None

    def make(idx: np.ndarray, bound: float | None) -> EigenResult:
        vals = theta[idx]
        denom = np.maximum(np.abs(vals), _TINY)
        vectors = None
        if basis is not None:
            cols = []
            for i in idx:
                b = blocks[block_of[i]]
                s = torch.as_tensor(b.S[:, local[i]], dtype=basis.dtype, device=basis.device)
                y = basis[:, b.start : b.start + b.theta.size] @ s
                y = y / torch.linalg.vector_norm(y)
                # a deterministic sign: the entry of largest magnitude is positive (no host sync needed)
                y = y * torch.sign(y[torch.argmax(y.abs())])
                cols.append(y)
            vectors = torch.stack(cols, dim=1) if cols else basis.new_zeros((P, 0))
        return EigenResult(
            values=vals.astype(np.float64),
            # |β_m S[m, i]| underflows to an exact 0 for a long-converged Ritz vector (LAPACK flushes tiny
            # eigenvector entries); no residual is better than the rounding in A @ v, so report that floor.
            residuals=np.maximum(res[idx], ROUNDING_FACTOR * proc.eps * proc.anorm()) / denom,
            converged=conv[idx].copy(),
            num_matvecs=proc.num_matvecs,
            vectors=vectors,
            num_steps=proc.length(),
            error_bounds=err[idx] / denom,
            tolerance_scale=scale_floor * float(np.abs(theta).max()),
            scale_floor=float(scale_floor),
            lanczos=proc if keep_lanczos else None,
            miss_bound=bound,
        )

    # each end states its own bound (the stopping rule above used their sum)
    top_res = make(top, miss_bound(blocks, theta, top, none) if top_k else None)
    bottom_res = make(bottom, miss_bound(blocks, theta, none, bottom) if bottom_k else None)
    bad = [(name, r) for name, r in (("top", top_res), ("bottom", bottom_res)) if not r.converged.all()]
    if bad:
        detail = "; ".join(
            f"{name}: {int((~r.converged).sum())} of {r.values.size} unconverged, "
            f"worst error estimate {float(np.max(r.error_bounds[~r.converged])):.1e}"
            for name, r in bad
        )
        warnings.warn(
            f"Lanczos stopped after {proc.length()} steps ({proc.num_matvecs} matvecs) above tol={tol:g} "
            f"({detail}); raise max_steps or tol",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )
    return top_res, bottom_res


def extreme_eigenvalues(
    A: Any,
    *,
    top_k: int = 1,
    bottom_k: int = 0,
    tol: float = 1e-4,
    max_steps: int | None = None,
    seed: Seed = 0,
    v0: Tensor | None = None,
    return_vectors: bool = False,
    check_every: int = 1,
    criterion: str = "gap",
    scale_floor: float = SCALE_FLOOR,
    keep_lanczos: bool = False,
) -> tuple[EigenResult, EigenResult]:
    """The ``top_k`` largest and ``bottom_k`` smallest (algebraic) eigenvalues from one Lanczos run.

    Args:
        A: symmetric operator: ``A.shape == (P, P)``, ``A.dtype``, ``A.device``, ``A @ v`` for v of shape (P,).
        top_k: how many of the largest eigenvalues, in [0, P] (returned descending).
        bottom_k: how many of the smallest eigenvalues, in [0, P] (returned ascending). ``top_k + bottom_k ≥ 1``.
        tol: target relative eigenvalue error, in (0, 1). See the module docstring for the exact rule.
        max_steps: cap on Lanczos steps = matvecs; default min(P, 300); values above P are capped at P.
        seed: int, ``torch.Generator`` or ``None`` for the random start vector (or a warm start's random
            component) and for restarts.
        v0: start vector (P,), e.g. the previous top eigenvector when tracking λ_max during training. A random
            component of weight 0.1 is mixed in and at least k + 5 steps are taken (module docstring).
        return_vectors: also return the Ritz vectors (P, k).
        check_every: compute Ritz pairs every this many steps (1 = stop at the earliest possible matvec;
            larger saves small CPU eigen-solves at the cost of up to ``check_every − 1`` extra matvecs).
        criterion: ``"gap"`` (default; error estimate min(r, r²/gap)) or ``"residual"`` (error ≤ r).
        scale_floor: c in [0, 1]: a value is held to tol·max(|θ|, c·Λ), Λ the spectral scale (default
            10⁻²; 0 = purely relative, the rule before 2026-12-02).
        keep_lanczos: also return the Lanczos run (its basis) as ``EigenResult.lanczos``, for a
            :func:`~sharpness.linalg.deflated_trace` of the same operator to extend.

    Returns:
        ``(top, bottom)``: two :class:`EigenResult` (an empty one for a side with k = 0). Both report the
        same run's ``num_matvecs``. Warns :class:`ConvergenceWarning` if any requested value is unconverged.

    Example:
        >>> A = torch.diag(torch.tensor([-3.0, 0.5, 1.0, 2.0], dtype=torch.float64))
        >>> top, bottom = extreme_eigenvalues(A, top_k=1, bottom_k=1, seed=0)
        >>> round(float(top.values[0]), 6), round(float(bottom.values[0]), 6)
        (2.0, -3.0)
    """
    return _run(A, top_k, bottom_k, tol, max_steps, seed, v0, return_vectors, check_every, criterion, 3, scale_floor,
                keep_lanczos)


def _one_end(A: Any, k: int, side: int, **kwargs: Any) -> EigenResult:
    """One end of the spectrum (``side`` 0: top, 1: bottom) from one run, for the two wrappers below."""
    opts = {"tol": 1e-4, "max_steps": None, "seed": 0, "v0": None, "return_vectors": False, "check_every": 1,
            "criterion": "gap", "scale_floor": SCALE_FLOOR}
    unknown = sorted(set(kwargs) - set(opts))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; expected some of {', '.join(opts)}")
    opts.update(kwargs)
    _check_count("k", k, operator_size(A), 1)
    counts = (k, 0) if side == 0 else (0, k)
    return _run(A, *counts, opts["tol"], opts["max_steps"], opts["seed"], opts["v0"], opts["return_vectors"],
                opts["check_every"], opts["criterion"], 4, opts["scale_floor"])[side]


def top_eigenvalues(A: Any, k: int = 1, **kwargs: Any) -> EigenResult:
    """The k largest (algebraic) eigenvalues, descending; λ_max is ``values[0]``.

    Keyword arguments as for :func:`extreme_eigenvalues` (``tol``, ``max_steps``, ``seed``, ``v0``,
    ``return_vectors``, ``check_every``, ``criterion``, ``scale_floor``), and its stopping rule; ``k`` must be
    in [1, P].
    """
    return _one_end(A, k, 0, **kwargs)


def bottom_eigenvalues(A: Any, k: int = 1, **kwargs: Any) -> EigenResult:
    """The k smallest (algebraic) eigenvalues, ascending; λ_min is ``values[0]``.

    Keyword arguments and stopping rule as for :func:`top_eigenvalues`; ``k`` must be in [1, P].
    Small-magnitude eigenvalues inside a Hessian's bulk converge slowly; expect more matvecs than for λ_max.
    """
    return _one_end(A, k, 1, **kwargs)
