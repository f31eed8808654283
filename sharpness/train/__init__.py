"""One training loop for small- and large-batch training: the batch size is a number, never a code path.

Keskar et al. (ICLR 2017) compare small-batch (SB, 256) and large-batch (LB, 10 % of the data) training from
the same initial weights; Goyal et al. (2017) keep large batches trainable with the linear learning-rate
scaling rule and a gradual warmup; Smith & Le (2018) and Jastrzębski et al. (2017) tie the SGD noise scale to
η/B. :func:`train` runs all of these from one :class:`TrainConfig`:

* **Batches.** The training split lives on the device as tensors. Each epoch draws a permutation from a
  ``torch.Generator`` seeded with the recorded data-order seed, and step ``b`` of the epoch uses samples
  ``perm[b·B : (b+1)·B]`` (no DataLoader). With ``drop_last=True`` (default) every step sees exactly B
  samples, so the noise scale η/B is the same for every step; the few left-over samples change every epoch.
* **Gradient accumulation.** A batch that does not fit in memory is cut into micro-batches
  (``accumulate=k`` near-equal parts, or as many parts of at most ``max_micro_batch`` as needed). Each
  micro-batch back-propagates ``Σ_{i∈micro} ℓ_i / B``, so the accumulated gradient is exactly the gradient
  of the batch mean ``(1/B) Σ_{i∈batch} ℓ_i`` whatever the micro-batch sizes (unequal parts are weighted
  by their size, not averaged as means). See :func:`accumulate_gradients`.
* **BatchNorm.** In train mode BatchNorm normalizes with the statistics of the samples in one forward pass.
  Default (``ghost_batch=None``): one forward pass per micro-batch, so *with accumulation the statistics
  are those of each micro-batch, not of the whole batch*; a true large-batch BN would need all B samples in
  one pass. ``ghost_batch=G`` is Hoffer et al.'s (NeurIPS 2017) ghost batch norm: every batch is cut into
  virtual batches of G samples (the last one smaller if G does not divide B), each forwarded on its own, so
  BatchNorm normalizes with G-sample statistics and updates its running averages once per virtual batch,
  while the gradient is still the mean over all B samples. It makes a large batch see small-batch BN noise.
  Since each virtual batch is already its own pass, ``ghost_batch`` excludes ``accumulate``.
* **Learning rate** (:class:`LRSchedule`): the peak η̂ is ``lr`` scaled for the batch relative to
  ``base_batch_size`` (``lr_scaling`` = ``none``: η̂ = η; ``linear``: η̂ = η·B/B₀ (Goyal et al.);
  ``sqrt``: η̂ = η·√(B/B₀) (Krizhevsky 2014; Hoffer et al. 2017)); a linear warmup over ``warmup_epochs``;
  then ``constant``, ``cosine`` (to 0 at the last step) or ``step`` (× ``gamma`` at each of ``milestones``).
* **Stopping.** ``epochs=E`` or ``steps=S``, or ``until_train_loss=L`` (stop at the end of the first epoch
  whose full-train-split loss is below L, at most ``max_epochs``) to compare minima at matched training loss,
  or ``until_train_accuracy=A`` (… whose full-train-split accuracy is at least A, e.g. 0.99) to train to
  convergence as Keskar et al. did. A run the cap stops ends with ``stopped_by="max_epochs"`` and
  ``reached_train_loss`` (or ``reached_train_accuracy``) False.
* **Evaluation.** Every ``eval_every`` epochs (and at the end) the full train and test splits are evaluated
  without gradients in eval mode (BatchNorm running statistics, no dropout) in chunks of ``eval_chunk``.
  With an "until" rule the train split is evaluated every epoch (it is the stopping rule).
* **Randomness.** ``seed`` draws the initial weights (:func:`sharpness.models.build_model`) and, unless
  ``data_seed`` is given, the data order. In-model randomness (dropout) runs on the global RNG inside
  ``torch.random.fork_rng`` seeded from the data-order seed, so the caller's RNG state is never changed.
  Same configuration and seed → bit-identical weights on CPU; runs with the same ``seed`` (or the same
  ``init_from``) start from bit-identical weights whatever their batch size.
* **Failure and interruption.** A non-finite loss stops training before the update that would use it; the
  weights at the end of the last good epoch are written to ``out`` and :class:`TrainingDiverged` (an
  :class:`~sharpness.errors.InputError`, CLI exit 2) names the step. Ctrl-C (SIGINT) or SIGTERM is deferred
  to the end of the current step; then model, optimizer, RNG and data-order states, position and history are
  written atomically to ``out + ".resume"`` and :class:`TrainingInterrupted` is raised. ``resume=True``
  continues from that file and ends with the same weights, bit for bit, as an uninterrupted run.

Callbacks (the hook a sharpness tracker builds on) are described in :class:`Callback`.

The package, one module per idea: :mod:`~sharpness.train.config` (the configuration and batch sizes),
:mod:`~sharpness.train.schedule` (learning rates), :mod:`~sharpness.train.step` (one step's gradient, the
evaluation of a split), :mod:`~sharpness.train.callbacks` (hooks and the progress bar),
:mod:`~sharpness.train.runtime` (device, seeds, determinism, deferred signals), :mod:`~sharpness.train.resume`
(the ``.resume`` state), :mod:`~sharpness.train.result` (how a run ends) and :mod:`~sharpness.train.loop`
(:func:`train` itself). Every name below is importable from ``sharpness.train``.
"""

from __future__ import annotations

# Re-exports: the names that lived in the single-file sharpness/train.py stay importable from here (the CLI,
# sweep and throughput use the constants, load_data and _device; a test patches _Run's epoch end).
from ..numerics.dtypes import DTYPES  # noqa: F401
from .callbacks import Callback, TrainState
from .config import LR_SCALINGS, OPTIMIZERS, SCHEDULES, TrainConfig, micro_batch_sizes, resolve_batch_size  # noqa: F401
from .loop import _Run, load_data, train  # noqa: F401
from .result import TrainingDiverged, TrainingInterrupted, TrainResult
from .resume import RESUME_FORMAT, resume_path, snapshot_path  # noqa: F401
from .runtime import _device  # noqa: F401
from .schedule import LRSchedule, lr_schedule
from .step import accumulate_gradients, resolve_loss  # noqa: F401

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "Callback",
    "LRSchedule",
    "TrainingDiverged",
    "TrainingInterrupted",
    "train",
    "lr_schedule",
    "resolve_batch_size",
    "micro_batch_sizes",
    "accumulate_gradients",
    "resume_path",
    "snapshot_path",
]
