"""Write :class:`~sharpness.tracking.SharpnessTracker` records to a Weights & Biases run: the same listener
protocol as :class:`~sharpness.integrations.tensorboard.TensorBoardWriter` (a callable taking each record).

    run = wandb.init(project="lb-vs-sb", mode="offline")             # or online; your run, your settings
    tracker = SharpnessTracker(every=20, listeners=[WandbWriter(run)])
    WandbWriter(run).write_all(tracker.records)                       # or afterwards

Each record becomes the scalars of :func:`sharpness.tracking.record_scalars` (``sharpness/lambda_max``,
``sharpness/eos_threshold``, ...) plus ``sharpness/step`` = the record's optimizer step, declared as their x-axis
(``run.define_metric("sharpness/*", step_metric="sharpness/step")``) so that they plot against the training step
whatever W&B's own step counter says (it only moves forward, and the user's training logs move it too).

``wandb`` is imported only when a writer is created without ``run=`` (then ``wandb.init(**init_kwargs)`` starts
one, and :meth:`close` finishes it); importing this module imports nothing of W&B.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..tracking import record_scalars

__all__ = ["WandbWriter"]


def _init_run(init_kwargs: dict) -> Any:
    try:
        import wandb
    except ImportError as err:
        raise ImportError(f"WandbWriter needs the 'wandb' package (pip install wandb), got ImportError: {err}") from None
    return wandb.init(**init_kwargs)


class WandbWriter:
    """A tracker listener that logs each record to a W&B run.

    Args:
        run: the run to log to (anything with ``log(dict)`` and optionally ``define_metric``), e.g. the one
            ``wandb.init`` returned; then nothing is imported and the run is left open at :meth:`close`.
        prefix: key prefix (default ``"sharpness/"``).
        **init_kwargs: for ``wandb.init`` when ``run`` is None (``project=``, ``mode="offline"``, ``dir=``, ...).
    """

    def __init__(self, run: Any = None, *, prefix: str = "sharpness/", **init_kwargs: Any) -> None:
        if run is not None and init_kwargs:
            raise TypeError(f"expected either run= or wandb.init keyword arguments, got both ({sorted(init_kwargs)})")
        self._owned = run is None
        self.run = _init_run(init_kwargs) if run is None else run
        self.prefix = prefix
        self.step_key = prefix + "step"
        if callable(getattr(self.run, "define_metric", None)):
            self.run.define_metric(self.step_key)
            self.run.define_metric(prefix + "*", step_metric=self.step_key)

    def __call__(self, record: Mapping[str, Any]) -> None:
        """Log one record's scalars, at its step on the ``sharpness/step`` axis."""
        self.run.log({self.step_key: int(record["step"]), **record_scalars(record, prefix=self.prefix)})

    def write_all(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Log every record (e.g. ``tracker.records`` after training)."""
        for record in records:
            self(record)

    def close(self) -> None:
        """Finish the run if this writer started it (a run passed in stays the caller's to finish). W&B's service
        process may still be writing an offline run's file when ``finish`` returns."""
        if self._owned and callable(getattr(self.run, "finish", None)):
            self.run.finish()

