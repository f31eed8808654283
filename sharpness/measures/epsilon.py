"""Keskar et al.'s ε-sharpness: the largest relative loss increase inside a box around θ.

Keskar, Mudigere, Nocedal, Smelyanskiy, Tang, "On Large-Batch Training for Deep Learning: Generalization Gap
and Sharp Minima", ICLR 2017, §2.2.1 (metric 3). For A ∈ R^{P×p} and x = θ ∈ R^P,

    C_ε = { y ∈ R^p : |y_i| ≤ b_i },   b = ε (|A⁺x| + 1),
    φ_{x,f}(ε, A) = 100 · (max_{y ∈ C_ε} f(x + A y) − f(x)) / (1 + f(x))      (a percentage),

where f is the mean loss of the :class:`~sharpness.objective.Objective` and A⁺ the Moore–Penrose
pseudo-inverse. A = I (``subspace_dim=None``) is the full space, where the box is |z_i| ≤ ε(|θ_i| + 1).

**Two maximizers.** φ is a box-constrained maximization, and the number reported is only as good as the
maximizer.

* ``method="ascent"`` (the default): projected sign ascent from box corners. Steepest ascent for the norm of
  the box, max_i |y_i|/b_i, is the step b ⊙ sign(∇_y f): from y the iterate is
  y⁺ = Π_C(y + 2s · b ⊙ sign(∇_y f(y))), with s = 1 (a jump to the corner the gradient points to) halved after
  every step that does not raise f and doubled (up to 1) after one that does. Near a minimum f is close to a
  convex quadratic, whose maximum over a box lies at a corner, and for a convex f the full step never lowers
  f (f(y⁺) ≥ f(y) + ∇f(y)ᵀ(y⁺ − y) ≥ f(y), since y⁺ maximizes the linearization over the box): the method
  is then a monotone fixed-point iteration on corners. Starts (``start="spectral"``, the default): the two
  corners ±b ⊙ sign(u), u the top eigenvector of diag(b)·AᵀHA·diag(b) (the spectral rounding of the Boolean
  quadratic program max_s ½sᵀKs that the box problem becomes at a minimum, where the gradient is tiny; ≤ 40
  Hessian-vector products), then the corner b ⊙ sign(∇f(θ)) (a zero gradient entry picks +b_i); ``restarts``
  adds random corners b ⊙ r, r_i = ±1. A start stops as **converged** when the sign step leaves y unchanged
  (a KKT point: every coordinate sits at the bound its gradient points to, or has a zero gradient), when no
  step down to 2⁻¹⁰ of the box width raises f (a local maximum to that resolution), or when 5 evaluations
  raised the increase f(y) − f(θ) by less than 1e-4 of itself (a stall; the 1 % that matters is far above
  it), and as **max_iter** when it has spent ``max_iter`` loss-and-gradient evaluations. ``polish`` > 0 then
  runs that many L-BFGS-B iterations from the best point. Measured: within 1 % of a brute-force maximum on
  3-parameter tanh models at ε ≤ 0.1 (tests/test_measures_epsilon.py); at ε = 0.3–0.5, where those models
  have several corner maxima, 6 of 32 cases ended at a lower corner, by up to 48 %. On an MNIST-1D MLP
  (256-256, loss 5.8e-5, ε = 1e-3, 1000 samples) it reached 6.697 %, equal to 200 plain sign-ascent steps,
  in 78 evaluations and 11 HVPs (benchmarks/epsilon_accuracy.py).
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
the ``sharpness`` logger): a lower bound that may be far from the maximum. With ``curvature`` = λ ≥ the
largest Hessian eigenvalue over the box (e.g. λ_max at θ from Lanczos), ``upper_bound`` is the
*quadratic-model* bound max_{y∈C} gᵀy + ½λ‖Ay‖² ≤ Σ_i b_i |g_i| + ½ λ σ_max(A)² ‖b‖², with g = ∇_y f(θ):
exact for a quadratic f, and a bound for any f whose Hessian stays ≤ λ across the box (second-order Taylor
with the mean-value form) — an estimate, not a certificate, where the curvature varies within the box.

Choices the paper leaves open, made here:

* **The random subspace.** The paper uses a random A with p = 100 columns but does not give its distribution
  or scale. Scale matters, because the box is measured through A⁺x while the step is A y. We draw entries
  i.i.d. N(0, 1/P), so every column has expected unit norm: a coordinate of y then moves θ about as far as a
  coordinate of z does in the full space, and as p → P the measure approaches the full-space one in scale.
  A⁺x is computed from a reduced QR factorization, A = QR, A⁺x = R⁻¹Qᵀx (A has full column rank with
  probability one; no P×P matrix is ever formed).
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
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from ..errors import InputError
from ..hessian import HessianOperator
from ..linalg import top_eigenvalues
from ..linalg.eigen import ConvergenceWarning
from ..objective import Objective

log = logging.getLogger(__name__)

METHODS = ("ascent", "paper")
STARTS = ("spectral", "corner", "zero", "random")
#: The defaults of each method: the ascent's budget counts loss-and-gradient evaluations, L-BFGS-B's iterations.
DEFAULTS = {"ascent": {"start": "spectral", "restarts": 2, "max_iter": 100},
            "paper": {"start": "zero", "restarts": 0, "max_iter": 10}}
MIN_STEP = 2.0**-10  # the ascent's smallest step, as a fraction of the box width
STALL_EVALS, STALL_RTOL = 5, 1e-4  # the ascent stops when 5 evaluations raised the increase by < 1e-4 of it
SPECTRAL_TOL, SPECTRAL_STEPS = 1e-3, 40  # Lanczos for the spectral corner: only the signs are used
_LBFGSB_STATUS = {0: "converged", 1: "max_iter", 2: "abnormal"}


@dataclass(frozen=True)
class EpsilonSharpness:
    """φ(ε, A) in percent, with every start's outcome, the budget and the cost.

    ``space`` is ``"full"`` (A = I, ``dim`` = P) or ``"random"`` (Gaussian A, ``dim`` = p); ``method`` is
    ``"ascent"`` or ``"paper"``. ``value`` is the best feasible point's φ: a lower bound of the box maximum.
    Per start, in the order run (the ``start`` kind first, then the random restarts): ``values_per_start``
    (φ at that start's best point), ``iterations`` (ascent: evaluations; L-BFGS-B: iterations), ``status``
    (``"converged"``, ``"max_iter"`` or L-BFGS-B's ``"abnormal"``) and ``messages``. ``budget_exhausted``:
    some start stopped at ``max_iter``. ``upper_bound`` (percent, or None without ``curvature``) is the
    quadratic-model bound of the module docstring, ``upper_bound_kind`` says so. ``base_loss`` is f(θ);
    ``num_function_evals`` counts loss-and-gradient evaluations, polishing included.
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

    @property
    def summary(self) -> str:
        """One line for people: method, budget, and whether the budget ran out (:func:`budget_outcome`)."""
        return budget_outcome(self.method, self.status, self.max_iter)


def budget_outcome(method: str, status: tuple[str, ...] | list[str], max_iter: int) -> str:
    """``"ascent: 5 × ≤ 100 evaluations, converged"`` or ``"paper: 1 × ≤ 10 L-BFGS-B iterations, BUDGET RAN
    OUT on 1 of 1 starts"``: the budget and its outcome, from the fields a report's JSON also holds."""
    unit = "evaluations" if method == "ascent" else "L-BFGS-B iterations"
    ran_out = sum(s == "max_iter" for s in status)
    outcome = f"BUDGET RAN OUT on {ran_out} of {len(status)} starts" if ran_out else "converged"
    if "abnormal" in status:
        outcome += ", LINE SEARCH FAILED"
    return f"{method}: {len(status)} × ≤ {max_iter} {unit}, {outcome}"


@dataclass(frozen=True)
class EpsilonSearch:
    """:class:`EpsilonSharpness` plus the tensors behind it (not part of any report).

    ``maximizer``: the best end point y* ∈ C_ε, ``(dim,)`` (zeros when no start beat y = 0);
    ``bounds``: the box half-widths b = ε(|A⁺θ| + 1), ``(dim,)``; ``perturbation``: A y*, ``(P,)``;
    ``basis``: A, ``(P, p)``, or None for the full space.
    """

    result: EpsilonSharpness
    maximizer: Tensor
    bounds: Tensor
    perturbation: Tensor
    basis: Tensor | None


def random_subspace(
    numel: int, dim: int, *, seed: int = 0, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> Tensor:
    """A ``(numel, dim)`` matrix with i.i.d. N(0, 1/numel) entries (columns of expected unit norm).

    Drawn column by column in float64 on the CPU from ``torch.Generator().manual_seed(seed)``, so the matrix is
    the same on every device and in every dtype, and the peak memory is one matrix in ``dtype``.
    """
    return _draw_subspace(numel, dim, torch.Generator().manual_seed(seed), dtype, torch.device(device))


def _draw_subspace(numel: int, dim: int, gen: torch.Generator, dtype: torch.dtype, device: torch.device) -> Tensor:
    if not 1 <= dim <= numel:
        raise InputError(f"subspace_dim must be in [1, {numel}] (the number of parameters), got {dim}")
    basis = torch.empty(numel, dim, dtype=dtype, device=device)
    scale = 1.0 / math.sqrt(numel)
    for j in range(dim):
        basis[:, j] = torch.randn(numel, generator=gen, dtype=torch.float64).mul_(scale)
    return basis


@lru_cache(maxsize=1)
def _seeded_subspace(numel: int, dim: int, seed: int, dtype: torch.dtype,
                     device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A = :func:`random_subspace` for ``seed``, its reduced QR, and the generator's state after the draw.

    Cached (the last one only) because one analysis measures several ε, by both maximizers, in the same A:
    drawing P·p normals and factorizing A took 4.4 s of a 6–7 s subspace measurement on a 551 k-parameter MLP
    (p = 100, one CPU thread), every time again. A and Q stay alive until another subspace is drawn
    (``_seeded_subspace.cache_clear()`` frees them). Nothing downstream writes into them."""
    gen = torch.Generator().manual_seed(seed)
    basis = _draw_subspace(numel, dim, gen, dtype, device)
    q, r = torch.linalg.qr(basis, mode="reduced")
    return basis, q, r, gen.get_state()


class _Box:
    """F(y) = f(θ + A y) and ∇_y F on the box |y| ≤ b, counting evaluations."""

    def __init__(self, objective: Objective, epsilon: float, basis: Tensor | None,
                 qr: tuple[Tensor, Tensor] | None = None) -> None:
        self.objective, self.basis, self.theta = objective, basis, objective.theta
        if basis is None:
            centre, self.sigma_max = self.theta, 1.0
        else:
            q, r = qr if qr is not None else torch.linalg.qr(basis, mode="reduced")
            # A⁺x = R⁻¹Qᵀx (the least-squares solution); σ_max(A) = σ_max(R) for the upper bound.
            centre = torch.linalg.solve_triangular(r, (q.T @ self.theta).unsqueeze(1), upper=True).squeeze(1)
            self.sigma_max = float(torch.linalg.matrix_norm(r.double(), ord=2))
        self.bound = epsilon * (centre.abs() + 1)
        self.dim = self.bound.shape[0]
        self.evals = 0

    def point(self, y: Tensor) -> Tensor:
        return self.theta + (y if self.basis is None else self.basis @ y)

    def __call__(self, y: Tensor) -> tuple[float, Tensor]:
        self.evals += 1
        value, grad = self.objective.value_and_grad(self.point(y))
        return float(value), grad if self.basis is None else self.basis.T @ grad


class _ScaledCurvature:
    """K = diag(b) AᵀHA diag(b) on y-space, H the Hessian at θ: the quadratic term of the box problem in units
    of the box, ½ sᵀKs for y = b ⊙ s. Satisfies the :mod:`sharpness.linalg` operator contract."""

    def __init__(self, box: "_Box") -> None:
        self.box, self.H = box, HessianOperator(box.objective)
        self.shape, self.dtype, self.device = (box.dim, box.dim), box.bound.dtype, box.bound.device

    def __matmul__(self, v: Tensor) -> Tensor:
        b = self.box.bound if v.ndim == 1 else self.box.bound.unsqueeze(1)
        basis = self.box.basis
        out = self.H @ (b * v if basis is None else basis @ (b * v))
        return b * (out if basis is None else basis.T @ out)


def _spectral_corners(box: "_Box", seed: int) -> tuple[list[Tensor], int]:
    """The corners ±b ⊙ sign(u), u the top eigenvector of K (:class:`_ScaledCurvature`), and the HVPs spent.

    Near a minimum the box problem is max_s ½ sᵀKs over s ∈ {±1}^p (the gradient term is tiny): a Boolean
    quadratic program whose spectral relaxation (s ∈ R^p, ‖s‖² = p) is solved by s ∝ u; rounding u's signs is the
    standard rounding of that relaxation, exact for p ≤ 2 and a good start for the sign ascent otherwise. Both
    signs are returned: they tie in the quadratic term and differ in the gradient's and higher-order terms.
    """
    K = _ScaledCurvature(box)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a direction is all we need; the ascent judges it
        top = top_eigenvalues(K, 1, tol=SPECTRAL_TOL, max_steps=min(box.dim, SPECTRAL_STEPS), seed=seed,
                              return_vectors=True)
    corner = _corner(box.bound, top.vectors[:, 0].to(box.bound))
    return [corner, -corner], K.H.num_matvecs


def _corner(bound: Tensor, direction: Tensor) -> Tensor:
    """b ⊙ sign(direction), with a zero entry taken as +."""
    return torch.where(direction < 0, -bound, bound)


def _ascend(box: _Box, y: Tensor, max_evals: int, base: float) -> tuple[Tensor, float, int, str, str]:
    """Projected sign ascent from y (module docstring); returns (best y, F there, evaluations, status, message)."""
    f_y, g_y = box(y)
    history = [f_y]  # the best F after each evaluation
    step = 1.0
    while True:
        used = len(history)
        if used > STALL_EVALS and history[-1] - history[-1 - STALL_EVALS] <= STALL_RTOL * (history[-1] - base):
            return y, f_y, used, "converged", (f"stalled: the increase grew by less than {STALL_RTOL:g} of itself "
                                               f"over {STALL_EVALS} evaluations")
        if used >= max_evals:
            return y, f_y, used, "max_iter", f"stopped at the budget of {max_evals} evaluations"
        candidate = torch.maximum(torch.minimum(y + (2 * step) * box.bound * g_y.sign(), box.bound), -box.bound)
        if torch.equal(candidate, y):
            return y, f_y, used, "converged", "KKT point: every coordinate at the bound its gradient points to"
        f_c, g_c = box(candidate)
        if f_c > f_y:
            y, f_y, g_y, step = candidate, f_c, g_c, min(1.0, 2 * step)
        else:
            step /= 2
        history.append(f_y)
        if step < MIN_STEP:
            return y, f_y, used + 1, "converged", f"no ascent along the sign direction down to step {MIN_STEP:g} of the box"


def _lbfgsb(box: _Box, y0: Tensor, max_iter: int, base: float = 0.0) -> tuple[Tensor, float, int, str, str]:
    """L-BFGS-B on −F from y0 with the box as bounds and zero tolerances (the budget is ``max_iter``).

    ``base`` is unused: it keeps the signature of :func:`_ascend`, whose stall rule needs f(θ)."""
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
) -> EpsilonSearch:
    """Maximize f(θ + A y) over y ∈ C_ε; :func:`epsilon_sharpness` with the maximizer kept.

    Random numbers come from one ``torch.Generator().manual_seed(seed)`` used for A first (see
    :func:`random_subspace`, so ``random_subspace(P, p, seed=seed)`` reproduces A) and then for the starts.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    defaults = DEFAULTS[method]
    start = defaults["start"] if start is None else start
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
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)  # A first, then the starts
    basis = qr = None
    if subspace_dim is not None:  # _draw_subspace refuses a dim outside [1, P] (an error is never cached)
        basis, q, r, state = _seeded_subspace(objective.numel, subspace_dim, seed, objective.dtype,
                                              torch.device(objective.device))
        qr = (q, r)
        gen.set_state(state)  # as if A had just been drawn from gen: the starts are the same as without the cache
    box = _Box(objective, epsilon, basis, qr)
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
        first, num_hvps = _spectral_corners(box, seed)
        first.append(_corner(box.bound, g0))
    else:
        first = [{"zero": lambda: zero, "random": uniform, "corner": lambda: _corner(box.bound, g0)}[start]()]
    starts = first + [random_corner() if method == "ascent" else uniform() for _ in range(restarts)]

    run: Callable[[_Box, Tensor, int, float], tuple[Tensor, float, int, str, str]] = _ascend if method == "ascent" else _lbfgsb
    best_y, best_f = zero, base
    values, iterations, status, messages = [], [], [], []
    for y0 in starts:
        y, f_end, used, state, message = run(box, y0, max_iter, base)
        values.append(100.0 * (f_end - base) / (1.0 + base))
        iterations.append(used)
        status.append(state)
        messages.append(message)
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
        upper_kind = f"quadratic model: Σ b|g| + ½·{curvature:.6g}·σ_max(A)²‖b‖² (Hessian ≤ λ_max across the box)"

    value = 100.0 * (best_f - base) / (1.0 + base)
    result = EpsilonSharpness(
        epsilon=float(epsilon), space="full" if basis is None else "random", dim=box.dim, method=method,
        start=start, restarts=restarts, max_iter=max_iter, polish=polish, seed=seed, value=value,
        values_per_start=tuple(values), iterations=tuple(iterations), status=tuple(status),
        messages=tuple(messages), budget_exhausted="max_iter" in status, upper_bound=upper,
        upper_bound_kind=upper_kind, base_loss=base, num_function_evals=box.evals, num_hvps=num_hvps, seconds=0.0,
    )
    if result.budget_exhausted:
        where = "full space" if basis is None else f"subspace p={box.dim}"
        log.warning(f"ε-sharpness ε={epsilon:g} {where}: {result.summary}; {value:.4g} % is only a lower bound "
                    "of the box maximum")
    return EpsilonSearch(
        result=replace(result, seconds=time.perf_counter() - t0),
        maximizer=best_y,
        bounds=box.bound,
        perturbation=best_y if basis is None else basis @ best_y,
        basis=basis,
    )


def epsilon_sharpness(objective: Objective, epsilon: float, **options: Any) -> EpsilonSharpness:
    """Keskar et al.'s φ(ε, A) = 100·(max_{y∈C_ε} f(θ + A y) − f(θ)) / (1 + f(θ)), in percent.

    Args:
        objective: the mean loss f over the analysis set; θ is its point.
        epsilon: ε ≥ 0, the relative box size (the paper reports ε = 1e-3 and 5e-4).
        subspace_dim: None for the full space (A = I), or p for a random Gaussian A ∈ R^{P×p} (paper: 100).
        method: ``"ascent"`` (projected sign ascent from corners, default) or ``"paper"`` (Keskar's L-BFGS-B).
        start: ``"corner"``, ``"zero"`` or ``"random"`` for the first start (default: the method's,
            corner for the ascent, zero for the paper).
        restarts: extra random starts (ascent: random corners, default 2; paper: uniform in the box, default 0).
        max_iter: the budget per start (ascent: evaluations, default 100; paper: L-BFGS-B iterations, 10).
        polish: L-BFGS-B iterations from the best point afterwards (default 0).
        curvature: an upper bound λ on the Hessian's eigenvalues (e.g. λ_max); gives ``upper_bound``.
        seed: seeds A and the random starts.

    Cost: at most ``(restarts + 1) · max_iter`` gradients over the analysis set for the ascent, plus line-search
    evaluations for L-BFGS-B (``num_function_evals``), one for the gradient at θ (corner start or
    ``curvature``), and a QR factorization of A for the subspace variant.

    See the module docstring for the two methods and what the value and its bounds mean;
    :func:`search_epsilon_box` also returns the maximizer.
    """
    return search_epsilon_box(objective, epsilon, **options).result


# The keyword options are declared once, on search_epsilon_box; help() and inspect show them here as well.
epsilon_sharpness.__signature__ = inspect.signature(search_epsilon_box).replace(  # type: ignore[attr-defined]
    return_annotation="EpsilonSharpness")
