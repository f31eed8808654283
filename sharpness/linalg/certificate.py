"""The miss certificate of a cold-start Lanczos run: the chance that its random start hid an eigenvalue.

No test on the tridiagonal T can see an eigenvalue whose share of a random start has not been amplified yet,
so a Lanczos run that stops early may report λ₂ as λ_max. The run itself bounds how likely that is.

**Statement.** Let q₁ = z/‖z‖ with z standard Gaussian in a space of dimension d (R^P, or the orthogonal
complement of the locked vectors of a deflated run), and let m steps of Lanczos on the symmetric A give Ritz
values θ₁ ≤ … ≤ θ_m and β₁ … β_m (β_m the closing residual norm). For a threshold a > θ_m define

    δ(a) = √(2d/π) · β₁⋯β_m / |det(aI − T_m)| = √(2d/π) / |p_m(a)|.

Then, over the random start, P(λ_max(A) ≥ a and δ(a) ≤ x) ≤ x for every x. The same holds at the bottom
for a < θ₁ and λ_min(A) ≤ a.

**Proof.** (1) The Lanczos vectors are polynomials in A applied to the start: comparing the recurrence
β_j q_{j+1} = (A − α_j) q_j − β_{j−1} q_{j−1} with the three-term recurrence of the characteristic
polynomials of T's leading blocks gives q_{m+1} = p_m(A) q₁ with p_m(λ) = det(λI − T_m)/(β₁⋯β_m). So for an
eigenpair (λ, u) of A, uᵀq_{m+1} = p_m(λ)·uᵀq₁, and |uᵀq_{m+1}| ≤ 1 gives |uᵀq₁| ≤ 1/|p_m(λ)|.
(2) Every factor |λ − θ_i| of |det(λI − T_m)| grows on [θ_m, ∞), so λ ≥ a gives |uᵀq₁| ≤ 1/|p_m(a)|.
(3) For a fixed unit vector u, uᵀq₁ has the law of z₁/‖z‖, whose density is largest at 0, where it is
Γ(d/2)/(√π·Γ((d−1)/2)) ≤ √(d/(2π)); so P(|uᵀq₁| ≤ ε) ≤ ε·√(2d/π).
Take u a fixed eigenvector of λ_max(A). On the event {λ_max ≥ a, δ(a) ≤ x}, (2) gives
|uᵀq₁| ≤ 1/|p_m(a)| = δ(a)/√(2d/π) ≤ x/√(2d/π), which by (3) has probability at most x. ∎

The bound is *a posteriori*: δ is computed from the run, and what it bounds is the chance of being wrong *and*
reading δ this low. It holds whatever the spectrum (Kuczyński & Woźniakowski 1992 bound the same event a
priori, far more loosely), only for a Gaussian start (not a warm start, whose v0 is not random), and only for
a half-line beyond every Ritz value: two eigenvalues within the tolerance of one reported value (a
multiplicity) are invisible to a single Krylov space, which is why top-k with k ≥ 2 is certified by a deflated
verification run instead (:mod:`sharpness.linalg.eigen`). When several ends of one run are certified, each is
held to its share of the total probability, so that the chance that *any* of them is wrong while reading so
low is at most the total.

**Rounding.** In floating point (1) holds up to the rounding of the recurrence, which does not resolve a start
component below about m·eps. The certificate is therefore never reported below √(2d/π)·m·eps; that floor
assumes the rounding errors have no preferred direction, and is a floor, not part of the proof.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["miss_probability", "rounding_floor"]


def rounding_floor(dim: int, steps: int, eps: float) -> float:
    """√(2d/π)·m·eps: the smallest certificate a run of m steps in a dtype of unit roundoff eps reports."""
    return math.sqrt(2.0 * dim / math.pi) * max(steps, 1) * eps


def miss_probability(theta: np.ndarray, betas: np.ndarray, threshold: float, side: int, dim: int,
                     eps: float) -> float:
    """δ(a) of the module docstring, for the top (``side`` = +1, a > max θ) or bottom (−1, a < min θ).

    Args:
        theta: the run's Ritz values, shape (m,).
        betas: its β₁ … β_m, shape (m,), the last one its closing residual norm.
        threshold: a, the value beyond which a missed eigenvalue would make the report wrong.
        side: +1 (top) or −1 (bottom).
        dim: the dimension d of the space the random start was drawn in.
        eps: the unit roundoff of the run's dtype (for :func:`rounding_floor`).

    Returns:
        δ in [floor, 1]; ``inf`` when the threshold is not beyond every Ritz value (nothing is certified) or
        a β before the last is not positive; the floor when the last β is 0 (an exactly invariant Krylov
        space, which a Gaussian start makes contain a component of every eigenvector).
    """
    theta = np.asarray(theta, dtype=np.float64)
    betas = np.asarray(betas, dtype=np.float64)
    if side not in (1, -1):
        raise ValueError(f"side must be +1 (top) or -1 (bottom), got {side!r}")
    if theta.size == 0 or betas.size != theta.size or np.any(betas[:-1] <= 0):
        return math.inf
    dist = side * (threshold - theta)
    if np.any(dist <= 0):
        return math.inf
    if betas[-1] <= 0:  # an exactly invariant Krylov space: a Gaussian start misses no eigenvalue
        return rounding_floor(dim, theta.size, eps)
    log_p = float(np.log(dist).sum() - np.log(betas).sum())  # log |p_m(a)|
    bound = math.sqrt(2.0 * dim / math.pi) * math.exp(-min(log_p, 700.0))
    return min(1.0, max(bound, rounding_floor(dim, theta.size, eps)))
