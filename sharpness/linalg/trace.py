"""Stochastic trace estimators: Hutchinson and Hutch++.

Hutchinson (1989): for random z with E[z zᵀ] = I, E[zᵀ A z] = tr(A). With m independent probes,

    t̂ = (1/m) Σ_i z_iᵀ A z_i,    stderr = std({z_iᵀ A z_i}) / √m   (sample std, ddof = 1).

Rademacher probes (±1 entries) have variance 2(‖A‖_F² − Σ_i a_ii²), so they are exact for a diagonal A;
Gaussian probes have variance 2‖A‖_F².

Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021) spends a third of the m matvecs on a sketch S, takes an
orthonormal basis Q of A S, computes tr(Qᵀ A Q) exactly (another third), and estimates the trace of the
deflated remainder (I − QQᵀ) A (I − QQᵀ) by Hutchinson with the last third. The identity
tr(A) = tr(QᵀAQ) + tr((I−QQᵀ)A(I−QQᵀ)) holds for any orthonormal Q, so the estimate is unbiased, exact when
rank(A) ≤ m/3, and its error falls like 1/m (instead of 1/√m) for a fast-decaying spectrum.

Uncertainty. Hutchinson's estimate is a mean of m i.i.d. samples, so stderr = s/√m (s the sample std) and
(t̂ − tr A)/stderr is approximately Student-t with m − 1 degrees of freedom. Hutch++ inherits this exactly
from its last third: given the sketch, t̂ − tr(A) = (Hutchinson estimate of tr B) − tr(B) with
B = (I − QQᵀ) A (I − QQᵀ), because tr(QᵀAQ) + tr(B) = tr(A) for every Q; the sketched part adds no error, only
removes variance. So its stderr is the residual probes' s/√(probes) and its t has probes − 1 degrees of
freedom, conditionally on Q and so also unconditionally. With few probes the t quantile matters: at 10
residual probes (``hutchpp_trace(A, 30)``) value ± 1.96·stderr covers tr(A) only ~92 % of the time, the
t interval of :meth:`TraceEstimate.interval` 95 % (tests/test_linalg_trace.py measures both).

Lanczos-deflated Hutchinson (:func:`deflated_trace`): s steps of Lanczos with full reorthogonalization from
one random start give an orthonormal Q (P × s) *and* T = QᵀAQ, so tr(QᵀAQ) = Σ α_j costs nothing beyond the s
products that built Q; the remaining m − s products are Hutchinson probes of (I − QQᵀ) A (I − QQᵀ). The same
trace identity makes it unbiased for any Q independent of the probes (Q comes from its own random start), and
a Krylov space of dimension s holds the top of the spectrum far better than Hutch++'s one-shot sketch A·S of
s/2 columns, which costs 2·(s/2) products for the same deflation dimension, s/2 (Chen & Hallman, "Krylov-aware
stochastic trace estimation", SIMAX 2023, analyse this family). The uncertainty argument above carries over:
given Q the error is the residual Hutchinson's, so stderr = s/√(probes) with probes − 1 degrees of freedom.
Its s products are sequential single vectors; Hutch++'s are blocks (cheaper per product for streamed chunks,
see benchmarks/hvp_blocks.py).

Probes are applied in blocks ``A @ Z`` with Z of shape (P, block_size): one block product per block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import scipy.stats
import torch
from torch import Tensor

from ._operator import (
    DISTRIBUTIONS,
    Seed,
    apply,
    check_block_size,
    check_memory,
    make_generator,
    operator_size,
    random_block,
    random_columns,
)
from .lanczos import LanczosProcess
from ..numerics.stats import mean_stderr as _mean_stderr

__all__ = ["TraceEstimate", "hutchinson_trace", "hutchpp_trace", "deflated_trace"]

#: Share of a :func:`deflated_trace` budget spent on the Lanczos basis (the rest: residual probes); chosen on
#: the peer benchmark's two problems (benchmarks/README.md, "Trace").
DEFLATION_SHARE = 2 / 3


@dataclass(frozen=True)
class TraceEstimate:
    """A trace estimate with its uncertainty and cost.

    Attributes:
        value: the estimate of tr(A).
        stderr: standard error of ``value``: sample std of the per-probe estimates / √(probes); for Hutch++,
            of its Hutchinson part, which is the whole error given the sketch (module docstring). 0 when exact.
        num_probes: random probes in the (final) Hutchinson average.
        num_matvecs: products with A in total.
        method: ``"hutchinson-rademacher"``, ``"hutchinson-gaussian"``, ``"hutch++-rademacher"``, ...
    """

    value: float
    stderr: float
    num_probes: int
    num_matvecs: int
    method: str

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The ``level`` confidence interval value ± q·stderr, q the Student-t quantile with ``num_probes − 1``
        degrees of freedom (module docstring; 2.26 for 10 probes at 95 %, → 1.96 for many).

        Example:
            >>> lo, hi = TraceEstimate(10.0, 1.0, 10, 10, "hutchinson-rademacher").interval()
            >>> round(lo, 3), round(hi, 3)
            (7.738, 12.262)
        """
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        q = float(scipy.stats.t.ppf(0.5 + level / 2, max(self.num_probes - 1, 1)))
        return self.value - q * self.stderr, self.value + q * self.stderr

    def to_dict(self) -> dict:
        return {
            "value": self.value,
            "stderr": self.stderr,
            "num_probes": self.num_probes,
            "num_matvecs": self.num_matvecs,
            "method": self.method,
        }


def _check_distribution(distribution: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")


def _setup(A: Any, name: str, count: int, minimum: int, why: str, distribution: str, block_size: int | None,
           block_count: Any, memory: int | None, held: Any = lambda m: 0) -> tuple[int, int]:
    """Checks shared by the estimators: P, ``count`` ≥ ``minimum``, the distribution; returns P and the block
    size (at most ``block_count(count)`` columns, Z and A @ Z within ``memory`` bytes (default 1 GiB) less the
    ``held(count)`` vectors of P the estimator keeps besides)."""
    P = operator_size(A)
    if isinstance(count, bool) or not isinstance(count, int) or count < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} ({why}), got {count!r}")
    _check_distribution(distribution)
    check_memory(memory)
    itemsize = torch.empty((), dtype=A.dtype).element_size()
    budget = None if memory is None else memory - held(count) * P * itemsize
    return P, check_block_size(block_size, block_count(count), 2 * P * itemsize, budget_bytes=budget)



def _quadratic_forms(
    A: Any,
    n: int,
    block: int,
    generator: torch.Generator,
    distribution: str,
    project: Tensor | None = None,
) -> Tensor:
    """zᵀ A z for n random probes, computed ``block`` at a time; with ``project`` = Q, z ↦ (I − QQᵀ) z."""
    P = A.shape[0]
    out = []
    for start in range(0, n, block):
        b = min(block, n - start)
        Z = random_columns(P, b, generator, dtype=A.dtype, device=A.device, distribution=distribution)
        if project is not None:
            Z = Z - project @ (project.T @ Z)
        out.append((Z * apply(A, Z)).sum(dim=0))  # stays on the device: one host sync at the very end
    return torch.cat(out)


def hutchinson_trace(
    A: Any,
    num_probes: int = 100,
    *,
    seed: Seed = 0,
    distribution: str = "rademacher",
    block_size: int | None = None,
    memory: int | None = None,
) -> TraceEstimate:
    """Hutchinson's estimate of tr(A) from ``num_probes`` random probes (Hutchinson 1989).

    Args:
        A: square operator: ``A.shape == (P, P)``, ``A.dtype``, ``A.device``, ``A @ V`` for V of shape (P, K).
        num_probes: m ≥ 2 (two are needed for a standard error). Cost: m matvecs.
        seed: int, ``torch.Generator`` or ``None``.
        distribution: ``"rademacher"`` (default; lower variance, exact for diagonal A) or ``"gaussian"``.
        block_size: probes per block product ``A @ Z``; default: as many as fit in ``memory``.
        memory: bytes for the probes Z and A @ Z (2 vectors of P per probe; default 1 GiB).

    Returns:
        :class:`TraceEstimate` with ``value`` = mean of zᵀAz and ``stderr`` = sample std / √m.

    Example:
        >>> A = torch.diag(torch.arange(1.0, 5.0, dtype=torch.float64))
        >>> hutchinson_trace(A, 10, seed=0).value   # Rademacher probes are exact on a diagonal
        10.0
    """
    P, block = _setup(A, "num_probes", num_probes, 2, "a standard error needs two", distribution, block_size,
                      lambda m: m, memory)
    generator = make_generator(seed, A.device)
    samples = _quadratic_forms(A, num_probes, block, generator, distribution)
    value, stderr = _mean_stderr(samples)
    return TraceEstimate(value, stderr, num_probes, num_probes, f"hutchinson-{distribution}")


def hutchpp_trace(
    A: Any,
    num_matvecs: int = 102,
    *,
    seed: Seed = 0,
    distribution: str = "rademacher",
    block_size: int | None = None,
    memory: int | None = None,
) -> TraceEstimate:
    """Hutch++ estimate of tr(A) with a budget of ``num_matvecs`` products (Meyer et al. 2021).

    With k = ⌊m/3⌋: S random (P × k); Q = orth(A S); t₁ = tr(Qᵀ A Q); and Hutchinson with the remaining
    m − 2k probes on (I − QQᵀ) A (I − QQᵀ). Returns t₁ + that estimate. Memory: Q is P × k.

    Args:
        A: square operator: ``A.shape == (P, P)``, ``A.dtype``, ``A.device``, ``A @ V`` for V of shape (P, K).
        num_matvecs: m ≥ 6 in total (k ≥ 2 sketch columns and ≥ 2 residual probes for a standard error).
        seed: int, ``torch.Generator`` or ``None``.
        distribution: ``"rademacher"`` (default) or ``"gaussian"``, for both the sketch and the probes.
        block_size: columns per block product; default as many as fit in ``memory``.
        memory: bytes for the probe blocks beside the 3k vectors of the sketch, its QR and Q (default: 1 GiB
            for the blocks).

    Returns:
        :class:`TraceEstimate`; ``stderr`` comes from the residual Hutchinson part (sample std / √probes) and
        ``num_probes`` counts those probes.
    """
    P, block = _setup(A, "num_matvecs", num_matvecs, 6, "sketch of >= 2 and >= 2 probes", distribution, block_size,
                      lambda m: max(m // 3, m - 2 * (m // 3)), memory, lambda m: 3 * (m // 3))
    k = num_matvecs // 3
    num_probes = num_matvecs - 2 * k
    generator = make_generator(seed, A.device)

    sketch = []
    for start in range(0, k, block):
        b = min(block, k - start)
        S = random_columns(P, b, generator, dtype=A.dtype, device=A.device, distribution=distribution)
        sketch.append(apply(A, S))
    # Householder QR: Q has orthonormal columns even if A S is rank deficient (low-rank A), and the
    # trace identity above needs nothing more.
    Q, _ = torch.linalg.qr(torch.cat(sketch, dim=1), mode="reduced")
    k_q = Q.shape[1]  # min(k, P): with k >= P, Q spans R^P and the remainder is 0
    exact = sum((Q[:, s : s + block] * apply(A, Q[:, s : s + block])).sum() for s in range(0, k_q, block))
    samples = _quadratic_forms(A, num_probes, block, generator, distribution, project=Q)
    rest, stderr = _mean_stderr(samples)
    value = float(torch.as_tensor(exact).double().cpu()) + rest
    return TraceEstimate(value, stderr, num_probes, k + k_q + num_probes, f"hutch++-{distribution}")


def deflated_trace(
    A: Any,
    num_matvecs: int = 99,
    *,
    deflation_steps: int | None = None,
    seed: Seed = 0,
    distribution: str = "rademacher",
    block_size: int | None = None,
    lanczos: LanczosProcess | None = None,
    memory: int | None = None,
) -> TraceEstimate:
    """Lanczos-deflated Hutchinson estimate of tr(A) with a budget of ``num_matvecs`` products (module docstring).

    s = ``deflation_steps`` (default ⌊⅔·m⌋, at most P) Lanczos steps from a Gaussian start build Q and
    tr(QᵀAQ) = Σ α_j; the other m − s products are Hutchinson probes of (I − QQᵀ) A (I − QQᵀ). A Krylov space
    that becomes invariant (A of low rank) restarts from a random vector orthogonal to Q; once Q spans R^P the
    estimate is exact (stderr 0). Memory: Q is P × s.

    Args:
        A: symmetric operator: ``A.shape == (P, P)``, ``A.dtype``, ``A.device``, ``A @ v`` and ``A @ V``.
        num_matvecs: m, with m − s ≥ 2 residual probes unless s reaches P.
        deflation_steps: s ≥ 1; default ⌊``DEFLATION_SHARE``·m⌋.
        seed: int, ``torch.Generator`` or ``None``.
        distribution: of the residual probes, ``"rademacher"`` (default) or ``"gaussian"``.
        block_size: residual probes per block product; default as for :func:`hutchinson_trace`.
        lanczos: a Lanczos run of the same A already made, e.g. ``extreme_eigenvalues(A, ...,
            keep_lanczos=True)[0].lanczos``: it is extended to s steps (or used whole, if longer) instead of
            starting a new one, so its products are not paid twice. Its start must not depend on this call's
            probes (it never does: they are drawn here, from ``seed``), which is all the unbiasedness needs.
            The process is advanced in place.
        memory: bytes for the residual probe blocks beside the basis Q (default: 1 GiB for the blocks).

    Returns:
        :class:`TraceEstimate` with method ``"lanczos-deflated-<distribution>"``; ``stderr`` from the residual
        probes, ``num_probes`` their count; ``num_matvecs`` the products this call made (a reused run's
        earlier steps not included).

    Example:
        >>> A = torch.diag(torch.arange(1.0, 9.0, dtype=torch.float64))
        >>> est = deflated_trace(A, 12, deflation_steps=8, seed=0)   # s = P: exact
        >>> round(est.value, 9), est.stderr
        (36.0, 0.0)
    """
    P = operator_size(A)
    if isinstance(num_matvecs, bool) or not isinstance(num_matvecs, int) or num_matvecs < 3:
        raise ValueError(f"num_matvecs must be an int >= 3, got {num_matvecs!r}")
    _check_distribution(distribution)
    s = int(DEFLATION_SHARE * num_matvecs) if deflation_steps is None else deflation_steps
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise ValueError(f"deflation_steps must be an int >= 1, got {deflation_steps!r}")
    s = min(s, P)
    check_memory(memory)
    probes = num_matvecs - s
    if s < P and probes < 2:
        raise ValueError(f"num_matvecs − deflation_steps must be >= 2 residual probes (a standard error needs two), "
                         f"got {num_matvecs} − {s}")
    generator = make_generator(seed, A.device)
    if lanczos is None:
        proc = LanczosProcess(A, random_block((P,), generator, dtype=A.dtype, device=A.device, distribution="gaussian"),
                              max_steps=s)
    else:
        if lanczos.A is not A or lanczos.R != 1:
            raise ValueError("lanczos must be a single Lanczos run of this same operator A")
        proc = lanczos
        proc.allow_steps(s)
    done_before = proc.num_matvecs
    while proc.length() < s:
        if proc.active():
            proc.step()
        elif not proc.restart(0, generator):  # the basis spans R^P numerically
            break
    Q = proc.basis()
    exact = float(proc.alphas().sum())  # tr(QᵀAQ) = tr(T) under full reorthogonalization (T block diagonal)
    if Q.shape[1] >= P:
        return TraceEstimate(exact, 0.0, 0, proc.num_matvecs - done_before, f"lanczos-deflated-{distribution}")
    itemsize = torch.empty((), dtype=A.dtype).element_size()
    block = check_block_size(block_size, probes, 2 * P * itemsize,
                             budget_bytes=None if memory is None else memory - (Q.shape[1] + 3) * P * itemsize)
    samples = _quadratic_forms(A, probes, block, generator, distribution, project=Q)
    rest, stderr = _mean_stderr(samples)
    return TraceEstimate(exact + rest, stderr, probes, proc.num_matvecs - done_before + probes,
                         f"lanczos-deflated-{distribution}")
