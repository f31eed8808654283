""":class:`SharpnessTracker`: the fixed analysis batch, warm-started and verified Lanczos measurements, the
records, the CSV, and the state a ``.resume`` file keeps (the package docstring describes the method)."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..numerics.dtypes import DTYPES
from ..errors import InputError
from ..files.hashing import tensor_sha256
from ..hessian.operator import HessianOperator
from ..linalg import EigenResult, extreme_eigenvalues, hutchpp_trace
from ..objective.losses import per_sample_hits, per_sample_loss
from ..objective import Objective
from ..numerics.precision import precision_policy
from ..objective.subsets import select_analysis_set
from ..files.rundir import atomic_write
from .records import RECORD_FIELDS, SCHEMA
from .rng import _LANCZOS_STREAM, _TRACE_STREAM, _VERIFY_STREAM, _seed_for, preserved_rng
from .threshold import stability_threshold

log = logging.getLogger("sharpness.tracking")


def _check_int(name: str, value: Any, minimum: int, *, none: bool = True) -> None:
    ok = (value is None and none) or (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum)
    if not ok:
        raise InputError(f"expected {name} to be an integer ≥ {minimum}{' or None' if none else ''}, got {value!r}")


def _at_most(samples: int | None, inputs: Tensor) -> int | None:
    """``samples`` capped at the number of rows of ``inputs`` (``None`` stays ``None``: all of them)."""
    return None if samples is None else min(samples, int(inputs.shape[0]))


class SharpnessTracker:
    """Measures λ_max (optionally top-k, λ_min, Hutch++ trace, held-out loss) every k steps of training.

    Use it as a :func:`sharpness.train.train` callback (``callbacks=[tracker]``), or from any PyTorch loop::

        tracker = SharpnessTracker(x_train, y_train, every=20)
        for step in range(1, steps + 1):
            ...; optimizer.step()
            if tracker.due(step):
                tracker.measure(model, step, optimizer=optimizer)

    Args:
        inputs: where the analysis batch is drawn from (default in :func:`~sharpness.train.train`: the
            training split). ``analysis_samples`` of them are drawn once with ``seed``.
        targets: the labels or targets of ``inputs``.
        every: measure after every ``every``-th optimizer step (``state.step % every == 0``).
        every_epochs: measure at the end of every ``every_epochs``-th epoch. With neither, only the start/end
            measurements and explicit :meth:`measure` calls happen.
        analysis_samples: size of the fixed analysis batch (``None``: all of ``inputs``). Default 1000. To
            compare with the stability threshold of full-batch GD, use ``None``: the threshold concerns the
            Hessian of the loss being optimized, and a random subset's λ_max is at least as large on average
            (λ_max is convex and the subset Hessian is unbiased, so E λ_max(H_S) ≥ λ_max(H)).
        held_out: ``(x, y)`` to report loss/accuracy on; ``True`` (default): the test split in
            :func:`~sharpness.train.train` (nothing in a plain loop); ``False``: none.
        held_out_samples: size of the fixed held-out batch (``None``: all). Default 1000.
        top_k: how many of the largest Hessian eigenvalues (λ_max is the first). Default 1.
        lambda_min: also the smallest (algebraic) eigenvalue, from the same Lanczos run.
        trace: also tr(H) by Hutch++ with ``trace_matvecs`` HVPs (Meyer et al. 2021).
        tol: Lanczos relative eigenvalue tolerance (see :func:`sharpness.linalg.extreme_eigenvalues`).
        max_steps: Lanczos step cap (default min(P, 300)).
        warm_start: start Lanczos from the previous Ritz vectors (module docstring). Default True.
        verify_every: check every ``verify_every``-th consecutive warm-started measurement with a cold start
            at the same ``tol`` (module docstring, "Verified"). Default 10; 0 or ``None``: no checks.
        measure_at_start: also measure before the first step (callback).
        measure_at_end: also measure after the last step (callback).
        loss: passed to :class:`~sharpness.objective.Objective`, as are the next five (default:
            cross-entropy for labels, MSE otherwise).
        bn_mode: BatchNorm's mode during a measurement (default ``"eval"``).
        chunk_size: samples per forward pass of the analysis (default: from the memory budget).
        params: glob(s) of the parameters measured (default: all).
        dtype: ``"float32"``/``"float64"`` or a torch dtype, e.g. to measure a float32 run in float64
            (default: the model's).
        device: where to measure (default: the model's).
        seed: seeds the analysis/held-out draws and every measurement's random vectors.
        listeners: callables receiving each new record (e.g. :class:`sharpness.integrations.tensorboard.TensorBoardWriter`).

    Attributes:
        records: one dict per measurement (:data:`RECORD_FIELDS`): ``step, epoch, lr, lambda_max,
            lambda_max_error`` (estimated relative error), ``converged, top_eigenvalues`` (descending),
            ``lambda_min, trace, trace_stderr`` (None unless requested), ``loss, accuracy`` (analysis batch),
            ``held_out_loss, held_out_accuracy, two_over_lr, eos_threshold, eos_formula, num_matvecs`` (all
            HVPs of the measurement), ``lanczos_matvecs, seconds, warm_started``, and the verification's
            ``verified, cold_lambda_max, verify_disagreed, verify_matvecs, verify_note`` (None or 0 when not
            verified; ``verify_note`` None unless they disagreed).
        analysis_set: ``{"n_samples", "n_available", "seed", "sha256"}`` once drawn.

    Cost per measurement: one deep copy of the model, the Lanczos HVPs (fewer when warm-started, plus a cold
    start's every ``verify_every`` measurements), the trace HVPs, and forward passes over the analysis and
    held-out batches. Memory: the copy, one gradient graph
    over the analysis batch, and the Lanczos basis (P × steps).
    """

    def __init__(
        self,
        inputs: Tensor | None = None,
        targets: Tensor | None = None,
        *,
        every: int | None = None,
        every_epochs: int | None = None,
        analysis_samples: int | None = 1000,
        held_out: tuple[Tensor, Tensor] | bool = True,
        held_out_samples: int | None = 1000,
        top_k: int = 1,
        lambda_min: bool = False,
        trace: bool = False,
        trace_matvecs: int = 30,
        tol: float = 1e-4,
        max_steps: int | None = None,
        warm_start: bool = True,
        verify_every: int | None = 10,
        measure_at_start: bool = True,
        measure_at_end: bool = True,
        loss: str = "auto",
        bn_mode: str = "eval",
        chunk_size: int | None = None,
        params: str | Sequence[str] | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        seed: int = 0,
        listeners: Sequence[Callable[[dict], Any]] = (),
    ) -> None:
        if (inputs is None) != (targets is None):
            raise InputError("expected both inputs and targets (or neither), got only one")
        for name, value, low in (("every", every, 1), ("every_epochs", every_epochs, 1),
                                 ("analysis_samples", analysis_samples, 1), ("held_out_samples", held_out_samples, 1),
                                 ("max_steps", max_steps, 1), ("chunk_size", chunk_size, 1),
                                 ("verify_every", verify_every, 0)):
            _check_int(name, value, low)
        _check_int("top_k", top_k, 1, none=False)
        _check_int("seed", seed, 0, none=False)
        if trace:
            _check_int("trace_matvecs", trace_matvecs, 6, none=False)  # Hutch++ needs a sketch of ≥ 2 and ≥ 2 probes
        if not (isinstance(tol, float) and 0 < tol < 1):
            raise InputError(f"expected tol in (0, 1), got {tol!r}")
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise InputError(f"expected dtype float32 or float64, got {dtype!r}")
            dtype = DTYPES[dtype]
        if not (isinstance(held_out, bool) or (isinstance(held_out, (tuple, list)) and len(held_out) == 2)):
            raise InputError(f"expected held_out as True, False or an (x, y) pair, got {type(held_out).__name__}")
        self.every, self.every_epochs = every, every_epochs
        self.analysis_samples, self.held_out_samples = analysis_samples, held_out_samples
        self.top_k, self.lambda_min, self.trace, self.trace_matvecs = int(top_k), bool(lambda_min), bool(trace), int(trace_matvecs)
        self.tol, self.max_steps = float(tol), max_steps
        self.warm_start = bool(warm_start)
        self.verify_every = int(verify_every or 0)
        self.measure_at_start, self.measure_at_end = bool(measure_at_start), bool(measure_at_end)
        self.objective_options = {"loss": loss, "bn_mode": bn_mode, "chunk_size": chunk_size, "params": params,
                                  "dtype": dtype, "device": device}
        self.seed = int(seed)
        self.listeners = list(listeners)
        self._source = None if inputs is None else (inputs, targets)
        self._held_out_option = held_out
        self._analysis: tuple[Tensor, Tensor] | None = None
        self._held: tuple[Tensor, Tensor] | None = None
        self._vectors: Tensor | None = None  # previous Ritz vectors (P, j), the warm start
        self._checked = False  # the Objective's determinism check runs on the first measurement only
        self.analysis_set: dict | None = None
        self.held_out_set: dict | None = None
        self.records: list[dict] = []

    # --- configuration and data -------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """The tracker's settings as plain values (recorded with the series)."""
        opts = {k: (str(v).removeprefix("torch.") if isinstance(v, (torch.dtype, torch.device)) else v)
                for k, v in self.objective_options.items()}
        return {"every": self.every, "every_epochs": self.every_epochs, "analysis_samples": self.analysis_samples,
                "held_out_samples": self.held_out_samples, "top_k": self.top_k, "lambda_min": self.lambda_min,
                "trace": self.trace, "trace_matvecs": self.trace_matvecs if self.trace else None, "tol": self.tol,
                "max_steps": self.max_steps, "warm_start": self.warm_start, "verify_every": self.verify_every,
                "seed": self.seed, **opts}

    @property
    def has_source(self) -> bool:
        """Whether analysis data were given to the constructor (else :meth:`set_data` must provide them)."""
        return self._source is not None

    @property
    def has_analysis_batch(self) -> bool:
        """Whether the fixed analysis batch has been drawn."""
        return self._analysis is not None

    def set_data(self, inputs: Tensor | None = None, targets: Tensor | None = None, *,
                 held_out: tuple[Tensor, Tensor] | None = None) -> None:
        """Draw the fixed analysis batch (and the held-out one) if not drawn yet.

        The batch comes from the constructor's ``inputs``/``targets`` when given, else from these. Called by
        :meth:`on_train_begin` with the training (and test) split; a no-op once drawn, so the batch stays the
        same for the whole run (also across a resume, where it is redrawn identically and checked).
        """
        if self._analysis is None:
            source = self._source if self._source is not None else (inputs, targets)
            if source[0] is None or source[1] is None:
                raise InputError("expected analysis data: pass inputs/targets to SharpnessTracker or set_data(), got none")
            # At most analysis_samples: a default of 1000 on a smaller split takes all of it (recorded in info).
            x, y, _ = select_analysis_set(*source, samples=_at_most(self.analysis_samples, source[0]), seed=self.seed)
            info = {"n_samples": int(x.shape[0]), "n_available": int(source[0].shape[0]), "seed": self.seed,
                    "sha256": tensor_sha256(x, y)}
            if self.analysis_set is not None and self.analysis_set["sha256"] != info["sha256"]:
                raise InputError(f"expected the analysis batch of the resumed run (sha256 {self.analysis_set['sha256'][:12]}…), "
                                 f"got a different one ({info['sha256'][:12]}…): same data and seed needed")
            self._analysis, self.analysis_set = (x, y), info
        if self._held is None and self._held_out_option is not False:
            pair = held_out if self._held_out_option is True else self._held_out_option
            if pair is not None and pair[0] is not None:
                # a different stream of the same seed than the analysis draw (they come from different splits anyway)
                x, y, _ = select_analysis_set(*pair, samples=_at_most(self.held_out_samples, pair[0]), seed=self.seed + 1)
                self._held = (x, y)
                self.held_out_set = {"n_samples": int(x.shape[0]), "n_available": int(pair[0].shape[0]),
                                     "seed": self.seed + 1, "sha256": tensor_sha256(x, y)}

    # --- scheduling -----------------------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        """Whether ``every`` asks for a measurement after optimizer step ``step`` (not yet measured there)."""
        return self.every is not None and step % self.every == 0 and not self.measured_at(step)

    def measured_at(self, step: int) -> bool:
        """Whether the latest record is at ``step`` (so a second hook at the same step does not measure again)."""
        return bool(self.records) and self.records[-1]["step"] == step

    # --- train.py callback hooks --------------------------------------------------------------------------
    def on_train_begin(self, state: Any) -> None:
        held = (state.x_test, state.y_test) if getattr(state, "x_test", None) is not None else None
        self.set_data(state.x_train, state.y_train, held_out=held)
        # a resumed run was measured at its start the first time (and possibly not at this step since)
        if self.measure_at_start and not getattr(state, "resumed", False) and not self.measured_at(state.step):
            self._measure_state(state)

    def on_step_end(self, state: Any) -> None:
        if self.due(state.step):
            self._measure_state(state)

    def on_epoch_end(self, state: Any) -> None:
        if self.every_epochs is not None and state.epoch % self.every_epochs == 0 and not self.measured_at(state.step):
            self._measure_state(state)

    def on_train_end(self, state: Any) -> None:
        if self.measure_at_end and not self.measured_at(state.step):
            self._measure_state(state)

    def _measure_state(self, state: Any) -> None:
        self.measure(state.model, state.step, epoch=state.epoch, lr=state.lr, optimizer=state.optimizer)

    # --- the measurement ------------------------------------------------------------------------------------
    def measure(
        self,
        model: nn.Module,
        step: int,
        *,
        epoch: int | None = None,
        lr: float | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> dict:
        """Measure the curvature of ``model`` at its current weights; append and return the record.

        Args:
            model: the model being trained (read only: it is deep-copied, see the module docstring).
            step: the optimizer step the weights are after (the record's x-axis).
            epoch: completed epochs (recorded as given).
            lr: the step size η for the stability threshold (default: the optimizer's).
            optimizer: the training optimizer, read (never changed) for the threshold formula.
        """
        self.set_data()
        t0 = time.perf_counter()
        with preserved_rng(), precision_policy():  # TF32 off while measuring; training's flags come back after
            record = self._measure(model, int(step))
        if lr is None and optimizer is not None:
            lr = float(optimizer.param_groups[0]["lr"])
        threshold, formula = stability_threshold(optimizer, lr=lr)
        record.update(epoch=epoch, lr=lr, two_over_lr=None if not lr else 2.0 / lr, eos_threshold=threshold,
                      eos_formula=formula, seconds=time.perf_counter() - t0)
        record = {k: record.get(k) for k in RECORD_FIELDS}
        self.records.append(record)
        for listener in self.listeners:
            listener(record)
        return record

    def _measure(self, model: nn.Module, step: int) -> dict:
        x, y = self._analysis
        objective = Objective(model, x, y, check_determinism=not self._checked, **self.objective_options)
        if self.top_k > objective.numel:  # Lanczos cannot return more eigenvalues than there are parameters
            raise InputError(f"expected --track-top-k (top_k) ≤ {objective.numel}, the number of parameters "
                             f"tracked, got {self.top_k}")
        self._checked = True
        ev = objective.evaluate()
        rec: dict[str, Any] = {"step": step, "loss": ev.loss, "accuracy": ev.accuracy, "warm_started": False,
                               "num_matvecs": 0, "lanczos_matvecs": 0, "verified": False, "verify_matvecs": 0}
        if self._held is not None:
            rec["held_out_loss"], rec["held_out_accuracy"] = _evaluate_on(objective, *self._held)
        if not math.isfinite(ev.loss):
            # Past divergence nothing is measurable; train() stops on a non-finite loss by itself.
            rec.update(lambda_max=math.nan, top_eigenvalues=[math.nan] * self.top_k, converged=False)
            return rec
        H = HessianOperator(objective)
        v0 = self._start_vector(objective.numel, objective.dtype, objective.device)
        options = dict(top_k=self.top_k, bottom_k=int(self.lambda_min), tol=self.tol, max_steps=self.max_steps,
                       return_vectors=self.warm_start)
        runs = [extreme_eigenvalues(H, seed=_seed_for(self.seed, step, _LANCZOS_STREAM), v0=v0, **options)]
        rec["warm_started"] = v0 is not None
        if v0 is not None and self._verification_due():
            before = H.num_matvecs
            runs.append(extreme_eigenvalues(H, seed=_seed_for(self.seed, step, _VERIFY_STREAM), **options))
            rec.update(verified=True, verify_matvecs=H.num_matvecs - before,
                       cold_lambda_max=float(runs[1][0].values[0]))
        rec["lanczos_matvecs"] = H.num_matvecs
        kept = _reconcile(runs, self.tol, self.lambda_min)
        rec.update(kept.record)
        if kept.disagreed:
            log.warning("SharpnessTracker, step %d: %s", step, rec["verify_note"])
        if self.warm_start:
            # after a disagreement both runs' directions seed the next warm start (the crossing may swing back)
            used = runs if kept.disagreed else runs[:1]
            vecs = [r.vectors for run in used for r in (run if self.lambda_min else run[:1])]
            self._vectors = torch.cat(vecs, dim=1).detach()
        if self.trace:
            est = hutchpp_trace(H, num_matvecs=self.trace_matvecs, seed=_seed_for(self.seed, step, _TRACE_STREAM))
            rec["trace"], rec["trace_stderr"] = est.value, est.stderr
        rec["num_matvecs"] = H.num_matvecs
        return rec

    def _verification_due(self) -> bool:
        """Whether this warm-started measurement completes a run of ``verify_every`` warm ones that no cold
        start has checked (counted from the records, so a resumed run keeps the schedule)."""
        if not self.verify_every:
            return False
        unchecked = 0
        for r in reversed(self.records):
            if not r.get("warm_started") or r.get("verified"):
                break
            unchecked += 1
        return unchecked + 1 >= self.verify_every

    def _start_vector(self, P: int, dtype: torch.dtype, device: torch.device) -> Tensor | None:
        """Σ_j u_j over the previous Ritz vectors (module docstring); ``None`` (a random start) the first time."""
        prev = self._vectors
        if not self.warm_start or prev is None or prev.shape[0] != P:
            return None
        s = prev.to(device=device, dtype=dtype).sum(dim=1)
        norm = float(torch.linalg.vector_norm(s))
        return s if math.isfinite(norm) and norm > 0 else None

    # --- results ----------------------------------------------------------------------------------------------
    @property
    def series(self) -> dict[str, list]:
        """The records as columns: ``{field: [value per measurement]}`` (:data:`RECORD_FIELDS`)."""
        return {k: [r.get(k) for r in self.records] for k in RECORD_FIELDS}

    def to_dict(self) -> dict:
        """``{"schema", "config", "analysis_set", "held_out_set", "records"}``: plain JSON values."""
        return {"schema": SCHEMA, "config": self.config, "analysis_set": self.analysis_set,
                "held_out_set": self.held_out_set, "records": [dict(r) for r in self.records]}

    def checkpoint_extra(self) -> dict:
        """What :func:`sharpness.train.train` records in the checkpoint: ``{"tracking": self.to_dict()}``."""
        return {"tracking": self.to_dict()}

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write one row per measurement (written atomically); ``top_eigenvalues`` become ``lambda_1 … lambda_k``."""
        cols = [c for c in RECORD_FIELDS if c != "top_eigenvalues"]
        k = max((len(r["top_eigenvalues"] or []) for r in self.records), default=self.top_k)
        at = cols.index("lambda_min")
        header = cols[:at] + [f"lambda_{i + 1}" for i in range(k)] + cols[at:]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        for r in self.records:
            tops = list(r["top_eigenvalues"] or []) + [None] * k
            row = [r.get(c) for c in cols[:at]] + tops[:k] + [r.get(c) for c in cols[at:]]
            writer.writerow(["" if v is None else v for v in row])
        atomic_write(path, lambda fh: fh.write(buf.getvalue().encode("utf-8")))

    # --- resume (train.py saves and restores this with its .resume file) -------------------------------------
    def state_dict(self) -> dict:
        """Records, the analysis-set identity and the warm-start vectors (tensors and plain values only)."""
        return {"schema": SCHEMA, "records": [dict(r) for r in self.records], "analysis_set": self.analysis_set,
                "vectors": None if self._vectors is None else self._vectors.detach().cpu(),
                "checked": self._checked}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("schema") != SCHEMA:
            raise InputError(f"expected a {SCHEMA} tracker state, got {type(state).__name__}")
        self.records = [dict(r) for r in state["records"]]
        self.analysis_set = state["analysis_set"]
        self._analysis = None  # redrawn (identically: same seed and data, checked by sha256) on the next set_data
        self._vectors = state["vectors"]
        self._checked = bool(state["checked"])


@dataclass(frozen=True)
class _Kept:
    record: dict  # lambda_max, top_eigenvalues, lambda_max_error, converged, lambda_min, verify_disagreed/_note
    disagreed: bool


def _reconcile(runs: Sequence[tuple[EigenResult, EigenResult]], tol: float, lambda_min: bool) -> _Kept:
    """The record's eigenvalues from a warm run and, when verified, its cold check (module docstring).

    Each eigenvalue keeps the more extreme of the runs' Ritz values, with that run's error estimate and
    converged flag: Ritz values are inner bounds (θ_i ≤ λ_i counted from the top, θ_i ≥ λ_i from the bottom,
    by Cauchy interlacing), so the larger top / smaller bottom value is the better estimate. Values a, b of
    the two runs disagree when |a − b| > max(E_a, tol·|a|) + max(E_b, tol·|b|), E = error_bounds·|θ| a run's
    absolute error estimate: more than both can be off if each is within its estimate (floored at the
    requested tolerance, as the estimate itself is not a bound).
    """
    picks: list[tuple[float, float, bool]] = []  # (value, relative error estimate, converged) per eigenvalue
    clashes: list[str] = []
    ends = [(0, True, "λ_{}")] + ([(1, False, "λ_min")] if lambda_min else [])
    for end, larger, name in ends:
        for i in range(runs[0][end].values.size):
            vals = [float(run[end].values[i]) for run in runs]
            best = int(np.argmax(vals) if larger else np.argmin(vals))
            res = runs[best][end]
            picks.append((vals[best], float(res.error_bounds[i]), bool(res.converged[i])))
            if len(runs) > 1:
                (a, b), (ea, eb) = vals, (float(run[end].error_bounds[i]) * abs(v) for run, v in zip(runs, vals))
                bound = max(ea, tol * abs(a)) + max(eb, tol * abs(b))
                if abs(a - b) > bound:
                    clashes.append(f"{name.format(i + 1)} warm {a:.6g} vs cold {b:.6g} "
                                   f"(|Δ| {abs(a - b):.2g} > {bound:.2g})")
    k = runs[0][0].values.size
    top = [v for v, _, _ in picks[:k]]
    record = {"lambda_max": top[0], "top_eigenvalues": top, "lambda_max_error": picks[0][1],
              "converged": all(c for _, _, c in picks), "lambda_min": picks[k][0] if lambda_min else None}
    if len(runs) > 1:
        record["verify_disagreed"] = bool(clashes)
        if clashes:
            record["verify_note"] = ("warm and cold Lanczos disagree beyond their error estimates: "
                                     + "; ".join(clashes)
                                     + "; kept the more extreme value of each (Ritz values are inner bounds)")
    return _Kept(record, bool(clashes))


def _evaluate_on(objective: Objective, x: Tensor, y: Tensor) -> tuple[float, float | None]:
    """Mean loss and accuracy of the objective's model copy (at its θ, same loss and mode) on other samples.

    Not :meth:`~sharpness.objective.Objective.evaluate`, which evaluates the objective's own analysis set: the
    held-out samples would need a second Objective (another deep copy and determinism check per measurement).
    """
    params = objective.unflatten(objective.theta)
    x = x.to(objective.device, dtype=objective.dtype if x.is_floating_point() else None)
    y = y.to(objective.device, dtype=objective.targets.dtype)
    loss_sum, correct = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, x.shape[0], objective.chunk_size):
            out = objective.forward(params, x[start:start + objective.chunk_size])
            target = y[start:start + objective.chunk_size]
            loss_sum += float(per_sample_loss(objective.loss_kind, out, target).double().sum())
            hits = per_sample_hits(objective.loss_kind, out, target)
            if hits is not None:
                correct += float(hits.double().sum())
    n = int(x.shape[0])
    return loss_sum / n, (correct / n if objective.has_accuracy else None)
