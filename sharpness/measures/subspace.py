"""The random subspace A ∈ R^{P×p} of ε-sharpness, held whole or regenerated tile by tile from generator states.

A has i.i.d. N(0, 1/P) entries drawn column by column in float64 from one ``torch.Generator``
(:func:`~sharpness.measures.epsilon.random_subspace`). Held whole with its reduced QR it costs 2p vectors of P
(p = 100 at P = 124 M in float32: ≈ 99 GB). :class:`GeneratedBasis` holds none of it: only the generator's
state before every *piece* of every column, and regenerates A one row tile at a time.

**Why the pieces give the same numbers.** ``torch.randn(n)`` on the CPU fills n uniforms in order and turns
each group of 16 into normals (Box–Muller); a last group shorter than 16 is redrawn as a fresh 16. So a
column drawn as pieces of sizes that are multiples of 16, the last one ≥ 16, consumes the generator exactly
as one draw of the column and yields the same bits (tests/test_measures_epsilon_subspace.py checks this
against :func:`~sharpness.measures.epsilon.random_subspace` with ``torch.equal``). Saving the state before
each piece makes any row tile A[r₀:r₁, :] reproducible on its own, for p draws of r₁ − r₀ normals.

**What a tile pass gives.** With the row tiles A_t (``rows`` × p, the last one up to 2·``rows`` − 1 rows):

    A y   = [A_1 y; A_2 y; …],        Aᵀg = Σ_t A_tᵀ g_t,        AᵀA = Σ_t A_tᵀ A_t,

each one pass over the tiles, holding one tile in the analysis dtype and one piece in float64. A pass draws
P·p normals, as the first draw did. The projection A⁺θ = (AᵀA)⁻¹Aᵀθ comes from the normal equations (Cholesky
in float64 of the p × p Gram matrix) instead of a QR of A: the same least-squares solution, with a rounding
error of order κ(A)²·u instead of κ(A)·u. For a Gaussian P × p matrix κ(A) ≈ (1 + √(p/P)) / (1 − √(p/P))
(Davidson & Szarek 2001), 1.13 at p/P = 10⁻³, so the difference is at the rounding level where this path is
used (P ≫ p). σ_max(A) = √λ_max(AᵀA).

**Cost, in passes over A** (one pass = P·p float64 normals, ``torch.randn``'s speed on one core; ``draws``
counts them in columns, p per pass): building the states 1 pass (once per A: it is cached); AᵀA, Aᵀθ and the
gradient at θ projected, Aᵀ∇f(θ), 1 pass together (AᵀA is kept for later calls); each loss-and-gradient
evaluation F(y) = f(θ + Ay), ∇_y F = Aᵀ∇f away from y = 0 2 passes (at y = 0 none: f(θ) and Aᵀ∇f(θ) are known
from the set-up); each Hessian product of the spectral start 2 passes; A y* once at the end 1 pass.
"""

from __future__ import annotations

import math
import torch
from torch import Tensor

from ..analysis.budget import ASCENT_VECTORS, SUBSPACE_VECTORS, TILE_VECTORS, format_bytes
from ..errors import InputError

#: Rows of a tile are a multiple of this: torch.randn turns uniforms into normals in groups of 16.
PIECE = 16


def tile_bounds(numel: int, rows: int) -> list[tuple[int, int]]:
    """Row ranges [(r₀, r₁), …] covering 0…numel in tiles of ``rows`` (a multiple of 16); a remainder of fewer
    than 16 rows joins the last tile, so that every tile but the last is a multiple of 16, the last one has
    ≥ 16 rows (or all of them), and no tile has more than ``rows`` + 15."""
    if rows % PIECE or rows < PIECE:
        raise ValueError(f"tile rows must be a positive multiple of {PIECE}, got {rows}")
    starts = list(range(0, numel, rows))
    if len(starts) > 1 and numel - starts[-1] < PIECE:
        starts.pop()
    return [(r0, starts[t + 1] if t + 1 < len(starts) else numel) for t, r0 in enumerate(starts)]


def tile_bytes(rows: int, dim: int, itemsize: int) -> int:
    """The most a pass holds beside its output: a tile of ``rows`` + 15 rows × p in the analysis dtype and one
    float64 piece of as many normals."""
    return (rows + PIECE - 1) * (dim * itemsize + 8)


def smallest_rows(numel: int, dim: int) -> int:
    """The smallest tile: one column's worth of entries, ⌈P/p⌉ rows rounded up to a multiple of 16."""
    return PIECE * -(-numel // (PIECE * dim))


def subspace_rows(numel: int, dim: int, itemsize: int, memory: int | None) -> int | None:
    """How ε-sharpness holds A within ``memory`` bytes (the estimator's share; :mod:`sharpness.analysis.budget`).

    None: whole, with its QR (``memory`` is None, or the 2p + 8 vectors of P fit: the stored path).
    Otherwise the rows of a :class:`GeneratedBasis` tile: as many as fit beside the
    :data:`~sharpness.analysis.budget.SUBSPACE_VECTORS` P-vectors of the evaluations, at most
    :data:`~sharpness.analysis.budget.TILE_VECTORS` P-vectors' worth (a pass draws P·p normals whatever the tile, so a
    larger tile would only hold more). A budget without room for the smallest tile (:func:`smallest_rows`) is
    refused with the bytes that would fit."""
    vector = numel * itemsize
    if memory is None or (ASCENT_VECTORS + 2 * dim) * vector <= memory:
        return None
    room = memory - SUBSPACE_VECTORS * vector
    rows = (room // (dim * itemsize + 8) - (PIECE - 1)) // PIECE * PIECE
    smallest = smallest_rows(numel, dim)
    if rows < smallest:
        need = SUBSPACE_VECTORS * vector + tile_bytes(smallest, dim, itemsize)
        raise InputError(
            f"memory: ε-sharpness in a subspace of p = {dim} at P = {numel:,} holds {SUBSPACE_VECTORS} vectors of P and "
            f"a tile of A of one column's worth ({format_bytes(need)}), more than memory={int(memory)} bytes "
            f"({format_bytes(max(memory, 0))}); expected memory={need} bytes or more")
    return min(rows, max(smallest, PIECE * (TILE_VECTORS * numel // (PIECE * dim))))


class GeneratedBasis:
    """A = ``random_subspace(numel, dim, seed)`` as generator states; ``A @ y``, ``A.T @ g``, AᵀA by row tiles.

    Args:
        numel: P, the number of parameters (rows of A).
        dim: p, the columns of A.
        seed: the seed of the one generator A is drawn from, column by column.
        dtype, device: those of the analysis: a tile is held, and products are returned, in them.
        rows: rows per tile (a multiple of 16); a tile holds rows·p entries and the draw one float64 piece
            of ``rows`` (the last tile up to 2·rows − 1).

    It keeps one float64 buffer of a tile's rows for the pieces. Building it draws A once (1 pass) to record
    the generator's state before each piece; ``end_state`` is the
    generator's state after the whole draw, where the random starts continue. ``draws`` counts the column
    pieces drawn, in whole columns (p per pass over A).
    """

    def __init__(self, numel: int, dim: int, seed: int, dtype: torch.dtype, device: torch.device, rows: int) -> None:
        self.shape, self.dtype, self.device = (numel, dim), dtype, torch.device(device)
        self.bounds = tile_bounds(numel, rows)
        self.rows = rows
        self.scale = 1.0 / math.sqrt(numel)
        gen = torch.Generator().manual_seed(seed)
        # One float64 buffer for every piece: drawing into fresh tensors between the small state tensors below
        # fragments the heap (each freed piece is a hole just too small for the next), tens of GB at P = 49 M.
        self._piece = torch.empty(max(r1 - r0 for r0, r1 in self.bounds), dtype=torch.float64)
        # states[t][j]: the generator before tile t's piece of column j (the draw order is column by column)
        self.states: list[list[Tensor]] = [[] for _ in self.bounds]
        for _ in range(dim):
            for t, (r0, r1) in enumerate(self.bounds):
                self.states[t].append(gen.get_state())
                torch.randn(r1 - r0, generator=gen, dtype=torch.float64, out=self._piece[: r1 - r0])
        self.end_state = gen.get_state()
        self.draws = float(dim)
        self._gen = torch.Generator()
        self.gram: Tensor | None = None  # AᵀA, (p, p) float64, from the first project()

    def tile(self, t: int) -> Tensor:
        """A[r₀:r₁, :] for tile t, ``(r₁ − r₀, p)`` in the analysis dtype: bit for bit those rows of A."""
        r0, r1 = self.bounds[t]
        out = torch.empty(r1 - r0, self.shape[1], dtype=self.dtype, device=self.device)
        piece = self._piece[: r1 - r0]
        for j, state in enumerate(self.states[t]):
            self._gen.set_state(state)
            out[:, j] = torch.randn(r1 - r0, generator=self._gen, dtype=torch.float64, out=piece).mul_(self.scale)
        self.draws += (r1 - r0) / self.shape[0] * self.shape[1]
        return out

    def __matmul__(self, y: Tensor) -> Tensor:
        """A y for y of shape ``(p,)`` or ``(p, m)``; y = 0 returns zeros without drawing."""
        out = torch.zeros((self.shape[0], *y.shape[1:]), dtype=self.dtype, device=self.device)
        if not bool(torch.any(y)):
            return out
        y = y.to(self.dtype)
        for t, (r0, r1) in enumerate(self.bounds):
            out[r0:r1] = self.tile(t) @ y
        return out

    def rmatmul(self, g: Tensor) -> Tensor:
        """Aᵀ g for g of shape ``(P,)`` or ``(P, m)``, summed over the tiles in the analysis dtype."""
        out = torch.zeros((self.shape[1], *g.shape[1:]), dtype=self.dtype, device=self.device)
        g = g.to(self.dtype)
        for t, (r0, r1) in enumerate(self.bounds):
            out += self.tile(t).T @ g[r0:r1]
        return out

    @property
    def T(self) -> "_Transposed":  # noqa: N802  (as Tensor.T)
        return _Transposed(self)

    def project(self, theta: Tensor, grad: Tensor) -> tuple[Tensor, float, Tensor]:
        """(A⁺θ in the analysis dtype, σ_max(A), Aᵀ grad) in one pass: A⁺θ = (AᵀA)⁻¹Aᵀθ by Cholesky,
        σ_max = √λ_max(AᵀA), and the gradient at θ projected (for y = 0) while the tiles are drawn anyway.

        AᵀA (each tile's in the analysis dtype, summed in float64) is computed in the first call's pass and
        kept."""
        p = self.shape[1]
        gram = torch.zeros(p, p, dtype=torch.float64, device=self.device) if self.gram is None else None
        at_theta = torch.zeros(p, dtype=self.dtype, device=self.device)
        at_grad = torch.zeros(p, dtype=self.dtype, device=self.device)
        theta, grad = theta.to(self.dtype), grad.to(self.dtype)
        for t, (r0, r1) in enumerate(self.bounds):
            a = self.tile(t)
            if gram is not None:
                gram += (a.T @ a).double()
            at_theta += a.T @ theta[r0:r1]
            at_grad += a.T @ grad[r0:r1]
            del a  # before the next tile is drawn: one tile at a time
        if gram is not None:
            self.gram = (gram + gram.T) / 2
        chol = torch.linalg.cholesky(self.gram)
        centre = torch.cholesky_solve(at_theta.double().unsqueeze(1), chol).squeeze(1)
        return centre.to(self.dtype), math.sqrt(float(torch.linalg.eigvalsh(self.gram)[-1])), at_grad


class _Transposed:
    """Aᵀ for a :class:`GeneratedBasis` A: only ``Aᵀ @ g``."""

    def __init__(self, basis: GeneratedBasis) -> None:
        self.basis = basis

    def __matmul__(self, g: Tensor) -> Tensor:
        return self.basis.rmatmul(g)
