"""What every estimator in :mod:`sharpness.linalg` needs from an operator, checked in one place.

The operator contract is deliberately tiny: ``A.shape == (P, P)``, ``A.dtype`` (floating point), ``A.device``
and ``A @ v`` for ``v`` of shape ``(P,)`` or ``(P, K)``. A dense :class:`torch.Tensor` satisfies it, and so does
:class:`sharpness.hessian.HessianOperator`. ``A`` is assumed symmetric; nothing here can afford to check that.
An operator may also offer ``A.matvec_into(v, out)``: ``A @ v`` for one vector, written into ``out`` (P,) and
returned. Lanczos then recycles its vectors as the products' outputs instead of allocating one per product.

Randomness enters only through a ``seed`` (an ``int``, 0 by default as everywhere in the public API, so a call
repeats its numbers; a :class:`torch.Generator`; or ``None`` for fresh entropy, an explicit choice); library code
never touches the global RNG.
"""

from __future__ import annotations

from typing import Any, Union

import torch
from torch import Tensor

#: What the public functions accept as ``seed=``.
Seed = Union[int, torch.Generator, None]

DISTRIBUTIONS = ("rademacher", "gaussian")
#: Bytes an estimator's own vectors (a Lanczos basis, probe blocks) may take when no ``memory`` is given.
DEFAULT_MEMORY = 2 * 2**30
#: Bytes of probe blocks (trace) or lock-stepped runs (density) when no ``memory`` is given.
DEFAULT_BLOCK_MEMORY = 2**30


def operator_size(A: Any) -> int:
    """Check the operator contract and return P; raise ``ValueError`` saying what arrived otherwise."""
    shape = getattr(A, "shape", None)
    if shape is None or not hasattr(A, "__matmul__"):
        raise ValueError(f"expected an operator with .shape, .dtype, .device and @, got {type(A).__name__}")
    shape = tuple(shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"expected a square operator of shape (P, P), got shape {shape}")
    if shape[0] < 1:
        raise ValueError(f"expected an operator of size P >= 1, got shape {shape}")
    dtype = getattr(A, "dtype", None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.is_complex:
        raise ValueError(f"expected a real floating-point operator dtype, got {dtype}")
    if getattr(A, "device", None) is None:
        raise ValueError(f"expected an operator with a .device, got {type(A).__name__} without one")
    return int(shape[0])


def make_generator(seed: Seed, device: torch.device) -> torch.Generator:
    """A generator on ``device``: seeded from an int, passed through, or freshly seeded from OS entropy."""
    if isinstance(seed, torch.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int, a torch.Generator or None, got {type(seed).__name__}")
    gen = torch.Generator(device=torch.device(device))
    if seed is None:
        gen.seed()  # fresh entropy for this generator only; the global RNG is left alone
    else:
        gen.manual_seed(seed)
    return gen


def random_block(
    shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    dtype: torch.dtype,
    device: torch.device,
    distribution: str = "rademacher",
) -> Tensor:
    """Entries i.i.d. Rademacher (±1) or standard normal, drawn on the generator's device, then moved."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    gen_device = generator.device
    if distribution == "gaussian":
        out = torch.randn(shape, generator=generator, dtype=dtype, device=gen_device)
    else:
        out = torch.randint(0, 2, shape, generator=generator, dtype=dtype, device=gen_device).mul_(2).sub_(1)
    return out.to(device)


def random_columns(
    P: int,
    count: int,
    generator: torch.Generator,
    *,
    dtype: torch.dtype,
    device: torch.device,
    distribution: str = "rademacher",
) -> Tensor:
    """``count`` random vectors as the columns of a (P, count) block.

    Drawn probe by probe (a (count, P) draw, transposed), so that column j is the same vector however the
    probes are split into blocks: results do not depend on ``block_size``.
    """
    return random_block((count, P), generator, dtype=dtype, device=device, distribution=distribution).T


def apply(A: Any, V: Tensor) -> Tensor:
    """``A @ V`` with the result's shape checked, so a broken operator fails here and not ten steps later."""
    out = A @ V
    if tuple(out.shape) != tuple(V.shape):
        raise ValueError(f"expected A @ v to have shape {tuple(V.shape)}, got {tuple(out.shape)}")
    return out


def apply_into(A: Any, v: Tensor, out: Tensor) -> Tensor:
    """``A.matvec_into(v, out)``, the optional form of ``A @ v`` that writes one product into a buffer the
    caller owns (module docstring), with the same check as :func:`apply`: the product must land in ``out``."""
    result = A.matvec_into(v, out)
    if result is not out and (tuple(result.shape) != tuple(v.shape) or result.data_ptr() != out.data_ptr()):
        raise ValueError(f"expected A.matvec_into(v, out) to return out, shape {tuple(v.shape)}; got another tensor")
    return result


def check_memory(memory: Any) -> None:
    """Refuse a ``memory=`` that is not ``None`` or a positive number of bytes."""
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, float)) or not memory > 0):
        raise ValueError(f"memory must be a positive number of bytes or None, got {memory!r}")


def auto_block_size(count: int, bytes_per_item: int, *, budget_bytes: int = DEFAULT_BLOCK_MEMORY) -> int:
    """The largest block of ``count`` items whose working memory stays within ``budget_bytes`` (at least 1)."""
    return max(1, min(count, budget_bytes // max(1, bytes_per_item)))


def check_block_size(block_size: int | None, count: int, bytes_per_item: int, *, budget_bytes: int | None = None) -> int:
    """``block_size`` checked and capped at ``count``; ``None``: :func:`auto_block_size` within ``budget_bytes``
    (default :data:`DEFAULT_BLOCK_MEMORY`)."""
    if block_size is None:
        budget = DEFAULT_BLOCK_MEMORY if budget_bytes is None else budget_bytes
        return auto_block_size(count, bytes_per_item, budget_bytes=budget)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an int >= 1 or None, got {block_size!r}")
    return min(block_size, count)
