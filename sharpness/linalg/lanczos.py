"""Lanczos tridiagonalization with full reorthogonalization.

Given a symmetric operator ``A`` (P × P) and a unit start vector q₁, m steps of Lanczos build an orthonormal
basis Q = [q₁ … q_m] of the Krylov space span{q₁, A q₁, …, A^{m−1} q₁} and a symmetric tridiagonal
T = Qᵀ A Q with diagonal α₁…α_m and off-diagonal β₁…β_{m−1}, linked by the Lanczos relation

    A Q = Q T + β_m q_{m+1} e_mᵀ.

If T = S diag(θ) Sᵀ, the Ritz pairs (θ_i, y_i = Q s_i) satisfy ‖A y_i − θ_i y_i‖ = |β_m · S[m, i]|, so the
last row of S gives every residual for free (Paige 1971; Parlett, *The Symmetric Eigenvalue Problem*, 1998).

In floating point the three-term recurrence loses orthogonality as soon as a Ritz value converges, producing
spurious copies ("ghosts"). We orthogonalize every new vector against the whole stored basis, twice
(classical Gram–Schmidt twice is enough: Giraud, Langou & Rozložník 2005), which costs O(P·m) per step and
the P × m basis in memory — negligible next to a Hessian-vector product and a few hundred vectors.

Breakdown: if β_j ≈ 0 the Krylov space is invariant under A and the Ritz values found so far are exact
eigenvalues. :func:`lanczos` then stops; :func:`sharpness.linalg.extreme_eigenvalues` may restart with a
fresh random vector orthogonal to the basis (see :class:`LanczosProcess.restart`).

:class:`LanczosProcess` runs R independent Lanczos recurrences in lock-step so that each step is one block
product ``A @ V`` with R columns (used by stochastic Lanczos quadrature); :func:`lanczos` is the one-run,
fixed-length front end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from ._operator import Seed, apply, make_generator, operator_size, random_block

__all__ = ["LanczosResult", "LanczosProcess", "lanczos", "tridiagonal_eigh"]

#: β_j ≤ BREAKDOWN_FACTOR · eps(dtype) · ‖A‖_est counts as an invariant subspace. Kept small on purpose: a
#: genuine β can be tiny relative to ‖A‖ (a Hessian's bulk next to a huge outlier), and missing a true
#: breakdown is harmless (the next vector is then rounding noise orthogonalized against the basis, i.e. an
#: implicit random restart), whereas a false one would truncate the Krylov space.
BREAKDOWN_FACTOR = 100.0


def tridiagonal_eigh(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the symmetric tridiagonal T(alphas, betas) in float64, eigenvalues ascending.

    Args:
        alphas: diagonal, shape (m,).
        betas: off-diagonal, shape (m−1,).

    Returns:
        ``(theta, S)`` with ``theta`` of shape (m,) ascending and ``S`` of shape (m, m), T = S diag(θ) Sᵀ.
    """
    d = np.asarray(alphas, dtype=np.float64)
    e = np.asarray(betas, dtype=np.float64)
    m = d.shape[0]
    if e.shape != (max(m - 1, 0),):
        raise ValueError(f"betas must have shape ({max(m - 1, 0)},) for {m} alphas, got {e.shape}")
    if m == 0:
        return np.zeros(0), np.zeros((0, 0))
    if m == 1:
        return d.copy(), np.ones((1, 1))
    return scipy.linalg.eigh_tridiagonal(d, e)


@dataclass(frozen=True)
class LanczosResult:
    """The output of :func:`lanczos`.

    Attributes:
        alphas: diagonal α₁…α_m of T, float64, shape (m,).
        betas: off-diagonal β₁…β_{m−1} of T, float64, shape (m−1,).
        beta_last: β_m = ‖A q_m − α_m q_m − β_{m−1} q_{m−1}‖ (after reorthogonalization), the size of the
            remainder in A Q = Q T + β_m q_{m+1} e_mᵀ. It is ≈ 0 after a breakdown or when m = P.
        breakdown: whether the run stopped early because β_m ≈ 0 (an invariant subspace: Ritz values exact).
        basis: Q of shape (P, m) in the operator's dtype and device, orthonormal columns, or ``None`` when
            not requested.
        num_matvecs: products with A that were computed (= m).
    """

    alphas: np.ndarray
    betas: np.ndarray
    beta_last: float
    breakdown: bool
    basis: Tensor | None
    num_matvecs: int

    @property
    def num_steps(self) -> int:
        return int(self.alphas.shape[0])

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values ``theta`` (m,) ascending, eigenvectors ``S`` (m, m) of T, and absolute residual norms
        ``|β_m · S[m, i]|`` = ‖A y_i − θ_i y_i‖ with y_i = Q s_i (exact up to rounding under full
        reorthogonalization)."""
        theta, S = tridiagonal_eigh(self.alphas, self.betas)
        return theta, S, np.abs(self.beta_last * S[-1, :])


class LanczosProcess:
    """R independent Lanczos recurrences with full reorthogonalization, advanced one step at a time.

    Each :meth:`step` computes one block product ``A @ V`` (V of shape (P, R_active); a plain ``A @ v`` when
    only one run is active) and orthogonalizes each new vector twice against its own run's basis.
    The one host synchronization per step fetches (α, β, ‖A q‖) for all runs together: β decides breakdown.

    Runs that break down stop stepping; :meth:`restart` can start a new Krylov block in the same run from a
    random vector orthogonal to that run's basis (T then becomes block diagonal: the off-diagonal entry
    between blocks is 0). All active runs must have the same length when stepping.

    Args:
        A: symmetric operator (see :mod:`sharpness.linalg`).
        start: start vectors, shape (P,) or (P, R); each column is normalized.
        max_steps: upper bound on the steps of any run (sizes the basis storage; at most P).
    """

    def __init__(self, A: Any, start: Tensor, *, max_steps: int) -> None:
        P = operator_size(A)
        self.A = A
        self.P = P
        self.dtype: torch.dtype = A.dtype
        self.device = torch.device(A.device)
        start = start.to(device=self.device, dtype=self.dtype)
        if start.ndim == 1:
            start = start[:, None]
        if start.ndim != 2 or start.shape[0] != P or start.shape[1] < 1:
            raise ValueError(f"start vectors must have shape ({P},) or ({P}, R), got {tuple(start.shape)}")
        norms = torch.linalg.vector_norm(start, dim=0)
        norms_host = norms.double().cpu().numpy()
        if not np.all(np.isfinite(norms_host)) or np.any(norms_host == 0):
            raise ValueError("start vectors must be finite and nonzero, got a zero or non-finite column")
        self.R = int(start.shape[1])
        self.max_steps = max(1, min(int(max_steps), P))
        self.num_matvecs = 0
        self._q = (start / norms).T.contiguous()  # (R, P): the next vector of each run
        self._cap = min(self.max_steps, 32)
        self._Q = torch.empty((self.R, self._cap, P), dtype=self.dtype, device=self.device)
        self._alphas: list[list[float]] = [[] for _ in range(self.R)]
        self._betas: list[list[float]] = [[] for _ in range(self.R)]  # β after each step (residual norm)
        self._block_starts: list[list[int]] = [[0] for _ in range(self.R)]
        self._active = [True] * self.R
        self._broken = [False] * self.R
        self._anorm = [0.0] * self.R  # running lower estimate of ‖A‖ per run
        self.eps = float(torch.finfo(self.dtype).eps)

    # -- state ------------------------------------------------------------------------------------
    def length(self, r: int = 0) -> int:
        return len(self._alphas[r])

    def active(self, r: int = 0) -> bool:
        return self._active[r]

    def broken(self, r: int = 0) -> bool:
        """Whether run ``r``'s last step ended in an invariant subspace (or exhausted all P dimensions)."""
        return self._broken[r]

    def block_starts(self, r: int = 0) -> tuple[int, ...]:
        return tuple(self._block_starts[r])

    def anorm(self, r: int = 0) -> float:
        """max_j ‖A q_j‖ over run ``r`` so far: a lower bound on ‖A‖₂, used as the scale of rounding."""
        return self._anorm[r]

    def rounding_level(self, r: int = 0) -> float:
        """β at or below this counts as breakdown; also the residual floor no Ritz pair can beat."""
        return BREAKDOWN_FACTOR * self.eps * self._anorm[r]

    def alphas(self, r: int = 0) -> np.ndarray:
        return np.asarray(self._alphas[r], dtype=np.float64)

    def betas(self, r: int = 0) -> np.ndarray:
        """β after each of the run's steps, shape (m,): entry j couples steps j and j+1 unless a block starts
        at j+1, and the last entry of each block is that block's closing residual norm."""
        return np.asarray(self._betas[r], dtype=np.float64)

    def basis(self, r: int = 0) -> Tensor:
        """The run's orthonormal basis Q, shape (P, m) (a view into the process's storage)."""
        return self._Q[r, : self.length(r)].T

    def block_ritz(self, r: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), T-eigenvectors and absolute residual norms of the Krylov block
        ``[start, stop)`` of run ``r``; the residual uses the block's closing β (entry ``stop − 1``)."""
        a = self._alphas[r][start:stop]
        b = self._betas[r][start:stop]
        theta, S = tridiagonal_eigh(np.asarray(a), np.asarray(b[:-1]))
        return theta, S, np.abs(b[-1] * S[-1, :])

    # -- iteration --------------------------------------------------------------------------------
    def _ensure_capacity(self, n: int) -> None:
        if n <= self._cap:
            return
        # Grow by half again (bounded by max_steps): amortized O(1) copies, and no P × max_steps
        # allocation up front when a run converges in a handful of steps.
        cap = min(self.max_steps, max(n, self._cap + self._cap // 2))
        Q = torch.empty((self.R, cap, self.P), dtype=self.dtype, device=self.device)
        Q[:, : self._cap] = self._Q
        self._Q, self._cap = Q, cap

    def step(self) -> list[int]:
        """One Lanczos step for every active run; returns the runs that broke down at this step."""
        act = [r for r in range(self.R) if self._active[r]]
        if not act:
            return []
        j = self.length(act[0])
        if any(self.length(r) != j for r in act):
            raise RuntimeError("active Lanczos runs must have equal lengths to step together")
        if j >= self.max_steps:
            raise RuntimeError(f"Lanczos runs are already at max_steps={self.max_steps}")
        self._ensure_capacity(j + 1)
        every = len(act) == self.R
        idx = None if every else torch.tensor(act, device=self.device)
        q = self._q if every else self._q[idx]  # (n, P)
        if every:
            self._Q[:, j] = q
        else:
            self._Q[idx, j] = q

        n = len(act)
        W = apply(self.A, q[0])[None, :] if n == 1 else apply(self.A, q.T).T
        W = W.to(self.dtype)
        self.num_matvecs += n
        a_norm = torch.linalg.vector_norm(W, dim=1)

        Qa = self._Q[:, : j + 1] if every else self._Q[idx, : j + 1]  # (n, j+1, P)
        # Classical Gram–Schmidt twice against the whole basis ("twice is enough"): the first pass removes
        # the Krylov recurrence's α q_j + β q_{j−1} and the rest; the second repairs the first's rounding.
        h = torch.bmm(Qa, W.unsqueeze(2)).squeeze(2)
        W = W - torch.bmm(h.unsqueeze(1), Qa).squeeze(1)  # out of place: never write into A's output
        h2 = torch.bmm(Qa, W.unsqueeze(2)).squeeze(2)
        W -= torch.bmm(h2.unsqueeze(1), Qa).squeeze(1)
        alpha = h[:, j] + h2[:, j]
        beta = torch.linalg.vector_norm(W, dim=1)

        # The one host sync per step: β decides breakdown, and T is solved on the host anyway.
        a_host, b_host, an_host = torch.stack([alpha, beta, a_norm]).double().cpu().tolist()
        broke: list[int] = []
        for a_j, b_j, an_j, r in zip(a_host, b_host, an_host, act):
            self._alphas[r].append(a_j)
            self._betas[r].append(b_j)
            self._anorm[r] = max(self._anorm[r], an_j, abs(a_j))
            if not (np.isfinite(a_j) and np.isfinite(b_j)):
                raise FloatingPointError(f"Lanczos produced a non-finite value at step {j + 1} (A @ v overflowed?)")
            if self.length(r) >= self.P or b_j <= self.rounding_level(r):
                self._active[r] = False
                self._broken[r] = True
                broke.append(r)
            elif self.length(r) >= self.max_steps:
                self._active[r] = False
        safe = torch.where(beta > 0, beta, torch.ones_like(beta))
        W /= safe.unsqueeze(1)
        if every:
            self._q = W
        else:
            self._q[idx] = W
        return broke

    def restart(self, r: int, generator: torch.Generator) -> bool:
        """Continue run ``r`` with a new Krylov block from a random vector orthogonal to its basis.

        Returns ``False`` (and changes nothing) when no room is left: the run is at ``max_steps``, or its
        basis already spans the space numerically.
        """
        m = self.length(r)
        if m >= self.max_steps or m >= self.P:
            return False
        v = random_block((self.P,), generator, dtype=self.dtype, device=self.device, distribution="gaussian")
        v0_norm = torch.linalg.vector_norm(v)
        Q = self._Q[r, :m]
        for _ in range(2):
            v -= Q.T @ (Q @ v)
        v_norm = torch.linalg.vector_norm(v)
        # A random vector keeps a fraction ~sqrt((P−m)/P) of its norm; far less means the basis spans R^P.
        if float(v_norm) <= math.sqrt(self.eps) * float(v0_norm):
            return False
        self._q[r] = v / v_norm
        self._block_starts[r].append(m)
        self._active[r] = True
        self._broken[r] = False
        return True


def start_vector(P: int, v0: Tensor | None, generator: torch.Generator | None, dtype, device) -> Tensor:
    """``v0`` checked and moved to the operator's dtype/device, or a Gaussian random vector; not normalized."""
    if v0 is None:
        assert generator is not None
        return random_block((P,), generator, dtype=dtype, device=device, distribution="gaussian")
    if not isinstance(v0, Tensor):
        raise ValueError(f"v0 must be a torch.Tensor of shape ({P},), got {type(v0).__name__}")
    if tuple(v0.shape) != (P,):
        raise ValueError(f"v0 must have shape ({P},), got {tuple(v0.shape)}")
    v0 = v0.detach().to(device=device, dtype=dtype)
    v_norm = float(torch.linalg.vector_norm(v0))
    if not math.isfinite(v_norm) or v_norm == 0.0:
        raise ValueError(f"v0 must be finite and nonzero, got norm {v_norm}")
    return v0


def lanczos(
    A: Any,
    num_steps: int,
    *,
    v0: Tensor | None = None,
    seed: Seed = 0,
    return_basis: bool = False,
) -> LanczosResult:
    """Run ``num_steps`` steps of Lanczos with full reorthogonalization (stopping early at breakdown).

    Builds T = Qᵀ A Q (tridiagonal) and, if asked, the orthonormal Krylov basis Q. Each step costs one
    ``A @ v`` and O(P·j) work to orthogonalize against the j stored vectors, twice.

    Args:
        A: symmetric operator with ``shape == (P, P)``, ``dtype``, ``device`` and ``A @ v``.
        num_steps: m, the number of Lanczos steps, in [1, P]. With m = P the Ritz values are all of A's
            eigenvalues (up to rounding), unless the start vector misses an eigenspace.
        v0: start vector of shape (P,) (normalized here); e.g. the previous top eigenvector for a warm start.
        seed: int, ``torch.Generator`` or ``None``; used for a Gaussian random start when ``v0`` is ``None``.
        return_basis: keep Q (P × m, in A's dtype and device) in the result.

    Returns:
        :class:`LanczosResult` with ``alphas`` (m,), ``betas`` (m−1,), ``beta_last`` and ``num_matvecs``.
        If β_j ≈ 0 (below ``100·eps·‖A‖``; an invariant subspace) the run stops after j steps with
        ``breakdown=True``: the Ritz values are then exact eigenvalues of A.

    Reference: C. Lanczos (1950); C. C. Paige (1971); B. N. Parlett, *The Symmetric Eigenvalue Problem* (1998).
    """
    P = operator_size(A)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= P:
        raise ValueError(f"num_steps must be an int in [1, {P}], got {num_steps!r}")
    generator = make_generator(seed, A.device) if v0 is None else None
    q = start_vector(P, v0, generator, A.dtype, A.device)
    proc = LanczosProcess(A, q, max_steps=num_steps)
    while proc.active(0):
        proc.step()
    m = proc.length(0)
    betas = proc.betas(0)
    return LanczosResult(
        alphas=proc.alphas(0),
        betas=betas[:-1].copy(),
        beta_last=float(betas[-1]),
        breakdown=proc.broken(0) and m < P,
        basis=proc.basis(0).clone() if return_basis else None,
        num_matvecs=proc.num_matvecs,
    )
