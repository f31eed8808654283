"""Scale-out over ``torch.distributed``: shard the analysis set across ranks and all-reduce the sums.

The objective is a ratio of sums over samples, f(θ) = Σ_i w_i ℓ_i(θ) / Σ_i w_i, and so are its gradient and
every Hessian-vector product. Split the samples into disjoint shards S_r, one per rank; then

    Σ_i w_i ℓ_i = Σ_r Σ_{i∈S_r} w_i ℓ_i,

so each rank builds an :class:`~sharpness.objective.Objective` on its shard with ``reduce=all_reduce_sum``
and gets the *global* f, ∇f and H @ v — the same numbers as one process over the whole set, up to the order
of summation (≈1e-16 relative per sum). Nothing above the objective knows about ranks: Lanczos, Hutchinson,
Hutch++ and SLQ run identically on every rank with the same seed and see identical ``H @ v`` (an all-reduce
hands every rank the same bits, and the rest is deterministic local arithmetic on identical hardware and
builds), so their control flow (convergence checks, restarts) agrees and only rank 0 needs to write the
report. A seed of ``None`` would draw different vectors on each rank; use :func:`broadcast_from_rank0` to
agree on one first. Code that sums ``objective.chunk_loss_sum`` over ``objective.chunks()`` itself must pass
its sums through ``objective.reduce`` before dividing by ``objective.total_weight``, as the objective does.
With ``bn_mode="train"`` the batch statistics come from each rank's chunks, so f depends on the sharding as
it depends on the chunk size.

Two kinds of parallelism, never mixed in one call:

* *data-parallel* (the analysis set is sharded, every rank evaluates every θ, one all-reduce per sum):
  :func:`shard`, :func:`shard_tensors`, :func:`all_reduce_sum`;
* *task-parallel* (every rank holds the whole analysis set, ranks split grid points or sweep runs, with no
  communication until the end): :func:`split_work`, :func:`gather_split`, :func:`gather_to_rank0`.

A task-parallel rank must build its objective *without* ``reduce``: its collectives would otherwise wait for
ranks that are busy with other points.

Launch with ``torchrun --nproc-per-node=K ...``; :func:`init_from_env` reads the variables torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). A plain ``python`` run has none
of them and stays a single process: no process group, no flag needed.

Failure: the process group gets a timeout, so a failed rendezvous raises :class:`~sharpness.errors.InputError`
on every rank that can reach no peer, and a collective whose peer died or stopped answering raises
:class:`DistributedError` within the timeout instead of hanging (gloo: a dead peer's closed socket is noticed at
once, a stalled one after the timeout; NCCL: its watchdog aborts the process after the timeout).
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import InputError

BACKENDS = ("auto", "gloo", "nccl")
#: Seconds a rank waits at a rendezvous or a collective before giving up (a Hessian-vector product on one
#: shard takes far less; raise it for very slow steps).
DEFAULT_TIMEOUT_S = 600.0

T = TypeVar("T")


class DistributedError(RuntimeError):
    """A collective failed: another rank died, or did not reach the same step within the timeout."""


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: ``rank`` in ``[0, world_size)``, the node-local rank, the backend."""

    rank: int
    world_size: int
    backend: str
    local_rank: int = 0

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    def as_dict(self) -> dict:
        """What a report records about the job (``environment``)."""
        return {"world_size": self.world_size, "backend": self.backend}


# --- process group ---------------------------------------------------------------------------------------
def is_distributed() -> bool:
    """True when a process group with more than one rank is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_rank0() -> bool:
    """True on rank 0, and in a single process (the process that writes files and prints)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def current_context() -> DistContext | None:
    """The context of the process group already initialized (by :func:`init_from_env` or by the caller), or
    None for a single process (no group, or a group of one rank).

    What :func:`sharpness.analysis.report.analyze` asks to decide whether to shard its analysis set.
    """
    if not is_distributed():
        return None
    rank = dist.get_rank()
    local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    return DistContext(rank=rank, world_size=dist.get_world_size(), backend=str(dist.get_backend()), local_rank=local)


def _env_int(name: str) -> int:
    text = os.environ[name]
    try:
        return int(text)
    except ValueError:
        raise InputError(f"environment variable {name} must be an integer, got {text!r}") from None


def env_context(backend: str = "gloo") -> DistContext | None:
    """The rank and world size torchrun put in the environment, *without* creating a process group.

    Enough for task-parallel work that never communicates (sweep runs that each write their own files).
    None when ``RANK``/``WORLD_SIZE`` are absent or the world has one rank.
    """
    present = [k for k in ("RANK", "WORLD_SIZE") if k in os.environ]
    if not present:
        return None
    if len(present) == 1:
        raise InputError(f"expected both RANK and WORLD_SIZE in the environment (as torchrun sets), got only {present[0]}")
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"expected 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    if world == 1:
        return None
    local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    return DistContext(rank=rank, world_size=world, backend=backend, local_rank=local)


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """``auto`` → ``nccl`` for a CUDA device when NCCL is built in, else ``gloo``; an explicit name is checked."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    is_cuda = torch.device(device).type == "cuda"
    if backend == "auto":
        return "nccl" if is_cuda and torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend == "nccl" and not (is_cuda and dist.is_nccl_available()):
        raise InputError(
            f"backend nccl needs a CUDA device and a torch built with NCCL, got device {device} "
            f"(NCCL {'available' if dist.is_nccl_available() else 'not available'}); use gloo"
        )
    return backend


def init_from_env(
    backend: str = "auto",
    *,
    device: torch.device | str = "cpu",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DistContext | None:
    """Join the process group torchrun describes in the environment; None for a single process.

    Args:
        backend: ``"auto"`` (NCCL for a CUDA ``device``, gloo otherwise), ``"gloo"`` or ``"nccl"``.
        device: the device the analysis runs on; with NCCL each rank is pinned to ``cuda:LOCAL_RANK``.
        timeout_s: how long a rendezvous or a collective may wait for the other ranks.

    A group that is already initialized (the caller's own) is used as is (None if it has one rank). Without
    ``RANK``/``WORLD_SIZE``, or with ``WORLD_SIZE=1``, nothing is initialized and None is returned. A failed rendezvous raises
    :class:`~sharpness.errors.InputError` (one line: who tried to reach whom, for how long) within ``timeout_s``.
    """
    if not dist.is_available():
        if env_context() is None:
            return None
        raise InputError("RANK/WORLD_SIZE are set but this torch was built without torch.distributed")
    if dist.is_initialized():
        return current_context()
    if not timeout_s > 0:
        raise InputError(f"timeout_s must be positive, got {timeout_s}")
    if env_context() is None:
        return None  # a single process: no backend to check, nothing to join
    name = resolve_backend(backend, device)
    ctx = env_context(name)
    assert ctx is not None
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise InputError(f"expected {' and '.join(missing)} in the environment for a {ctx.world_size}-rank job, got none")
    if name == "nccl":
        torch.cuda.set_device(ctx.local_rank)  # one GPU per rank; NCCL's collectives run on the current device
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(
            backend=name, init_method="env://", rank=ctx.rank, world_size=ctx.world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    except (RuntimeError, ValueError, TimeoutError) as err:  # DistStoreError/DistNetworkError are RuntimeErrors
        raise InputError(
            f"rank {ctx.rank} of {ctx.world_size} could not join the {name} process group at {where} within "
            f"{timeout_s:g} s: {_first_line(err)}"
        ) from None
    return ctx


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session(
    backend: str = "auto", *, device: torch.device | str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S
) -> Iterator[DistContext | None]:
    """``with session(...) as ctx:`` — :func:`init_from_env` on entry; on exit, leave a group it created."""
    owned = not (dist.is_available() and dist.is_initialized())
    ctx = init_from_env(backend, device=device, timeout_s=timeout_s)
    try:
        yield ctx
    finally:
        if owned and ctx is not None:
            shutdown()


def rank_device(device: torch.device | str, ctx: DistContext | None) -> torch.device:
    """``cuda`` without an index → ``cuda:LOCAL_RANK`` on a multi-rank job (one GPU per rank); else unchanged."""
    device = torch.device(device)
    if ctx is not None and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


# --- data-parallel: shards and sums ------------------------------------------------------------------------
def shard(n: int, rank: int, world_size: int) -> Tensor:
    """Indices ``rank, rank + W, rank + 2W, ... < n`` of this rank's samples (W = ``world_size``).

    Exact: the shards are disjoint and together hold every index once, with sizes differing by at most one.
    There is deliberately no padding. ``torch.utils.data.DistributedSampler`` pads the last shards by
    *repeating* samples so all ranks get equally many; repeated samples would count twice in the sums and bias
    the mean loss, its gradient and the Hessian average. Uneven shards cost nothing here because only sums
    are reduced.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"expected 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if n < 0:
        raise ValueError(f"expected n >= 0, got {n}")
    return torch.arange(rank, max(n, rank), world_size)  # empty when n ≤ rank


def shard_tensors(*tensors: Tensor | None, ctx: DistContext | None) -> tuple[Tensor | None, ...]:
    """This rank's samples of each tensor (rows :func:`shard` picks); unchanged for a single process.

    ``shard_tensors(x, y, weights, ctx=ctx)`` with ``weights`` possibly None. Every rank must get at least one
    sample (an :class:`~sharpness.objective.Objective` needs one), so N ≥ world size.
    """
    if ctx is None:
        return tensors
    present = [t for t in tensors if t is not None]
    n = int(present[0].shape[0]) if present else 0
    if any(int(t.shape[0]) != n for t in present):
        raise InputError(f"expected tensors with equally many samples to shard, got {[int(t.shape[0]) for t in present]}")
    if n < ctx.world_size:
        raise InputError(f"expected at least one sample per rank, got {n} samples for {ctx.world_size} ranks")
    idx = shard(n, ctx.rank, ctx.world_size)
    return tuple(None if t is None else t[idx.to(t.device)] for t in tensors)


def all_reduce_sum(t: Tensor) -> Tensor:
    """Σ over ranks of ``t`` as a new tensor (``t`` is left alone); ``t`` itself without a process group.

    The ``reduce=`` hook of :class:`~sharpness.objective.Objective`. Every rank must call it with tensors of
    the same shape and dtype in the same order. float64 on CPU works with gloo; NCCL needs CUDA tensors.
    Raises :class:`DistributedError` when a peer died or did not answer within the group's timeout.
    """
    if not is_distributed():
        return t
    out = t.detach().clone(memory_format=torch.contiguous_format)
    try:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    except RuntimeError as err:  # DistBackendError and gloo's errors are RuntimeErrors
        raise _failure(f"all_reduce of a {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} tensor", err) from err
    return out


def barrier() -> None:
    """Wait until every rank gets here (no-op for a single process)."""
    if is_distributed():
        try:
            dist.barrier()
        except RuntimeError as err:
            raise _failure("barrier", err) from err


def broadcast_from_rank0(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (picklable objects; e.g. agree on a seed drawn on rank 0)."""
    if not is_distributed():
        return obj
    box = [obj]
    try:
        dist.broadcast_object_list(box, src=0)
    except RuntimeError as err:
        raise _failure("broadcast", err) from err
    return box[0]


# --- task-parallel: grid points and sweep runs -------------------------------------------------------------
def split_work(items: Sequence[T], ctx: DistContext | None) -> list[T]:
    """This rank's items ``items[rank::world_size]`` (rank-strided, so cheap and costly items spread evenly).

    All items for a single process. :func:`gather_split` puts the per-rank results back in item order.
    """
    if ctx is None:
        return list(items)
    return list(items[ctx.rank :: ctx.world_size])


def gather_to_rank0(obj: Any, ctx: DistContext | None) -> list[Any] | None:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, None on the others; ``[obj]`` for a single process.

    Objects are pickled between this job's own ranks (trusted peers). Every rank must call it.
    """
    if ctx is None or not is_distributed():
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.rank == 0 else None
    try:
        dist.gather_object(obj, out, dst=0)
    except RuntimeError as err:
        raise _failure("gather of results", err) from err
    return out


def gather_split(results: Sequence[T], ctx: DistContext | None) -> list[T] | None:
    """Inverse of :func:`split_work`: on rank 0 every rank's results in the original item order; None elsewhere.

    ``results`` are this rank's results for ``split_work(items, ctx)``, in that order.
    """
    parts = gather_to_rank0(list(results), ctx)
    return None if parts is None else _interleave(parts)


def _interleave(parts: Sequence[Sequence[T]]) -> list[T]:
    # Item i went to rank i % W as that rank's (i // W)-th item.
    world = len(parts)
    return [parts[i % world][i // world] for i in range(sum(len(p) for p in parts))]


# --- errors ----------------------------------------------------------------------------------------------
def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _failure(what: str, err: BaseException) -> DistributedError:
    rank = dist.get_rank() if dist.is_initialized() else "?"
    world = dist.get_world_size() if dist.is_initialized() else "?"
    return DistributedError(
        f"rank {rank} of {world}: {what} failed — another rank died or did not reach this step within the "
        f"timeout ({_first_line(err)})"
    )
