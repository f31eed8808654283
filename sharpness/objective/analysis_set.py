"""The analysis set of an :class:`~sharpness.objective.Objective`: in-memory tensors or a streamed set.

Tensors are moved and cast once and sliced into chunks. A streamed set (``Dataset``, ``DataLoader``, any
re-iterable of batches) is passed over at construction to count its samples, total weight and content
fingerprint; ``data_policy="verify"`` passes a second time and refuses a set whose samples change,
``"cache"`` keeps one pass's batches, ``"trust"`` skips the check. Under ``shard=(rank, W)`` each rank owns
batches ``rank, rank + W, …`` and reads, hashes, weighs and caches only those; the batch sizes and per-sample
digests of the others arrive through ``reduce`` (32 bytes a sample), so every rank holds the fingerprint one
process computes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import batches as B
from ..errors import InputError

#: Samples a ``Dataset`` is batched into when it is streamed (memory is one batch plus the model).
DEFAULT_DATASET_BATCH = 256


class AnalysisSet:
    """Mixin of :class:`~sharpness.objective.Objective`: builds and fingerprints the analysis set."""

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
        pooled = world > 1 and self._pooled  # else this shard is the whole analysis set
        sizes: list[int] = []
        digests: list[bytes] = []
        cached: list[Any] = []
        local_weight = 0.0
        failure: InputError | None = None
        try:
            for j, raw in enumerate(source.passes(self.seed, shard=(rank, world))):
                b = B.batch_size(raw, self.batch_size_fn)
                sizes.append(b)
                if b == 0:
                    continue
                if getattr(self, "_auto_pending", False):
                    self._auto_pending = False
                    if self._target(raw).is_floating_point():
                        self.loss_kind = "mse"
                        self.has_accuracy = False
                digests.extend(B.sample_digests(raw, b))
                if self.data_policy == "cache":
                    cached.append(B.tree_map(lambda t: t.detach().cpu().clone(), raw))
                local_weight += self._batch_weight(B.to_device(raw, self.device, self.dtype),
                                                   where=f"batch {rank + j * world}")
        except InputError as e:
            if not pooled:
                raise
            failure = e  # raised after the ranks compared notes: the others must not wait on this one
        if pooled:
            sizes, digests = self._all_ranks(sizes, digests, failure)
        n, count, largest = sum(sizes), sum(1 for b in sizes if b), max(sizes, default=0)
        if n == 0:
            raise InputError(f"expected a non-empty analysis set, got a {source.kind} with no samples")
        if pooled and count < world:
            raise InputError(f"expected at least one batch per rank, got {count} batches for {world} ranks")
        self.n_samples = n
        self.num_batches = count
        self.chunk_size = min(chunk_size, largest) if chunk_size else largest
        self._fingerprint = {"n_samples": n, "sample_sha256": B.combine_digests(digests), "method": "sorted per-sample sha256"}
        if self.data_policy == "verify":
            again_sizes: list[int] = []
            again: list[bytes] = []
            failure = None
            try:
                for raw in source.passes(self.seed + 1, shard=(rank, world)):
                    again_sizes.append(B.batch_size(raw, self.batch_size_fn))
                    again.extend(B.sample_digests(raw, again_sizes[-1]))
            except InputError as e:
                if not pooled:
                    raise
                failure = e
            if pooled:
                again_sizes, again = self._all_ranks(again_sizes, again, failure)
            second = B.combine_digests(again)
            if len(again) != n or second != self._fingerprint["sample_sha256"]:
                raise InputError(
                    f"expected a fixed analysis set, got a {source.kind} whose samples change between passes "
                    f"({n} then {len(again)} samples, content sha256 {self._fingerprint['sample_sha256'][:12]}… then "
                    f"{second[:12]}…): random augmentation or resampling makes the loss a random function; remove it, "
                    "or opt into data_policy='cache' to analyze one recorded draw"
                )
        elif self.data_policy == "cache":
            self.source = B.CachedSource(cached, source.kind)  # this rank's batches only
        self.total_weight = float(self.reduce(torch.tensor(local_weight, dtype=torch.float64, device=self.device)))
        if not self.total_weight > 0:
            raise InputError(f"expected a positive total example weight, got {self.total_weight} (every token ignored?)")

    def _all_ranks(self, sizes: list[int], digests: list[bytes], failure: InputError | None) -> tuple[list[int], list[bytes]]:
        """Every batch's size and every sample's digest of one pass, in one-process order, from this rank's
        batches ``rank, rank + W, …`` (``sizes``) and their digests: each rank writes its entries into zeros and
        ``reduce`` sums them into place (exact: int64 plus zeros), three collectives. A rank that failed
        (``failure``) says so in the first, so every rank raises instead of waiting for it."""
        rank, world = self.shard
        head = torch.zeros(world + 1, dtype=torch.float64, device=self.device)
        head[0], head[1 + rank] = float(failure is not None), float(len(sizes))
        head = self.reduce(head).cpu()
        if failure is not None:
            raise failure
        if head[0] > 0:
            raise InputError(f"expected every rank to read its shard of the analysis set, got an error on "
                             f"{int(head[0])} other rank(s) (their messages say which)")
        counts = [int(c) for c in head[1:].tolist()]
        total = sum(counts)
        if counts != [len(range(r, total, world)) for r in range(world)]:
            raise InputError(f"expected the ranks to see one sequence of batches (rank r holding batches r, r + "
                             f"{world}, …), got {counts} batches on ranks 0..{world - 1}: a source that depends on "
                             "the rank cannot be sharded here")
        placed = torch.zeros(total, dtype=torch.float64, device=self.device)
        placed[rank::world] = torch.tensor(sizes, dtype=torch.float64, device=self.device)
        every = [int(b) for b in self.reduce(placed).tolist()]
        starts = [0]
        for b in every:
            starts.append(starts[-1] + b)
        rows = torch.zeros(starts[-1], 4, dtype=torch.int64, device=self.device)
        if digests:
            mine = torch.cat([torch.arange(starts[r], starts[r + 1]) for r in range(rank, total, world)])
            local = torch.frombuffer(bytearray(b"".join(digests)), dtype=torch.int64).reshape(-1, 4)
            rows[mine.to(self.device)] = local.to(self.device)
        every_digest = self.reduce(rows).cpu().numpy()
        return every, [row.tobytes() for row in every_digest]

    def fingerprint(self) -> dict:
        """``{"n_samples", "sample_sha256", "method"}``: the order- and batching-independent content hash of
        the analysis set (:func:`sharpness.objective.batches.combine_digests`), the same for every source holding the same
        samples. A streamed set is hashed as the loader yields it (before any cast); in-memory tensors as stored
        (after the cast to :attr:`dtype`), so :func:`sharpness.analysis.report.analyze` hashes the caller's tensors itself."""
        if self._fingerprint is None:
            digests = B.sample_digests((self.inputs, self.targets), self.n_samples)
            self._fingerprint = {"n_samples": self.n_samples, "sample_sha256": B.combine_digests(digests),
                                 "method": "sorted per-sample sha256"}
        return dict(self._fingerprint)
