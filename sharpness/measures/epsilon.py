"""Keskar et al.'s ε-sharpness: the largest relative loss increase inside a box around θ.

Keskar, Mudigere, Nocedal, Smelyanskiy, Tang, "On Large-Batch Training for Deep Learning: Generalization Gap
and Sharp Minima", ICLR 2017, §2.2.1 (metric 3). For A ∈ R^{P×p} and x = θ ∈ R^P,

    C_ε = { y ∈ R^p : |y_i| ≤ b_i },   b = ε (|A⁺x| + 1),
    φ_{x,f}(ε, A) = 100 · (max_{y ∈ C_ε} f(x + A y) − f(x)) / (1 + f(x))      (a percentage),

where f is the mean loss of the :class:`~sharpness.objective.Objective` and A⁺ the Moore–Penrose
pseudo-inverse. A = I (``subspace_dim=None``) is the full space, where the box is |z_i| ≤ ε(|θ_i| + 1).

**Two maximizers.** φ is a box-constrained maximization, and the number reported is only as good as the
maximizer.

* ``method="ascent"`` (the default): projected sign ascent from box corners, y⁺ = Π_C(y + 2s·b ⊙ sign(∇_y f))
  with a step s halved on failure (:mod:`~sharpness.measures.box_ascent`, where the update, its monotonicity
  for a convex f and the stopping statuses are stated). Starts (``start="spectral"``, the default): the two
  corners ±b ⊙ sign(u), u the top eigenvector of diag(b)·AᵀHA·diag(b) (the spectral rounding of the Boolean
  quadratic program max_s ½sᵀKs that the box problem becomes at a minimum, where the gradient is tiny; ≤ 40
  Hessian-vector products), then the corner b ⊙ sign(∇f(θ)) (a zero gradient entry picks +b_i), then random
  corners b ⊙ r, r_i = ±1: ``restarts`` of them, or by default (``restarts=None``) 2 and then one more at a
  time until the last 3 starts raised the best by at most 1 % and a second start ended within 1 % of the best,
  within 12 starts in all (so at most 12 · ``max_iter`` evaluations). Each start stops as ``"kkt"`` (a KKT
  point), ``"step_floor"`` (no ascent down to 2⁻¹⁰ of the box), ``"stalled"`` (5 evaluations without a 1e-4
  relative gain) or ``"max_iter"`` (its budget of loss-and-gradient evaluations). ``polish`` > 0 then runs
  that many L-BFGS-B iterations from the best point. Measured: within 1 % of a brute-force maximum on 3-parameter tanh models at ε ≤ 0.1 and on
  float64 quadratics away from their minimum with ‖g‖ ≈ 1–3, where the start corners reach only 74–88 %
  (tests/test_measures_epsilon.py, tests/test_measures_epsilon_ascent.py), and at ε = 0.3 and 0.5 on 32
  such models (bias or not, seeds 0–7), with 5 fixed starts and with the default's 5–8. On trained MLPs it
  is compared with long plain sign ascents by benchmarks/epsilon_accuracy.py (benchmarks/README.md).
* ``method="paper"``: Keskar's own protocol, L-BFGS-B (``scipy.optimize.minimize``) on −f(x + A y) with the
  box as bounds, 10 iterations from y = 0 by default. Its tolerances are zero, so the budget is the iteration
  count. Near a well-trained minimum it is badly biased low: the gradient is tiny, the first step is the
  gradient itself (−∇(−f) with the identity as initial Hessian model), and −f has negative curvature, so
  the BFGS updates are skipped and the steps grow only by a factor (1 + λ) per iteration. On an MLP at training
  loss 5e-5 and ε = 1e-3 it returned 0.0013 % where 100 iterations and the ascent find ≈ 4 %: the bias grows
  as the loss falls, i.e. it flatters small-batch minima. It is kept, under its name, to compare with the
  paper's tables.

**What a value means.** Every evaluated point lies in the box, so ``value`` (the best over all starts and
y = 0, hence ≥ 0) is a certified *lower bound* of the box maximum, up to the rounding of f itself.
``budget_exhausted`` says whether any start stopped at its budget (then a one-line warning is logged on
the ``sharpness`` logger): a lower bound that may be far from the maximum. The starts' spread says how sure
the lower bound is of being the maximum: ``second_best``, ``starts_within_1pct`` and ``maxima_disagree``
(the second-best start more than 1 % below the best: the starts ended at different local maxima and the best
was reached once). With ``curvature`` = λ ≥ the
largest Hessian eigenvalue over the box, ``upper_bound`` is the
*quadratic-model* bound max_{y∈C} gᵀy + ½λ‖Ay‖² ≤ Σ_i b_i |g_i| + ½ λ σ_max(A)² ‖b‖², with g = ∇_y f(θ):
exact for a quadratic f, and a bound for any f whose Hessian stays ≤ λ across the box (second-order Taylor
with the mean-value form) — an estimate, not a certificate, where the curvature varies within the box.
A Lanczos Ritz value θ₁ is never above λ_max (interlacing), so it is not such a λ by itself; `sharpness analyze`
passes λ = θ₁ + ‖r₁‖, the Ritz value plus its residual norm ‖H v₁ − θ₁ v₁‖: some eigenvalue lies within
‖r₁‖ of θ₁, so this is ≥ λ_max(H at θ) unless Lanczos missed an eigenvalue above θ₁ (what the eigenvalue
result's ``miss_bound`` bounds).

Choices the paper leaves open, made here:

* **The random subspace.** The paper uses a random A with p = 100 columns but does not give its distribution
  or scale. Scale matters, because the box is measured through A⁺x while the step is A y. We draw entries
  i.i.d. N(0, 1/P), so every column has expected unit norm: a coordinate of y then moves θ about as far as a
  coordinate of z does in the full space, and as p → P the measure approaches the full-space one in scale.
  A⁺x is computed from a reduced QR factorization, A = QR, A⁺x = R⁻¹Qᵀx (A has full column rank with
  probability one; no P×P matrix is ever formed).
* **A that does not fit.** A and its QR are 2p vectors of P (≈ 99 GB at P = 124 M, p = 100 in float32). When
  they do not fit ``memory`` (in an analysis: the budget's share for the estimator's vectors,
  :mod:`sharpness.analysis.budget`), A is regenerated from saved generator states one row tile at a time
  (:class:`~sharpness.measures.subspace.GeneratedBasis`): the same entries bit for bit, A y and Aᵀg tile by
  tile, and A⁺x from the p × p normal equations AᵀA y = Aᵀx, so the same box and the same maximizer up to
  rounding. The price is time: every pass over A draws P·p normals again, and each loss-and-gradient
  evaluation makes 2 passes (A y, then Aᵀ∇f; 1 at y = 0), each Hessian product of the spectral start 2
  (≤ 2·40), the set-up 2 (the generator states; AᵀA with Aᵀθ and Aᵀ∇f(θ), so y = 0 costs none) and
  :class:`EpsilonSearch`'s perturbation A y*, when read, 1. The default
  ascent's ≤ 12·100 evaluations are then up to 2 400 passes; ``start="corner"`` with a small ``max_iter``
  bounds them.
* **Gradients** are exact, ∇_y f(x + A y) = Aᵀ∇f, in the Objective's dtype; loss values are compared as
  Python floats (float64).
* **The start** (``start``): ``"corner"`` (b ⊙ sign ∇f(θ), the ascent's default), ``"zero"`` (y = 0, the
  paper's default) or ``"random"`` (uniform in the box). At y = 0 with an exactly zero gradient (e.g. the
  minimum of a quadratic) L-BFGS-B stops at once with φ = 0, and the corner start picks +b.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any, Callable

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from ..errors import InputError
from ..objective import Objective
from .box_ascent import AGREE_RTOL, Box, corner, sign_ascent, spectral_corners, start_spread, status_counts
from .subspace import GeneratedBasis, subspace_rows

log = logging.getLogger(__name__)

METHODS = ("ascent", "paper")
STARTS = ("spectral", "corner", "zero", "random")
#: The defaults of each method: the ascent's budget counts loss-and-gradient evaluations, L-BFGS-B's iterations.
DEFAULTS = {"ascent": {"start": "spectral", "restarts": 2, "max_iter": 100},
            "paper": {"start": "zero", "restarts": 0, "max_iter": 10}}
# restarts=None with the ascent: add random corners until the last AUTO_PATIENCE starts raised the best by
# ≤ 1 % (AGREE_RTOL) and a second start is within 1 % of the best, at most MAX_STARTS starts in all
AUTO_PATIENCE, MAX_STARTS = 3, 12
_LBFGSB_STATUS = {0: "converged", 1: "max_iter", 2: "abnormal"}


@dataclass(frozen=True)
class EpsilonSharpness:
    """φ(ε, A) in percent, with every start's outcome, the spread of the starts, the budget and the cost.

    ``space`` is ``"full"`` (A = I, ``dim`` = P) or ``"random"`` (Gaussian A, ``dim`` = p); ``method`` is
    ``"ascent"`` or ``"paper"``. ``value`` is the best feasible point's φ: a lower bound of the box maximum.
    Per start, in the order run (the ``start`` kind first, then the random restarts): ``values_per_start``
    (φ at that start's best point), ``iterations`` (ascent: evaluations; L-BFGS-B: iterations), ``status``
    and ``messages``. The ascent's statuses are ``"kkt"``, ``"step_floor"``, ``"stalled"`` and ``"max_iter"``
    (:mod:`~sharpness.measures.box_ascent`: a KKT point, no ascent down to 2⁻¹⁰ of the box, five evaluations
    without a 1e-4 relative gain, the budget); L-BFGS-B's are ``"converged"``, ``"max_iter"`` and
    ``"abnormal"``. ``status_counts`` counts the starts per status. ``budget_exhausted``: some start stopped
    at ``max_iter``. ``restarts`` is the number of random restarts run; ``max_starts`` is the cap of the
    automatic restarts (None when ``restarts`` was given). Spread: ``second_best`` (the second-highest
    ``values_per_start``, None for one start), ``starts_within_1pct`` (starts within 1 % of the best,
    itself included) and ``maxima_disagree`` (the second best is more than 1 % below the best: the best was
    found once, and a further start may find more). ``upper_bound`` (percent, or None without
    ``curvature``, the λ it used) is the quadratic-model bound of the module docstring, ``upper_bound_kind``
    says so. ``base_loss`` is f(θ); ``num_function_evals`` counts loss-and-gradient evaluations, polishing
    included.
    """

    epsilon: float
    space: str
    dim: int
    method: str
    start: str
    restarts: int
    max_iter: int
    polish: int
    seed: int
    value: float
    values_per_start: tuple[float, ...]
    iterations: tuple[int, ...]
    status: tuple[str, ...]
    messages: tuple[str, ...]
    budget_exhausted: bool
    upper_bound: float | None
    upper_bound_kind: str | None
    base_loss: float
    num_function_evals: int
    num_hvps: int
    seconds: float
    status_counts: dict[str, int] = field(default_factory=dict)
    second_best: float | None = None
    starts_within_1pct: int = 0
    maxima_disagree: bool = False
    max_starts: int | None = None
    curvature: float | None = None

    @property
    def summary(self) -> str:
        """One line for people: method, budget, how the starts stopped (:func:`budget_outcome`)."""
        return budget_outcome(self.method, self.status, self.max_iter)

    @property
    def spread(self) -> str:
        """One line for people on how the starts agree (:func:`spread_outcome`)."""
        return spread_outcome(self.values_per_start)


def budget_outcome(method: str, status: tuple[str, ...] | list[str], max_iter: int) -> str:
    """``"ascent: 5 × ≤ 100 evaluations, stopped: 3 kkt, 2 stalled"`` or ``"paper: 1 × ≤ 10 L-BFGS-B
    iterations, BUDGET RAN OUT on 1 of 1 starts"``: the budget and how each start ended, from the fields a
    report's JSON also holds."""
    unit = "evaluations" if method == "ascent" else "L-BFGS-B iterations"
    counts = status_counts(status)
    ran_out = counts.pop("max_iter", 0)
    stopped = ", ".join(f"{n} {s}" for s, n in counts.items())
    outcome = f"BUDGET RAN OUT on {ran_out} of {len(status)} starts" if ran_out else ""
    if stopped:
        outcome += ("; " if ran_out else "") + f"stopped: {stopped}"
    if "abnormal" in status:
        outcome += ", LINE SEARCH FAILED"
    return f"{method}: {len(status)} × ≤ {max_iter} {unit}, {outcome}"


def spread_outcome(values_per_start: tuple[float, ...] | list[float]) -> str:
    """``"starts: best 6.697 %, second 6.69 %, 4 of 7 within 1 %"``, with ``"LOCAL MAXIMA DISAGREE"`` when the
    second best is more than 1 % below the best (:func:`~.box_ascent.start_spread`)."""
    second, within, disagree = start_spread(values_per_start)
    if second is None:
        return f"starts: 1, at {values_per_start[0]:.4g} %"
    return (f"starts: best {max(values_per_start):.4g} %, second {second:.4g} %, {within} of "
            f"{len(values_per_start)} within 1 %" + ("; LOCAL MAXIMA DISAGREE: a further start may find more"
                                                     if disagree else ""))


@dataclass(frozen=True)
class EpsilonSearch:
    """:class:`EpsilonSharpness` plus the tensors behind it (not part of any report).

    ``maximizer``: the best end point y* ∈ C_ε, ``(dim,)`` (zeros when no start beat y = 0);
    ``bounds``: the box half-widths b = ε(|A⁺θ| + 1), ``(dim,)``; ``perturbation``: A y*, ``(P,)``, formed
    when first read (for a regenerated A that is a pass over A);
    ``basis``: A, ``(P, p)``, or a :class:`~.subspace.GeneratedBasis` (``A @ y`` and ``A.T @ g`` tile by tile)
    when A did not fit the budget, or None for the full space.
    """

    result: EpsilonSharpness
    maximizer: Tensor
    bounds: Tensor
    basis: Tensor | GeneratedBasis | None

    @cached_property
    def perturbation(self) -> Tensor:
        return self.maximizer if self.basis is None else self.basis @ self.maximizer


def random_subspace(
    numel: int, dim: int, *, seed: int = 0, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> Tensor:
    """A ``(numel, dim)`` matrix with i.i.d. N(0, 1/numel) entries (columns of expected unit norm).

    Drawn column by column in float64 on the CPU from ``torch.Generator().manual_seed(seed)``, so the matrix is
    the same on every device and in every dtype, and the peak memory is one matrix in ``dtype``.
    """
    return _draw_subspace(numel, dim, torch.Generator().manual_seed(seed), dtype, torch.device(device))


def _check_dim(numel: int, dim: int) -> None:
    if not 1 <= dim <= numel:
        raise InputError(f"subspace_dim must be in [1, {numel}] (the number of parameters), got {dim}")


def _draw_subspace(numel: int, dim: int, gen: torch.Generator, dtype: torch.dtype, device: torch.device) -> Tensor:
    _check_dim(numel, dim)
    basis = torch.empty(numel, dim, dtype=dtype, device=device)
    scale = 1.0 / math.sqrt(numel)
    for j in range(dim):
        basis[:, j] = torch.randn(numel, generator=gen, dtype=torch.float64).mul_(scale)
    return basis


@lru_cache(maxsize=1)
def _seeded_subspace(numel: int, dim: int, seed: int, dtype: torch.dtype,
                     device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A = :func:`random_subspace` for ``seed``, its reduced QR, and the generator's state after the draw.

    Cached (the last one only) because one analysis measures several ε, by both maximizers, in the same A,
    and drawing P·p normals and factorizing A is most of a subspace measurement's time. A and Q stay alive until another subspace is drawn
    (``_seeded_subspace.cache_clear()`` frees them). Nothing downstream writes into them."""
    gen = torch.Generator().manual_seed(seed)
    basis = _draw_subspace(numel, dim, gen, dtype, device)
    q, r = torch.linalg.qr(basis, mode="reduced")
    return basis, q, r, gen.get_state()


@lru_cache(maxsize=1)
def _generated_subspace(numel: int, dim: int, seed: int, dtype: torch.dtype, device: torch.device,
                        rows: int) -> GeneratedBasis:
    """A = :func:`random_subspace` for ``seed`` as a :class:`~.subspace.GeneratedBasis` with tiles of ``rows``.

    Cached (the last one only) for the same reason as :func:`_seeded_subspace`: its generator states cost one
    pass over A and its AᵀA another, and neither depends on θ."""
    return GeneratedBasis(numel, dim, seed, dtype, device, rows)


def _lbfgsb(box: Box, y0: Tensor, max_iter: int, base: float = 0.0) -> tuple[Tensor, float, int, str, str]:
    """L-BFGS-B on −F from y0 with the box as bounds and zero tolerances (the budget is ``max_iter``).

    ``base`` is unused: it keeps the signature of :func:`~.box_ascent.sign_ascent`, whose stall rule needs f(θ)."""
    like = box.bound

    def negative(y: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = box(torch.tensor(y, dtype=like.dtype, device=like.device))
        return -value, -grad.double().cpu().numpy()

    b = box.bound.double().cpu().numpy()
    res = scipy.optimize.minimize(
        negative, y0.double().cpu().numpy(), jac=True, method="L-BFGS-B",
        bounds=scipy.optimize.Bounds(-b, b), options={"maxiter": max_iter, "ftol": 0.0, "gtol": 0.0},
    )
    # scipy returns without iterating (no nit, no status) when every variable is fixed, as at ε = 0.
    status = _LBFGSB_STATUS.get(int(res.get("status", 0)), f"status {res.get('status')}")
    y = torch.tensor(np.asarray(res.x, dtype=np.float64), dtype=like.dtype, device=like.device)
    return y, -float(res.fun), int(res.get("nit", 0)), status, str(res.message)


def search_epsilon_box(
    objective: Objective,
    epsilon: float,
    *,
    subspace_dim: int | None = None,
    method: str = "ascent",
    start: str | None = None,
    restarts: int | None = None,
    max_iter: int | None = None,
    polish: int = 0,
    curvature: float | None = None,
    seed: int = 0,
    memory: int | None = None,
) -> EpsilonSearch:
    """Maximize f(θ + A y) over y ∈ C_ε; :func:`epsilon_sharpness` with the maximizer kept.

    Random numbers come from one ``torch.Generator().manual_seed(seed)`` used for A first (see
    :func:`random_subspace`, so ``random_subspace(P, p, seed=seed)`` reproduces A) and then for the starts.
    ``memory`` (bytes for the estimator's vectors; None: no limit) decides how A is held
    (:func:`~.subspace.subspace_rows`): whole with its QR when they fit, else regenerated tile by tile.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    defaults = DEFAULTS[method]
    start = defaults["start"] if start is None else start
    auto = restarts is None and method == "ascent"  # more random corners while they raise the best
    restarts = defaults["restarts"] if restarts is None else restarts
    max_iter = defaults["max_iter"] if max_iter is None else max_iter
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise InputError(f"epsilon must be a finite number ≥ 0, got {epsilon}")
    if start not in STARTS:
        raise InputError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    if restarts < 0 or polish < 0:
        raise InputError(f"restarts and polish must be ≥ 0, got {restarts} and {polish}")
    if max_iter < 1:
        raise InputError(f"max_iter must be ≥ 1, got {max_iter}")
    if curvature is not None and not math.isfinite(curvature):
        raise InputError(f"curvature must be a finite number, got {curvature}")
    if subspace_dim is not None:
        _check_dim(objective.numel, subspace_dim)
    rows = None if subspace_dim is None else subspace_rows(
        objective.numel, subspace_dim, torch.empty((), dtype=objective.dtype).element_size(), memory)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)  # A first, then the starts
    basis = qr = None
    if rows is not None:  # A does not fit: regenerated tile by tile
        basis = _generated_subspace(objective.numel, subspace_dim, seed, objective.dtype,
                                    torch.device(objective.device), rows)
        gen.set_state(basis.end_state)  # the same starts as after drawing A whole
    elif subspace_dim is not None:
        basis, q, r, state = _seeded_subspace(objective.numel, subspace_dim, seed, objective.dtype,
                                              torch.device(objective.device))
        qr = (q, r)
        gen.set_state(state)  # as if A had just been drawn from gen: the starts are the same as without the cache
    box = Box(objective, epsilon, basis, qr)
    zero = torch.zeros_like(box.bound)
    base = float(objective.value())
    g0 = box(zero)[1] if start in ("spectral", "corner") or curvature is not None else None

    def uniform() -> Tensor:
        u = torch.rand(box.dim, generator=gen, dtype=torch.float64).to(box.bound)
        return (2 * u - 1) * box.bound

    def random_corner() -> Tensor:
        signs = torch.randint(0, 2, (box.dim,), generator=gen, dtype=torch.int64).to(box.bound) * 2 - 1
        return signs * box.bound

    num_hvps = 0
    if start == "spectral":
        first, num_hvps = spectral_corners(box, seed)
        first.append(corner(box.bound, g0))
    else:
        first = [{"zero": lambda: zero, "random": uniform, "corner": lambda: corner(box.bound, g0)}[start]()]
    restart = random_corner if method == "ascent" else uniform
    maximizer = sign_ascent if method == "ascent" else _lbfgsb
    runs = _run_starts(box, first + [restart() for _ in range(restarts)], maximizer, max_iter, base,
                       restart if auto else None)
    best_y, best_f = zero, base
    for y, f_end, *_ in runs:
        if f_end > best_f:
            best_f, best_y = f_end, y
    if polish and best_f > base:
        y, f_end, *_ = _lbfgsb(box, best_y, polish)
        if f_end > best_f:
            best_f, best_y = f_end, y

    upper, upper_kind = None, None
    if curvature is not None:
        b = box.bound.double()
        quadratic = 0.5 * max(curvature, 0.0) * box.sigma_max**2 * float(b @ b)
        upper = 100.0 * (float((b * g0.double().abs()).sum()) + quadratic) / (1.0 + base)
        upper_kind = (f"quadratic model: Σ b|g| + ½·λ·σ_max(A)²‖b‖² with λ = {curvature:.6g} (a bound while the "
                      "Hessian stays ≤ λ across the box)")

    value = 100.0 * (best_f - base) / (1.0 + base)
    values = tuple(100.0 * (f_end - base) / (1.0 + base) for _, f_end, *_ in runs)
    status = tuple(r[3] for r in runs)
    second, within, disagree = start_spread(values)
    result = EpsilonSharpness(
        epsilon=float(epsilon), space="full" if basis is None else "random", dim=box.dim, method=method,
        start=start, restarts=len(runs) - len(first), max_iter=max_iter, polish=polish, seed=seed, value=value,
        values_per_start=values, iterations=tuple(r[2] for r in runs), status=status,
        messages=tuple(r[4] for r in runs), budget_exhausted="max_iter" in status, upper_bound=upper,
        upper_bound_kind=upper_kind, base_loss=base, num_function_evals=box.evals, num_hvps=num_hvps, seconds=0.0,
        status_counts=status_counts(status), second_best=second, starts_within_1pct=within,
        maxima_disagree=disagree, max_starts=MAX_STARTS if auto else None, curvature=curvature,
    )
    if result.budget_exhausted:
        where = "full space" if basis is None else f"subspace p={box.dim}"
        log.warning(f"ε-sharpness ε={epsilon:g} {where}: {result.summary}; {value:.4g} % is only a lower bound "
                    "of the box maximum")
    return EpsilonSearch(
        result=replace(result, seconds=time.perf_counter() - t0),
        maximizer=best_y,
        bounds=box.bound,
        basis=basis,
    )


Run = tuple[Tensor, float, int, str, str]  # (best y, F there, evaluations or iterations, status, message)


def _run_starts(box: Box, starts: list[Tensor], run: Callable[[Box, Tensor, int, float], Run], max_iter: int,
                base: float, more: Callable[[], Tensor] | None) -> list[Run]:
    """Every start's run, in order; with ``more`` (the automatic restarts), further starts drawn from it while
    the last ``AUTO_PATIENCE`` starts raised the best F − f(θ) by more than ``AGREE_RTOL`` of it, or while no
    second start came within ``AGREE_RTOL`` of the best (local maxima disagree), up to ``MAX_STARTS`` in all.
    The best before any start is f(θ) (y = 0 is feasible), so the first starts count as raising it."""
    runs = [run(box, y0, max_iter, base) for y0 in starts]
    while more is not None and len(runs) < MAX_STARTS:
        best = max(f for _, f, *_ in runs) - base
        before = max([base, *(f for _, f, *_ in runs[:-AUTO_PATIENCE])]) - base
        disagree = start_spread([f - base for _, f, *_ in runs])[2]
        if best - before <= AGREE_RTOL * abs(best) and not disagree:
            break
        runs.append(run(box, more(), max_iter, base))
    return runs


def epsilon_sharpness(objective: Objective, epsilon: float, **options: Any) -> EpsilonSharpness:
    """Keskar et al.'s φ(ε, A) = 100·(max_{y∈C_ε} f(θ + A y) − f(θ)) / (1 + f(θ)), in percent.

    Args:
        objective: the mean loss f over the analysis set; θ is its point.
        epsilon: ε ≥ 0, the relative box size (the paper reports ε = 1e-3 and 5e-4).

    Keyword Args:
        subspace_dim: None for the full space (A = I), or p for a random Gaussian A ∈ R^{P×p} (paper: 100).
        method: ``"ascent"`` (projected sign ascent from corners, default) or ``"paper"`` (Keskar's L-BFGS-B).
        start: ``"spectral"``, ``"corner"``, ``"zero"`` or ``"random"`` for the first starts (default: the
            method's, spectral for the ascent, zero for the paper).
        restarts: extra random starts (ascent: random corners; paper: uniform in the box, default 0). None with
            the ascent: 2, then more while the last 3 starts raise the best by > 1 % or no second start is
            within 1 % of the best, at most 12 starts in all.
        max_iter: the budget per start (ascent: evaluations, default 100; paper: L-BFGS-B iterations, 10).
        polish: L-BFGS-B iterations from the best point afterwards (default 0).
        curvature: an upper bound λ on the Hessian's eigenvalues (e.g. λ_max); gives ``upper_bound``.
        seed: seeds A and the random starts.
        memory: bytes for the estimator's own vectors (None: no limit); decides whether A is held whole or
            regenerated tile by tile (module docstring), and refuses a budget without room for one tile.

    Cost: at most (number of starts) · ``max_iter`` gradients over the analysis set for the ascent (the default:
    ≤ 12 starts), plus ≤ 40 Hessian-vector products for the spectral corners, plus line-search
    evaluations for L-BFGS-B (``num_function_evals``), one for the gradient at θ (corner start or
    ``curvature``), and a QR factorization of A for the subspace variant; for a regenerated A, 2 draws of
    P·p normals per evaluation away from y = 0 and per Hessian product, and 2 more per call (1 when A was
    generated before).

    See the module docstring for the two methods and what the value and its bounds mean;
    :func:`search_epsilon_box` also returns the maximizer.
    """
    return search_epsilon_box(objective, epsilon, **options).result


# The keyword options are declared once, on search_epsilon_box; help() and inspect show them here as well.
epsilon_sharpness.__signature__ = inspect.signature(search_epsilon_box).replace(  # type: ignore[attr-defined]
    return_annotation="EpsilonSharpness")
