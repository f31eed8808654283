"""Worst-case and average-case (adaptive) sharpness of Andriushchenko et al. (ICML 2023).

Andriushchenko, Croce, Müller, Hein, Flammarion, "A Modern Look at the Relationship between Sharpness and
Generalization", ICML 2023, §3 (following Kwon et al.'s ASAM, 2021). With a scaling vector c ∈ R^P,

    worst case:    S_max(ρ) = E_S [ max_{‖u‖_p ≤ ρ} L_S(w + c ⊙ u) − L_S(w) ],          p ∈ {2, ∞}
    average case:  S_avg(ρ) = E_u [ L(w + c ⊙ u) ] − L(w),   u uniform on ‖u‖₂ = ρ   (estimated with ±u pairs)

where δ = c ⊙ u is the weight perturbation, i.e. ‖δ ⊘ c‖_p ≤ ρ. *Adaptive* sharpness uses c = |w| + η
elementwise (η = 0 by default, so a zero weight is never perturbed; η > 0 perturbs it but breaks the exact
invariance below); *plain* sharpness uses c = 1. L_S is the (weighted) mean loss of a batch S of m samples:
the analysis set is shuffled once (seeded) and cut into ⌊N/m⌋ batches of m (a short remainder is dropped, so
every batch has the same m); ``batch_size=None`` uses the whole set as one batch. This is *m-sharpness*: the
mean over batches of each batch's own maximum, with the standard error across batches.

One radius convention: ρ is always a radius of u in R^P, and both measures at the same ρ perturb by the same
size. The average case draws u from ``distribution``:

* ``"sphere"`` (default): u uniform on ‖u‖₂ = ρ. The sphere lies inside the p = 2 ball and, since
  ‖u‖_∞ ≤ ‖u‖₂, inside the p = ∞ ball too, so S_avg(ρ) ≤ S_max(ρ) for the true maxima (batch_size=None);
* ``"gaussian"``: u ~ N(0, (ρ²/P) I), so E‖u‖₂² = ρ² (and ‖u‖₂ = ρ(1 + O(1/√P))). Near a minimum both have the
  same second-order value E[½(c⊙u)ᵀH(c⊙u)] = ½(ρ²/P) Σ_i H_ii c_i², but about half the draws leave the
  ball, so no inequality holds by construction;
* ``"gaussian-paper"``: u ~ N(0, ρ² I), Andriushchenko et al.'s parameterization, kept to reproduce their
  numbers. Its ‖u‖₂ ≈ ρ√P lies far outside the worst-case ball, and at the same ρ this "average" routinely
  exceeds the worst case (0.0294 vs 0.00696 in our reparam experiment): never put it beside S_max at one ρ.

Worst case ≥ average case, reported. The ascent returns the best point it evaluated, a lower bound of the true
maximum that can fall below a Monte Carlo average if the ascent is short or unlucky. Every sphere draw the
average evaluates is itself a feasible point of the worst-case ball, and a mean is at most the largest of its
terms: S_avg ≤ max_k L(w ± c⊙u_k) − L(w) =: ``AverageSharpness.max_value``. :func:`worst_case_sharpness` takes
that result (``average=``) and starts its ascent from the better of its random start and that best draw
(regenerated from the seed, one extra gradient); the ascent never lowers its best value, so with
``batch_size=None`` the reported worst case is ≥ the reported average at the same ρ, by construction (up to
rounding: the two sum the same losses along two code paths, ~1e-16 relative in float64). With batches the draw only joins each
batch's starts; no inequality is claimed there (the average is over the whole set, the maxima per batch).

Invariance (Dinh et al. 2017; the reason adaptive sharpness exists). If a reparameterization T acts elementwise and positively,
w' = d ⊙ w with d > 0 and L'(d ⊙ v) = L(v) (e.g. αW₁, αb₁, W₂/α around a ReLU), then
w' + |w'| ⊙ u = d ⊙ (w + |w| ⊙ u) for every u, so u ↦ L'(w' + |w'| ⊙ u) is *the same function* as
u ↦ L(w + |w| ⊙ u). Everything here happens in u-space — the ball ‖u‖_p ≤ ρ, the gradient ∇_u = c ⊙ ∇_w L,
the random start, the average's draws — so the rescaled model follows the same ascent path and sees the same
draws, and gets the same value up to rounding, not just the same supremum.

Worst case by projected gradient ascent in u, a simplified APGD (Croce & Hein, ICML 2020):

* start at u₀ = ρ v/‖v‖_p, v ~ N(0, I) seeded (a random point on the sphere: at an exact minimum the
  gradient at u = 0 vanishes and ascent could not begin), or at the average's best draw if that is higher;
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
from ..objective.points import default_batch_size
from ..numerics.stats import mean_stderr as _mean_stderr

DISTRIBUTIONS = ("sphere", "gaussian", "gaussian-paper")
MOMENTUM = 0.75  # APGD's α (Croce & Hein 2020)

Batch = tuple[Tensor, Tensor, Tensor | None]


@dataclass(frozen=True)
class WorstCaseSharpness:
    """m-sharpness max_{‖δ⊘c‖_p≤ρ} L_S(w+δ) − L_S(w), averaged over batches S.

    ``p`` is ``"2"`` or ``"inf"`` (a string, so the JSON stays strict); ``stderr`` is the standard error of the
    mean across batches (None for a single batch); ``values_per_batch`` lists each batch's maximum;
    ``num_grads`` counts gradient evaluations over one batch each. ``start`` is ``"random"``, or
    ``"random+average"`` when an average-case result's best draw joined the starts; ``average_floor`` is then
    that draw's value on the whole set (``AverageSharpness.max_value``), which ``value`` cannot fall below
    when ``batch_size`` is None.
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
    start: str = "random"
    average_floor: float | None = None


#: A rounding share above this (1 %) is reported beside the value: the loss's dtype limits its precision.
ROUNDING_SHARE_NOTICE = 0.01


def rounding_share(value: float, resolution: float) -> float:
    """resolution / |value|, the share of a loss increase its rounding may account for (0 without a
    resolution, inf for a zero value that rounding could have made)."""
    if not resolution:
        return 0.0
    return resolution / abs(value) if value else math.inf


@dataclass(frozen=True)
class AverageSharpness:
    """E_u[L(w + c ⊙ u)] − L(w) over the analysis set: mean and standard error over ``num_draws`` draws.

    ``distribution`` names the law of u (module docstring: ``"sphere"``, ``"gaussian"``, ``"gaussian-paper"``).
    ``max_value`` is the largest single-point increase L(w + s·c⊙u_k) − L(w) among the evaluated points, at
    draw ``max_draw`` (0-based) with sign ``max_sign`` = ±1; for ``"sphere"`` every such point lies in the
    worst-case ball (p = 2 and ∞), so ``value`` ≤ ``max_value`` ≤ S_max(ρ).

    ``resolution`` = eps·|L(w)|, eps the machine epsilon of the objective's dtype: the scale of the rounding
    error of a loss computed in that dtype (its last rounding alone is half an ulp; the forward pass adds its
    own, so the error is of this order, not bounded by it). :attr:`rounding_share` = resolution / |value| is
    then the share of the value that rounding may account for: above :data:`ROUNDING_SHARE_NOTICE` the
    analysis says so, and an analysis in float64 resolves what float32 cannot.
    """

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
    max_value: float
    max_draw: int
    max_sign: int
    resolution: float = 0.0

    @property
    def rounding_share(self) -> float:
        """``resolution`` / |``value``|: how much of the value the loss's rounding may be (:func:`rounding_share`)."""
        return rounding_share(self.value, self.resolution)


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


def batches(objective: Objective, batch_size: int | None, *, seed: int = 0) -> list[Batch | None]:
    """The analysis set as one batch (``batch_size=None``: ``[None]``, the objective's own chunks) or ⌊N/m⌋
    seeded-shuffled batches ``(x, y, w)`` of m samples (in-memory tensors only)."""
    n = objective.n_samples
    if batch_size is None:
        return [None]
    if objective.inputs is None:
        raise InputError(f"m-sharpness (batch_size={batch_size}) needs an in-memory analysis set (tensors), got a "
                         f"streamed {objective.config.get('source')}; use the whole set (batch_size=None)")
    if not 1 <= batch_size <= n:
        raise InputError(f"batch_size must be in [1, {n}] (the analysis-set size) or None, got {batch_size}")
    whole = (objective.inputs, objective.targets, objective.weights)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(objective.device)
    return [
        tuple(None if t is None else t[order[k : k + batch_size]] for t in whole)
        for k in range(0, n - batch_size + 1, batch_size)
    ]


def _chunks(objective: Objective, batch: Batch | None) -> Iterator[tuple]:
    if batch is None:
        yield from objective.chunks()
        return
    x, y, w = batch
    step = objective.chunk_size
    for k in range(0, x.shape[0], step):
        yield (x[k : k + step], y[k : k + step]), None if w is None else w[k : k + step]


def _batch_weight(objective: Objective, batch: Batch | None) -> float:
    if batch is None:
        return objective.total_weight
    x, _, w = batch
    return float(x.shape[0]) if w is None else float(w.sum())


def batch_loss(objective: Objective, theta: Tensor, batch: Batch) -> float:
    """The weighted mean loss of ``batch`` at θ, chunked by the objective's ``chunk_size``."""
    params = objective.unflatten(theta)
    with torch.no_grad():
        # Summed in float64 on the device (as the host's float sum did) and fetched once, not once per chunk.
        total = sum(objective.chunk_loss_sum(params, *c).double() for c in _chunks(objective, batch))
    return float(total) / _batch_weight(objective, batch)


def _batch_loss_and_grad(objective: Objective, theta: Tensor, batch: Batch) -> tuple[float, Tensor]:
    params = objective.unflatten(theta)
    grad_fn = torch.func.grad_and_value(objective.chunk_loss_sum)
    total, grad = torch.zeros((), dtype=torch.float64, device=theta.device), torch.zeros_like(theta)
    for c in _chunks(objective, batch):
        g, v = grad_fn(params, *c)
        total = total + v.double()  # float64 on the device; one fetch below instead of one per chunk
        grad += objective.flatten(g)
    weight = _batch_weight(objective, batch)
    return float(total) / weight, grad / weight


def _project(u: Tensor, rho: float, p: str) -> Tensor:
    if p == "inf":
        return u.clamp(-rho, rho)
    # u·min(1, ρ/‖u‖) with the factor in float64 and then rounded to u's dtype — the same bits as the host
    # formula ``u if ‖u‖ ≤ ρ else u·(ρ/‖u‖)`` (a factor of exactly 1 leaves u unchanged), without a fetch.
    factor = (rho / u.norm().double()).clamp(max=1.0).to(u.dtype)
    return u * factor


def _direction(g: Tensor, p: str) -> Tensor:
    if p == "inf":
        return g.sign()
    norm = g.norm()
    return g / torch.where(norm > 0, norm, torch.ones_like(norm))  # g itself when g = 0, without a fetch


def perturbation_draws(
    numel: int, rho: float, distribution: str = "sphere", *, num_draws: int, seed: int = 0
) -> Iterator[Tensor]:
    """The draws u_1, …, u_K ∈ R^P (``(numel,)`` float64, CPU) of :func:`average_sharpness`, in order.

    With v ~ N(0, I) from ``torch.Generator().manual_seed(seed)``: ``"sphere"`` u = ρ v/‖v‖₂ (‖u‖₂ = ρ),
    ``"gaussian"`` u = ρ v/√P (E‖u‖₂² = ρ²), ``"gaussian-paper"`` u = ρ v (E‖u‖₂² = ρ²P). The three share one
    stream of v, so the same seed gives the same directions under every distribution.
    """
    if distribution not in DISTRIBUTIONS:
        raise InputError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    gen = torch.Generator().manual_seed(seed)
    for _ in range(num_draws):
        v = torch.randn(numel, generator=gen, dtype=torch.float64)
        if distribution == "sphere":
            yield v * (rho / v.norm())
        elif distribution == "gaussian":
            yield v * (rho / math.sqrt(numel))
        else:
            yield v * rho


def _average_point(average: AverageSharpness, numel: int) -> Tensor:
    """The u of ``average``'s best evaluated point, regenerated from its seed (float64, CPU)."""
    *_, u = perturbation_draws(numel, average.rho, average.distribution, num_draws=average.max_draw + 1, seed=average.seed)
    return average.max_sign * u


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
    starts: tuple[Tensor, ...] = (),
) -> Ascent:
    """Projected gradient ascent in u on ``batch`` (default: the whole analysis set); see the module docstring.

    ``starts``: further feasible points u (``(P,)``, ‖u‖_p ≤ ρ) beside the seeded random start; the ascent
    begins at the highest of them (one gradient each), so its value is at least every start's.
    """
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
    for extra in starts:
        if extra.shape != u.shape:
            raise InputError(f"expected start points of shape {tuple(u.shape)}, got {tuple(extra.shape)}")
        norm = float(extra.double().abs().max() if p == "inf" else extra.double().norm())
        if norm > rho * (1 + 1e-9):
            raise InputError(f"expected start points inside the ball ‖u‖_{p} ≤ ρ = {rho:g}, got ‖u‖_{p} = {norm:g}")
        # Projected after the cast: rounding to a float32 objective must not step outside the ball.
        extra = _project(extra.to(theta.device, theta.dtype), rho, p)
        loss, g = loss_and_grad_u(extra)
        if loss > best_loss:
            u, best_loss, best_grad = extra, loss, g
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
    return Ascent(u=best_u, delta=c * best_u, base_loss=base, loss=best_loss, num_grads=steps + 1 + len(starts))


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
    average: AverageSharpness | None = None,
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
        average: an :func:`average_sharpness` result on the same objective with the same ρ, ``adaptive``,
            η and ``distribution="sphere"``; its best draw joins the starts, so that with ``batch_size=None``
            the value is ≥ ``average.max_value`` ≥ ``average.value`` (module docstring). Any other
            distribution is refused: its draws need not lie in the ball.

    Cost: ``num_batches · (steps + 1)`` gradients over m samples (``num_grads``), one more per batch with
    ``average``.
    """
    p = _norm_kind(p)
    if max_batches is not None and max_batches < 1:
        raise InputError(f"max_batches must be ≥ 1 or None, got {max_batches}")
    starts: tuple[Tensor, ...] = ()
    if average is not None:
        ours = (float(rho), adaptive, float(eta), "sphere")
        theirs = (average.rho, average.adaptive, average.eta, average.distribution)
        if ours != theirs:
            raise InputError(
                f"expected an average-case result with (rho, adaptive, eta, distribution) = {ours}, got {theirs}"
            )
        starts = (_average_point(average, objective.numel),)
    t0 = time.perf_counter()
    chosen = batches(objective, batch_size, seed=seed)[:max_batches]
    runs = [
        ascend(objective, rho, p=p, adaptive=adaptive, eta=eta, steps=steps, batch=b, seed=seed + i, starts=starts)
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
        start="random" if average is None else "random+average",
        average_floor=None if average is None else average.max_value,
    )


def average_sharpness(
    objective: Objective,
    rho: float,
    *,
    adaptive: bool = True,
    eta: float = 0.0,
    distribution: str = "sphere",
    num_draws: int = 100,
    antithetic: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
) -> AverageSharpness:
    """Average-case (adaptive) sharpness  E_u[L(w + c ⊙ u)] − L(w)  over the whole analysis set.

    Distributions of u (:func:`perturbation_draws`: float64 on the CPU from ``torch.Generator().manual_seed(seed)``;
    ρ is the same u-space radius as the worst case's, see the module docstring):

    * ``"sphere"`` (default): u uniform on ‖u‖₂ = ρ — inside the p = 2 and the p = ∞ worst-case balls, so
      S_avg ≤ S_max at the same ρ for the true maximum;
    * ``"gaussian"``: u ~ N(0, (ρ²/P) I), so E‖u‖₂² = ρ²; near a minimum the same second-order value as the
      sphere, ½(ρ²/P) Σ_i H_ii c_i², but with no inequality by construction;
    * ``"gaussian-paper"``: u ~ N(0, ρ² I), i.e. δ ~ N(0, ρ² diag(c²)) as in Andriushchenko et al. *Warning*:
      ‖u‖₂ ≈ ρ√P, far outside the worst-case ball; this ρ is not comparable with the worst-case radius, and
      the value can exceed the worst case at the same ρ.

    ``antithetic=True`` (default) scores each draw as ½(L(w + c⊙u) + L(w − c⊙u)) − L(w): unbiased, because u
    and −u have the same distribution, and free of the first-order term gᵀ(c⊙u), whose spread ρ‖c⊙g‖ swamps
    the second-order signal ½ρ²Σ H_ii c_i² away from an exact minimum. It costs two forward passes per draw
    (``num_evals``); ``antithetic=False`` is the plain Monte Carlo estimate, one pass per draw.

    By linearity the mean over batches of per-batch averages equals the whole-set average, so no batch size is
    needed. The points are evaluated ``batch_size`` at a time in vmapped blocks (default: batched only where it
    pays, :func:`~sharpness.objective.points.default_batch_size`; 1 evaluates each exactly as
    :meth:`~sharpness.objective.Objective.value`). Returns mean ± standard error of the mean (sample standard
    deviation of the draws / √num_draws),
    and the best single evaluated point (``max_value``, ``max_draw``, ``max_sign``), which
    :func:`worst_case_sharpness` can take as a start (``average=``).
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
    values = []
    best = (-math.inf, 0, 1)  # (L(w + s·c⊙u_k) − L(w), k, s) of the highest point evaluated
    draws = perturbation_draws(objective.numel, rho, distribution, num_draws=num_draws, seed=seed)
    block = default_batch_size(objective) if batch_size is None else batch_size
    signs = (1, -1) if antithetic else (1,)
    per_block = max(1, block // len(signs))  # draws whose points w + c⊙u_k (and w − c⊙u_k) share a block
    losses, points = [], []  # losses stay on the device; fetched once after the last draw
    for k, u in enumerate(draws):
        delta = c * u.to(theta.device, theta.dtype)
        points += [theta + s * delta for s in signs]
        if (k + 1) % per_block == 0 or k + 1 == num_draws:
            losses.append(objective.losses_at(torch.stack(points), batch_size=len(points) if block > 1 else 1))
            points = []
    per_draw = torch.cat(losses).double().cpu().view(num_draws, len(signs)).tolist()
    for k, pair in enumerate(per_draw):
        plus = pair[0] - base
        best = max(best, (plus, k, 1), key=lambda b: b[0])
        if antithetic:
            minus = pair[1] - base
            best = max(best, (minus, k, -1), key=lambda b: b[0])
            values.append(0.5 * (plus + minus))
        else:
            values.append(plus)
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
        max_value=best[0],
        max_draw=best[1],
        max_sign=best[2],
        resolution=torch.finfo(theta.dtype).eps * abs(base),
    )
