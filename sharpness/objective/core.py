"""The :class:`Objective` itself: f(θ) = Σ w ℓ / Σ w over the analysis set, on a private copy of the model.

Construction (argument checks, the private model copy, the varying parameters θ), flat vectors, the recorded
evaluation policy (:attr:`Objective.config`), and the evaluations every measure uses: :meth:`Objective.value`,
:meth:`Objective.value_and_grad`, :meth:`Objective.evaluate`. The rest of the class comes from the mixins of
this package (see :mod:`sharpness.objective`).
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from . import batches as B
from ..errors import InputError
from .losses import IGNORE_INDEX, LOSSES
from .analysis_set import AnalysisSet
from .attention import attention_modules, math_attention
from .determinism import DeterminismProbe
from .labels import LabelChecks
from .loss_modules import CONTRACT, describe_loss_module, module_loss
from .memory import DEFAULT_MEMORY, MEMORY_PROBE_SAMPLES, MemoryBudget
from .sums import LossSums

BN_MODES = ("eval", "train")


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
    if isinstance(fn, nn.modules.loss._Loss):
        return describe_loss_module(fn)
    mod = getattr(fn, "__module__", None) or "?"
    return f"{mod}:{getattr(fn, '__qualname__', type(fn).__name__)}"


class _Call(nn.Module):
    """``fn(model, batch)`` as a module, so :func:`functional_call` can run a user's forward on θ."""

    def __init__(self, model: nn.Module, fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, batch: Any) -> Any:
        return self.fn(self.model, batch)



class Objective(AnalysisSet, LossSums, MemoryBudget, DeterminismProbe, LabelChecks):
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
            θ (a token mask). A batch of the tensor path is the pair ``(x, y)``. A standard ``torch.nn`` loss
            module (``nn.CrossEntropyLoss(weight=…, ignore_index=…, label_smoothing=…)``, ``nn.MSELoss()``, …) is
            evaluated per example with its settings, f equal to its ``reduction="mean"`` over the whole set
            (:mod:`sharpness.objective.loss_modules`).
        forward: ``forward(model, batch) -> outputs`` replacing the default call (module docstring of
            :mod:`sharpness.objective.batches`); ``.logits`` or the first tuple element of what it returns is used.
        target_key: the key of the targets in dict batches (default ``"labels"``); dropped from the default
            model call.
        batch_size_fn: ``fn(batch) -> B`` for batches whose first tensor does not lead with the batch size.
        data_policy: ``"verify"``, ``"cache"`` or ``"trust"`` for a streamed set (module docstring).
        ignore_index: the label of tokens that do not count (built-in cross-entropy).
        label_smoothing: α of the built-in cross-entropy (:func:`sharpness.objective.losses.example_losses`).
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
        dtype: the floating type to compute in (default: the model's).
        device: where to compute (default: the model's).
        check_determinism: evaluate the first chunk twice and refuse a model whose outputs differ. (It is always
            evaluated once: shapes, labels and the loss are checked, and SDPA is detected.)
        reduce: the hook that makes the objective span several processes. Every sum over the local samples
            (the loss sum, the gradient sum, the correct count, the Hessian-vector product sum, the total
            weight) passes through ``reduce`` *before* it is divided by the total weight, so with the
            analysis set sharded across ranks and ``reduce=sharpness.objective.distributed.all_reduce_sum`` each rank
            computes ``Σ_ranks Σ_{i∈shard} w_i ℓ_i / Σ_ranks Σ_{i∈shard} w_i`` — the same f(θ), ∇f and H @ v
            as one process over the whole set (up to summation order). It must not modify its argument in
            place; it is a collective, so every rank must make the same calls in the same order.
            Default: identity (one process). The determinism check stays local.
        shard: ``(rank, world_size)`` for a streamed set under ``torchrun``: this rank reads, hashes and
            evaluates only batches ``rank, rank + W, …`` of each pass (disjoint, together every batch once; no
            padding; a ``DataLoader`` over a map-style dataset never loads the other batches' samples), and the
            batch sizes and per-sample digests are pooled through ``reduce``, so every rank holds the one-process
            :meth:`fingerprint` (without ``reduce`` the shard is an analysis set of its own). Tensors are sharded by the caller instead
            (:func:`sharpness.objective.distributed.shard_tensors`).
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
            # A torch.nn loss module becomes per-example losses and weights (loss_modules.py).
            self._loss_fn: Callable | None = module_loss(loss, target_key) or loss
            self.loss_kind = f"callable:{callable_name(self._loss_fn)}"
        else:
            self._loss_fn = None
            self._auto_pending = loss == "auto" and not tensor_path  # settled on the first batch
            if loss == "auto":
                loss = "cross-entropy" if not tensor_path or not targets.is_floating_point() else "mse"
            if loss not in LOSSES:
                raise InputError(f"loss must be one of {', '.join(LOSSES)}, 'auto', a torch.nn loss module or a "
                                 f"callable {CONTRACT}, got {loss!r}")
            self.loss_kind = loss
        self.has_accuracy = (self._loss_fn is None and self.loss_kind in ("cross-entropy", "bce", "causal-lm")
                             or bool(getattr(self._loss_fn, "has_accuracy", False)))
        self._forward_fn = forward
        self.forward_name = "default" if forward is None else callable_name(forward)
        self.target_key = target_key
        self.batch_size_fn = batch_size_fn
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        self.data_policy = data_policy if not tensor_path else None
        self.seed = int(seed)
        self.shard = shard
        self.bn_mode = bn_mode
        self.reduce: Callable[[Tensor], Tensor] = reduce or _local
        #: a streamed shard pools its counts and digests with the other ranks' only through a reduce hook;
        #: without one it is an analysis set of its own
        self._pooled = reduce is not None

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
        #: "math" when the model reaches fused attention, else None: known modules are switched before the first
        #: forward (whose fast path would warn about nested tensors), functional calls by the probe (determinism.py).
        self.attention: str | None = "math" if attention_modules(module) else None

        # The module is already a private copy: its tensors are referenced, not cloned again.
        all_params = {k: v.detach() for k, v in module.named_parameters()}
        self.names: list[str] = select_parameters(list(all_params), params)
        self.param_patterns = params
        self._fixed = {k: v for k, v in all_params.items() if k not in self.names}
        self._fixed.update({k: v.detach() for k, v in module.named_buffers()})
        self.shapes = [all_params[k].shape for k in self.names]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.numel = sum(self.sizes)
        self.theta = torch.cat([all_params[k].reshape(-1) for k in self.names])
        # The copy's varying parameters become views of θ (same values), so θ is the one P-vector held.
        with torch.no_grad():
            named = dict(module.named_parameters())
            for k, view in self.unflatten(self.theta).items():
                named[k].data = view
        del all_params

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
    def per_sample_path(self) -> bool:
        """True when the objective takes the exact per-sample path of the toolkit's own data: in-memory
        tensors, a built-in per-sample loss, no label smoothing and no ignored labels (bit-identical to what it
        always computed); False for token weights, label smoothing, a loss callable or a streamed set."""
        return self._plain

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
        for raw in self.source.passes(self.seed, shard=self.shard):
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
        # Only around models that reach attention: entering the switch costs ~15 µs per forward (CPU, measured).
        return math_attention() if self.attention == "math" else contextlib.nullcontext()

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


    def chunk_loss_sum(self, params: dict[str, Tensor], batch: Any, weights: Tensor | None = None) -> Tensor:
        """Σ_i w_i ℓ_i over one chunk (not divided by anything: chunks add up exactly)."""
        return self.output_sums(self.forward(params, batch), batch, weights, hits=False)[0]

    def chunk_sums(self, params: dict[str, Tensor], batch: Any, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(Σ w ℓ, Σ w·[prediction right]) over one chunk from one forward pass (zero hits where accuracy is undefined)."""
        loss, hit, _ = self.output_sums(self.forward(params, batch), batch, weights, hits=True)
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

    def losses_at(self, thetas: Tensor, *, batch_size: int | None = None) -> Tensor:
        """f at each row of ``thetas`` ``(B, P)`` as a ``(B,)`` float64 tensor on the device, evaluated in vmapped
        blocks where that pays (:func:`sharpness.objective.points.losses_at`; ``batch_size=1``: as :meth:`value`)."""
        from .points import losses_at

        return losses_at(self, thetas, batch_size=batch_size)

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
