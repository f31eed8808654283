"""Spectral density by stochastic Lanczos quadrature (SLQ).

The spectral density of a symmetric A with eigenpairs (λ_i, u_i) is φ(t) = (1/P) Σ_i δ(t − λ_i). For a unit
random vector v with E[v vᵀ] = I/P, the measure μ_v = Σ_i (u_iᵀ v)² δ(t − λ_i) has E[μ_v] = φ. m steps of
Lanczos from q₁ = v give T = S diag(θ) Sᵀ, and the Gauss quadrature rule with nodes θ_j and weights
τ_j = S[0, j]² (they sum to 1) matches μ_v on all polynomials of degree ≤ 2m − 1 (Golub & Meurant). SLQ
averages these rules over R independent start vectors and smooths each node with a Gaussian kernel:

    φ̂(t) = (1/R) Σ_r Σ_j τ_{r,j} · N(t; θ_{r,j}, σ²).

With m = P (and v touching every eigenspace) the rule is exact: the nodes are the eigenvalues and the
weights are (u_iᵀ v)², so φ̂ equals :func:`gaussian_smoothed_density` of the true spectrum with those weights.

The R runs advance in lock-step, one block product ``A @ V`` (V of shape (P, runs in the block)) per step.
Each run stores its own P × m Lanczos basis for full reorthogonalization when the block's bases fit in
``memory``; otherwise the runs use the three-term recurrence alone (``"local"``, 3 vectors of P per run). That
is sound for quadrature: in floating point, Lanczos without reorthogonalization behaves like exact Lanczos on
a larger matrix whose eigenvalues cluster tightly around A's (Greenbaum 1989), so its Gauss rules integrate
the same spectral measure to the same degree; lost orthogonality shows up as duplicate ("ghost") nodes that
share the weight of one eigenvalue, which the smoothed density cannot tell apart (Knizhnerman 1996; Lin, Saad
& Yang 2016, §3). The report says which was used (:attr:`SpectralDensity.reorthogonalization`).

References: Lin, Saad & Yang, "Approximating spectral densities of large matrices", SIAM Review 2016;
Ghorbani, Krishnan & Xiao, "An investigation into neural net optimization via Hessian eigenvalue
density", ICML 2019; Golub & Meurant, *Matrices, Moments and Quadrature with Applications* (2010);
Greenbaum, "Behavior of slightly perturbed Lanczos and conjugate-gradient recurrences", Linear Algebra Appl.
1989; Knizhnerman, "The simple Lanczos procedure: estimates of the error of the Gauss quadrature formula
and their applications", Comput. Math. Math. Phys. 1996.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._operator import (DEFAULT_BLOCK_MEMORY, DISTRIBUTIONS, Seed, check_block_size, check_memory, make_generator,
                        operator_size, random_columns)
from .lanczos import LanczosProcess, tridiagonal_eigh

__all__ = ["SpectralDensity", "spectral_density", "gaussian_smoothed_density", "SIGMA_FRACTION", "GRID_PAD"]

#: Default kernel width σ as a fraction of the spread of the quadrature nodes (max θ − min θ).
SIGMA_FRACTION = 0.01
#: The default grid extends this many σ beyond the extreme nodes, so the Gaussian tails it cuts off
#: hold < 1e-8 of the mass and the density integrates to 1 over the grid.
GRID_PAD = 6.0


@dataclass(frozen=True)
class SpectralDensity:
    """A smoothed spectral density estimate and the quadrature rules behind it.

    Attributes:
        grid: points t at which the density is evaluated, float64, shape (G,), increasing.
        density: φ̂(t) on ``grid``, shape (G,); ∫ φ̂ ≈ 1.
        nodes: Gauss quadrature nodes (Ritz values) per run, shape (R, m), each row ascending. A run that
            broke down after r < m steps (an invariant subspace: its rule is already exact) is padded with
            copies of its last node carrying weight 0.
        weights: the matching weights, shape (R, m), each row summing to 1.
        num_matvecs: products with A in total (R · m unless runs broke down).
        sigma: the Gaussian kernel's standard deviation.
        reorthogonalization: ``"full"`` (stored bases) or ``"local"`` (the three-term recurrence; module docstring).
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    num_matvecs: int
    sigma: float
    reorthogonalization: str = "full"

    def to_dict(self) -> dict:
        return {
            "grid": self.grid.tolist(),
            "density": self.density.tolist(),
            "nodes": self.nodes.tolist(),
            "weights": self.weights.tolist(),
            "num_matvecs": self.num_matvecs,
            "sigma": self.sigma,
            "reorthogonalization": self.reorthogonalization,
        }


def gaussian_smoothed_density(
    eigenvalues: np.ndarray,
    weights: np.ndarray | None,
    grid: np.ndarray,
    sigma: float,
) -> np.ndarray:
    """Σ_i w_i · N(t; λ_i, σ²) evaluated at every t in ``grid``.

    Args:
        eigenvalues: λ, any shape (flattened), float.
        weights: w of the same size, or ``None`` for uniform weights 1/n (the exact spectral density).
        grid: points t, 1-D.
        sigma: kernel standard deviation σ > 0.

    Returns:
        float64 array of shape ``grid.shape``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64).ravel()
    w = np.full(lam.size, 1.0 / max(lam.size, 1)) if weights is None else np.asarray(weights, np.float64).ravel()
    if w.size != lam.size:
        raise ValueError(f"weights must have {lam.size} entries like eigenvalues, got {w.size}")
    t = np.asarray(grid, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"grid must be 1-D, got shape {t.shape}")
    if not (isinstance(sigma, (int, float, np.floating)) and sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite float > 0, got {sigma!r}")
    keep = w != 0  # padded nodes contribute nothing; skip them
    lam, w = lam[keep], w[keep]
    out = np.empty(t.size)
    chunk = max(1, 2**22 // max(lam.size, 1))  # bounds the (chunk × n) kernel matrix to ~32 MiB
    norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    for s in range(0, t.size, chunk):
        z = (t[s : s + chunk, None] - lam[None, :]) / sigma
        out[s : s + chunk] = norm * (np.exp(-0.5 * z * z) @ w)
    return out


def _quadrature_rules(proc: LanczosProcess, m: int) -> tuple[np.ndarray, np.ndarray]:
    nodes = np.empty((proc.R, m))
    weights = np.zeros((proc.R, m))
    for r in range(proc.R):
        betas = proc.betas(r)
        theta, S = tridiagonal_eigh(proc.alphas(r), betas[:-1])
        n = theta.size
        nodes[r, :n] = theta
        nodes[r, n:] = theta[-1]
        w = S[0, :] ** 2
        weights[r, :n] = w / w.sum()  # = 1 up to rounding; renormalized so every rule is a probability
    return nodes, weights


def spectral_density(
    A: Any,
    *,
    num_steps: int = 80,
    num_runs: int = 10,
    seed: Seed = 0,
    grid_size: int = 1000,
    sigma: float | None = None,
    grid: np.ndarray | None = None,
    distribution: str = "rademacher",
    start_vectors: Tensor | None = None,
    block_size: int | None = None,
    memory: int | None = None,
    reorthogonalize: str = "auto",
) -> SpectralDensity:
    """Estimate the spectral density of a symmetric operator by stochastic Lanczos quadrature.

    Args:
        A: symmetric operator: ``A.shape == (P, P)``, ``A.dtype``, ``A.device``, ``A @ V`` for V (P, K).
        num_steps: m, Lanczos steps per run (capped at P; at P the rule is exact). Cost: R · m matvecs.
        num_runs: R, independent start vectors (ignored when ``start_vectors`` is given).
        seed: int, ``torch.Generator`` or ``None``, for the start vectors.
        grid_size: number of grid points G ≥ 2 when ``grid`` is not given.
        sigma: kernel width σ > 0; default ``SIGMA_FRACTION`` (1%) of the node spread max θ − min θ
            (of max(|θ|, 1) if all nodes coincide).
        grid: explicit evaluation points (1-D, increasing); default ``G`` points from
            min θ − 6σ to max θ + 6σ.
        distribution: ``"rademacher"`` (default) or ``"gaussian"`` entries of the start vectors (normalized).
        start_vectors: explicit start vectors of shape (P,) or (P, R), normalized here; for reproducing a
            run or testing against the exact identity.
        block_size: runs advanced together (columns per block product); default: as many as keep the
            runs' vectors within ``memory`` (at least 1). Per run: (m + 2) · P elements with a stored basis,
            3 · P with the local recurrence.
        memory: bytes for the runs' vectors (default 1 GiB).
        reorthogonalize: ``"full"``, ``"local"`` or ``"auto"`` (default): full when one run's basis fits in
            ``memory`` (module docstring).

    Returns:
        :class:`SpectralDensity`. Warns if the grid spacing exceeds σ (the density is then under-resolved
        and need not integrate to 1 on the grid).
    """
    P = operator_size(A)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    m = min(num_steps, P)  # the Krylov space cannot outgrow R^P
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    if sigma is not None and not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite float > 0 or None, got {sigma!r}")
    if grid is None and (isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2):
        raise ValueError(f"grid_size must be an int >= 2, got {grid_size!r}")
    if grid is not None:
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 1 or grid.size < 2 or not np.all(np.diff(grid) > 0):
            raise ValueError(f"grid must be 1-D, increasing, with >= 2 points, got shape {grid.shape}")

    if start_vectors is not None:
        if not isinstance(start_vectors, Tensor):
            raise ValueError(f"start_vectors must be a torch.Tensor of shape ({P}, R), got {type(start_vectors).__name__}")
        starts = start_vectors.detach().to(device=A.device, dtype=A.dtype)
        if starts.ndim == 1:
            starts = starts[:, None]
        if starts.ndim != 2 or starts.shape[0] != P:
            raise ValueError(f"start_vectors must have shape ({P},) or ({P}, R), got {tuple(start_vectors.shape)}")
        R = int(starts.shape[1])
        generator = None
    else:
        if isinstance(num_runs, bool) or not isinstance(num_runs, int) or num_runs < 1:
            raise ValueError(f"num_runs must be an int >= 1, got {num_runs!r}")
        R = num_runs
        starts = None
        generator = make_generator(seed, A.device)

    if reorthogonalize not in ("auto", "full", "local"):
        raise ValueError(f"reorthogonalize must be auto, full or local, got {reorthogonalize!r}")
    check_memory(memory)
    itemsize = torch.empty((), dtype=A.dtype).element_size()
    budget = DEFAULT_BLOCK_MEMORY if memory is None else int(memory)
    if reorthogonalize == "auto":
        reorthogonalize = "full" if (m + 2) * P * itemsize <= budget else "local"
    per_run = (m + 2) if reorthogonalize == "full" else 3
    block = check_block_size(block_size, R, per_run * P * itemsize, budget_bytes=budget)
    all_nodes, all_weights, num_matvecs = [], [], 0
    for first in range(0, R, block):
        b = min(block, R - first)
        if starts is None:
            V = random_columns(P, b, generator, dtype=A.dtype, device=A.device, distribution=distribution)
        else:
            V = starts[:, first : first + b]
        proc = LanczosProcess(A, V, max_steps=m, reorthogonalize=reorthogonalize, keep_start=False)
        # Runs that break down (invariant subspace) simply stop: their quadrature rule is already exact
        # for their start vector. No restart here: that would change the measure being integrated.
        while any(proc.active(r) for r in range(b)):
            proc.step()
        nodes, weights = _quadrature_rules(proc, m)
        all_nodes.append(nodes)
        all_weights.append(weights)
        num_matvecs += proc.num_matvecs
    nodes = np.concatenate(all_nodes)
    weights = np.concatenate(all_weights)

    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        spread = hi - lo
        sigma = SIGMA_FRACTION * (spread if spread > 0 else max(abs(hi), 1.0))
    sigma = float(sigma)
    if grid is None:
        grid = np.linspace(lo - GRID_PAD * sigma, hi + GRID_PAD * sigma, grid_size)
    spacing = float(np.max(np.diff(grid)))
    if spacing > sigma:
        warnings.warn(
            f"grid spacing {spacing:.3g} exceeds sigma={sigma:.3g}: the density is under-resolved; "
            "use a finer grid or a larger sigma",
            RuntimeWarning,
            stacklevel=2,
        )
    density = gaussian_smoothed_density(nodes, weights / R, grid, sigma)
    return SpectralDensity(grid, density, nodes, weights, num_matvecs, sigma, reorthogonalize)
