"""The hooks :func:`~sharpness.train.train` calls (:class:`Callback`), the live :class:`TrainState` they see, and
the progress bar, which is one such callback."""

from __future__ import annotations

import sys
from typing import Any, Protocol, Sequence


class TrainState:
    """The live view of a run that callbacks receive (one object, updated in place).

    Attributes:
        model: the module being trained (in train mode during steps).
        optimizer: the ``torch.optim`` optimizer.
        config: the :class:`TrainConfig`.
        step: number of optimizer updates done so far (0 before the first).
        epoch: number of completed epochs.
        batch: index of the next batch within the current epoch (0 … ``steps_per_epoch``).
        lr: learning rate of the last update (of the next one in ``on_train_begin``).
        loss: mean loss of the last batch, computed *before* that update (``None`` before the first step).
        batch_size, steps_per_epoch, total_steps: the resolved sizes (``total_steps`` is the cap).
        history: the per-epoch records so far (list of dicts, see :func:`train`).
        x_train, y_train, x_test, y_test: the splits as tensors on the training device/dtype.
        data_spec: the dataset spec; ``device``, ``dtype``: where training runs.
        resumed: True when this run continued from a ``.resume`` file.
        stop: set to True to end training after the current step (recorded as ``stopped_by="callback"``).
    """

    def __init__(self, **values: Any) -> None:
        self.stop = False
        self.loss: float | None = None
        self.__dict__.update(values)


class Callback(Protocol):
    """Hooks called by :func:`train`; every method is optional (only those present are called).

    ``on_train_begin(state)``: after the weights are initialized (or restored on resume), before step 1;
    ``state.step`` is 0 on a fresh run. ``on_step_end(state)``: after each optimizer update, with
    ``state.step`` = k after the k-th update (so measuring "at step k" means ``state.step == k`` here).
    ``on_epoch_end(state)``: after each epoch's evaluation, ``state.history[-1]`` is that epoch's record.
    ``on_train_end(state)``: after the last evaluation, before the checkpoint is written.
    ``checkpoint_extra() -> dict`` (optional): plain values merged into the checkpoint's ``extra``.

    Contract (what keeps training bit-identical with and without the callback):

    * never change ``state.model``'s parameters, buffers, mode or ``requires_grad``, nor the optimizer;
      measure on a copy, e.g. ``sharpness.objective.Objective(state.model, state.x_train, state.y_train)``,
      which deep-copies the model, runs it in eval mode and uses ``torch.func``.
    * do not forward ``state.model`` itself in train mode: BatchNorm would update its running statistics.
    * draw random numbers only from your own ``torch.Generator``: the global RNG inside training is the
      dropout stream, and consuming from it changes the run.
    * raising an exception aborts training; ``KeyboardInterrupt`` is handled like Ctrl-C (state saved).

    Resumable callbacks: if a callback also has ``state_dict()`` (returning tensors and plain values) and
    ``load_state_dict(d)``, its state is saved with the ``.resume`` file and given back on resume.
    """

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


def _call(callbacks: Sequence[Any], hook: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(state)


class _ProgressBar:
    """tqdm on stderr over the step budget, with the last loss and the latest evaluation."""

    def __init__(self, total: int | None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, file=sys.stderr, unit="step", dynamic_ncols=True, leave=False)
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, state: TrainState) -> None:
        self.bar.update(state.step - self.bar.n)

    def on_step_end(self, state: TrainState) -> None:
        self.bar.update(1)
        if state.step % 20 == 0:
            self.postfix["loss"] = f"{state.loss:.4g}"
            self.bar.set_postfix(self.postfix, refresh=False)

    def on_epoch_end(self, state: TrainState) -> None:
        rec = state.history[-1]
        self.postfix["ep"] = str(rec["epoch"])
        for key in ("train_acc", "test_acc"):
            if rec.get(key) is not None:
                self.postfix[key] = f"{100 * rec[key]:.1f}%"
        self.bar.set_postfix(self.postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()
