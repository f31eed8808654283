"""Sharpness inside a Hugging Face ``transformers.Trainer`` run: a callback that tracks λ_max every N steps, and
the pass/fail gate after ``Trainer.train()``.

    trainer = Trainer(model, args, train_dataset=train, ...)
    tracking = SharpnessTrainerCallback.attach(trainer, ids, labels, every=50, loss="causal-lm", trace=True)
    trainer.train()
    report = gate(trainer, analysis_batches, loss="causal-lm", max_eigenvalue=200.0)   # raises GateFailed

* **The analysis set** of the callback is fixed for the whole run: ``inputs``/``targets`` tensors (for a causal
  LM, ``input_ids`` and ``labels`` of shape ``(N, T)`` with ``-100`` where a token does not count; with right
  padding no attention mask is needed, since a causal model's real tokens never attend to later pads), of which
  the tracker draws ``analysis_samples`` once with its seed (:class:`~sharpness.tracking.SharpnessTracker`).
* **When**: after every ``every``-th optimizer step (``state.global_step``), at the start and at the end, on the
  main process only. The tracker deep-copies the model, so training is untouched.
* **Where the values go**: through the Trainer's own ``log``, so they land in ``trainer.state.log_history`` and
  in every logger the run reports to (TensorBoard, W&B, MLflow, ...: ``report_to``), as ``sharpness/lambda_max``,
  ``sharpness/trace``, ``sharpness/eos_threshold``, ... (:func:`sharpness.tracking.record_scalars`; the
  TensorBoard callback files them under ``train/``). The callback needs its Trainer for that: ``attach`` builds,
  binds and adds it in one call; ``bind(trainer)`` does it for a callback passed as ``callbacks=[...]``.
* **Resuming** (``trainer.train(resume_from_checkpoint=...)``) starts a new series: the records are not part of
  the Trainer's checkpoints (the Lightning callback's are); save ``tracking.tracker.to_dict()`` yourself.
* **The gate** is :func:`sharpness.analyze` on the trained model with thresholds (``max_eigenvalue``,
  ``max_trace``, ``max_epsilon_sharpness``, ``baseline`` + ``max_increase``); its numbers go through the same
  ``log`` as ``sharpness/gate/...`` and a failed check raises :class:`~sharpness.errors.GateFailed` (what the
  CLI turns into exit code 3) after logging.

Needs ``transformers`` (``pip install sharpness[hf]``); importing this module imports it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import GateFailed, InputError
from ..tracking import SharpnessTracker, record_scalars

try:
    from transformers import TrainerCallback
except ImportError as err:
    raise ImportError(f"sharpness.integrations.hf_trainer needs transformers (pip install sharpness[hf]), "
                      f"got ImportError: {err}") from None

__all__ = ["SharpnessTrainerCallback", "gate", "report_scalars"]


class SharpnessTrainerCallback(TrainerCallback):
    """Runs a :class:`~sharpness.tracking.SharpnessTracker` during ``Trainer.train()`` (module docstring).

    Args:
        inputs: the analysis set the tracker draws from (e.g. ``input_ids``).
        targets: its targets (e.g. ``labels``).
        every: measure after every ``every``-th optimizer step. Default 20.
        tracker: a configured tracker instead (then leave the tracker options and ``inputs`` out).
        trainer: the Trainer whose ``log`` receives the values (or :meth:`bind` it later).
        prefix: key prefix of the logged values. Default ``"sharpness/"``.
        **tracker_options: keyword arguments of :class:`SharpnessTracker` (``loss="causal-lm"`` for a causal
            LM, ``analysis_samples``, ``top_k``, ``lambda_min``, ``trace``, ``tol``, ``dtype``, ``seed``, ...).
            ``held_out`` defaults to False here (pass an ``(x, y)`` pair for a held-out loss).

    Attributes:
        tracker: the tracker; ``tracker.records`` holds the series.
    """

    def __init__(self, inputs: Tensor | None = None, targets: Tensor | None = None, *, every: int = 20,
                 tracker: SharpnessTracker | None = None, trainer: Any = None, prefix: str = "sharpness/",
                 **tracker_options: Any) -> None:
        super().__init__()
        if tracker is not None and (tracker_options or inputs is not None):
            raise InputError("expected either tracker= or tracker options/inputs, got both")
        if tracker is None:
            if inputs is None:
                raise InputError("expected the analysis set as inputs/targets tensors (e.g. input_ids and labels), "
                                 "got none")
            tracker_options.setdefault("held_out", False)
            tracker = SharpnessTracker(inputs, targets, every=every, **tracker_options)
        self.tracker = tracker
        self.trainer = trainer
        self.prefix = prefix

    @classmethod
    def attach(cls, trainer: Any, *args: Any, **kwargs: Any) -> "SharpnessTrainerCallback":
        """Build the callback for ``trainer``, bind it and add it to the trainer's callbacks."""
        callback = cls(*args, trainer=trainer, **kwargs)
        trainer.add_callback(callback)
        return callback

    def bind(self, trainer: Any) -> "SharpnessTrainerCallback":
        """Send the values through ``trainer.log`` (for a callback given to ``Trainer(callbacks=[...])``)."""
        self.trainer = trainer
        return self

    # --- hooks (transformers calls them with args, state, control and model/optimizer/... keywords) -------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is None:
            raise InputError("expected SharpnessTrainerCallback bound to its Trainer, got none: use "
                             "SharpnessTrainerCallback.attach(trainer, ...) or callback.bind(trainer)")
        if state.is_world_process_zero and self.tracker.measure_at_start and not self.tracker.measured_at(state.global_step):
            self._measure(state, **kwargs)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.tracker.due(int(state.global_step)):
            self._measure(state, **kwargs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.tracker.measure_at_end and not self.tracker.measured_at(state.global_step):
            self._measure(state, **kwargs)

    def _measure(self, state: Any, model: Any = None, optimizer: Any = None, **_: Any) -> None:
        # Accelerate wraps the optimizer (AcceleratedOptimizer is an Optimizer too, of another name): the
        # stability threshold must read the torch optimizer inside.
        while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
            optimizer = optimizer.optimizer
        epoch = None if state.epoch is None else int(state.epoch)  # completed epochs (HF counts fractions)
        record = self.tracker.measure(model, int(state.global_step), epoch=epoch, optimizer=optimizer)
        self.trainer.log(record_scalars(record, prefix=self.prefix))


def report_scalars(report: Any, *, prefix: str = "sharpness/") -> dict[str, float]:
    """The headline numbers of a :class:`~sharpness.analysis.report.Report` (or its dict) for a logger: ``lambda_max``,
    ``lambda_min``, ``trace``, ``epsilon_sharpness`` (the first ε), ``loss``, and ``passed`` (1.0 / 0.0) when a
    gate was asked for; absent measures are left out."""
    d = report if isinstance(report, dict) else report.to_dict()
    h = d.get("hessian") or {}
    values = {
        "lambda_max": ((h.get("top") or {}).get("values") or [None])[0],
        "lambda_min": ((h.get("bottom") or {}).get("values") or [None])[0],
        "trace": (h.get("trace") or {}).get("value"),
        "epsilon_sharpness": ((d.get("epsilon_sharpness") or [{}])[0]).get("value"),
        "loss": d.get("loss"),
    }
    if (d.get("gate") or {}).get("checks"):
        values["passed"] = 1.0 if d["gate"]["passed"] else 0.0
    return {prefix + k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and v == v}


def gate(trainer: Any, data: Any, targets: Tensor | None = None, *, raise_on_failure: bool = True,
         log: bool = True, prefix: str = "sharpness/gate/", **analyze_options: Any) -> Any:
    """The pass/fail check after ``trainer.train()``: :func:`sharpness.analyze` of ``trainer.model`` on ``data``
    (tensors with ``targets``, a Dataset, a DataLoader or a list of dict batches) with ``analyze_options``
    (``loss="causal-lm"``, ``max_eigenvalue=``, ``max_trace=``, ``epsilon=``, ``max_epsilon_sharpness=``,
    ``baseline=`` + ``max_increase=``, ...). Logs :func:`report_scalars` through ``trainer.log`` (``log=True``),
    then raises :class:`~sharpness.errors.GateFailed` naming the failed checks (``raise_on_failure=True``).
    Returns the :class:`~sharpness.analysis.report.Report`; the model is not modified. Under a distributed launch
    (``torchrun``) call it on every rank, as a script does: :func:`sharpness.analyze` shards ``data`` across the
    ranks of the initialized process group and all-reduces, so every rank gets the one-process report."""
    from .. import analyze  # the orchestration layer; imported here so that importing this module stays light

    report = analyze(trainer.model, data, targets, **analyze_options)
    if log:
        trainer.log(report_scalars(report, prefix=prefix))
    if raise_on_failure and not report.passed:
        failed = [c["name"] for c in report.to_dict()["gate"]["checks"] if not c["passed"]]
        raise GateFailed(", ".join(failed))
    return report
