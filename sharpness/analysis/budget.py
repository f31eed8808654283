"""One memory budget for an analysis: the chunk graph, the estimators' vectors and the fixed copies of θ.

``analyze(memory=...)`` / ``sharpness analyze --memory 8GiB`` (a bare number is bytes, in both) is the bytes the analysis itself may allocate
beyond the user's model (default :data:`DEFAULT_BUDGET`, 8 GiB). It is split once, before any work:

* a quarter (:data:`GRAPH_SHARE`) for one chunk's second-order graph, from which the objective picks its chunk
  size (:mod:`sharpness.objective.memory`; with ``chunk_size`` given the share is still reserved);
* :data:`FIXED_VECTORS` vectors of P for θ, a product's output and the gradients inside it;
* the rest for the estimators' own vectors, each stating what it holds as a count of P-vectors:

  ============================  ==============================================================================
  λ_max / λ_min (Lanczos)       stored basis when it fits ("full"), else the three-term recurrence ("local"):
                                4 + k (q_j, q_{j−1}, a spare, the start kept for the Ritz vectors, and the
                                k found eigenvectors; k = top + bottom); 3k + 8 when an end asks for k ≥ 2,
                                whose verification runs also hold the locked copy of the accepted vectors
                                and replay Ritz vectors (:func:`lanczos_vectors`)
  trace, Hutchinson             2 per probe in a block (Z and A Z), at least one probe
  trace, Hutch++                3k (the sketch, its copy in QR and Q; k = ⌊m/3⌋) + 2 per probe
  trace, Lanczos-deflated       the deflation basis s = ⌊⅔ m⌋ + 3, + 2 per probe
  density (SLQ)                 (m + 2) per run with a stored basis, else 3 per run ("local")
  ε-sharpness, ascent           8 (θ, the box bounds, δ, its gradient, the best point, two search buffers)
  ε-sharpness, paper mode       scipy's L-BFGS-B on float64: (2·10 + 5) + 2 float64 vectors (x, gradient),
                                + 2 in the analysis dtype
  ε-sharpness in a subspace     p columns of the random basis A ∈ R^{P×p} and its QR factor, + 8
  worst/average-case sharpness  8
  ============================  ==============================================================================

A request whose smallest form does not fit is refused in one line before the first product, naming the
estimator and the smallest budget that would fit. The counts are what the code holds at its peak; the
scale benchmark (benchmarks/scale_params.py) checks them against sampled peak RSS.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import InputError

#: Bytes an analysis may allocate when ``memory`` is not given.
DEFAULT_BUDGET = 8 * 2**30
#: Share of the budget for one chunk's second-order graph (8 GiB → 2 GiB, the objective's own default).
GRAPH_SHARE = 0.25
#: P-vectors every analysis holds: θ, a product's output and the gradients a product makes.
FIXED_VECTORS = 3
#: P-vectors of the first-order maximizers (ε ascent, worst/average-case sharpness) at their peak.
ASCENT_VECTORS = 8
#: L-BFGS-B's history length in paper-mode ε-sharpness (scipy's default ``maxcor``).
LBFGS_HISTORY = 10

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
#: A bare number below this many bytes is refused: ``memory=8`` is 8 bytes, surely meant as ``"8GiB"``.
BARE_MINIMUM = 2**20


def lanczos_vectors(top_k: int, bottom_k: int) -> int:
    """P-vectors a local Lanczos eigenvalue run holds at its peak (:mod:`sharpness.linalg.eigen`, "Memory")."""
    k = top_k + bottom_k
    return 3 * k + 8 if max(top_k, bottom_k) >= 2 else 4 + k


def parse_memory(value: float | int | str | None) -> int | None:
    """Bytes from ``"8GiB"``, ``"512MiB"``, ``"2GB"``, ``"300B"`` or a bare number of bytes (``8 * 2**30`` or
    ``"8589934592"``), the same for ``analyze(memory=)``, ``--memory`` and the estimators' ``memory=``;
    ``None`` stays. A bare number below 1 MiB is refused with the unit it probably lacks."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(f"expected memory as a number of bytes or a size like 8GiB, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        if match is None or match.group(2).lower() not in _UNITS:
            raise InputError(f"expected memory as a number of bytes or a size like 8GiB or 512MiB, got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = number * _UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise InputError(f"expected a positive memory size, got {value!r}")
    if unit == "" and size < BARE_MINIMUM:
        raise InputError(f"expected memory in bytes (at least 1MiB as a bare number) or with a unit, got {value!r}: "
                         f"{int(size)} bytes cannot hold an analysis; write {value}GiB for gibibytes")
    return int(size)


def graph_bytes(total: int | None) -> int:
    """The chunk graph's share of a budget of ``total`` bytes (``None``: :data:`DEFAULT_BUDGET`)."""
    return int((DEFAULT_BUDGET if total is None else total) * GRAPH_SHARE)


#: P-vectors (float64) scipy's L-BFGS-B holds for paper-mode ε-sharpness: (2·maxcor + 5) of workspace, x and g.
LBFGS_FLOAT64_VECTORS = 2 * LBFGS_HISTORY + 5 + 2


def format_bytes(n: float) -> str:
    """``n`` bytes in GiB (MiB below 1 GiB), rounded up so a quoted budget is enough."""
    if n >= 2**30:
        return f"{math.ceil(n / 2**30 * 10) / 10:g}GiB"
    return f"{math.ceil(n / 2**20):d}MiB"


@dataclass(frozen=True)
class MemoryPlan:
    """How an analysis's budget is split (bytes): ``graph`` for the objective's chunk, ``fixed`` for θ and a
    product, ``vectors`` for each estimator's own vectors (estimators run one after another, so each may use
    all of it)."""

    total: int
    graph: int
    fixed: int
    vectors: int
    num_params: int
    itemsize: int

    @classmethod
    def split(cls, total: int | None, num_params: int, itemsize: int) -> "MemoryPlan":
        total = DEFAULT_BUDGET if total is None else int(total)
        graph = graph_bytes(total)
        fixed = FIXED_VECTORS * num_params * itemsize
        return cls(total, graph, fixed, total - graph - fixed, num_params, itemsize)

    def bytes_of(self, vectors: float, float64_vectors: float = 0.0) -> int:
        """Bytes of ``vectors`` P-vectors in the analysis dtype plus ``float64_vectors`` in float64."""
        return int(math.ceil((vectors * self.itemsize + float64_vectors * 8) * self.num_params))

    def require(self, what: str, vectors: float, float64_vectors: float = 0.0) -> None:
        """Refuse, before any work, an estimator whose smallest form holds more than the vectors' share."""
        need = self.bytes_of(vectors, float64_vectors)
        if need > self.vectors:
            smallest = (need + self.fixed) / (1 - GRAPH_SHARE)
            raise InputError(
                f"memory: {what} holds {format_bytes(need)} of vectors at P = {self.num_params:,}, more than "
                f"--memory {format_bytes(self.total)} leaves for them ({format_bytes(max(self.vectors, 0))}); "
                f"expected --memory {format_bytes(smallest)} or more")
