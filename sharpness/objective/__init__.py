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

Losses (:mod:`sharpness.objective.losses`): ``"cross-entropy"`` for integer class labels (``(N, C)`` logits, or
``(N, T, V)`` sequences weighting every token, with ``ignore_index`` and label smoothing), ``"mse"`` for float
targets (per-sample mean over output dimensions, so a scalar-output linear model has the textbook Hessian
H = 2/N·XᵀX), ``"bce"``, ``"auto"`` (by the target dtype), or any callable ``loss(outputs, batch)`` returning
per-example losses, or ``(losses, weights)``: f is then Σ w ℓ / Σ w over every example of every batch.

Data (:mod:`sharpness.objective.batches`): in-memory tensors ``(x, y)`` (sliced into chunks, the fast path), or the
researcher's own pipeline — a ``Dataset``, a ``DataLoader`` or any re-iterable of batches that are nests of
tensors — streamed batch by batch, so memory is one batch plus the model, never N. ``forward(model, batch)``
replaces the default model call. A streamed set must be *fixed*: ``data_policy="verify"`` (default) passes
over it twice at construction and refuses it when the order-independent fingerprint of its samples changes
(an augmenting loader; a shuffling one keeps its fingerprint and is accepted), ``"cache"`` keeps the batches of
one pass in memory (f is that one draw), ``"trust"`` skips the second pass. Each pass runs under a forked,
seeded RNG, so a shuffling loader visits its samples in the same order every pass (bitwise-repeatable sums)
and the user's random state and loader are left as they were.

Attention: the fused kernels behind ``F.scaled_dot_product_attention`` (flash, memory-efficient, the CPU flash
kernel) and the fast path of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` have no double backward,
so a model that reaches them (those modules, any ``nn.Transformer*``, a Hugging Face model with
``attn_implementation="sdpa"``, a direct functional call) is evaluated under
:func:`~sharpness.objective.attention.math_attention` for every value, gradient, Hessian-vector product and grid
point (one function of θ throughout); the objective says so once per model class on the log and records
``"attention": "math"`` in :attr:`Objective.config`.

Layout (one idea per module; every name is importable from ``sharpness.objective``):

* :mod:`~sharpness.objective.core`: :class:`Objective` itself (construction, flat vectors, the evaluation
  policy, value / gradient / accuracy), :class:`Evaluation`, :func:`select_parameters`, :func:`callable_name`;
* :mod:`~sharpness.objective.analysis_set`: in-memory tensors versus a streamed set (``data_policy``
  verify / cache / trust, sharding, the content fingerprint);
* :mod:`~sharpness.objective.sums`: how one chunk's outputs become the weighted sums (Σ w ℓ, Σ w·hit, Σ w);
* :mod:`~sharpness.objective.memory`: the memory budget (``memory=``) and :attr:`Objective.chunk_policy`;
* :mod:`~sharpness.objective.determinism`: the first-chunk probe, attention detection and
  :func:`determinism_tolerance`;
* :mod:`~sharpness.objective.loss_modules`: ``loss=nn.CrossEntropyLoss(...)`` and the other standard loss modules
  as per-example losses and weights (their ``reduction="mean"`` over the whole set);
* :mod:`~sharpness.objective.attention`: :func:`~sharpness.objective.attention.math_attention`, the switch to
  attention with second derivatives;
* :mod:`~sharpness.objective.labels`: label range and output-shape checks for cross-entropy.
"""

from __future__ import annotations

# Every name this module had before it became a package, so `from sharpness.objective import X` still works.
from .losses import LOSSES, cross_entropy_and_argmax, per_sample_loss  # noqa: F401
from .analysis_set import DEFAULT_DATASET_BATCH  # noqa: F401
from .core import BN_MODES, Evaluation, Objective, _Call, _local, callable_name, select_parameters  # noqa: F401
from .determinism import _SDPA_NOTICED, _SdpaSpy, determinism_tolerance  # noqa: F401
from .memory import DEFAULT_MEMORY, MEMORY_PROBE_SAMPLES, MEMORY_SAFETY  # noqa: F401

__all__ = ["Objective", "Evaluation", "per_sample_loss", "cross_entropy_and_argmax", "select_parameters", "LOSSES"]
