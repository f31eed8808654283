"""PAC-Bayes flatness: the largest isotropic Gaussian weight noise the training loss tolerates.

Jiang et al. (ICLR 2020, "Fantastic Generalization Measures and Where to Find Them", Appendix C.3,
"pacbayes.flatness") take σ' the largest σ such that the expected training loss under u ~ N(0, σ²I) rises by at
most a fixed amount, and use 1/σ'² as the measure (larger: sharper). Here, with a fixed set of K standard normal
draws z₁..z_K (seeded: common random numbers, so the estimate is a deterministic, continuous function of σ),

    f(σ) = (1/K) Σ_k L(θ + σ z_k) − L(θ),     σ* = the largest σ found with f(σ) ≤ rise,

by doubling (or halving) from ``sigma_start`` until [σ, 2σ] brackets ``rise``, then bisecting to a relative width
``rtol``. (Jiang bound the rise of the 0-1 training *error* by 0.1; this module bounds the rise of the loss,
which is defined for any objective and has the closed form below.) For a quadratic L(θ + u) = L(θ) + ½uᵀHu at a
minimum, E[f(σ)] = σ² tr(H)/2, so σ* = √(2·rise / tr H); with the fixed draws, exactly √(2·rise / mean_k z_kᵀHz_k).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["pac_bayes_sigma"]


def pac_bayes_sigma(loss_at: Callable[[Tensor], Tensor], theta: Tensor, *, rise: float = 0.1, num_draws: int = 32,
                    seed: int = 0, sigma_start: float = 1e-3, rtol: float = 1e-3, max_doublings: int = 60,
                    block: int = 16) -> dict:
    """σ* of the module docstring.

    Args:
        loss_at: ``(B, P)`` points → ``(B,)`` losses (e.g. :meth:`sharpness.objective.Objective.losses_at`).
        theta: the flat ``(P,)`` weights; not modified.
        rise: the allowed increase of the mean loss (Jiang et al.: 0.1).
        num_draws: K, the fixed Gaussian draws (regenerated from ``seed`` in blocks of ``block`` at each σ, so
            memory stays at ``block`` × P).

    Returns ``{"sigma", "inverse_sigma2", "rise", "increase" (f at σ*), "num_draws", "seed", "evaluations"}``.

    Raises:
        ValueError: ``rise`` ≤ 0, or no σ within 2^±max_doublings·sigma_start brackets the rise.
    """
    if not rise > 0:
        raise ValueError(f"expected rise > 0, got {rise}")
    theta = theta.detach()
    base = float(loss_at(theta.unsqueeze(0))[0])
    evaluations = 0

    def increase(sigma: float) -> float:
        nonlocal evaluations
        evaluations += 1
        gen = torch.Generator(device="cpu").manual_seed(seed)
        total, left = 0.0, num_draws
        while left > 0:
            b = min(block, left)
            z = torch.randn(b, theta.numel(), generator=gen, dtype=torch.float64).to(theta.device, theta.dtype)
            total += float(loss_at(theta + sigma * z).double().sum())
            left -= b
        return total / num_draws - base

    # Bracket σ* in [lo, hi] with f(lo) ≤ rise < f(hi): double up from sigma_start, or halve down from it.
    lo = hi = float(sigma_start)
    f_lo = increase(lo)
    for _ in range(max_doublings):
        if f_lo <= rise:
            f_hi = increase(2 * hi)
            if f_hi > rise:
                hi = 2 * hi
                break
            lo = hi = 2 * hi
            f_lo = f_hi
        else:
            hi, lo = lo, lo / 2
            f_lo = increase(lo)
            if f_lo <= rise:
                break
    else:
        raise ValueError(f"no σ in [{sigma_start / 2 ** max_doublings:g}, {sigma_start * 2 ** max_doublings:g}] "
                         f"brackets a loss rise of {rise:g}: the loss is flat to the noise, or rises by more at any σ")
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        f_mid = increase(mid)
        if f_mid <= rise:
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return {"sigma": lo, "inverse_sigma2": 1.0 / lo ** 2, "rise": rise,
            "increase": f_lo, "num_draws": num_draws, "seed": seed, "evaluations": evaluations}
