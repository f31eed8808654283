"""Matrices with known spectra and an operator that counts its products: the truth the linalg tests check against."""

from __future__ import annotations

import numpy as np
import torch

DT = torch.float64


def random_symmetric(P: int, seed: int) -> torch.Tensor:
    """(X + Xᵀ)/2 for a seeded standard normal X (float64)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(P, P, generator=g, dtype=DT)
    return (X + X.T) / 2


def with_spectrum_and_vectors(eigenvalues, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U diag(λ) Uᵀ, U)`` with a Haar-random orthogonal U (float64)."""
    ev = torch.as_tensor(np.asarray(eigenvalues, dtype=np.float64))
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(ev.numel(), ev.numel(), generator=g, dtype=DT))
    return (U * ev) @ U.T, U


def with_spectrum(eigenvalues, seed: int) -> torch.Tensor:
    """U diag(λ) Uᵀ with a Haar-random orthogonal U."""
    return with_spectrum_and_vectors(eigenvalues, seed)[0]


class CountingOperator:
    """Wraps a matrix; records the shape of every right-hand side it is applied to."""

    def __init__(self, M: torch.Tensor):
        self.M, self.shape, self.dtype, self.device = M, M.shape, M.dtype, M.device
        self.calls: list[tuple[int, ...]] = []

    def __matmul__(self, v):
        self.calls.append(tuple(v.shape))
        return self.M @ v

    @property
    def num_matvecs(self) -> int:
        return sum(1 if len(s) == 1 else s[1] for s in self.calls)


class Diagonal:
    """diag(d) as an operator (eigenvalue d[i] has eigenvector e_i): cheap enough for thousands of starts."""

    def __init__(self, d, dtype=DT):
        self.d = torch.as_tensor(np.asarray(d, dtype=np.float64), dtype=dtype)
        self.shape = (self.d.numel(),) * 2
        self.dtype, self.device = self.d.dtype, self.d.device

    def __matmul__(self, v):
        return self.d * v if v.ndim == 1 else self.d[:, None] * v
