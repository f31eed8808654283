"""Lanczos tridiagonalization, with a stored basis or without one.

Given a symmetric operator ``A`` (P × P) and a unit start vector q₁, m steps of Lanczos build vectors
q₁ … q_m spanning the Krylov space span{q₁, A q₁, …, A^{m−1} q₁} and a symmetric tridiagonal T with diagonal
α₁…α_m and off-diagonal β₁…β_{m−1}, linked by the Lanczos relation

    A Q = Q T + β_m q_{m+1} e_mᵀ.

If T = S diag(θ) Sᵀ, the Ritz pairs (θ_i, y_i = Q s_i) satisfy ‖A y_i − θ_i y_i‖ = |β_m · S[m, i]|, so the
last row of S gives every residual for free (Paige 1971; Parlett, *The Symmetric Eigenvalue Problem*, 1998).

Two ways to keep the vectors orthogonal, chosen per run (``reorthogonalize``):

* ``"full"``: every new vector is orthogonalized against the whole stored basis, twice (classical Gram–Schmidt
  twice is enough: Giraud, Langou & Rozložník 2005). The basis is P × m in A's dtype, allocated once for
  ``max_steps`` vectors (on a CPU untouched pages cost no memory, so only the steps taken count) and never
  copied to grow. Exact to rounding, including at m = P, at O(P·m) work per step.
* ``"local"``: only the three-term recurrence, holding q_{j−1}, q_j and the new vector: four vectors of P
  whatever the number of steps, and about five passes over P per step. In floating point the vectors lose
  orthogonality once a Ritz value has converged, and copies ("ghosts") of converged Ritz values appear; but
  every Ritz value with a small residual |β_m S[m, i]| still lies that close to an eigenvalue of A, up to
  O(m·eps·‖A‖) (Paige 1980), and the extreme Ritz values converge as in exact arithmetic until then
  (Meurant & Strakoš, *Acta Numerica* 2006). Callers that count eigenvalues merge ghost copies
  (:func:`sharpness.linalg.eigen`). Ritz vectors are rebuilt by :meth:`LanczosProcess.ritz_vectors`, which
  replays the recurrence with the recorded α, β: one more pass of m − 1 products.

Deflation: ``locked`` (P × n, orthonormal columns) restricts the run to their orthogonal complement: every new
vector is orthogonalized against them (twice), so T is the Lanczos matrix of (I − YYᵀ) A (I − YYᵀ) on Y⊥.

Breakdown: if β_j ≈ 0 the Krylov space is invariant under A and the Ritz values found so far are exact
eigenvalues; the run stops (:meth:`LanczosProcess.restart` can continue a stored run from a fresh random
vector orthogonal to its basis; T is then block diagonal).

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

from ._operator import Seed, apply, apply_into, make_generator, operator_size, random_block

__all__ = ["LanczosResult", "LanczosProcess", "lanczos", "tridiagonal_eigh", "REORTHOGONALIZATION"]

#: β_j ≤ BREAKDOWN_FACTOR · eps(dtype) · ‖A‖_est counts as an invariant subspace. Kept small on purpose: a
#: genuine β can be tiny relative to ‖A‖ (a Hessian's bulk next to a huge outlier), and missing a true
#: breakdown is harmless (the next vector is then rounding noise orthogonalized against the basis, i.e. an
#: implicit random restart), whereas a false one would truncate the Krylov space.
BREAKDOWN_FACTOR = 100.0
#: The two orthogonalization schemes of a run (module docstring).
REORTHOGONALIZATION = ("full", "local")


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


def _project_out(W: Tensor, Y: Tensor) -> Tensor:
    """W (n, P) with its components along the orthonormal rows of Y (n, k, P) removed, twice; in place.
    The update is one gemv per run (addmv_), which a CPU runs at memory speed, unlike a batched (1, k) @ (k, P)
    product (benchmarks/README.md, "Scale")."""
    for _ in range(2):
        h = torch.bmm(Y, W.unsqueeze(2))[:, :, 0]
        for r in range(W.shape[0]):
            W[r].addmv_(Y[r].T, h[r], alpha=-1)
    return W


def _three_term(W: Tensor, q: Tensor, q_prev: Tensor | None, b_prev: Tensor, locked: Tensor | None,
                alpha: Tensor | None = None, out: Tensor | None = None, in_place: bool = False) -> tuple[Tensor, Tensor]:
    """W − β_{j−1} q_{j−1} (then out of the locked span) − α_j q_j for the rows of W = A q_j, with α_j = q_jᵀW
    unless given (a replay); ``q_prev`` None at the first step (β₀ q₀ = 0). Fused, so no product of a scalar
    and a vector is ever materialized. ``in_place``: W is the caller's own tensor (a fresh product) and is
    updated in place; otherwise the result goes to a new tensor or to ``out`` (a recycled buffer) and A's
    output is only read."""
    if q_prev is None:
        W = W if in_place else (W.clone() if out is None else out.copy_(W))
    elif in_place:
        W.addcmul_(q_prev, b_prev, value=-1)
    else:
        W = torch.addcmul(W, q_prev, b_prev, value=-1, out=out)
    if locked is not None:
        _project_out(W, locked.expand(W.shape[0], -1, -1))
    if alpha is None:
        alpha = torch.bmm(q.unsqueeze(1), W.unsqueeze(2)).reshape(-1)
    W.addcmul_(q, alpha[:, None], value=-1)
    return W, alpha


class LanczosProcess:
    """R independent Lanczos recurrences, advanced one step at a time.

    Each :meth:`step` computes one block product ``A @ V`` (V of shape (P, R_active); a plain ``A @ v`` when
    only one run is active). The one host synchronization per step fetches (α, β, ‖A q‖) for all runs
    together: β decides breakdown.

    Args:
        A: symmetric operator (see :mod:`sharpness.linalg`).
        start: start vectors, shape (P,) or (P, R); each column is normalized (and, with ``locked``,
            first orthogonalized against the locked vectors).
        max_steps: upper bound on the steps of any run (at most P; sizes the stored basis).
        reorthogonalize: ``"full"`` (a stored basis, every vector orthogonalized against all of it) or
            ``"local"`` (the three-term recurrence and nothing stored; module docstring).
        locked: optional (P, n) block with orthonormal columns to deflate: the runs live in its orthogonal
            complement.
        keep_start: whether a ``"local"`` run keeps a copy of its start vectors for :meth:`ritz_vectors` (one
            vector of P per run); ``False`` when only Ritz values will be asked for.

    Memory: ``"full"`` holds R·(max_steps + 3) vectors of P, ``"local"`` 3·R (2·R without ``keep_start``; one
    more for an operator without ``fresh_products``), both plus ``locked`` and the operator's output — except
    that a single local run on an operator with ``matvec_into`` has the products written into its spare
    vector, so it holds three vectors in all, outputs included (plus the start with ``keep_start``).
    """

    def __init__(self, A: Any, start: Tensor, *, max_steps: int, reorthogonalize: str = "full",
                 locked: Tensor | None = None, keep_start: bool = True) -> None:
        if reorthogonalize not in REORTHOGONALIZATION:
            raise ValueError(f"reorthogonalize must be one of {', '.join(REORTHOGONALIZATION)}, got {reorthogonalize!r}")
        P = operator_size(A)
        self.A = A
        self.P = P
        self.dtype: torch.dtype = A.dtype
        self.device = torch.device(A.device)
        self.reorthogonalize = reorthogonalize
        start = start.to(device=self.device, dtype=self.dtype)
        if start.ndim == 1:
            start = start[:, None]
        if start.ndim != 2 or start.shape[0] != P or start.shape[1] < 1:
            raise ValueError(f"start vectors must have shape ({P},) or ({P}, R), got {tuple(start.shape)}")
        self.R = int(start.shape[1])
        self._locked = None
        if locked is not None and locked.shape[1] > 0:
            if locked.ndim != 2 or locked.shape[0] != P:
                raise ValueError(f"locked vectors must have shape ({P}, n), got {tuple(locked.shape)}")
            self._locked = locked.to(device=self.device, dtype=self.dtype).T.contiguous()
        q = start.T
        if self._locked is not None:  # a copy, projected; without it the normalization below makes the copy
            q = _project_out(q.clone(), self._locked.expand(self.R, -1, -1))
        norms = torch.linalg.vector_norm(q, dim=1)
        norms_host = norms.double().cpu().numpy()
        if not np.all(np.isfinite(norms_host)) or np.any(norms_host == 0):
            raise ValueError("start vectors must be finite and nonzero, got a zero or non-finite column")
        self.max_steps = max(1, min(int(max_steps), P - (0 if self._locked is None else self._locked.shape[0])))
        self.num_matvecs = 0
        self._q = q.div(norms[:, None]) if self._locked is None else q.div_(norms[:, None])  # (R, P): next vectors
        # a local run keeps its start for ritz_vectors' replay, unless told no vectors will be asked for
        self._start = self._q.clone() if reorthogonalize == "local" and keep_start else None
        # "full": the basis, allocated once (untouched pages of a CPU allocation cost no memory)
        self._Q = (torch.empty((self.R, self.max_steps, P), dtype=self.dtype, device=self.device)
                   if reorthogonalize == "full" else None)
        # "local": q_{j−1}, made at the first step (β₀ = 0); a spare buffer only for an operator whose output
        # may not be written into (a fresh tensor of P = 5·10⁷ costs ~10× its arithmetic in page faults)
        self._q_prev: Tensor | None = None
        self._fresh = isinstance(A, Tensor) or bool(getattr(A, "fresh_products", False))
        # An operator that can write a product into a given buffer (``matvec_into``) gets the spare one: the
        # three buffers then rotate through every step and no P-vector is allocated or freed after the second.
        self._recycle = reorthogonalize == "local" and self.R == 1 and hasattr(A, "matvec_into")
        # W = A q_j is this step's own tensor (updated in place) for a fresh or recycled product; q_{j−1} then
        # becomes the spare unless a fresh product makes a spare useless
        self._owns_product = self._fresh or self._recycle
        self._keeps_spare = self._recycle or not self._fresh
        self._spare = None
        self._beta_prev = torch.zeros(self.R, dtype=self.dtype, device=self.device)
        self._alphas: list[list[float]] = [[] for _ in range(self.R)]
        self._betas: list[list[float]] = [[] for _ in range(self.R)]  # β after each step (residual norm)
        self._active = [True] * self.R
        self._broken = [False] * self.R
        self._anorm = [0.0] * self.R  # running lower estimate of ‖A‖ per run
        self.eps = float(torch.finfo(self.dtype).eps)

    # -- state ------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """The dimension of the space the runs live in: P minus the locked vectors."""
        return self.P - (0 if self._locked is None else self._locked.shape[0])

    @property
    def stores_basis(self) -> bool:
        return self._Q is not None

    def length(self, r: int = 0) -> int:
        return len(self._alphas[r])

    def active(self, r: int = 0) -> bool:
        return self._active[r]

    def broken(self, r: int = 0) -> bool:
        """Whether run ``r``'s last step ended in an invariant subspace (or exhausted the space)."""
        return self._broken[r]

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
        at j+1 (after :meth:`restart`), and the last entry is the closing residual norm."""
        return np.asarray(self._betas[r], dtype=np.float64)

    def basis(self, r: int = 0) -> Tensor:
        """The run's orthonormal basis Q, shape (P, m) (a view into the stored basis; ``"full"`` runs only)."""
        if self._Q is None:
            raise RuntimeError("a 'local' Lanczos run stores no basis; use ritz_vectors() to rebuild Ritz vectors")
        return self._Q[r, : self.length(r)].T

    def ritz(self, r: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), T-eigenvectors and absolute residual norms of run ``r``."""
        a, b = self._alphas[r], self._betas[r]
        theta, S = tridiagonal_eigh(np.asarray(a), np.asarray(b[:-1]))
        return theta, S, np.abs(b[-1] * S[-1, :]) if b else np.zeros(0)

    def ritz_vectors(self, S: np.ndarray, r: int = 0) -> Tensor:
        """Y = Q S for coefficient columns S (m, k) of run ``r``, shape (P, k), in A's dtype.

        A ``"full"`` run multiplies its stored basis; a ``"local"`` run replays its recurrence from the stored
        start with the recorded α and β (m − 1 products of A, counted in :attr:`num_matvecs`; on a CPU the
        replayed vectors are bit-identical to the first pass), accumulating Y without storing Q.
        """
        m = self.length(r)
        S = np.asarray(S, dtype=np.float64)
        if S.ndim != 2 or S.shape[0] != m:
            raise ValueError(f"expected coefficients of shape ({m}, k), got {S.shape}")
        coef = torch.as_tensor(S, dtype=self.dtype, device=self.device)
        if self._Q is not None:
            return self._Q[r, :m].T @ coef
        if self._start is None:
            raise RuntimeError("this local Lanczos run was made with keep_start=False: it cannot rebuild Ritz vectors")
        # Accumulated as k contiguous rows, one axpy each per step: a (P, k) outer-product update was 7× slower.
        Yt = torch.zeros((S.shape[1], self.P), dtype=self.dtype, device=self.device)
        weights = torch.as_tensor(S, dtype=self.dtype).tolist()  # S rounded to A's dtype, as Python floats: no syncs
        q_prev, q = None, self._start[r : r + 1].clone()
        spare = None  # the buffer free for the next product (recycling) or the next update (non-fresh A)
        # The operations of _local_step with the recorded coefficients (float64 copies of dtype values, so
        # converting them back is exact): on a CPU the replayed vectors are those of the first pass, bit for bit.
        coeffs = torch.tensor([self._alphas[r], [0.0] + self._betas[r][:-1], self._betas[r]], dtype=self.dtype,
                              device=self.device)
        for j in range(m):
            for i, c in enumerate(weights[j]):
                Yt[i].add_(q[0], alpha=c)
            if j == m - 1:
                break
            W = self._product_row(q[0], spare)
            if self._recycle:
                spare = None  # it now holds W
            self.num_matvecs += 1
            W, _ = _three_term(W, q, q_prev, coeffs[1, j].reshape(1, 1), self._locked, coeffs[0, j].reshape(1),
                               None if self._owns_product else spare, in_place=self._owns_product)
            W /= coeffs[2, j]
            q_prev, q, spare = q, W, q_prev if self._keeps_spare else None
        return Yt.T

    def _product_row(self, v: Tensor, spare: Tensor | None) -> Tensor:
        """A v as a (1, P) row: written into ``spare`` (a free (1, P) buffer, or a new one) when the run
        recycles its vectors, else A's own output."""
        if not self._recycle:
            return apply(self.A, v)[None, :].to(self.dtype)
        out = spare[0] if spare is not None else torch.empty(self.P, dtype=self.dtype, device=self.device)
        return apply_into(self.A, v, out)[None, :]

    def release(self) -> None:
        """Free every vector the runs hold (next vectors, q_{j−1}, the spare, the start, a stored basis); the
        recorded α and β stay, so :meth:`ritz` still answers, while stepping and Ritz vectors no longer can.
        An estimator that is done with a run calls it before its next run, so two runs' vectors never coexist."""
        self._q = self._q_prev = self._spare = self._start = self._Q = None
        self._active = [False] * self.R

    # -- iteration --------------------------------------------------------------------------------
    def allow_steps(self, max_steps: int) -> None:
        """Raise :attr:`max_steps` (capped at the space's dimension) so a finished run can be continued, e.g.
        by :func:`~sharpness.linalg.deflated_trace`; a stored basis is reallocated once if it is too small."""
        max_steps = min(int(max_steps), self.dim)
        if max_steps <= self.max_steps:
            return
        if self._Q is not None:
            Q = torch.empty((self.R, max_steps, self.P), dtype=self.dtype, device=self.device)
            Q[:, : self.max_steps] = self._Q
            self._Q = Q
        for r in range(self.R):
            if not self._broken[r] and self.length(r) == self.max_steps:
                self._active[r] = True
        self.max_steps = max_steps

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
        every = len(act) == self.R
        idx = None if every else torch.tensor(act, device=self.device)
        q = self._q if every else self._q[idx]  # (n, P)

        n = len(act)
        W = self._product_row(q[0], self._spare) if n == 1 else apply(self.A, q.T).T.to(self.dtype)
        if self._recycle:
            self._spare = None  # it now holds W
        self.num_matvecs += n
        step = self._full_step if self._Q is not None else self._local_step
        if self._Q is not None:
            a_norm = torch.linalg.vector_norm(W, dim=1)
            W, alpha, beta = step(q, W, j, every, idx)
        else:
            # ‖A q_j‖² = β_{j−1}² + α_j² + β_j² for the three-term recurrence: a pass over P saved (‖A‖_est is a
            # scale for rounding levels, where this identity's own rounding does not matter)
            b_prev = self._beta_prev if every else self._beta_prev[idx]
            W, alpha, beta = step(q, W, j, every, idx)
            a_norm = torch.sqrt(b_prev * b_prev + alpha * alpha + beta * beta)

        # The one host sync per step: β decides breakdown, and T is solved on the host anyway.
        a_host, b_host, an_host = torch.stack([alpha, beta, a_norm]).double().cpu().tolist()
        broke: list[int] = []
        for a_j, b_j, an_j, r in zip(a_host, b_host, an_host, act):
            self._alphas[r].append(a_j)
            self._betas[r].append(b_j)
            self._anorm[r] = max(self._anorm[r], an_j, abs(a_j))
            if not (np.isfinite(a_j) and np.isfinite(b_j)):
                raise FloatingPointError(f"Lanczos produced a non-finite value at step {j + 1} (A @ v overflowed?)")
            if self.length(r) >= self.dim or b_j <= self.rounding_level(r):
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

    def _full_step(self, q: Tensor, W: Tensor, j: int, every: bool,
                   idx: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The new vector W orthogonalized against the stored basis (which gains q), with its α and β."""
        if every:
            self._Q[:, j] = q
        else:
            self._Q[idx, j] = q
        Qa = self._Q[:, : j + 1] if every else self._Q[idx, : j + 1]  # (n, j+1, P)
        # Classical Gram–Schmidt twice against the whole basis ("twice is enough"): the first pass removes
        # the Krylov recurrence's α q_j + β q_{j−1} and the rest; the second repairs the first's rounding.
        h = torch.bmm(Qa, W.unsqueeze(2)).squeeze(2)
        W = W - torch.bmm(h.unsqueeze(1), Qa).squeeze(1)  # out of place: never write into A's output
        h2 = torch.bmm(Qa, W.unsqueeze(2)).squeeze(2)
        W -= torch.bmm(h2.unsqueeze(1), Qa).squeeze(1)
        if self._locked is not None:
            _project_out(W, self._locked.expand(W.shape[0], -1, -1))
        return W, h[:, j] + h2[:, j], torch.linalg.vector_norm(W, dim=1)

    def _local_step(self, q: Tensor, W: Tensor, j: int, every: bool,
                    idx: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The three-term recurrence W − β_{j−1} q_{j−1} − α_j q_j (q_{j−1} is kept, nothing else)."""
        if self._q_prev is None:  # the first step: β₀ q₀ = 0
            self._q_prev = torch.zeros_like(self._q) if not every else None
        q_prev = self._q_prev if every or self._q_prev is None else self._q_prev[idx]
        b_prev = self._beta_prev if every else self._beta_prev[idx]
        # A fresh product (HessianOperator, a dense tensor) is updated in place; otherwise three buffers rotate
        # (q_{j−1} ← q_j, q_j ← new, new ← old q_{j−1}) and A's output is only read.
        spare = None if self._owns_product or not every else self._spare
        W, alpha = _three_term(W, q, q_prev, b_prev[:, None], self._locked, out=spare, in_place=self._owns_product)
        beta = torch.linalg.vector_norm(W, dim=1)
        if every:
            self._spare = q_prev if self._keeps_spare else None
            self._q_prev, self._beta_prev = q, beta
        else:
            self._q_prev[idx], self._beta_prev[idx] = q, beta
        return W, alpha, beta

    def restart(self, r: int, generator: torch.Generator) -> bool:
        """Continue ``"full"`` run ``r`` with a new Krylov block from a random vector orthogonal to its basis.

        Returns ``False`` (and changes nothing) when no room is left: the run is at ``max_steps``, or its
        basis already spans the space numerically.
        """
        if self._Q is None:
            raise RuntimeError("only a 'full' Lanczos run can restart orthogonally to its basis")
        m = self.length(r)
        if m >= self.max_steps or m >= self.dim:
            return False
        v = random_block((self.P,), generator, dtype=self.dtype, device=self.device, distribution="gaussian")
        v0_norm = torch.linalg.vector_norm(v)
        Q = self._Q[r, :m]
        for _ in range(2):
            v -= Q.T @ (Q @ v)
        if self._locked is not None:
            _project_out(v.unsqueeze(0), self._locked.unsqueeze(0))
        v_norm = torch.linalg.vector_norm(v)
        # A random vector keeps a fraction ~sqrt((P−m)/P) of its norm; far less means the basis spans R^P.
        if float(v_norm) <= math.sqrt(self.eps) * float(v0_norm):
            return False
        self._q[r] = v / v_norm
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
