"""The objective every measure in the toolkit shares: mean loss over a fixed analysis set.

    f(θ) = Σ_i w_i ℓ(model(x_i; θ), y_i) / Σ_i w_i        (w_i = 1 unless weights are given)

evaluated with :func:`torch.func.functional_call` on a parameter dictionary, so the user's ``nn.Module`` is
never touched: the objective works on a private copy of the model (moved to the requested device and dtype)
and on detached copies of its parameters and buffers. The sum over samples is accumulated chunk by chunk and
divided by the total weight once, so every value, gradient and Hessian-vector product is identical whatever the
chunk size (a short last chunk cannot tilt the average, the bug that makes batch-mean averaging wrong).

Evaluation policy (recorded in :attr:`Objective.config`):

* ``bn_mode="eval"`` (default): the copy runs in eval mode, BatchNorm uses its running statistics and
  dropout is off, so f is a deterministic function of θ;
* ``bn_mode="train"``: BatchNorm layers normalize with the statistics of each chunk (their running statistics
  are neither used nor updated); everything else, dropout included, stays in eval mode. f then depends on the
  chunk size, which is recorded with it.

Losses (:mod:`sharpness.losses`): ``"cross-entropy"`` for integer class labels (``(N, C)`` logits, or
``(N, T, V)`` sequences weighting every token, with ``ignore_index`` and label smoothing), ``"mse"`` for float
targets (per-sample mean over output dimensions, so a scalar-output linear model has the textbook Hessian
H = 2/N·XᵀX), ``"bce"``, ``"auto"`` (by the target dtype), or any callable ``loss(outputs, batch)`` returning
per-example losses, or ``(losses, weights)``: f is then Σ w ℓ / Σ w over every example of every batch.

Data (:mod:`sharpness.batches`): in-memory tensors ``(x, y)`` (sliced into chunks, the fast path), or the
researcher's own pipeline — a ``Dataset``, a ``DataLoader`` or any re-iterable of batches that are nests of
tensors — streamed batch by batch, so memory is one batch plus the model, never N. ``forward(model, batch)``
replaces the default model call. A streamed set must be *fixed*: ``data_policy="verify"`` (default) passes
over it twice at construction and refuses it when the order-independent fingerprint of its samples changes
(an augmenting loader; a shuffling one keeps its fingerprint and is accepted), ``"cache"`` keeps the batches of
one pass in memory (f is that one draw), ``"trust"`` skips the second pass. Each pass runs under a forked,
seeded RNG, so a shuffling loader visits its samples in the same order every pass (bitwise-repeatable sums)
and the user's random state and loader are left as they were.

Attention: ``F.scaled_dot_product_attention``'s fused kernels (flash, memory-efficient, and the CPU flash
kernel) have no double backward, so a model that calls it is evaluated under the math backend for every value,
gradient and Hessian-vector product (one function of θ throughout); the objective says so once on the log and
records ``"attention": "math"`` in :attr:`Objective.config`.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from . import batches as B
from .errors import InputError
from .losses import IGNORE_INDEX, LOSSES, cross_entropy_and_argmax, example_losses, per_sample_hits, per_sample_loss

__all__ = ["Objective", "Evaluation", "per_sample_loss", "cross_entropy_and_argmax", "select_parameters", "LOSSES"]

BN_MODES = ("eval", "train")
#: Samples a ``Dataset`` is batched into when it is streamed (memory is one batch plus the model).
DEFAULT_DATASET_BATCH = 256
#: Default memory budget (bytes) for one chunk's second-order graph when ``chunk_size`` is not given for
#: in-memory tensors: the set stays one chunk (a retained graph, the cheapest products) while its measured
#: graph fits, and is split into chunks of at most this much otherwise. 2 GiB: a laptop's share.
DEFAULT_MEMORY = 2 * 2**30
#: Samples in the probe that measures a chunk's graph bytes per sample (_auto_chunk).
MEMORY_PROBE_SAMPLES = 32
#: Bytes saved for the double backward are multiplied by this for the temporaries beside them (the backward's
#: gradient buffers, the product's result): peak ΔRSS / saved bytes measured 3.1 (one chunk of 2 000, retained
#: graph) and 2.8 (chunks of 3 058, double backward) on benchmarks/scaling.py's 1 M-parameter CNN.
MEMORY_SAFETY = 3.0
log = logging.getLogger(__name__)
_SDPA_NOTICED: set[str] = set()


@dataclass(frozen=True)
class Evaluation:
    """Loss and accuracy of one parameter point over the analysis set (accuracy is None for regression)."""

    loss: float
    accuracy: float | None


def _local(total: Tensor) -> Tensor:
    """The default reduction: this process holds the whole analysis set, so a local sum is the sum."""
    return total


def select_parameters(names: Sequence[str], patterns: str | Sequence[str] | None) -> list[str]:
    """Parameter names matching any of the comma-separated glob ``patterns`` (all names when None)."""
    if patterns is None:
        return list(names)
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise InputError(
            f"--params {','.join(patterns)!s} matched no parameter; expected a glob over names such as "
            f"{', '.join(list(names)[:4])}"
        )
    return chosen


def callable_name(fn: Callable) -> str:
    """How a user's callable is recorded: ``module:qualname`` (what ``--loss FILE.py:fn`` names, too)."""
    ref = getattr(fn, "sharpness_ref", None)
    if isinstance(ref, str):
        return ref
    mod = getattr(fn, "__module__", None) or "?"
    return f"{mod}:{getattr(fn, '__qualname__', type(fn).__name__)}"


class _SdpaSpy(TorchFunctionMode):
    """Notes whether a forward pass calls ``F.scaled_dot_product_attention`` (and changes nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.seen = True
        return func(*args, **(kwargs or {}))


class _Call(nn.Module):
    """``fn(model, batch)`` as a module, so :func:`functional_call` can run a user's forward on θ."""

    def __init__(self, model: nn.Module, fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, batch: Any) -> Any:
        return self.fn(self.model, batch)


def determinism_tolerance(device_type: str, dtype: torch.dtype, loss_scale: float, n_samples: int) -> float:
    """How far apart two evaluations of one loss sum may be for the model to count as deterministic.

    CPU (and anything but CUDA): 0.0 — equality bit for bit; CPU kernels are deterministic, so any
    difference is the model's own randomness. CUDA: 16·√n·eps(dtype)·|S| for a sum S of n per-sample
    losses. Reason: correct CUDA kernels may change the order of floating-point sums between calls (atomic
    adds, split-K matmuls, cuDNN algorithm choice), and every reordering perturbs a partial sum by about
    eps relative; n such independent roundings add up like a random walk, ~√n·eps·|S| (Higham, *Accuracy
    and Stability of Numerical Algorithms*, §4.2, for the statistical rounding model), and the factor 16
    leaves room for the same effect inside each forward pass. For float32 and n = 256 this is 3e-5
    relative: eight orders of magnitude below what one dropout mask does (~1e-2 relative and more).
    """
    if device_type != "cuda":
        return 0.0
    return 16.0 * math.sqrt(max(int(n_samples), 1)) * float(torch.finfo(dtype).eps) * abs(float(loss_scale))


class Objective:
    """Mean loss over an analysis set as a function of a flat parameter vector θ ∈ R^P.

    Args:
        model: the user's module; it is copied, never modified.
        inputs: the analysis set: an ``(N, ...)`` tensor of inputs (with ``targets``), a pair ``(x, y)``, a
            map-style ``Dataset``, a ``DataLoader`` or any re-iterable of batches (module docstring).
        targets: ``(N,)`` labels, ``(N, T)`` token labels or ``(N, ...)`` regression targets, with a tensor
            ``inputs``; None otherwise.
        loss: ``"cross-entropy"``, ``"mse"``, ``"bce"``, ``"auto"`` (integer targets → cross-entropy), or a
            callable ``loss(outputs, batch) -> losses | (losses, weights)`` with losses of shape ``(B, ...)``
            (one per example; ``reduction="none"``) and optional weights of the same shape that do not depend on
            θ (a token mask). A batch of the tensor path is the pair ``(x, y)``.
        forward: ``forward(model, batch) -> outputs`` replacing the default call (module docstring of
            :mod:`sharpness.batches`); ``.logits`` or the first tuple element of what it returns is used.
        target_key: the key of the targets in dict batches (default ``"labels"``); dropped from the default
            model call.
        batch_size_fn: ``fn(batch) -> B`` for batches whose first tensor does not lead with the batch size.
        data_policy: ``"verify"``, ``"cache"`` or ``"trust"`` for a streamed set (module docstring).
        ignore_index: the label of tokens that do not count (built-in cross-entropy).
        label_smoothing: α of the built-in cross-entropy (:func:`sharpness.losses.example_losses`).
        chunk_size: samples per forward pass; a memory knob only (default for tensors: all N at once when the
            graph of a Hessian-vector product over all N fits in ``memory``, else the largest chunk that does;
            for streamed data each batch whole; a smaller value splits streamed batches). With
            ``bn_mode="train"`` the chunk is the BatchNorm batch, so the default stays all N.
        memory: budget in bytes for one chunk's second-order graph when ``chunk_size`` is not given (default
            ``DEFAULT_MEMORY`` = 2 GiB). The graph's bytes per sample are measured on a probe of 32 samples
            (tensors saved for the double backward, ×3); :attr:`chunk_policy` records the choice.
        bn_mode: ``"eval"`` or ``"train"`` (see the module docstring).
        params: glob(s) selecting the parameters θ that vary (comma-separated string or list); the others
            are held fixed at their values. Default: every parameter.
        weights: optional non-negative per-sample weights ``(N,)`` (tensor path).
        dtype, device: where and in which floating type to compute (default: the model's).
        check_determinism: evaluate the first chunk twice and refuse a model whose outputs differ. (It is always
            evaluated once: shapes, labels and the loss are checked, and SDPA is detected.)
        reduce: the hook that makes the objective span several processes. Every sum over the local samples
            (the loss sum, the gradient sum, the correct count, the Hessian-vector product sum, the total
            weight) passes through ``reduce`` *before* it is divided by the total weight, so with the
            analysis set sharded across ranks and ``reduce=sharpness.distributed.all_reduce_sum`` each rank
            computes ``Σ_ranks Σ_{i∈shard} w_i ℓ_i / Σ_ranks Σ_{i∈shard} w_i`` — the same f(θ), ∇f and H @ v
            as one process over the whole set (up to summation order). It must not modify its argument in
            place; it is a collective, so every rank must make the same calls in the same order.
            Default: identity (one process). The determinism check stays local.
        shard: ``(rank, world_size)`` for a streamed set under ``torchrun``: this rank evaluates batches
            ``rank, rank + W, …`` of each pass (disjoint, together every batch once; no padding). Tensors
            are sharded by the caller instead (:func:`sharpness.distributed.shard_tensors`).
        seed: the seed of each pass's forked RNG (the order of a shuffling loader).

    Shapes: :attr:`numel` is P; flat vectors are ``(P,)`` in the order of :attr:`names`.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Any,
        targets: Tensor | None = None,
        *,
        loss: str | Callable = "auto",
        forward: Callable | None = None,
        target_key: str = "labels",
        batch_size_fn: Callable[[Any], int] | None = None,
        data_policy: str = "verify",
        ignore_index: int = IGNORE_INDEX,
        label_smoothing: float = 0.0,
        chunk_size: int | None = None,
        memory: int | None = None,
        bn_mode: str = "eval",
        params: str | Sequence[str] | None = None,
        weights: Tensor | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        check_determinism: bool = True,
        reduce: Callable[[Tensor], Tensor] | None = None,
        shard: tuple[int, int] | None = None,
        seed: int = 0,
    ) -> None:
        if targets is None and isinstance(inputs, (tuple, list)) and len(inputs) == 2 and all(
                isinstance(t, Tensor) for t in inputs):
            inputs, targets = inputs
        tensor_path = isinstance(inputs, Tensor)
        if tensor_path and not isinstance(targets, Tensor):
            raise InputError(f"expected targets as a tensor with tensor inputs, got {type(targets).__name__}")
        if not tensor_path and targets is not None:
            raise InputError(f"expected targets only with tensor inputs (a batch carries its own), got {type(inputs).__name__} and targets")
        if bn_mode not in BN_MODES:
            raise InputError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
        if chunk_size is not None and chunk_size < 1:
            raise InputError(f"chunk_size must be a positive integer, got {chunk_size}")
        if data_policy not in B.DATA_POLICIES:
            raise InputError(f"data_policy must be one of {', '.join(B.DATA_POLICIES)}, got {data_policy!r}")
        if not (0.0 <= float(label_smoothing) < 1.0):
            raise InputError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if forward is not None and not callable(forward):
            raise InputError(f"forward must be a callable forward(model, batch), got {type(forward).__name__}")
        if weights is not None and not tensor_path:
            raise InputError("expected per-sample weights only with tensor inputs; a loss callable can return (losses, weights)")

        if callable(loss):
            self._loss_fn: Callable | None = loss
            self.loss_kind = f"callable:{callable_name(loss)}"
        else:
            self._loss_fn = None
            self._auto_pending = loss == "auto" and not tensor_path  # settled on the first batch
            if loss == "auto":
                loss = "cross-entropy" if not tensor_path or not targets.is_floating_point() else "mse"
            if loss not in LOSSES:
                raise InputError(f"loss must be one of {', '.join(LOSSES)}, 'auto' or a callable, got {loss!r}")
            self.loss_kind = loss
        self.has_accuracy = self._loss_fn is None and self.loss_kind in ("cross-entropy", "bce", "causal-lm")
        self._forward_fn = forward
        self.forward_name = "default" if forward is None else callable_name(forward)
        self.target_key = target_key
        self.batch_size_fn = batch_size_fn
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        self.data_policy = data_policy if not tensor_path else None
        self.seed = int(seed)
        self.shard = shard
        self.attention: str | None = None
        self.bn_mode = bn_mode
        self.reduce: Callable[[Tensor], Tensor] = reduce or _local

        first = next(iter(model.parameters()), None)
        if first is None:
            raise InputError("expected a model with parameters, got one with none")
        self.dtype = dtype or first.dtype
        self.device = torch.device(device) if device is not None else first.device

        # A private copy: moving, casting or switching mode here can never leak into the user's model.
        module = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        module.eval()
        if bn_mode == "train":
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
                    m.track_running_stats = False
                    m.running_mean = None
                    m.running_var = None
                    m.num_batches_tracked = None
        for p in module.parameters():
            p.requires_grad_(False)
        self._module = module
        self._call = None if forward is None else _Call(module, forward)

        all_params = {k: v.detach().clone() for k, v in module.named_parameters()}
        self.names: list[str] = select_parameters(list(all_params), params)
        self.param_patterns = params
        self._fixed = {k: v for k, v in all_params.items() if k not in self.names}
        self._fixed.update({k: v.detach().clone() for k, v in module.named_buffers()})
        self.shapes = [all_params[k].shape for k in self.names]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.numel = sum(self.sizes)
        self.theta = torch.cat([all_params[k].reshape(-1) for k in self.names])

        self.source: Any = None
        self._fingerprint: dict | None = None
        if tensor_path:
            self._init_tensors(inputs, targets, weights, chunk_size)
        else:
            self.inputs = self.targets = self.weights = None
            self._init_stream(inputs, chunk_size)
        self._check_determinism(repeat=check_determinism)
        #: How the chunk size was chosen: None when given (or streamed), else the measured budget (dict).
        self.chunk_policy: dict | None = None
        if tensor_path and chunk_size is None and bn_mode == "eval" and self.n_samples > MEMORY_PROBE_SAMPLES:
            self._auto_chunk(DEFAULT_MEMORY if memory is None else int(memory))

    def _auto_chunk(self, budget: int) -> None:
        """Measure the bytes per sample of a Hessian-vector product's graph on a probe chunk (everything
        autograd saves for the forward, the ``create_graph`` backward and so the second backward) and cut
        :attr:`chunk_size` so one chunk's graph stays within ``budget``. Results change only by summation order."""
        if budget < 1:
            raise InputError(f"memory must be a positive number of bytes, got {budget}")
        m = MEMORY_PROBE_SAMPLES
        # Copies, so the probe's storages are its own (a slice would share the whole set's storage).
        batch = (self.inputs[:m].clone(), self.targets[:m].clone())
        w = None if self.weights is None else self.weights[:m].clone()
        leaves = {k: t.detach().clone().requires_grad_(True) for k, t in self._point(None).items()}
        # Parameters and buffers are saved by reference and do not grow with the chunk: not counted.
        shared = {t.untyped_storage().data_ptr() for t in [*leaves.values(), *self._fixed.values()]}
        seen: dict[int, int] = {}

        def pack(t: Tensor) -> Tensor:
            try:
                st = t.untyped_storage()
            except (RuntimeError, NotImplementedError):  # a tensor without storage (a functional wrapper)
                return t
            if st.data_ptr() not in shared:
                seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
            return t

        try:
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = self.chunk_loss_sum(leaves, batch, w)
                torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
        except RuntimeError as err:  # e.g. an op without a double backward: keep all N, as before; say why
            self.chunk_policy = {"memory_budget_bytes": int(budget), "graph_bytes_per_sample": None,
                                 "probe_samples": m, "whole_set": True,
                                 "probe_failed": str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}
            return
        per_sample = max(1.0, sum(seen.values()) / m * MEMORY_SAFETY)
        fits = max(1, int(budget // per_sample))
        self.chunk_size = min(self.n_samples, fits)
        self.chunk_policy = {
            "memory_budget_bytes": int(budget),
            "graph_bytes_per_sample": float(per_sample),
            "probe_samples": m,
            "whole_set": self.chunk_size >= self.n_samples,
        }

    # --- the analysis set -----------------------------------------------------------------------------------
    def _init_tensors(self, inputs: Tensor, targets: Tensor, weights: Tensor | None, chunk_size: int | None) -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise InputError(f"expected as many targets as inputs, got {targets.shape[0]} and {inputs.shape[0]}")
        n = int(inputs.shape[0])
        if n == 0:
            raise InputError("expected a non-empty analysis set, got 0 samples")
        self.n_samples = n
        self.chunk_size = min(chunk_size or n, n)
        self.num_batches = None
        self.inputs = inputs.to(self.device, dtype=self.dtype if inputs.is_floating_point() else None)
        if self.loss_kind in ("cross-entropy", "causal-lm"):
            if targets.is_floating_point():
                raise InputError(f"{self.loss_kind} expects integer class labels, got floating-point targets")
            self.targets = targets.to(self.device, dtype=torch.long)
        elif self._loss_fn is None:
            self.targets = targets.to(self.device, dtype=self.dtype)
        else:
            self.targets = targets.to(self.device, dtype=self.dtype if targets.is_floating_point() else None)
        # The exact per-sample path of the toolkit's own data (bit-identical to what it always computed);
        # token weights (ignored labels), label smoothing and callables take the general path.
        self._plain = self._loss_fn is None and self.label_smoothing == 0.0 and self.loss_kind != "causal-lm" and not (
            self.loss_kind == "cross-entropy" and bool((self.targets == self.ignore_index).any()))
        if weights is None:
            self.weights = None
        else:
            if weights.shape != (n,) or bool((weights < 0).any()):
                raise InputError(f"expected non-negative weights of shape ({n},), got shape {tuple(weights.shape)}")
            self.weights = weights.to(self.device, dtype=self.dtype)
        if self._plain:
            local_weight = float(n) if self.weights is None else float(self.weights.sum())
        else:
            if self.loss_kind in ("cross-entropy", "causal-lm") and self._loss_fn is None:
                self._check_labels_range(self.targets)
            local_weight = self._weight_pass()
        # float64 whatever the compute dtype: a float32 count is inexact beyond 2^24 samples.
        self.total_weight = float(self.reduce(torch.tensor(local_weight, dtype=torch.float64, device=self.device)))

    def _init_stream(self, data: Any, chunk_size: int | None) -> None:
        self._plain = False
        source = B.BatchSource(data, batch_size=chunk_size or DEFAULT_DATASET_BATCH)
        self.source = source
        rank, world = self.shard or (0, 1)
        if not (isinstance(world, int) and world >= 1 and 0 <= rank < world):
            raise InputError(f"expected shard=(rank, world_size) with 0 <= rank < world_size, got {self.shard!r}")
        digests: list[bytes] = []
        cached: list[Any] = []
        n = count = largest = 0
        local_weight = 0.0
        for i, raw in enumerate(source.passes(self.seed)):
            b = B.batch_size(raw, self.batch_size_fn)
            if b == 0:
                continue
            if getattr(self, "_auto_pending", False):
                self._auto_pending = False
                if self._target(raw).is_floating_point():
                    self.loss_kind = "mse"
                    self.has_accuracy = False
            digests.extend(B.sample_digests(raw, b))
            n += b
            count += 1
            largest = max(largest, b)
            if self.data_policy == "cache":
                cached.append(B.tree_map(lambda t: t.detach().cpu().clone(), raw))
            if i % world == rank:
                local_weight += self._batch_weight(B.to_device(raw, self.device, self.dtype), where=f"batch {i}")
        if n == 0:
            raise InputError(f"expected a non-empty analysis set, got a {source.kind} with no samples")
        if count < world:
            raise InputError(f"expected at least one batch per rank, got {count} batches for {world} ranks")
        self.n_samples = n
        self.num_batches = count
        self.chunk_size = min(chunk_size, largest) if chunk_size else largest
        self._fingerprint = {"n_samples": n, "sample_sha256": B.combine_digests(digests), "method": "sorted per-sample sha256"}
        if self.data_policy == "verify":
            again: list[bytes] = []
            for raw in source.passes(self.seed + 1):
                again.extend(B.sample_digests(raw, B.batch_size(raw, self.batch_size_fn)))
            second = B.combine_digests(again)
            if len(again) != n or second != self._fingerprint["sample_sha256"]:
                raise InputError(
                    f"expected a fixed analysis set, got a {source.kind} whose samples change between passes "
                    f"({n} then {len(again)} samples, content sha256 {self._fingerprint['sample_sha256'][:12]}… then "
                    f"{second[:12]}…): random augmentation or resampling makes the loss a random function; remove it, "
                    "or opt into data_policy='cache' to analyze one recorded draw"
                )
        elif self.data_policy == "cache":
            self.source = B.CachedSource(cached, source.kind)
        self.total_weight = float(self.reduce(torch.tensor(local_weight, dtype=torch.float64, device=self.device)))
        if not self.total_weight > 0:
            raise InputError(f"expected a positive total example weight, got {self.total_weight} (every token ignored?)")

    def _weight_pass(self) -> float:
        """Σ of the example weights over the local chunks (the loss's masks, times the sample weights)."""
        return sum(self._batch_weight(batch, w) for batch, w in self.chunks())

    def _batch_weight(self, batch: Any, w: Tensor | None = None, *, where: str = "the first batch") -> float:
        with torch.no_grad():
            try:
                out = self.forward(self._point(None), batch)
                _, _, weight = self._sums(out, batch, w, hits=False)
            except InputError:
                raise
            except (RuntimeError, IndexError, ValueError, TypeError, KeyError) as err:
                raise self._eval_error(err, batch, where) from None
        return float(weight)

    def _eval_error(self, err: BaseException, batch: Any, where: str) -> InputError:
        # The first contact of model and data: a shape or label mismatch is the user's input, not a bug.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return InputError(f"the model could not be evaluated on {where} ({B.describe(batch)}): {first}")

    def fingerprint(self) -> dict:
        """``{"n_samples", "sample_sha256", "method"}``: the order- and batching-independent content hash of
        the analysis set (:func:`sharpness.batches.combine_digests`), the same for every source holding the same
        samples. A streamed set is hashed as the loader yields it (before any cast); in-memory tensors as stored
        (after the cast to :attr:`dtype`), so :func:`sharpness.report.analyze` hashes the caller's tensors itself."""
        if self._fingerprint is None:
            digests = B.sample_digests((self.inputs, self.targets), self.n_samples)
            self._fingerprint = {"n_samples": self.n_samples, "sample_sha256": B.combine_digests(digests),
                                 "method": "sorted per-sample sha256"}
        return dict(self._fingerprint)

    # --- flat vectors ------------------------------------------------------------------------------------
    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``(P,)`` → ``{name: tensor}`` views for the varying parameters."""
        if flat.shape != (self.numel,):
            raise ValueError(f"expected a flat vector of shape ({self.numel},), got {tuple(flat.shape)}")
        return {k: t.view(s) for k, t, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    def flatten(self, tensors: dict[str, Tensor]) -> Tensor:
        """``{name: tensor}`` → ``(P,)`` in the order of :attr:`names`."""
        return torch.cat([tensors[k].reshape(-1) for k in self.names])

    @property
    def module(self) -> nn.Module:
        """The objective's private copy of the model (its dtype, device and mode): read it, never change it."""
        return self._module

    @property
    def config(self) -> dict:
        """The evaluation policy, as recorded in reports."""
        out = {
            "loss": self.loss_kind,
            "bn_mode": self.bn_mode,
            "chunk_size": self.chunk_size,
            "chunk_policy": getattr(self, "chunk_policy", None),
            "params": self.param_patterns,
            "num_params": self.numel,
            "n_samples": self.n_samples,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
        }
        if not self._is_default_call():
            out.update({
                "forward": self.forward_name,
                "source": "tensors" if self.source is None else self.source.kind,
                "data_policy": self.data_policy,
                "num_batches": self.num_batches,
                "total_weight": self.total_weight,
                "target_key": self.target_key,
                "ignore_index": self.ignore_index,
                "label_smoothing": self.label_smoothing,
                "attention": self.attention,
            })
        return out

    def _is_default_call(self) -> bool:
        """The toolkit's own case (tensors, a built-in per-sample loss, the default call): its config keys are
        exactly those reports always had."""
        return self.source is None and self._plain and self._forward_fn is None and self.attention is None

    def restrict(self, params: str | Sequence[str]) -> "Objective":
        """The same objective with only the parameters matching ``params`` varying (shares the data)."""
        new = copy.copy(self)
        names = select_parameters(self.names, params)
        current = self.unflatten(self.theta)
        new.names = names
        new.param_patterns = params
        new._fixed = {**self._fixed, **{k: v for k, v in current.items() if k not in names}}
        new.shapes = [current[k].shape for k in names]
        new.sizes = [math.prod(s) for s in new.shapes]
        new.numel = sum(new.sizes)
        new.theta = torch.cat([current[k].reshape(-1) for k in names])
        return new

    # --- evaluation ---------------------------------------------------------------------------------------
    def chunks(self) -> Iterator[tuple[Any, Tensor | None]]:
        """``(batch, weights)`` chunks, in order: ``((x, y), w)`` slices of at most :attr:`chunk_size` samples of
        in-memory tensors, or this rank's streamed batches moved to the device (split to :attr:`chunk_size`)."""
        if self.source is None:
            for start in range(0, self.n_samples, self.chunk_size):
                sl = slice(start, start + self.chunk_size)
                yield (self.inputs[sl], self.targets[sl]), None if self.weights is None else self.weights[sl]
            return
        rank, world = self.shard or (0, 1)
        for i, raw in enumerate(self.source.passes(self.seed)):
            if i % world != rank:
                continue
            b = B.batch_size(raw, self.batch_size_fn)
            if b == 0:
                continue
            batch = B.to_device(raw, self.device, self.dtype)
            if b <= self.chunk_size:
                yield batch, None
            else:
                for start in range(0, b, self.chunk_size):
                    yield B.slice_batch(batch, slice(start, start + self.chunk_size), b), None

    def _attention(self) -> contextlib.AbstractContextManager:
        if self.attention == "math":
            from torch.nn.attention import SDPBackend, sdpa_kernel
            return sdpa_kernel([SDPBackend.MATH])
        return contextlib.nullcontext()

    def forward(self, params: dict[str, Tensor], batch: Any) -> Tensor:
        """Model outputs for ``batch`` (or a bare input tensor) with the varying parameters set to ``params``."""
        state = {**self._fixed, **params}
        with self._attention():
            if self._call is not None:
                out = functional_call(self._call, {f"model.{k}": v for k, v in state.items()}, (batch,))
            elif isinstance(batch, Tensor):
                return functional_call(self._module, state, (batch,))
            else:
                args, kwargs = B.model_inputs(batch, self.target_key)
                out = functional_call(self._module, state, args, kwargs)
        return B.unpack_outputs(out)

    def _target(self, batch: Any) -> Tensor:
        return B.batch_target(batch, self.target_key)

    def _sums(self, out: Tensor, batch: Any, w: Tensor | None, *, hits: bool) -> tuple[Tensor, Tensor | None, Any]:
        """(Σ w ℓ, Σ w·hit or None, Σ w) over the examples of one chunk (weights w per sample, times the loss's)."""
        if self._plain:
            y = self._target(batch)
            losses = per_sample_loss(self.loss_kind, out, y)
            loss_sum = losses.sum() if w is None else (losses * w).sum()
            weight = float(losses.shape[0]) if w is None else w.sum()
            hit_sum = None
            if hits and self.has_accuracy:
                h = per_sample_hits(self.loss_kind, out, y).to(self.dtype)
                hit_sum = h.sum() if w is None else (h * w).sum()
            return loss_sum, hit_sum, weight
        if self._loss_fn is not None:
            losses, lw = self._call_loss(out, batch)
            h = None
        else:
            target = self._target(batch)
            if self.loss_kind not in ("cross-entropy", "causal-lm"):
                target = target.to(self.dtype)
            losses, lw, h = example_losses(self.loss_kind, out, target, ignore_index=self.ignore_index,
                                           label_smoothing=self.label_smoothing)
        if w is not None:
            wb = w.reshape(w.shape[0], *([1] * (losses.ndim - 1))).to(losses.dtype)
            lw = wb.expand_as(losses) if lw is None else lw * wb
        if lw is None:
            loss_sum = losses.sum()
            weight = float(losses.numel())
            hit_sum = None if not (hits and h is not None) else h.sum()
        else:
            lw = lw.detach()
            loss_sum = (losses * lw).sum()
            weight = lw.sum()
            hit_sum = None if not (hits and h is not None) else (h * lw).sum()
        return loss_sum, hit_sum, weight

    def _call_loss(self, out: Tensor, batch: Any) -> tuple[Tensor, Tensor | None]:
        res = self._loss_fn(out, batch)
        losses, lw = (res if isinstance(res, tuple) and len(res) == 2 else (res, None))
        n = B.batch_size(batch, self.batch_size_fn)
        if not isinstance(losses, Tensor) or losses.ndim == 0 or losses.shape[0] != n:
            got = "a scalar" if isinstance(losses, Tensor) and losses.ndim == 0 else (
                f"shape {tuple(losses.shape)}" if isinstance(losses, Tensor) else type(losses).__name__)
            raise InputError(
                f"loss {self.loss_kind.removeprefix('callable:')} must return per-example losses of shape ({n}, ...) "
                f"(reduction='none'), optionally with weights, got {got}"
            )
        if lw is not None and (not isinstance(lw, Tensor) or lw.shape != losses.shape):
            got = f"shape {tuple(lw.shape)}" if isinstance(lw, Tensor) else type(lw).__name__
            raise InputError(f"loss {self.loss_kind.removeprefix('callable:')} must return weights shaped like its "
                             f"losses {tuple(losses.shape)}, got {got}")
        return losses, (None if lw is None else lw.to(losses.dtype))

    def chunk_loss_sum(self, params: dict[str, Tensor], batch: Any, weights: Tensor | None = None) -> Tensor:
        """Σ_i w_i ℓ_i over one chunk (not divided by anything: chunks add up exactly)."""
        return self._sums(self.forward(params, batch), batch, weights, hits=False)[0]

    def chunk_sums(self, params: dict[str, Tensor], batch: Any, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(Σ w ℓ, Σ w·[prediction right]) over one chunk from one forward pass (zero hits where accuracy is undefined)."""
        loss, hit, _ = self._sums(self.forward(params, batch), batch, weights, hits=True)
        return loss, torch.zeros((), dtype=loss.dtype, device=loss.device) if hit is None else hit

    def _point(self, theta: Tensor | None) -> dict[str, Tensor]:
        return self.unflatten(self.theta if theta is None else theta.to(self.device, self.dtype))

    def value(self, theta: Tensor | None = None) -> Tensor:
        """f(θ) as a 0-dim tensor (θ defaults to the point the objective was built at)."""
        params = self._point(theta)
        with torch.no_grad():
            total = sum(self.chunk_loss_sum(params, *c) for c in self.chunks())
        return self.reduce(total) / self.total_weight

    def value_and_grad(self, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(f(θ), ∇f(θ)) with the gradient as a flat ``(P,)`` vector."""
        leaves = {k: t.detach().requires_grad_(True) for k, t in self._point(theta).items()}
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        grad = torch.zeros(self.numel, dtype=self.dtype, device=self.device)
        for chunk in self.chunks():
            # Plain reverse mode on leaf tensors: measurably less overhead per call than torch.func.grad.
            with torch.enable_grad():
                loss = self.chunk_loss_sum(leaves, *chunk)
                g = torch.autograd.grad(loss, list(leaves.values()), materialize_grads=True)
            total += loss.detach()
            grad += torch.cat([t.reshape(-1) for t in g])
        # One reduction of [loss sum, gradient sum] rather than two: one round trip between ranks.
        sums = self.reduce(torch.cat([total.reshape(1), grad])) / self.total_weight
        return sums[0], sums[1:]

    def evaluate(self, theta: Tensor | None = None) -> Evaluation:
        """Loss and (where defined: classification, token accuracy for sequences, binary) weighted accuracy at θ."""
        params = self._point(theta)
        # [loss sum, correct count], accumulated in float64 and reduced together in one call.
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for batch, w in self.chunks():
                loss, hits = self.chunk_sums(params, batch, w)
                sums[0] += loss.to(torch.float64)
                sums[1] += hits.to(torch.float64)
        loss_sum, correct = self.reduce(sums).tolist()
        accuracy = correct / self.total_weight if self.has_accuracy else None
        return Evaluation(loss=loss_sum / self.total_weight, accuracy=accuracy)

    def _check_labels_range(self, y: Tensor, classes: int | None = None) -> None:
        valid = y[y != self.ignore_index] if not self._plain else y
        if valid.numel() == 0:
            return
        low, high = int(valid.min()), int(valid.max())
        if low < 0 or (classes is not None and high >= classes):
            raise InputError(
                f"expected class labels in [0, {classes}) for a model with {classes} outputs, got labels in [{low}, {high}]"
            )

    def _check_labels(self, output: Tensor, y: Tensor) -> None:
        if output.ndim < 2 or output.shape[:-1] != y.shape:
            raise InputError(
                f"cross-entropy expects model outputs of shape (N, classes) or (N, T, vocabulary) matching targets "
                f"{tuple(y.shape)}, got {tuple(output.shape)}"
            )
        self._check_labels_range(self.targets if self.source is None else y, output.shape[-1])

    def _check_determinism(self, *, repeat: bool = True, policy_device: str | None = None) -> None:
        """Evaluate the first chunk (≤ 256 samples) once (twice with ``repeat``): shapes, labels and loss are
        checked, SDPA is detected (math backend from then on), and a model whose two evaluations differ refused.

        "Differ" follows :func:`determinism_tolerance` for the device (``policy_device``, default the
        objective's device type; a test passes ``"cuda"`` to exercise the GPU rule on the CPU): bit-for-bit
        equality on the CPU, a rounding-sized tolerance on CUDA. Which rule applied, with the tolerance and
        the observed difference, is kept in :attr:`determinism` (reports show it under
        ``environment["determinism"]``). Dropout left active (``F.dropout(..., training=True)``) changes
        the loss by orders of magnitude more than any rounding and is refused on every device."""
        batch, w = next(self.chunks())
        n = B.batch_size(batch, self.batch_size_fn)
        m = min(n, 256)
        batch = B.slice_batch(batch, slice(0, m), n)
        w = None if w is None else w[:m]
        params = self._point(None)
        spy = _SdpaSpy()
        try:
            with torch.no_grad():
                with spy:
                    out = self.forward(params, batch)
                if spy.seen:
                    self.attention = "math"
                    kind = type(self._module).__qualname__
                    # One line per model class and process (a landscape builds several objectives of one model).
                    log.log(logging.INFO if kind in _SDPA_NOTICED else logging.WARNING,
                            "the model calls scaled_dot_product_attention, whose fused kernels have no double "
                            "backward: evaluating it with the math backend")
                    _SDPA_NOTICED.add(kind)
                    out = self.forward(params, batch)
                if self._loss_fn is None and self.loss_kind in ("cross-entropy", "causal-lm"):
                    self._check_labels(out, self._target(batch))
                a = self.chunk_loss_sum(params, batch, w)
                b = self.chunk_loss_sum(params, batch, w) if repeat else a
        except InputError:
            raise
        except (RuntimeError, IndexError, ValueError, TypeError, KeyError) as err:
            if self.source is None:
                x, y = batch
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise InputError(
                    f"the model could not be evaluated on the analysis set (samples of shape {tuple(x.shape[1:])}, "
                    f"targets of shape {tuple(y.shape[1:])}): {first}"
                ) from None
            raise self._eval_error(err, batch, "the first batch") from None
        if not torch.isfinite(a):
            raise InputError(f"expected a finite loss at the checkpoint, got {float(a)}")
        a_host, b_host = float(a), float(b)
        tol = determinism_tolerance(policy_device or self.device.type, self.dtype, max(abs(a_host), abs(b_host)), m)
        diff = abs(a_host - b_host)
        rule = "exact" if tol == 0.0 else f"|a - b| <= {tol:.3g} (16·sqrt({m})·eps·|loss sum|)"
        self.determinism = {"rule": "exact" if tol == 0.0 else "tolerance", "tolerance": tol,
                            "difference": diff, "repeated": bool(repeat)}
        if not (torch.equal(a, b) if tol == 0.0 else diff <= tol):
            raise InputError(
                f"the model is not deterministic under bn_mode={self.bn_mode!r}: two evaluations of the same "
                f"samples differ ({a_host!r} vs {b_host!r}; check: {rule}); curvature of a random function is "
                "undefined"
            )
        if diff > 0.0:
            log.warning(f"two evaluations of the same samples differ by {diff:.3g} (within the {rule} allowed "
                        f"on {policy_device or self.device.type}): treating the model as deterministic")
