"""The loop: :func:`train` builds the run from a :class:`~sharpness.train.TrainConfig`, and :class:`_Run` carries
its mutable state through steps, epoch ends (evaluation, history, snapshots, stopping rules), divergence and
interruption. The package docstring (:mod:`sharpness.train`) describes what a run does."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..checkpoint import load_checkpoint, load_state_strict, save_checkpoint
from ..data import Dataset, hash_tensors, load_dataset
from ..data.dataset import label_gap
from ..numerics.dtypes import DTYPES
from ..errors import InputError
from ..files.loading import is_code_ref, load_user_training_data
from ..models import build_model, model_spec
from ..files.rundir import atomic_write, check_writable
from .callbacks import TrainState, _call, _ProgressBar
from .config import UNTIL_RULES, TrainConfig, micro_batch_sizes, resolve_batch_size, until_reached
from .result import TrainingDiverged, TrainingInterrupted, TrainResult
from .resume import restore, resume_path, resume_payload, snapshot_path
from .runtime import _DeferredInterrupt, _derived_seed, _deterministic, _device, _rng_devices, _seed_global
from .schedule import lr_schedule
from .step import _evaluate, accumulate_gradients, resolve_loss

log = logging.getLogger("sharpness.train")


def _make_optimizer(config: TrainConfig, params: Sequence[Tensor]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def _flat_params(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _state_sha256(state_dict: Mapping[str, Tensor]) -> str:
    return hash_tensors(sorted(state_dict.items()))



def load_data(config: TrainConfig) -> Dataset:
    """``config.data`` as tensors: a named dataset or ``.npz`` file, or a user's ``FILE.py:fn`` (run here: the
    config came from the user's own command line or call; a checkpoint's recorded reference is never run)."""
    if is_code_ref(config.data):
        if config.data_kwargs:
            raise InputError(f"expected no data_kwargs with the data function {config.data!r} (it takes only split=), "
                             f"got {sorted(config.data_kwargs)}")
        return load_user_training_data(config.data, subset=config.subset)
    return load_dataset(config.data, data_dir=config.data_dir, subset=config.subset, **config.data_kwargs)


def _initial_state(config: TrainConfig, model: nn.Module, init_state: Mapping[str, Tensor] | None) -> str | None:
    """Load the starting weights into ``model``; returns where they came from (None: fresh seeded init)."""
    if init_state is not None:
        load_state_strict(model, init_state, config.model, "init_state")
        return "init_state"
    if config.init_from is not None:
        ckpt = load_checkpoint(config.init_from)
        load_state_strict(model, ckpt.state_dict, config.model, config.init_from)
        return os.fspath(config.init_from)
    return None


def train(
    config: TrainConfig,
    *,
    dataset: Dataset | None = None,
    model: nn.Module | None = None,
    init_state: Mapping[str, Tensor] | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = False,
    out: str | os.PathLike | None = None,
    keep_state: bool = False,
) -> TrainResult:
    """Train ``config.model`` on ``config.data`` as the module docstring describes; write a checkpoint to ``out``.

    Args:
        config: the run (:class:`TrainConfig`).
        dataset: use these tensors instead of loading ``config.data`` (its spec is recorded).
        model: train a deep copy of this module instead of building ``config.model`` (the checkpoint still
            records ``config.model``/``model_kwargs`` as the architecture, so keep them consistent).
        init_state: a ``state_dict`` to start from (takes precedence over ``config.init_from``).
        callbacks: objects following the :class:`Callback` protocol.
        progress: show a tqdm bar on stderr.
        out: checkpoint path (written atomically when training ends); also the stem for ``save_every``
            snapshots and the ``.resume`` file. Without it nothing is written and Ctrl-C saves nothing.
        keep_state: also write the ``.resume`` state (atomically) at the end of every epoch, so that a process
            killed without warning (SIGKILL, a lost machine: no Ctrl-C handler runs) continues from its last
            finished epoch with ``resume=True``, bit-identically, instead of from scratch. The file is removed
            when the run finishes (or diverges). A sweep trains every run this way, and so does ``sharpness train``
            unless ``--no-keep-state``.

    History: one record per epoch (and one for the initial weights, epoch 0, and a last one for a run that
    stops mid-epoch by ``steps``) with ``epoch, step, lr, train_loss, train_acc, test_loss, test_acc,
    wall_time`` (seconds since the start, evaluation included) and ``dist_from_init`` (‖θ − θ₀‖₂ over the
    parameters); losses and accuracies are ``None`` in epochs that were not evaluated.

    Metrics: ``train_loss, train_acc, test_loss, test_acc, generalization_gap`` (test − train loss),
    ``accuracy_gap`` (train − test accuracy), ``dist_from_init, epochs, steps, batch_size, steps_per_epoch,
    peak_lr, stopped_by`` (``epochs|steps|until_train_loss|until_train_accuracy|max_epochs|callback``, or
    ``diverged`` in the checkpoint a divergence leaves), ``reached_train_loss`` and ``reached_train_accuracy``
    (True/False with that "until" rule: did it stop the run before the ``max_epochs`` cap; else None), ``train_seconds``
    (optimizer steps and step callbacks), ``eval_seconds``, ``wall_time``, ``samples_per_second`` (training
    samples per training second).

    Raises:
        InputError: bad configuration or data (batch size larger than the data, unwritable output,
            ``init_from`` of a different architecture, a ``.resume`` file from another configuration).
        TrainingDiverged: the loss became NaN/Inf (the last good weights are in ``out``).
        TrainingInterrupted: Ctrl-C/SIGTERM (the state is in ``resume_path(out)``).
    """
    if not isinstance(config, TrainConfig):
        raise InputError(f"expected a TrainConfig, got {type(config).__name__}")
    out = None if out is None else os.fspath(out)
    if out is not None:
        check_writable(out)
    device = _device(config.device)
    dtype = DTYPES[config.dtype]
    dataset = dataset if dataset is not None else load_data(config)
    spec = dict(dataset.spec)
    x_train, y_train = dataset.split("train")
    n_train = int(x_train.shape[0])
    batch = resolve_batch_size(config.batch_size, n_train)
    sizes = micro_batch_sizes(batch, accumulate=config.accumulate, max_micro_batch=config.max_micro_batch,
                              ghost_batch=config.ghost_batch)
    steps_per_epoch = n_train // batch if config.drop_last else -(-n_train // batch)
    schedule = lr_schedule(config, batch_size=batch, steps_per_epoch=steps_per_epoch)
    kind = resolve_loss(config.loss, y_train)
    if config.until_train_accuracy is not None and kind not in ("cross-entropy", "bce"):
        raise InputError(f"expected a classification loss with until_train_accuracy (a {kind} loss has no accuracy)")

    def to_device(x: Tensor | None, y: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        if x is None or y is None:
            return None, None
        y = y.to(device, dtype=dtype) if y.is_floating_point() else y.to(device)
        return x.to(device, dtype=dtype if x.is_floating_point() else None), y  # token ids stay integers

    x_train, y_train = to_device(x_train, y_train)
    x_test, y_test = to_device(dataset.x_test, dataset.y_test)

    arch = model_spec(config.model, spec.get("input_shape"), spec.get("output_dim", spec.get("num_classes")),
                      **config.model_kwargs)
    if model is None:
        gap = label_gap(dataset)  # the class count builds the model: a stray label must not pass unseen
        if gap:
            log.warning(gap)
        net = build_model(config.model, input_shape=spec.get("input_shape"),
                          num_classes=spec.get("output_dim", spec.get("num_classes")), seed=config.seed,
                          **config.model_kwargs)
    else:
        net = copy.deepcopy(model)
    init_source = _initial_state(config, net, init_state)
    net = net.to(device=device, dtype=dtype)
    net.train()
    init_sha = _state_sha256({k: v.detach().cpu() for k, v in net.state_dict().items()})
    optimizer = _make_optimizer(config, list(net.parameters()))

    run = _Run(config=config, net=net, optimizer=optimizer, schedule=schedule, sizes=sizes, batch=batch,
               steps_per_epoch=steps_per_epoch, kind=kind, x_train=x_train, y_train=y_train, x_test=x_test,
               y_test=y_test, spec=spec, device=device, dtype=dtype, out=out, arch=arch,
               init_sha=init_sha, init_source=init_source, callbacks=list(callbacks), keep_state=keep_state)
    bar = _ProgressBar(run.total_steps) if progress else None
    if bar is not None:
        run.callbacks.append(bar)
    try:
        with _DeferredInterrupt() as guard, _deterministic(device.type == "cpu"), \
                torch.random.fork_rng(devices=_rng_devices(device)):
            run.guard = guard
            run.run()
    finally:
        if bar is not None:
            bar.close()
    return run.finish()


class _Run:
    """The mutable state of one training run (kept out of :func:`train` so resume/divergence are methods)."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)
        c: TrainConfig = self.config
        self.total_steps = self.schedule.total_steps
        self.step = self.epoch = self.position = 0
        self.perm: Tensor | None = None
        self.history: list[dict] = []
        self.train_seconds = self.eval_seconds = 0.0
        self.elapsed_before = 0.0
        self.stopped_by: str | None = None
        self.last_lr = self.schedule(0)
        self.theta0 = _flat_params(self.net).clone()
        self.good: dict | None = None
        self.unsafe = False  # True while the state is between two consistent points (mid-step, mid-evaluation)
        self.resumed = False
        self.generator = torch.Generator().manual_seed(_derived_seed(c.order_seed, 0))
        self.state = TrainState(
            model=self.net, optimizer=self.optimizer, config=c, step=0, epoch=0, batch=0, lr=self.last_lr,
            batch_size=self.batch, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
            history=self.history, x_train=self.x_train, y_train=self.y_train, x_test=self.x_test,
            y_test=self.y_test, data_spec=self.spec, device=self.device, dtype=self.dtype, resumed=False,
        )

    # --- start / resume -----------------------------------------------------------------------------------
    def run(self) -> None:
        """Start (or resume), train until a stopping rule fires; Ctrl-C/SIGTERM saves the state and re-raises."""
        self.t0 = time.perf_counter()
        try:
            path = resume_path(self.out) if self.out is not None else None
            if self.config.resume and path is not None and os.path.exists(path):
                restore(self, path)
            else:
                _seed_global(self.device, _derived_seed(self.config.order_seed, 1))
                self._close_epoch(initial=True)
            self._sync_state()
            log.info("training %s on %s: batch %d (%d micro-batch(es)), %d steps per epoch, peak lr %g, from step %d",
                     self.config.model, self.spec.get("name"), self.batch, len(self.sizes), self.steps_per_epoch,
                     self.schedule.peak, self.step)
            _call(self.callbacks, "on_train_begin", self.state)
            self.loop()
        except KeyboardInterrupt:
            self._interrupted()
        _call(self.callbacks, "on_train_end", self.state)


    # --- the loop -----------------------------------------------------------------------------------------
    def loop(self) -> None:
        while self.stopped_by is None:
            if self.perm is None:
                self.perm = torch.randperm(self.x_train.shape[0], generator=self.generator).to(self.device)
            t0 = time.perf_counter()
            while self.position < self.steps_per_epoch and not self._step_limit() and not self.state.stop:
                self._one_step()
                self._sync_state()
                _call(self.callbacks, "on_step_end", self.state)
                self.guard.check()
            self.train_seconds += time.perf_counter() - t0
            if self.position == self.steps_per_epoch:  # a whole epoch is done (else: stopped mid-epoch)
                self.epoch, self.position, self.perm = self.epoch + 1, 0, None
            self.unsafe = True  # a second Ctrl-C during evaluation would leave a half-closed epoch
            self._close_epoch()
            self.unsafe = False
            self._sync_state()
            _call(self.callbacks, "on_epoch_end", self.state)
            if self.state.stop and self.stopped_by is None:  # asked for in on_epoch_end: this epoch is the last
                self.stopped_by = "callback"
                self._complete_last_record()
            if self.keep_state and self.out is not None and self.stopped_by is None:
                # The state a Ctrl-C right here would save: resuming from it continues bit-identically.
                payload = resume_payload(self)
                atomic_write(resume_path(self.out), lambda fh: torch.save(payload, fh))
            self.guard.check()

    def _step_limit(self) -> bool:
        return self.config.steps is not None and self.step >= self.config.steps

    def _one_step(self) -> None:
        b = self.batch
        idx = self.perm[self.position * b:(self.position + 1) * b]
        sizes = self.sizes if idx.shape[0] == b else self._short_batch_sizes(int(idx.shape[0]))
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.unsafe = True
        self.optimizer.zero_grad(set_to_none=True)
        loss = accumulate_gradients(self.net, self.x_train[idx], self.y_train[idx], sizes=sizes, loss=self.kind)
        value = float(loss)
        if not math.isfinite(value):
            self.unsafe = False
            self._diverged(value, f"at step {self.step + 1} (epoch {self.epoch + 1})")
        self.optimizer.step()
        self.step += 1
        self.position += 1
        self.last_lr = lr
        self.state.loss = value
        self.unsafe = False

    def _short_batch_sizes(self, n: int) -> list[int]:
        """Micro-batches for the short last batch of an epoch (``drop_last=False``)."""
        c = self.config
        return micro_batch_sizes(n, accumulate=None if c.accumulate is None else min(c.accumulate, n),
                                 max_micro_batch=c.max_micro_batch, ghost_batch=c.ghost_batch)

    def _sync_state(self) -> None:
        s = self.state
        s.step, s.epoch, s.batch, s.lr, s.resumed = self.step, self.epoch, self.position, self.last_lr, self.resumed

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    # --- epoch ends ---------------------------------------------------------------------------------------
    def _close_epoch(self, *, initial: bool = False) -> None:
        """Evaluate (when due), record history, keep the last good weights, snapshot, decide to stop."""
        c = self.config
        partial = self.position != 0
        if not initial:
            if c.epochs is not None and self.epoch >= c.epochs:
                self.stopped_by = "epochs"
            elif self._step_limit():
                self.stopped_by = "steps"
            elif self.state.stop:
                self.stopped_by = "callback"
        final = self.stopped_by is not None
        due = initial or final or self.epoch % c.eval_every == 0
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"epoch": self.epoch + (1 if partial else 0), "step": self.step, "lr": self.last_lr,
                               "train_loss": None, "train_acc": None, "test_loss": None, "test_acc": None}
        if due or c.until is not None:
            rec["train_loss"], rec["train_acc"] = _evaluate(self.net, self.x_train, self.y_train, self.kind, c.eval_chunk)
        if due and self.x_test is not None:
            rec["test_loss"], rec["test_acc"] = _evaluate(self.net, self.x_test, self.y_test, self.kind, c.eval_chunk)
        theta = _flat_params(self.net)
        rec["dist_from_init"] = float(torch.linalg.vector_norm((theta - self.theta0).double()))
        self.eval_seconds += time.perf_counter() - t0
        rec["wall_time"] = self._elapsed()
        if rec["train_loss"] is not None and not math.isfinite(rec["train_loss"]) or not math.isfinite(rec["dist_from_init"]):
            bad = rec["train_loss"] if rec["train_loss"] is not None else float("nan")
            self._diverged(bad, f"at step {self.step} (end of epoch {rec['epoch']})", what="train loss")
        if c.until is not None and not initial and not final:
            if until_reached(c.until, rec[UNTIL_RULES[c.until][0]], getattr(c, c.until)):
                self.stopped_by = c.until
            elif self.epoch >= c.max_epochs:
                self.stopped_by = "max_epochs"
        self.history.append(rec)
        if self.stopped_by is not None:
            self._complete_last_record()
        self.good = {"state": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
                     "history_len": len(self.history), "epoch": rec["epoch"], "step": self.step}
        if self.out is not None and c.save_every is not None and not initial and not partial and self.epoch % c.save_every == 0:
            self._write(snapshot_path(self.out, self.epoch), self.net.state_dict(), self.history, self._metrics())

    def _complete_last_record(self) -> None:
        """The final record carries both evaluations, whatever ``eval_every`` skipped."""
        rec, c = self.history[-1], self.config
        t0 = time.perf_counter()
        if rec["train_loss"] is None:
            rec["train_loss"], rec["train_acc"] = _evaluate(self.net, self.x_train, self.y_train, self.kind, c.eval_chunk)
        if rec["test_loss"] is None and self.x_test is not None:
            rec["test_loss"], rec["test_acc"] = _evaluate(self.net, self.x_test, self.y_test, self.kind, c.eval_chunk)
        self.eval_seconds += time.perf_counter() - t0

    # --- outcomes -----------------------------------------------------------------------------------------
    def _metrics(self) -> dict:
        last = self.history[-1]
        train_loss, test_loss = last["train_loss"], last["test_loss"]
        train_acc, test_acc = last["train_acc"], last["test_acc"]
        seconds = self.train_seconds
        return {
            "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "generalization_gap": None if None in (train_loss, test_loss) else test_loss - train_loss,
            "accuracy_gap": None if None in (train_acc, test_acc) else train_acc - test_acc,
            "dist_from_init": last["dist_from_init"], "epochs": last["epoch"], "steps": last["step"],
            "batch_size": self.batch, "steps_per_epoch": self.steps_per_epoch, "peak_lr": self.schedule.peak,
            "stopped_by": self.stopped_by,
            **{f"reached_{rule.removeprefix('until_')}": None if getattr(self.config, rule) is None else self.stopped_by == rule
               for rule in UNTIL_RULES},
            "train_seconds": seconds, "eval_seconds": self.eval_seconds, "wall_time": self._elapsed(),
            "samples_per_second": self.step * self.batch / seconds if seconds > 0 else None,
        }

    def _extra(self, **more: Any) -> dict:
        # A callback with checkpoint_extra() (e.g. the SharpnessTracker's series) records into the checkpoint.
        from_callbacks = {k: v for cb in self.callbacks if callable(getattr(cb, "checkpoint_extra", None))
                          for k, v in cb.checkpoint_extra().items()}
        return {"init_sha256": self.init_sha, "init_from": self.init_source, "data_order_seed": self.config.order_seed,
                "device": str(self.device), "resumed": self.resumed, **from_callbacks, **more}

    def _write(self, path: str, state_dict: Mapping[str, Tensor], history: list, metrics: dict, **extra: Any) -> None:
        save_checkpoint(path, model=self.arch, state_dict=state_dict, data=self.spec,
                        train_config=self.config.to_dict(), metrics=metrics, history=history,
                        seed=self.config.seed, extra=self._extra(**extra))

    def _diverged(self, value: float, where: str, *, what: str = "loss") -> None:
        good = self.good
        path = None
        if self.out is not None and good is not None:
            history = self.history[:good["history_len"]]
            self.history[:] = history
            metrics = {**self._metrics(), "stopped_by": "diverged"}
            self._write(self.out, good["state"], history, metrics,
                        diverged={"step": self.step + 1, "epoch": self.epoch + 1, "loss": str(value)})
            path = self.out
            self._drop_state()  # the run has ended: a kept state would only resume into the same divergence
        kept = (f"kept the last good weights (epoch {good['epoch']}, step {good['step']}) in {path}" if path
                else "no output path, nothing kept")
        raise TrainingDiverged(f"{what} became {value} {where}; {kept}; try a smaller learning rate",
                               step=self.step + 1, epoch=self.epoch + 1, loss=value, checkpoint_path=path)

    def _interrupted(self) -> None:
        path = None
        if self.out is not None and not self.unsafe:
            path = resume_path(self.out)
            payload = resume_payload(self)
            atomic_write(path, lambda fh: torch.save(payload, fh))
        where = f"saved the state to {path}; rerun with --resume to continue" if path else "nothing saved"
        raise TrainingInterrupted(f"interrupted after step {self.step} (epoch {self.epoch}); {where}",
                                  step=self.step, resume_path=path)

    def _drop_state(self) -> None:
        leftover = resume_path(self.out)
        if os.path.exists(leftover):
            os.unlink(leftover)

    def finish(self) -> TrainResult:
        metrics = self._metrics()
        if self.out is not None:
            self._write(self.out, self.net.state_dict(), self.history, metrics)
            self._drop_state()
        return TrainResult(model=self.net, history=list(self.history), metrics=metrics, config=self.config,
                           checkpoint_path=self.out)
