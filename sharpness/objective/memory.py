"""The memory budget of an :class:`~sharpness.objective.Objective` over in-memory tensors.

When ``chunk_size`` is not given, the bytes one sample adds to a Hessian-vector product's graph are measured on
a probe chunk and the chunk size is cut so one chunk's graph fits in ``memory=`` bytes (``DEFAULT_MEMORY``);
the choice is recorded in :attr:`Objective.chunk_policy`. Chunking changes results only by summation order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InputError

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


class MemoryBudget:
    """Mixin of :class:`~sharpness.objective.Objective`: chooses :attr:`chunk_size` from a memory budget."""

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
