"""Worst-case and average-case (adaptive) sharpness of Andriushchenko et al. (ICML 2023).

Andriushchenko, Croce, Müller, Hein, Flammarion, "A Modern Look at the Relationship between Sharpness and
Generalization", ICML 2023, §3 (following Kwon et al.'s ASAM, 2021). With a scaling vector c ∈ R^P,

    worst case:    S_max(ρ) = E_S [ max_{‖u‖_p ≤ ρ} L_S(w + c ⊙ u) − L_S(w) ],          p ∈ {2, ∞}
    average case:  S_avg(ρ) = E_u [ L(w + c ⊙ u) ] − L(w),   u ~ N(0, ρ² I)   (estimated with ±u pairs)

where δ = c ⊙ u is the weight perturbation, i.e. ‖δ ⊘ c‖_p ≤ ρ. *Adaptive* sharpness uses c = |w| + η
elementwise (η = 0 by default, so a zero weight is never perturbed; η > 0 perturbs it but breaks the exact
invariance below); *plain* sharpness uses c = 1. L_S is the (weighted) mean loss of a batch S of m samples:
the analysis set is shuffled once (seeded) and cut into ⌊N/m⌋ batches of m (a short remainder is dropped, so
every batch has the same m); ``batch_size=None`` uses the whole set as one batch. This is *m-sharpness*: the
mean over batches of each batch's own maximum, with the standard error across batches.

Invariance (Dinh et al. 2017; the reason adaptive sharpness exists). If a reparameterization T acts elementwise and positively,
w' = d ⊙ w with d > 0 and L'(d ⊙ v) = L(v) (e.g. αW₁, αb₁, W₂/α around a ReLU), then
w' + |w'| ⊙ u = d ⊙ (w + |w| ⊙ u) for every u, so u ↦ L'(w' + |w'| ⊙ u) is *the same function* as
u ↦ L(w + |w| ⊙ u). Everything here happens in u-space — the ball ‖u‖_p ≤ ρ, the gradient ∇_u = c ⊙ ∇_w L,
the random start, the Gaussian draws — so the rescaled model follows the same ascent path and sees the same
draws, and gets the same value up to rounding, not just the same supremum.

Worst case by projected gradient ascent in u, a simplified APGD (Croce & Hein, ICML 2020):

* start at u₀ = ρ v/‖v‖_p, v ~ N(0, I) seeded (a random point on the sphere: at an exact minimum the
  gradient at u = 0 vanishes and ascent could not begin);
* step direction sign(∇_u) for p = ∞, ∇_u/‖∇_u‖₂ for p = 2, initial step size s₀ = 2ρ;
* APGD's momentum: z = Π(u_k + s d_k), u_{k+1} = Π(u_k + 0.75 (z − u_k) + 0.25 (u_k − u_{k−1}));
* step-size control, simpler than APGD's checkpoint schedule: a step that does not raise the batch loss
  above the best value so far is rejected, s is halved and the ascent restarts (without momentum) from the
  best point. The best point's value is returned, so it never decreases with more steps.

Each step costs one gradient over the batch; ``num_grads`` counts them (the base loss costs a forward pass).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from ..errors import InputError
from ..objective import Objective

DISTRIBUTIONS = ("gaussian", "sphere")
MOMENTUM = 0.75  # APGD's α (Croce & Hein 2020)

Batch = tuple[Tensor, Tensor, Tensor | None]


@dataclass(frozen=True)
class WorstCaseSharpness:
    """m-sharpness max_{‖δ⊘c‖_p≤ρ} L_S(w+δ) − L_S(w), averaged over batches S.

    ``p`` is ``"2"`` or ``"inf"`` (a string, so the JSON stays strict); ``stderr`` is the standard error of the
    mean across batches (None for a single batch); ``values_per_batch`` lists each batch's maximum;
    ``num_grads`` counts gradient evaluations over one batch each.
    """

    rho: float
    p: str
    adaptive: bool
    eta: float
    value: float
    stderr: float | None
    values_per_batch: tuple[float, ...]
    steps: int
    batch_size: int | None
    num_batches: int
    seed: int
    num_grads: int
    seconds: float


@dataclass(frozen=True)
class AverageSharpness:
    """E_u[L(w + c ⊙ u)] − L(w) over the analysis set: mean and standard error over ``num_draws`` draws."""

    rho: float
    adaptive: bool
    eta: float
    distribution: str
    antithetic: bool
    value: float
    stderr: float
    num_draws: int
    num_evals: int
    seed: int
    seconds: float


@dataclass(frozen=True)
class Ascent:
    """The outcome of the ascent on one batch: the best u (``(P,)``, ‖u‖_p ≤ ρ), δ = c ⊙ u, and the losses."""

    u: Tensor
    delta: Tensor
    base_loss: float
    loss: float
    num_grads: int

    @property
    def value(self) -> float:
        return self.loss - self.base_loss


def _norm_kind(p: float | int | str) -> str:
    if str(p) in ("2", "2.0"):
        return "2"
    if str(p).lower() in ("inf", "infinity") or p == math.inf:
        return "inf"
    raise InputError(f"p must be 2 or inf, got {p!r}")


def _check_rho(rho: float) -> None:
    if not (math.isfinite(rho) and rho >= 0):
        raise InputError(f"rho must be a finite number ≥ 0, got {rho}")


def perturbation_scale(objective: Objective, *, adaptive: bool = True, eta: float = 0.0) -> Tensor:
    """c ∈ R^P: |θ| + η elementwise (adaptive) or all ones (plain)."""
    if not (math.isfinite(eta) and eta >= 0):
        raise InputError(f"eta must be a finite number ≥ 0, got {eta}")
    theta = objective.theta
    return theta.abs() + eta if adaptive else torch.ones_like(theta)


def batches(objective: Objective, batch_size: int | None, *, seed: int = 0) -> list[Batch]:
    """The analysis set as one batch (``batch_size=None``) or ⌊N/m⌋ seeded-shuffled batches of m samples."""
    n = objective.n_samples
    whole = (objective.inputs, objective.targets, objective.weights)
    if batch_size is None:
        return [whole]
    if not 1 <= batch_size <= n:
        raise InputError(f"batch_size must be in [1, {n}] (the analysis-set size) or None, got {batch_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(objective.device)
    return [
        tuple(None if t is None else t[order[k : k + batch_size]] for t in whole)
        for k in range(0, n - batch_size + 1, batch_size)
    ]


def _chunks(objective: Objective, batch: Batch) -> Iterator[Batch]:
    x, y, w = batch
    step = objective.chunk_size
    for k in range(0, x.shape[0], step):
        yield x[k : k + step], y[k : k + step], None if w is None else w[k : k + step]


def _batch_weight(batch: Batch) -> float:
    x, _, w = batch
    return float(x.shape[0]) if w is None else float(w.sum())


def batch_loss(objective: Objective, theta: Tensor, batch: Batch) -> float:
    """The weighted mean loss of ``batch`` at θ, chunked by the objective's ``chunk_size``."""
    params = objective.unflatten(theta)
    with torch.no_grad():
        total = sum(float(objective.chunk_loss_sum(params, *c)) for c in _chunks(objective, batch))
    return total / _batch_weight(batch)


def _batch_loss_and_grad(objective: Objective, theta: Tensor, batch: Batch) -> tuple[float, Tensor]:
    params = objective.unflatten(theta)
    grad_fn = torch.func.grad_and_value(objective.chunk_loss_sum)
    total, grad = 0.0, torch.zeros_like(theta)
    for c in _chunks(objective, batch):
        g, v = grad_fn(params, *c)
        total += float(v)
        grad += objective.flatten(g)
    weight = _batch_weight(batch)
    return total / weight, grad / weight


def _project(u: Tensor, rho: float, p: str) -> Tensor:
    if p == "inf":
        return u.clamp(-rho, rho)
    norm = float(u.norm())
    return u if norm <= rho else u * (rho / norm)


def _direction(g: Tensor, p: str) -> Tensor:
    if p == "inf":
        return g.sign()
    norm = float(g.norm())
    return g / norm if norm > 0 else g


def _random_start(numel: int, rho: float, p: str, gen: torch.Generator, like: Tensor) -> Tensor:
    v = torch.randn(numel, generator=gen, dtype=torch.float64)
    norm = float(v.abs().max() if p == "inf" else v.norm())
    return (v * (rho / norm)).to(like.device, like.dtype)


def ascend(
    objective: Objective,
    rho: float,
    *,
    p: float | int | str = 2,
    adaptive: bool = True,
    eta: float = 0.0,
    steps: int = 20,
    batch: Batch | None = None,
    seed: int = 0,
) -> Ascent:
    """Projected gradient ascent in u on ``batch`` (default: the whole analysis set); see the module docstring."""
    p = _norm_kind(p)
    _check_rho(rho)
    if steps < 0:
        raise InputError(f"steps must be ≥ 0, got {steps}")
    batch = batch if batch is not None else batches(objective, None)[0]
    theta = objective.theta
    c = perturbation_scale(objective, adaptive=adaptive, eta=eta)

    def loss_and_grad_u(u: Tensor) -> tuple[float, Tensor]:
        value, grad = _batch_loss_and_grad(objective, theta + c * u, batch)
        return value, c * grad

    base = batch_loss(objective, theta, batch)
    u = _random_start(objective.numel, rho, p, torch.Generator().manual_seed(seed), theta)
    best_loss, best_grad = loss_and_grad_u(u)
    best_u, u_prev, grad, step = u, u, best_grad, 2.0 * rho
    for _ in range(steps):
        z = _project(u + step * _direction(grad, p), rho, p)
        candidate = _project(u + MOMENTUM * (z - u) + (1 - MOMENTUM) * (u - u_prev), rho, p)
        loss, cand_grad = loss_and_grad_u(candidate)
        if loss > best_loss:
            best_loss, best_u, best_grad = loss, candidate, cand_grad
            u_prev, u, grad = u, candidate, cand_grad
        else:  # no progress: halve the step and restart from the best point, without momentum
            step /= 2
            u_prev = u = best_u
            grad = best_grad
    return Ascent(u=best_u, delta=c * best_u, base_loss=base, loss=best_loss, num_grads=steps + 1)


def _mean_stderr(values: list[float]) -> tuple[float, float | None]:
    t = torch.tensor(values, dtype=torch.float64)
    if len(values) < 2:
        return float(t.mean()), None
    return float(t.mean()), float(t.std(correction=1) / math.sqrt(len(values)))


def worst_case_sharpness(
    objective: Objective,
    rho: float,
    *,
    p: float | int | str = 2,
    adaptive: bool = True,
    eta: float = 0.0,
    steps: int = 20,
    batch_size: int | None = None,
    max_batches: int | None = None,
    seed: int = 0,
) -> WorstCaseSharpness:
    """Worst-case (adaptive) m-sharpness  E_S[max_{‖u‖_p≤ρ} L_S(w + c⊙u) − L_S(w)]  by projected ascent.

    Args:
        objective: the loss over the analysis set; w is its point θ.
        rho: ρ ≥ 0, the radius in u-space (relative to |w| when adaptive).
        p: 2 or ``"inf"`` (also ``math.inf``).
        adaptive: c = |w| + η (True) or c = 1 (False).
        eta: η ≥ 0 added to |w| (0 keeps the reparameterization invariance exact).
        steps: ascent steps per batch (paper: 20).
        batch_size: m; None uses the whole analysis set as one batch.
        max_batches: use only the first k batches of the shuffled set (cost control).
        seed: shuffles the set into batches and draws each batch's random start (seed + batch index).

    Cost: ``num_batches · (steps + 1)`` gradients over m samples (``num_grads``).
    """
    p = _norm_kind(p)
    if max_batches is not None and max_batches < 1:
        raise InputError(f"max_batches must be ≥ 1 or None, got {max_batches}")
    t0 = time.perf_counter()
    chosen = batches(objective, batch_size, seed=seed)[:max_batches]
    runs = [
        ascend(objective, rho, p=p, adaptive=adaptive, eta=eta, steps=steps, batch=b, seed=seed + i)
        for i, b in enumerate(chosen)
    ]
    values = [r.value for r in runs]
    mean, stderr = _mean_stderr(values)
    return WorstCaseSharpness(
        rho=float(rho),
        p=p,
        adaptive=adaptive,
        eta=float(eta),
        value=mean,
        stderr=stderr,
        values_per_batch=tuple(values),
        steps=steps,
        batch_size=batch_size,
        num_batches=len(runs),
        seed=seed,
        num_grads=sum(r.num_grads for r in runs),
        seconds=time.perf_counter() - t0,
    )


def average_sharpness(
    objective: Objective,
    rho: float,
    *,
    adaptive: bool = True,
    eta: float = 0.0,
    distribution: str = "gaussian",
    num_draws: int = 100,
    antithetic: bool = True,
    seed: int = 0,
) -> AverageSharpness:
    """Average-case (adaptive) sharpness  E_u[L(w + c ⊙ u)] − L(w)  over the whole analysis set.

    Distributions of u (drawn in float64 on the CPU from ``torch.Generator().manual_seed(seed)``):

    * ``"gaussian"``: u ~ N(0, ρ² I), i.e. δ ~ N(0, ρ² diag(c²)) as in the paper. Note ‖u‖₂ ≈ ρ√P, so this ρ
      is *not* comparable with the worst-case radius;
    * ``"sphere"``: u uniform on the sphere ‖u‖₂ = ρ — inside the p = 2 worst-case ball, so
      S_avg ≤ S_max exactly at the same ρ.

    ``antithetic=True`` (default) scores each draw as ½(L(w + c⊙u) + L(w − c⊙u)) − L(w): unbiased, because u
    and −u have the same distribution, and free of the first-order term gᵀ(c⊙u), whose spread ρ‖c⊙g‖ swamps
    the second-order signal ½ρ²Σ H_ii c_i² away from an exact minimum. It costs two forward passes per draw
    (``num_evals``); ``antithetic=False`` is the plain Monte Carlo estimate, one pass per draw.

    By linearity the mean over batches of per-batch averages equals the whole-set average, so no batch size is
    needed. Returns mean ± standard error of the mean (sample standard deviation of the draws / √num_draws).
    """
    _check_rho(rho)
    if distribution not in DISTRIBUTIONS:
        raise InputError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    if num_draws < 2:
        raise InputError(f"num_draws must be ≥ 2 (a standard error needs two draws), got {num_draws}")
    t0 = time.perf_counter()
    theta = objective.theta
    c = perturbation_scale(objective, adaptive=adaptive, eta=eta)
    base = float(objective.value())
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(num_draws):
        v = torch.randn(objective.numel, generator=gen, dtype=torch.float64)
        delta = c * (rho * (v if distribution == "gaussian" else v / v.norm())).to(theta.device, theta.dtype)
        loss = float(objective.value(theta + delta))
        if antithetic:
            loss = 0.5 * (loss + float(objective.value(theta - delta)))
        values.append(loss - base)
    mean, stderr = _mean_stderr(values)
    return AverageSharpness(
        rho=float(rho),
        adaptive=adaptive,
        eta=float(eta),
        distribution=distribution,
        antithetic=antithetic,
        value=mean,
        stderr=stderr,
        num_draws=num_draws,
        num_evals=num_draws * (2 if antithetic else 1) + 1,
        seed=seed,
        seconds=time.perf_counter() - t0,
    )
