"""Keskar et al.'s ε-sharpness: the largest relative loss increase inside a box around θ.

Keskar, Mudigere, Nocedal, Smelyanskiy, Tang, "On Large-Batch Training for Deep Learning: Generalization Gap
and Sharp Minima", ICLR 2017, §2.2.1 (metric 3). For A ∈ R^{P×p} and x = θ ∈ R^P,

    C_ε = { y ∈ R^p : |y_i| ≤ ε (|(A⁺x)_i| + 1) },
    φ_{x,f}(ε, A) = 100 · (max_{y ∈ C_ε} f(x + A y) − f(x)) / (1 + f(x))      (a percentage),

where f is the mean loss of the :class:`~sharpness.objective.Objective` and A⁺ the Moore–Penrose
pseudo-inverse. A = I (``subspace_dim=None``) is the full space, where the box is |z_i| ≤ ε(|θ_i| + 1).

Choices the paper leaves open, made here:

* **The random subspace.** The paper uses a random A with p = 100 columns but does not give its distribution
  or scale. Scale matters, because the box is measured through A⁺x while the step is A y. We draw entries
  i.i.d. N(0, 1/P), so every column has expected unit norm: a coordinate of y then moves θ about as far as a
  coordinate of z does in the full space, and as p → P the measure approaches the full-space one in scale.
  A⁺x is computed from a reduced QR factorization, A = QR, A⁺x = R⁻¹Qᵀx (A has full column rank with
  probability one; no P×P matrix is ever formed).
* **The maximizer.** As in the paper, L-BFGS-B (``scipy.optimize.minimize``) on −f(x + A y) with the box as
  bounds and ``max_iter`` = 10 iterations by default; gradients are exact, ∇_y f(x + A y) = Aᵀ∇f, computed in
  the Objective's dtype and handed to scipy in float64. Its tolerances are zero, so the budget is the
  iteration count: scipy's defaults (a relative decrease of 2.2e-9, a projected-gradient norm of 1e-5) would
  stop at once at small ε, where loss changes and gradient entries are that small.
* **The start.** The paper does not say. ``start="zero"`` begins at y = 0 (θ itself); ``start="random"`` at a
  point drawn uniformly from the box; ``restarts=N`` adds N uniform random starts. At y = 0 with an exactly
  zero gradient (an exact stationary point, e.g. the minimum of a quadratic) L-BFGS-B stops at once with
  φ = 0: use random starts there.

Because y = 0 lies in the box, the true maximum is ≥ f(x); the reported ``value`` is the largest over the
starts' end points *and* y = 0, so it is ≥ 0 (each start's own value is in ``values_per_start``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from ..errors import InputError
from ..objective import Objective

STARTS = ("zero", "random")
_STATUS = {0: "converged", 1: "max_iter", 2: "abnormal"}


@dataclass(frozen=True)
class EpsilonSharpness:
    """φ(ε, A) in percent, with every start's outcome and the cost.

    ``space`` is ``"full"`` (A = I, ``dim`` = P) or ``"random"`` (Gaussian A, ``dim`` = p). Per start, in the
    order run (the ``start`` kind first, then the random restarts): ``values_per_start`` (φ at that start's end
    point), ``iterations`` (L-BFGS-B iterations), ``status`` (``"converged"``, ``"max_iter"`` or
    ``"abnormal"``, scipy's status 0/1/2) and ``messages`` (scipy's text). ``base_loss`` is f(θ);
    ``num_function_evals`` counts loss-and-gradient evaluations over all starts.
    """

    epsilon: float
    space: str
    dim: int
    start: str
    restarts: int
    max_iter: int
    seed: int
    value: float
    values_per_start: tuple[float, ...]
    iterations: tuple[int, ...]
    status: tuple[str, ...]
    messages: tuple[str, ...]
    base_loss: float
    num_function_evals: int
    seconds: float


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


def _pinv_apply(basis: Tensor, x: Tensor) -> Tensor:
    """A⁺x for a tall full-column-rank A, via A = QR: A⁺x = R⁻¹Qᵀx (the least-squares solution)."""
    q, r = torch.linalg.qr(basis, mode="reduced")
    return torch.linalg.solve_triangular(r, (q.T @ x).unsqueeze(1), upper=True).squeeze(1)


def search_epsilon_box(
    objective: Objective,
    epsilon: float,
    *,
    subspace_dim: int | None = None,
    start: str = "zero",
    restarts: int = 0,
    max_iter: int = 10,
    seed: int = 0,
) -> EpsilonSearch:
    """Maximize f(θ + A y) over y ∈ C_ε by L-BFGS-B; :func:`epsilon_sharpness` with the maximizer kept.

    Random numbers come from one ``torch.Generator().manual_seed(seed)`` used for A first (see
    :func:`random_subspace`, so ``random_subspace(P, p, seed=seed)`` reproduces A) and then for the starts.
    """
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise InputError(f"epsilon must be a finite number ≥ 0, got {epsilon}")
    if start not in STARTS:
        raise InputError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    if restarts < 0:
        raise InputError(f"restarts must be ≥ 0, got {restarts}")
    if max_iter < 1:
        raise InputError(f"max_iter must be ≥ 1, got {max_iter}")
    t0 = time.perf_counter()
    theta = objective.theta
    gen = torch.Generator().manual_seed(seed)  # A first, then the starts
    if subspace_dim is None:
        basis, dim, space = None, objective.numel, "full"
        centre = theta
    else:
        basis = _draw_subspace(objective.numel, subspace_dim, gen, objective.dtype, objective.device)
        dim, space = subspace_dim, "random"
        centre = _pinv_apply(basis, theta)
    bound = (epsilon * (centre.abs() + 1)).double().cpu().numpy()
    base = float(objective.value())

    def negative_loss(y: np.ndarray) -> tuple[float, np.ndarray]:
        y_t = torch.tensor(y, dtype=objective.dtype, device=objective.device)
        value, grad = objective.value_and_grad(theta + (y_t if basis is None else basis @ y_t))
        if basis is not None:
            grad = basis.T @ grad
        return -float(value), -grad.double().cpu().numpy()

    starts = [np.zeros(dim)] if start == "zero" else []
    while len(starts) < restarts + 1:
        u = torch.rand(dim, generator=gen, dtype=torch.float64).numpy()
        starts.append((2 * u - 1) * bound)

    best_y, best_f = np.zeros(dim), base
    values, iterations, status, messages, nfev = [], [], [], [], 0
    for y0 in starts:
        res = scipy.optimize.minimize(
            negative_loss,
            y0,
            jac=True,
            method="L-BFGS-B",
            bounds=scipy.optimize.Bounds(-bound, bound),
            options={"maxiter": max_iter, "ftol": 0.0, "gtol": 0.0},
        )
        f_end = -float(res.fun)
        values.append(100.0 * (f_end - base) / (1.0 + base))
        # scipy returns without iterating (no nit, no status) when every variable is fixed, as at ε = 0.
        iterations.append(int(res.get("nit", 0)))
        status.append(_STATUS.get(int(res.get("status", 0)), f"status {res.get('status')}"))
        messages.append(str(res.message))
        nfev += int(res.nfev)
        if f_end > best_f:
            best_f, best_y = f_end, np.asarray(res.x, dtype=np.float64)

    maximizer = torch.from_numpy(best_y.copy()).to(objective.device, objective.dtype)
    result = EpsilonSharpness(
        epsilon=float(epsilon),
        space=space,
        dim=dim,
        start=start,
        restarts=restarts,
        max_iter=max_iter,
        seed=seed,
        value=100.0 * (best_f - base) / (1.0 + base),
        values_per_start=tuple(values),
        iterations=tuple(iterations),
        status=tuple(status),
        messages=tuple(messages),
        base_loss=base,
        num_function_evals=nfev,
        seconds=0.0,
    )
    return EpsilonSearch(
        result=replace(result, seconds=time.perf_counter() - t0),
        maximizer=maximizer,
        bounds=torch.from_numpy(bound).to(objective.device, objective.dtype),
        perturbation=maximizer if basis is None else basis @ maximizer,
        basis=basis,
    )


def epsilon_sharpness(
    objective: Objective,
    epsilon: float,
    *,
    subspace_dim: int | None = None,
    start: str = "zero",
    restarts: int = 0,
    max_iter: int = 10,
    seed: int = 0,
) -> EpsilonSharpness:
    """Keskar et al.'s φ(ε, A) = 100·(max_{y∈C_ε} f(θ + A y) − f(θ)) / (1 + f(θ)), in percent.

    Args:
        objective: the mean loss f over the analysis set; θ is its point.
        epsilon: ε ≥ 0, the relative box size (the paper reports ε = 1e-3 and 5e-4).
        subspace_dim: None for the full space (A = I), or p for a random Gaussian A ∈ R^{P×p} (paper: 100).
        start: ``"zero"`` (y = 0) or ``"random"`` (uniform in the box) for the first start.
        restarts: extra starts drawn uniformly from the box.
        max_iter: L-BFGS-B iterations per start (paper: 10).
        seed: seeds A and the random starts.

    Cost: at most ``(restarts + 1) · (max_iter + line-search evaluations)`` gradients over the analysis set
    (``num_function_evals``), plus a QR factorization of A for the subspace variant.

    See the module docstring for the choices the paper leaves open; :func:`search_epsilon_box` also returns the
    maximizer.
    """
    return search_epsilon_box(
        objective, epsilon, subspace_dim=subspace_dim, start=start, restarts=restarts, max_iter=max_iter, seed=seed
    ).result
