"""The ε-sharpness box, its projected sign ascent with named stopping rules, and the spread of the starts.

:func:`~sharpness.measures.epsilon.search_epsilon_box` maximizes F(y) = f(θ + A y) over the box |y_i| ≤ b_i.
Steepest ascent for the box's own norm, max_i |y_i|/b_i, is the step b ⊙ sign(∇F): from y the iterate is

    y⁺ = Π_C(y + 2s · b ⊙ sign(∇F(y))),

with s = 1 (a jump to the corner the gradient points to) halved after every step that does not raise F and
doubled (up to 1) after one that does. For a convex F the full step never lowers F (F(y⁺) ≥ F(y) +
∇F(y)ᵀ(y⁺ − y) ≥ F(y), since y⁺ maximizes the linearization over the box), so near a minimum, where f is
close to a convex quadratic, the method is a monotone fixed-point iteration on corners.

**Stopping rules.** Each start ends with one status (:data:`ASCENT_STATUSES`), checked in this order:

* ``"stalled"``: the last ``STALL_EVALS`` = 5 evaluations raised the increase F(y) − f(θ) by at most
  ``STALL_RTOL`` = 1e-4 of itself — in practice five rejected, halved steps in a row (a rejected step leaves
  the best F unchanged). The 1 % that matters is far above 1e-4, but the point is *not* shown to be a local
  maximum: the step was still ≥ 2⁻⁵ of the box when the rule fired;
* ``"max_iter"``: the start spent its budget of loss-and-gradient evaluations;
* ``"kkt"``: the sign step leaves y unchanged — every coordinate sits at the bound its gradient points to (or
  has a zero gradient): a KKT point of the box problem, a local maximum for a convex F;
* ``"step_floor"``: no step down to ``MIN_STEP`` = 2⁻¹⁰ of the box width raised F — a local maximum along the
  sign direction to that resolution. Rare, because the stall rule comes first: the step reaches 2⁻¹⁰ only if
  every 5 evaluations on the way still gained more than 1e-4.

A KKT stop is what a convex F (near a minimum) gives; an F that curves down inside the box (a maximum with
coordinates strictly inside) ends "stalled", its best point within the last accepted step of that maximum.

**Spread of the starts** (:func:`start_spread`): the best and the second-best start, and how many starts
ended within ``AGREE_RTOL`` = 1 % of the best. When the second best is more than 1 % below the best, the starts
found different local maxima and the best was reached once: nothing says a further start would not go higher.
The default restarts then draw more starts (up to 12), and a report that still shows it says "local maxima
disagree".
"""

from __future__ import annotations

import warnings
from collections import Counter

import torch
from torch import Tensor

from ..hessian.operator import HessianOperator
from ..linalg import top_eigenvalues
from ..linalg.eigen import ConvergenceWarning
from ..objective import Objective
from .subspace import GeneratedBasis

MIN_STEP = 2.0**-10  # the ascent's smallest step, as a fraction of the box width
STALL_EVALS, STALL_RTOL = 5, 1e-4  # the ascent stops when 5 evaluations raised the increase by ≤ 1e-4 of it
SPECTRAL_TOL, SPECTRAL_STEPS = 1e-3, 40  # Lanczos for the spectral corner: only the signs are used
AGREE_RTOL = 0.01  # starts within 1 % of the best agree with it (the accuracy the measure is used at)
#: The ascent's stopping statuses, in the order the loop checks them (module docstring).
ASCENT_STATUSES = ("stalled", "max_iter", "kkt", "step_floor")


class Box:
    """F(y) = f(θ + A y) and ∇_y F on the box |y| ≤ b, b = ε(|A⁺θ| + 1), counting evaluations."""

    def __init__(self, objective: Objective, epsilon: float, basis: Tensor | GeneratedBasis | None,
                 qr: tuple[Tensor, Tensor] | None = None) -> None:
        self.objective, self.basis, self.theta = objective, basis, objective.theta
        self.evals = 0
        self._at_zero: tuple[float, Tensor] | None = None
        if basis is None:
            centre, self.sigma_max = self.theta, 1.0
        elif isinstance(basis, GeneratedBasis):
            # A regenerated tile by tile (measures/subspace.py): one pass gives A⁺θ by the normal equations and
            # Aᵀ∇f(θ), so that F and ∇_y F at y = 0 (every start kind but "random" asks for them) cost no pass.
            value, grad = objective.value_and_grad(self.theta)
            self.evals = 1
            centre, self.sigma_max, projected = basis.project(self.theta, grad)
            self._at_zero = (float(value), projected)
        else:
            q, r = qr if qr is not None else torch.linalg.qr(basis, mode="reduced")
            # A⁺x = R⁻¹Qᵀx (the least-squares solution); σ_max(A) = σ_max(R) for the upper bound.
            centre = torch.linalg.solve_triangular(r, (q.T @ self.theta).unsqueeze(1), upper=True).squeeze(1)
            self.sigma_max = float(torch.linalg.matrix_norm(r.double(), ord=2))
        self.bound = epsilon * (centre.abs() + 1)
        self.dim = self.bound.shape[0]

    def point(self, y: Tensor) -> Tensor:
        return self.theta + (y if self.basis is None else self.basis @ y)

    def __call__(self, y: Tensor) -> tuple[float, Tensor]:
        if self._at_zero is not None and not bool(torch.any(y)):
            return self._at_zero  # evaluated, and counted, when the box was built
        self.evals += 1
        value, grad = self.objective.value_and_grad(self.point(y))
        return float(value), grad if self.basis is None else self.basis.T @ grad


class _ScaledCurvature:
    """K = diag(b) AᵀHA diag(b) on y-space, H the Hessian at θ: the quadratic term of the box problem in units
    of the box, ½ sᵀKs for y = b ⊙ s. Satisfies the :mod:`sharpness.linalg` operator contract."""

    def __init__(self, box: Box) -> None:
        self.box, self.H = box, HessianOperator(box.objective)
        self.shape, self.dtype, self.device = (box.dim, box.dim), box.bound.dtype, box.bound.device

    def __matmul__(self, v: Tensor) -> Tensor:
        b = self.box.bound if v.ndim == 1 else self.box.bound.unsqueeze(1)
        basis = self.box.basis
        out = self.H @ (b * v if basis is None else basis @ (b * v))
        return b * (out if basis is None else basis.T @ out)


def spectral_corners(box: Box, seed: int) -> tuple[list[Tensor], int]:
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
    c = corner(box.bound, top.vectors[:, 0].to(box.bound))
    return [c, -c], K.H.num_matvecs


def corner(bound: Tensor, direction: Tensor) -> Tensor:
    """b ⊙ sign(direction), with a zero entry taken as +."""
    return torch.where(direction < 0, -bound, bound)


def sign_ascent(box: Box, y: Tensor, max_evals: int, base: float) -> tuple[Tensor, float, int, str, str]:
    """Projected sign ascent from y (module docstring); returns (best y, F there, evaluations, status, message).

    ``base`` is f(θ), the reference of the stall rule's relative increase."""
    f_y, g_y = box(y)
    history = [f_y]  # the best F after each evaluation
    step = 1.0
    while True:
        used = len(history)
        if used > STALL_EVALS and history[-1] - history[-1 - STALL_EVALS] <= STALL_RTOL * (history[-1] - base):
            return y, f_y, used, "stalled", (f"stalled: {STALL_EVALS} evaluations raised the increase by ≤ "
                                             f"{STALL_RTOL:g} of itself (step {step:g} of the box)")
        if used >= max_evals:
            return y, f_y, used, "max_iter", f"stopped at the budget of {max_evals} evaluations"
        candidate = torch.maximum(torch.minimum(y + (2 * step) * box.bound * g_y.sign(), box.bound), -box.bound)
        if torch.equal(candidate, y):
            return y, f_y, used, "kkt", "KKT point: every coordinate at the bound its gradient points to"
        f_c, g_c = box(candidate)
        if f_c > f_y:
            y, f_y, g_y, step = candidate, f_c, g_c, min(1.0, 2 * step)
        else:
            step /= 2
        history.append(f_y)
        if step < MIN_STEP:
            return y, f_y, used + 1, "step_floor", f"no ascent along the sign direction down to step {MIN_STEP:g} of the box"


def status_counts(status: tuple[str, ...] | list[str]) -> dict[str, int]:
    """How many starts ended with each status, in the order of first appearance: ``{"kkt": 3, "stalled": 2}``."""
    return dict(Counter(status))


def start_spread(values: tuple[float, ...] | list[float]) -> tuple[float | None, int, bool]:
    """(second-best start's φ or None for one start, starts within 1 % of the best, whether local maxima
    disagree: the second best is more than 1 % below the best). "Within 1 %" is v ≥ best − 0.01·|best|, so
    every start agrees when the best is 0 (as at ε = 0)."""
    ranked = sorted(values, reverse=True)
    if not ranked:
        return None, 0, False
    floor = ranked[0] - AGREE_RTOL * abs(ranked[0])
    within = sum(v >= floor for v in ranked)
    second = ranked[1] if len(ranked) > 1 else None
    return second, within, second is not None and second < floor
