"""Extreme eigenvalues of a symmetric operator by Lanczos, certified against what a single Krylov space misses.

"Top" means the largest *algebraic* eigenvalues (λ₁ ≥ λ₂ ≥ …, sorted descending) and "bottom" the smallest
algebraic ones (sorted ascending) — never the largest magnitude: for a Hessian at a saddle, λ_max and λ_min
are different facts and both are reported by name. One Lanczos run serves both ends of the spectrum.

**Stopping rule** (:mod:`sharpness.linalg.ritz`, checked every ``check_every`` steps): a Ritz value is converged
when its error estimate (min(r, r²/gap) for each end's extreme value of the search, the rigorous residual r for
the others and for verification runs, whose Ritz gaps can hide eigenvalues) is within tol·max(|θ|, c·Λ) and r within
√tol·max(|θ|, c·Λ) (Λ the spectral scale seen so far, c = ``scale_floor`` = 1 %, so a λ_min piled up at 0 beside
a large λ_max is held to tol·c·λ_max), or r is at the rounding level. A run stops when every requested value is
converged and it may stop (below), or at ``max_steps`` (default min(P, 300), over all runs) with a
:class:`ConvergenceWarning`.

**Missed eigenvalues.** No test on T can see an eigenvalue whose share of the start vector has not been
amplified yet. For one value per end (k = 1) a cold start may stop before k + ``COLD_START_MIN_STEPS`` (10)
steps only when its miss certificate (:mod:`sharpness.linalg.certificate`) bounds the chance that an eigenvalue
lies beyond θ + t (t its tolerance) by each end's share of ``MISS_PROBABILITY`` (1 %); otherwise the floor
stands, and :attr:`EigenResult.miss_bound` says what the run could certify (a value above the share means
"not certified").

**Multiplicities and clusters** (k ≥ 2). A single Krylov space holds one vector of each eigenspace, so a
repeated top eigenvalue is seen once, and a cluster inside the tolerance may look like one value. Every end
with k ≥ 2 is therefore *verified*: after the search run, a fresh random start in the orthogonal complement of
the accepted Ritz vectors Y runs on the deflated operator (I − YYᵀ) A (I − YYᵀ). Any converged Ritz value of
that run beyond θ_k + t_k is a value the search missed (a second copy, the other member of a cluster, or a
value the search never amplified): it is accepted in place of θ_k, and the end is verified again. An end is
done when its verification run finds nothing beyond the threshold: certified (its miss certificate, over a
half-line with no holes, is within its share) or after ``COLD_START_MIN_STEPS`` + 1 steps. Its
:attr:`~EigenResult.miss_bound` is that run's certificate, valid whether the search was a cold or a warm start.
The search itself stops as soon as its values converge (the verification covers what it misses), and ends
with k = 1 are not verified (their single-run certificate has no holes).

**Warm starts** (``v0``, e.g. the previous top eigenvector while tracking training) save most products, but a
``v0`` near an eigenvector of a *non-extreme* eigenvalue (yesterday's λ₁ after a crossing) passes every test at
once. So the start is v0/‖v0‖ + w·z/‖z‖ with z Gaussian and w = ``WARM_START_RANDOM_WEIGHT`` (0.1): its
component along every eigenvector is at least ~w/√P; and convergence waits for k + ``WARM_START_MIN_STEPS`` (5)
steps. A warm-started k = 1 value is right with high probability but not certified (``miss_bound`` None):
compare with a cold start now and then (:class:`sharpness.tracking.SharpnessTracker` does).

**Breakdown** (β ≈ 0: the Krylov space is invariant) stops a run: its Ritz values are exact eigenvalues, and
from a random start it contains a component of every eigenspace; multiplicities are the verification's job.

**Ghost copies.** A ``"local"`` run that has lost orthogonality grows copies of converged Ritz values, which
may sit further apart than their residuals while none has converged to √eps·‖A‖ (benchmarks/README.md,
"Scale", has float32 copies of one λ₁ on a 10 M MLP). Values found by value alone would then fill several of
the k slots with one eigenvalue, converged. So an end keeps one value per *direction*: Ritz vectors with
|yᵢᵀyⱼ| > 1/2 are copies (:class:`~sharpness.linalg.ritz.Accepted`), a local run's residuals are those of
the unit vectors y/‖y‖, and an end short of k values after its copies are dropped looks for the missing ones
in its verification run.

**Memory.** With ``reorthogonalize="full"`` the run stores its basis, max_steps vectors of P in A's dtype; with
``"local"`` it keeps four (:mod:`sharpness.linalg.lanczos`), rebuilding Ritz vectors by a replay when they are
needed (``return_vectors``, verification): m − 1 more products, three more vectors while it replays, and the k
found ones. A run's vectors are freed before the next run starts. With verification (an end with k ≥ 2) the
peak is a verification run's replay: the accepted vectors and their orthonormalized copy (the locked block,
2k), the run's four, its start, the replay's three and the vectors it finds (≤ k): at most 3k + 8 vectors of
P, which is what an analysis budgets (:mod:`sharpness.analysis.budget`). ``"auto"`` stores the basis when max_steps + 4
vectors plus the locked ones fit in ``memory`` bytes (default :data:`~sharpness.linalg._operator.DEFAULT_MEMORY`),
and is local otherwise.

References: C. Lanczos (1950); C. C. Paige (1971, 1980); J. Kuczyński & H. Woźniakowski, SIAM J. Matrix Anal.
Appl. 13 (1992); B. N. Parlett, *The Symmetric Eigenvalue Problem* (1998), ch. 11–13; Y. Saad, *Numerical Methods
for Large Eigenvalue Problems* (2011), §6.6; Ghorbani, Krishnan & Xiao (2019).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._operator import DEFAULT_MEMORY, Seed, check_memory, make_generator, operator_size
from .certificate import miss_probability
from .lanczos import LanczosProcess, start_vector
from .ritz import ROUNDING_FACTOR, SIDES, Accepted, RitzCheck, beyond

__all__ = [
    "EigenResult",
    "ConvergenceWarning",
    "extreme_eigenvalues",
    "top_eigenvalues",
    "bottom_eigenvalues",
    "DEFAULT_MAX_STEPS",
    "SCALE_FLOOR",
]

#: Default cap on Lanczos steps over all runs, before the cap at P.
DEFAULT_MAX_STEPS = 300
CRITERIA = ("gap", "residual")
REORTHOGONALIZE = ("auto", "full", "local")
#: Extra Lanczos steps (beyond k) before an uncertified cold start may stop: a well-separated λ₂ can pass the
#: gap test before the Krylov space has amplified λ₁'s ~1/√P share of a random start (Chebyshev growth after m
#: steps is ~exp(2m·√gap): ten steps lift a 10 % relative gap by ~500×). Also the length of an uncertified
#: verification run.
COLD_START_MIN_STEPS = 10
#: The total chance, shared equally by the certified ends of a run, that a run stops early with a wrong value.
MISS_PROBABILITY = 1e-2
#: c in the convergence scale max(|θ|, c·Λ): eigenvalues below 1 % of the spectral scale are judged against
#: that 1 %, not against themselves.
SCALE_FLOOR = 1e-2
#: The same as COLD_START_MIN_STEPS for a warm start (v0 given).
WARM_START_MIN_STEPS = 5
#: Weight w of the random unit vector added to a unit-norm v0 (module docstring, "Warm starts").
WARM_START_RANDOM_WEIGHT = 0.1
_TINY = np.finfo(np.float64).tiny


class ConvergenceWarning(RuntimeWarning):
    """An estimator returned a number that did not meet its requested tolerance."""


@dataclass(frozen=True)
class EigenResult:
    """Eigenvalue estimates for one end of the spectrum, with their uncertainty and cost.

    Attributes:
        values: float64, shape (k,). Top: descending; bottom: ascending. Fewer than k only when the step
            budget ran out before k distinct values were found (a :class:`ConvergenceWarning` says so).
        residuals: relative residual norms ‖A y_i − θ_i y_i‖ / |θ_i|, shape (k,). Rigorous: some eigenvalue
            of A lies within ``residuals[i] * |values[i]|`` of ``values[i]``.
        converged: bool, shape (k,): whether value i met the stopping rule (see module docstring).
        num_matvecs: products with A used by the whole call (shared by both ends; do not add them up).
        vectors: Ritz vectors, shape (P, k), unit norm, in A's dtype and device (sign fixed so the largest
            entry is positive), or ``None`` when not requested.
        num_steps: Lanczos steps taken, over all runs.
        error_bounds: estimated relative eigenvalue error (min(r, r²/gap) + 10·eps·‖A‖)/|θ|, shape (k,)
            (r instead of min(r, r²/gap) under ``criterion="residual"``). Typically far below ``residuals``.
        tolerance_scale: c·Λ, the absolute scale below which a value was judged against c·Λ instead of
            |θ| (converged when its absolute error estimate ≤ tol·max(|θ|, c·Λ); module docstring).
        scale_floor: c, as requested (0: every value held to tol relative to itself).
        lanczos: the search run's :class:`~sharpness.linalg.lanczos.LanczosProcess` when ``keep_lanczos=True``
            was asked and it stores its basis, e.g. for :func:`~sharpness.linalg.deflated_trace` to continue;
            ``None`` otherwise.
        miss_bound: an upper bound on the chance, over the random start of the run that certified this end,
            that an eigenvalue was missed which makes one of its values wrong by more than its tolerance
            (P(wrong and bound ≤ x) ≤ x; :mod:`sharpness.linalg.certificate`): the search run's for k = 1 from a
            cold start, the last verification run's for k ≥ 2; ``None`` for a warm-started k = 1 end, an end
            whose verification the step budget did not allow, and an end with k = 0.
        num_runs: Lanczos runs behind this end: 1 for the search, plus its verification runs.
        reorthogonalization: ``"full"`` (stored basis) or ``"local"`` (three-term recurrence).
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
    num_runs: int = 1
    reorthogonalization: str = "full"

    def to_dict(self) -> dict:
        """Plain-Python view for JSON reports (the vectors and the Lanczos run left out)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("vectors", "lanczos")}
        return {key: v.tolist() if isinstance(v, np.ndarray) else v for key, v in out.items()}


def _check_count(name: str, k: Any, P: int, lo: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not lo <= k <= P:
        raise ValueError(f"{name} must be in [{lo}, {P}], got {k!r}")
    return int(k)


def _largest_entry_signs(Y: Tensor) -> Tensor:
    """sign(Y[i*, j]) per column j, i* the first index of the column's largest |entry| (argmax of |Y|), found
    from the column's min and max without materializing |Y|; a column whose max and −min tie (e.g. a
    ±1/√2 pair) falls back to that column's own argmax."""
    low, high = torch.aminmax(Y, dim=0)
    signs = torch.where(high >= -low, 1.0, -1.0).to(Y.dtype)
    for j in torch.nonzero(high == -low).flatten().tolist():
        column = Y[:, j]
        signs[j] = torch.sign(column[column.abs().argmax()])
    return signs


class _Solver:
    """The search run, then the verification runs of every end with k ≥ 2 (module docstring)."""

    def __init__(self, A: Any, k: dict[str, int], tol: float, max_steps: int, seed: Seed, v0: Tensor | None,
                 check_every: int, criterion: str, scale_floor: float, mode: str, want_vectors: bool) -> None:
        self.A, self.P, self.k, self.want_vectors = A, operator_size(A), k, want_vectors
        self.tol, self.max_steps, self.v0 = tol, max_steps, v0
        self.check_every, self.criterion, self.scale_floor, self.mode = check_every, criterion, scale_floor, mode
        self.generator = make_generator(seed, A.device)  # also with v0: the mix and verifications draw from it
        self.verified = [s for s in SIDES if k[s] >= 2]
        self.eps = float(torch.finfo(A.dtype).eps)
        self.steps = 0
        self.scale: float | None = None  # c·Λ, fixed by the search run for the verification runs
        self.anorm = 0.0

    def run(self, start: Tensor, locked: Tensor | None, k: dict[str, int], *, cold: bool,
            thresholds: dict[str, float] | None = None) -> tuple[RitzCheck, dict[str, float | None]]:
        """One run until its wanted values converge and every end may stop, or the run ends.

        The search (``thresholds`` None): an end with k ≥ 2 may stop at once (it is verified afterwards), one
        with k = 1 when its certificate is within its share, or at the floor. A verification run (ends in
        ``thresholds``, one value each or the number an end is missing): an end may stop when a converged value lies beyond its threshold (found),
        when its certificate for the half-line beyond the threshold is within its share, or at the floor.
        Returns the last check and each certified end's miss bound.
        """
        proc = LanczosProcess(self.A, start, max_steps=self.max_steps - self.steps, reorthogonalize=self.mode,
                              locked=locked, keep_start=thresholds is not None or self.want_vectors or bool(self.verified))
        kmax = max(k.values())
        ends = [s for s in SIDES if k[s]]
        certified = [s for s in ends if cold and (thresholds is not None or k[s] == 1)]
        share = MISS_PROBABILITY / max(len(certified), 1)
        floor_steps = min(proc.dim, kmax + (COLD_START_MIN_STEPS if cold else WARM_START_MIN_STEPS))
        first_check = min(proc.dim, kmax + 1) if cold else floor_steps

        def may_stop(side: str) -> bool:
            if thresholds is None:
                return side in self.verified or (bounds[side] is not None and bounds[side] <= share)
            return check.found(side, thresholds[side]).size > 0 or bounds[side] <= share

        while True:
            proc.step()
            m = proc.length()
            if proc.active() and (m % self.check_every or m < first_check):
                continue
            check = RitzCheck.of(proc, k["top"], k["bottom"], tol=self.tol, criterion=self.criterion,
                                 scale=self.scale, scale_floor=self.scale_floor, verification=thresholds is not None)
            bounds = {s: self._bound(check, s, thresholds) if s in certified else None for s in SIDES}
            if not proc.active():
                break
            if check.all_wanted_converged(kmax) and (m >= floor_steps or all(may_stop(s) for s in ends)):
                break
        self.steps += proc.length()
        self.anorm = max(self.anorm, proc.anorm())
        return check, bounds

    def _bound(self, check: RitzCheck, side: str, thresholds: dict[str, float] | None) -> float:
        """The miss certificate of ``side``: beyond the threshold, or beyond the search's own extreme value."""
        if thresholds is not None:
            threshold = thresholds[side]
        else:
            wanted = check.wanted(side)
            if wanted.size == 0:
                return math.inf
            scale = self.scale_floor * float(np.abs(check.theta).max()) if self.scale is None else self.scale
            threshold = beyond(float(check.theta[wanted[0]]), side, self.tol, scale, check.floor)
        proc = check.proc
        return miss_probability(proc.ritz()[0], proc.betas(), threshold, 1 if side == "top" else -1, proc.dim,
                                proc.eps)

    @staticmethod
    def vectors(check: RitzCheck, idx: np.ndarray) -> tuple[list[Tensor], np.ndarray | None]:
        """Unit Ritz vectors of the values ``idx``, the sign fixed so the largest entry is positive, and for a
        local run the norms ‖Q s_i‖ they had before scaling (None for a stored, orthonormal basis)."""
        if idx.size == 0:
            return [], None
        Y = check.proc.ritz_vectors(check.S[:, idx])
        norms = torch.linalg.vector_norm(Y, dim=0)
        Y.div_(norms)  # in place: the k vectors are the only copies held (no |Y| or scaled temporaries)
        Y.mul_(_largest_entry_signs(Y))
        return list(Y.unbind(dim=1)), None if check.proc.stores_basis else norms.double().cpu().numpy()

    @staticmethod
    def orthonormal(vectors: list[Tensor]) -> Tensor:
        """The locked block (P, n): accepted Ritz vectors orthonormalized (Gram–Schmidt twice, vector by vector;
        they are orthogonal up to rounding, or up to the loss of orthogonality of a local run). Built as n
        contiguous rows and returned transposed, which is the layout the deflated run uses (no copy)."""
        Y = torch.stack(vectors)
        for j in range(Y.shape[0]):
            for _ in range(2 if j else 0):
                Y[j].addmv_(Y[:j].T, Y[:j] @ Y[j], alpha=-1)
            Y[j] /= torch.linalg.vector_norm(Y[j])
        return Y.T

    def solve(self, keep_lanczos: bool) -> tuple[dict[str, Accepted], int, Any]:
        """Search, then verify; returns the two ends, the products used and the kept search run."""
        start = start_vector(self.P, self.v0, self.generator, self.A.dtype, self.A.device)
        if self.v0 is not None:
            z = start_vector(self.P, None, self.generator, self.A.dtype, self.A.device)
            start = start / torch.linalg.vector_norm(start) + WARM_START_RANDOM_WEIGHT * z / torch.linalg.vector_norm(z)
        search, bounds = self.run(start, None, self.k, cold=self.v0 is None)
        self.scale = self.scale_floor * float(np.abs(search.theta).max())
        # A search whose stored basis spans the space found every eigenvalue exactly, with multiplicity.
        spanned = search.proc.stores_basis and search.proc.length() >= search.proc.dim
        verify = [] if spanned else self.verified
        ends = {}
        for side in SIDES:
            idx = search.wanted(side)
            ends[side] = Accepted(miss_bound=None if side in verify else bounds[side])
            vecs, norms = self.vectors(search, idx) if self.want_vectors or verify else ([None] * idx.size, None)
            ends[side].add(search, idx, vecs, side, self.k[side], norms)
        matvecs = search.proc.num_matvecs
        keep = search.proc if keep_lanczos and search.proc.stores_basis else None
        if keep is None:  # the accepted vectors are copies: the run's own go before the verification runs
            search.proc.release()
        return ends, matvecs + self.verify(ends, verify), keep

    def verify(self, ends: dict[str, Accepted], pending: list[str]) -> int:
        """Verification runs until no end with k ≥ 2 finds a value beyond θ_k ± t_k; returns their products."""
        matvecs = 0
        while pending and self.steps < self.max_steps:
            vectors = [v for s in SIDES for v in ends[s].vectors]
            if len(vectors) >= self.P:
                break
            thresholds, wanted = {}, {s: 0 for s in SIDES}
            for side in pending:
                e = ends[side]
                missing = self.k[side] - len(e.values)
                # ±∞ while the end has fewer than k values (a breakdown, or copies dropped): anything found is new,
                # and the run looks for as many values as are missing
                thresholds[side] = (beyond(e.values[e.order(side)[-1]], side, self.tol, self.scale,
                                           ROUNDING_FACTOR * self.eps * self.anorm)
                                    if missing <= 0 else (-math.inf if side == "top" else math.inf))
                wanted[side] = max(missing, 1)
            z = start_vector(self.P, None, self.generator, self.A.dtype, self.A.device)
            check, bounds = self.run(z, self.orthonormal(vectors), wanted, cold=True, thresholds=thresholds)
            matvecs += check.proc.num_matvecs
            found = []
            for side in pending:
                ends[side].runs += 1
                new = check.found(side, thresholds[side])
                if new.size:
                    found.append(side)
                    vecs, norms = self.vectors(check, new)
                    ends[side].add(check, new, vecs, side, self.k[side], norms)
                else:
                    ends[side].miss_bound = bounds[side]
            check.proc.release()
            pending = found
        return matvecs

    def result(self, end: Accepted, side: str, matvecs: int, keep: Any, want_vectors: bool) -> EigenResult:
        order = end.order(side)
        vals = np.asarray(end.values, dtype=np.float64)[order]
        denom = np.maximum(np.abs(vals), _TINY)
        floor = ROUNDING_FACTOR * self.eps * self.anorm
        vectors = None
        if want_vectors:
            cols = [end.vectors[i] for i in order]
            vectors = (torch.stack(cols, dim=1) if cols
                       else torch.zeros((self.P, 0), dtype=self.A.dtype, device=self.A.device))
        k = self.k[side]
        return EigenResult(
            values=vals,
            # |β_m S[m, i]| underflows to an exact 0 for a long-converged Ritz vector (LAPACK flushes tiny
            # eigenvector entries); no residual is better than the rounding in A @ v, so report that floor.
            residuals=np.maximum(np.asarray(end.res, dtype=np.float64)[order], floor) / denom,
            converged=np.asarray(end.conv, dtype=bool)[order],
            num_matvecs=matvecs,
            vectors=vectors,
            num_steps=self.steps,
            error_bounds=np.asarray(end.err, dtype=np.float64)[order] / denom,
            tolerance_scale=float(self.scale or 0.0),
            scale_floor=float(self.scale_floor),
            lanczos=keep,
            miss_bound=end.miss_bound if k else None,
            num_runs=end.runs if k else 0,
            reorthogonalization=self.mode,
        )


def _run(A: Any, top_k: int, bottom_k: int, *, stacklevel: int, tol: float = 1e-4, max_steps: int | None = None,
         seed: Seed = 0, v0: Tensor | None = None, return_vectors: bool = False, check_every: int = 1,
         criterion: str = "gap", scale_floor: float = SCALE_FLOOR, keep_lanczos: bool = False,
         reorthogonalize: str = "auto", memory: int | None = None) -> tuple[EigenResult, EigenResult]:
    """:func:`extreme_eigenvalues` with its arguments checked; ``stacklevel`` points the warning at the caller."""
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
    if reorthogonalize not in REORTHOGONALIZE:
        raise ValueError(f"reorthogonalize must be one of {', '.join(REORTHOGONALIZE)}, got {reorthogonalize!r}")
    check_memory(memory)
    memory = DEFAULT_MEMORY if memory is None else memory

    itemsize = torch.empty((), dtype=A.dtype).element_size()
    if reorthogonalize == "auto":  # the stored basis when it fits, or when the run may span the space anyway
        fits = (max_steps + 4 + top_k + bottom_k) * P * itemsize <= memory
        reorthogonalize = "full" if fits or max_steps >= P else "local"
    solver = _Solver(A, {"top": top_k, "bottom": bottom_k}, tol, max_steps, seed, v0, check_every, criterion,
                     scale_floor, reorthogonalize, return_vectors)
    ends, matvecs, keep = solver.solve(keep_lanczos)
    top_res, bottom_res = (solver.result(ends[side], side, matvecs, keep, return_vectors) for side in SIDES)
    wanted = {"top": top_k, "bottom": bottom_k}
    bad = [(name, r) for name, r in (("top", top_res), ("bottom", bottom_res))
           if not r.converged.all() or r.values.size < wanted[name]]
    if bad:
        detail = "; ".join(
            f"{name}: "
            + (f"only {r.values.size} distinct of {wanted[name]} found, " if r.values.size < wanted[name] else "")
            + (f"{int((~r.converged).sum())} of {r.values.size} unconverged, worst error estimate "
               f"{float(np.max(r.error_bounds[~r.converged])):.1e}" if not r.converged.all() else "all converged")
            for name, r in bad
        )
        warnings.warn(
            f"Lanczos stopped after {top_res.num_steps} steps ({top_res.num_matvecs} matvecs) above tol={tol:g} "
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
    reorthogonalize: str = "auto",
    memory: int | None = None,
) -> tuple[EigenResult, EigenResult]:
    """The ``top_k`` largest and ``bottom_k`` smallest (algebraic) eigenvalues from one Lanczos search (and a
    verification of every end with k ≥ 2).

    Args:
        A: symmetric operator: ``A.shape == (P, P)``, ``A.dtype``, ``A.device``, ``A @ v`` for v of shape (P,).
        top_k: how many of the largest eigenvalues, in [0, P] (returned descending).
        bottom_k: how many of the smallest eigenvalues, in [0, P] (returned ascending). ``top_k + bottom_k ≥ 1``.
        tol: target relative eigenvalue error, in (0, 1). See the module docstring for the exact rule.
        max_steps: cap on Lanczos steps over all runs; default min(P, 300); values above P are capped at P.
        seed: int, ``torch.Generator`` or ``None`` for the random start vector (or a warm start's random
            component) and the verification runs.
        v0: start vector (P,), e.g. the previous top eigenvector when tracking λ_max during training. A random
            component of weight 0.1 is mixed in and at least k + 5 steps are taken (module docstring).
        return_vectors: also return the Ritz vectors (P, k).
        check_every: compute Ritz pairs every this many steps (1 = stop at the earliest possible matvec;
            larger saves small CPU eigen-solves at the cost of up to ``check_every − 1`` extra matvecs).
        criterion: ``"gap"`` (default; error estimate min(r, r²/gap)) or ``"residual"`` (error ≤ r).
        scale_floor: c in [0, 1]: a value is held to tol·max(|θ|, c·Λ), Λ the spectral scale (default
            10⁻²; 0 = purely relative).
        keep_lanczos: also return the search run (its stored basis) as ``EigenResult.lanczos``, for a
            :func:`~sharpness.linalg.deflated_trace` of the same operator to extend.
        reorthogonalize: ``"auto"`` (default), ``"full"`` (stored basis) or ``"local"`` (four vectors;
            :mod:`sharpness.linalg.lanczos`).
        memory: bytes the runs' vectors may take under ``"auto"`` (default 2 GiB).

    Returns:
        ``(top, bottom)``: two :class:`EigenResult` (an empty one for a side with k = 0). Both report the
        same call's ``num_matvecs``. Warns :class:`ConvergenceWarning` if any requested value is unconverged.

    Example:
        >>> A = torch.diag(torch.tensor([-3.0, 0.5, 1.0, 2.0], dtype=torch.float64))
        >>> top, bottom = extreme_eigenvalues(A, top_k=1, bottom_k=1, seed=0)
        >>> round(float(top.values[0]), 6), round(float(bottom.values[0]), 6)
        (2.0, -3.0)
    """
    return _run(A, top_k, bottom_k, stacklevel=3, tol=tol, max_steps=max_steps, seed=seed, v0=v0,
                return_vectors=return_vectors, check_every=check_every, criterion=criterion, scale_floor=scale_floor,
                keep_lanczos=keep_lanczos, reorthogonalize=reorthogonalize, memory=memory)


def _one_end(A: Any, k: int, side: int, **kwargs: Any) -> EigenResult:
    """One end of the spectrum (``side`` 0: top, 1: bottom), for the two wrappers below."""
    known = ("tol", "max_steps", "seed", "v0", "return_vectors", "check_every", "criterion", "scale_floor",
             "reorthogonalize", "memory")
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; expected some of {', '.join(known)}")
    _check_count("k", k, operator_size(A), 1)
    counts = (k, 0) if side == 0 else (0, k)
    return _run(A, *counts, stacklevel=4, **kwargs)[side]


def top_eigenvalues(A: Any, k: int = 1, **kwargs: Any) -> EigenResult:
    """The k largest (algebraic) eigenvalues, descending; λ_max is ``values[0]``.

    Keyword arguments as for :func:`extreme_eigenvalues` (``tol``, ``max_steps``, ``seed``, ``v0``,
    ``return_vectors``, ``check_every``, ``criterion``, ``scale_floor``, ``reorthogonalize``, ``memory``), and
    its stopping rule; ``k`` must be in [1, P].
    """
    return _one_end(A, k, 0, **kwargs)


def bottom_eigenvalues(A: Any, k: int = 1, **kwargs: Any) -> EigenResult:
    """The k smallest (algebraic) eigenvalues, ascending; λ_min is ``values[0]``.

    Keyword arguments and stopping rule as for :func:`top_eigenvalues`; ``k`` must be in [1, P].
    Small-magnitude eigenvalues inside a Hessian's bulk converge slowly; expect more matvecs than for λ_max.
    """
    return _one_end(A, k, 1, **kwargs)
