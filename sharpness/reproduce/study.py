"""The context a study computes in (:class:`StudyRun`): resumable training, analysis and landscape units in one
results directory, and the :class:`~sharpness.train.TrainConfig` a study's settings describe."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..checkpoint import build_model_from_checkpoint, load_checkpoint
from ..analysis.report import analyze, jsonable
from ..files.rundir import RunDir
from ..train import TrainConfig, TrainingDiverged, train
from .provenance import provenance
from .registry import SCHEMA, UNIT_SCHEMA
from .tables import report_numbers


def flat_parameters(objective: Any, model: torch.nn.Module) -> torch.Tensor:
    """``model``'s parameters as one flat vector in ``objective``'s order (θ of another solution, for
    interpolations between two models of the same architecture)."""
    return objective.flatten({k: v.detach() for k, v in model.named_parameters()})


#: Settings keys that map one-to-one onto TrainConfig fields (see :func:`train_config`).
_TRAIN_KEYS = ("data", "data_kwargs", "subset", "model", "loss", "optimizer", "lr", "momentum")


def train_config(settings: Mapping[str, Any], **fields: Any) -> TrainConfig:
    """The :class:`~sharpness.train.TrainConfig` a study's settings describe, plus per-run ``fields``.

    Settings keys ``data, data_kwargs, subset, model, loss, optimizer, lr, momentum`` are copied when present;
    ``model_kwargs``, with ``hidden`` and ``activation`` merged in, become ``model_kwargs``; ``fields`` (batch
    size, seed, duration, ...) win.
    """
    values: dict[str, Any] = {k: settings[k] for k in _TRAIN_KEYS if k in settings}
    model_kwargs = {**settings.get("model_kwargs", {}), **{k: settings[k] for k in ("hidden", "activation") if k in settings}}
    if model_kwargs:
        values["model_kwargs"] = model_kwargs
    return TrainConfig(**{**values, **fields})


@dataclass(frozen=True, eq=False)
class Trained:
    """A finished training unit: the model (rebuilt from its checkpoint when the unit was done earlier),
    its final ``metrics`` and per-epoch ``history`` (see :func:`sharpness.train.train`), the checkpoint
    path and ``status`` (``"ok"`` or ``"diverged"``: the last good weights are kept)."""

    model: torch.nn.Module
    metrics: dict
    history: list
    checkpoint: str
    status: str


class StudyRun:
    """Where a study computes: its settings, seeds, device, and resumable helpers over one results directory.

    Every helper takes a ``key`` naming a unit of work (letters, digits, ``.``, ``_``, ``-``). A unit marked
    done in an earlier invocation is loaded instead of recomputed, so rerunning a killed study continues it.
    """

    def __init__(self, name: str, budget: str, settings: Mapping[str, Any], *, seeds: int, device: str,
                 out: Path, say: Callable[[str], None] | None = None) -> None:
        self.name, self.budget, self.device = name, budget, device
        self.settings = dict(settings)
        self.seeds = list(range(seeds))
        self.out = Path(out)
        self.say = say or (lambda _msg: None)
        manifest = {"schema": SCHEMA, "study": name, "budget": budget,
                    "settings": {k: v for k, v in self.settings.items() if k != "seeds"}}
        self.rundir = RunDir(self.out, manifest)
        (self.out / "runs").mkdir(exist_ok=True)
        self._provenance = provenance(device)
        self.unit_seconds: dict[str, float] = {}

    # --- generic units --------------------------------------------------------------------------------
    def done(self, key: str) -> bool:
        return self.rundir.done(key)

    def unit(self, key: str, compute: Callable[[], Any], *, config: Any = None, seed: int | None = None) -> Any:
        """``compute()`` once, its JSON-able result saved as ``<key>.json`` with config, seed and provenance."""
        if self.rundir.done(key):
            return self.rundir.read_json(f"{key}.json")["result"]
        self.say(f"[{self.name}] {key}")
        t0 = time.perf_counter()
        result = jsonable(compute())
        self._record(key, result, config=config, seed=seed, seconds=time.perf_counter() - t0)
        self.rundir.mark_done(key)
        return result

    def _record(self, key: str, result: Any, *, config: Any, seed: int | None, seconds: float) -> None:
        self.unit_seconds[key] = seconds
        self.rundir.write_json(f"{key}.json", {
            "schema": UNIT_SCHEMA, "study": self.name, "budget": self.budget, "unit": key, "seed": seed,
            "config": jsonable(config), "result": result, "wall_seconds": seconds, "provenance": self._provenance,
        })

    def read(self, key: str) -> dict:
        """The saved record of a finished unit (``{"result", "config", "seed", "provenance", ...}``)."""
        return self.rundir.read_json(f"{key}.json")

    # --- training -------------------------------------------------------------------------------------
    def checkpoint_path(self, key: str) -> Path:
        return self.out / "runs" / f"{key}.pt"

    def train(self, key: str, config: TrainConfig, *, dataset: Any = None, callbacks: Sequence[Any] = (),
              allow_divergence: bool = False) -> Trained:
        """Train ``config`` into ``runs/<key>.pt`` (or load it if done); Ctrl-C leaves a resumable state.

        ``config.device`` is set to the run's device. With ``allow_divergence`` a NaN/Inf loss is recorded
        as ``status="diverged"`` with the last good weights instead of stopping the study.
        """
        path = self.checkpoint_path(key)
        config = dataclasses.replace(config, device=self.device, resume=True)
        if not self.rundir.done(key):
            self.say(f"[{self.name}] train {key}")
            t0 = time.perf_counter()
            status = "ok"
            try:
                train(config, dataset=dataset, callbacks=callbacks, out=path)
            except TrainingDiverged as err:
                if not allow_divergence or err.checkpoint_path is None:
                    raise
                status = "diverged"
                self.say(f"[{self.name}] {key}: {err}")
            ckpt = load_checkpoint(path)
            result = {"status": status, "metrics": ckpt.metrics, "history": ckpt.history, "checkpoint": str(path)}
            self._record(key, result, config=config.to_dict(), seed=config.seed, seconds=time.perf_counter() - t0)
            self.rundir.mark_done(key)
        saved = self.read(key)["result"]
        model = build_model_from_checkpoint(load_checkpoint(path))
        return Trained(model=model, metrics=saved["metrics"], history=saved["history"], checkpoint=str(path),
                       status=saved["status"])

    def sweep(self, key: str, base: TrainConfig, *, batch_sizes: Sequence[int | str], lrs: Sequence[float] | None = None,
              dataset: Any = None, analyze_options: Mapping[str, Any] | None = None) -> list[dict]:
        """:func:`sharpness.sweep.sweep` over ``batch_sizes`` (× ``lrs``), one sweep directory per seed
        (``<out>/<key>-seed{s}/``, so adding seeds later reuses the finished ones), each run analyzed when it
        finishes (reports in ``runs/*.report.json``); an interrupted sweep resumes by itself. Returns the
        summary rows of all seeds, each with the report's numbers (:func:`report_numbers`) and the
        checkpoint's ``peak_lr`` and ``reached_train_loss``."""
        from ..sweep import sweep

        config = dataclasses.replace(base, device=self.device)

        def compute(seed: int) -> list[dict]:
            result = sweep(config, batch_sizes=batch_sizes, seeds=[seed], lrs=lrs, out_dir=self.out / f"{key}-seed{seed}",
                           analyze=True, analyze_options=analyze_options, dataset=dataset)
            rows = []
            for row in result.rows:
                metrics = load_checkpoint(row["checkpoint"]).metrics
                report = Path(row["checkpoint"][: -len(".pt")] + ".report.json")  # names may hold dots (lr0.05)
                numbers = report_numbers(json.loads(report.read_text())) if report.is_file() else {}
                rows.append({**numbers, **row, "peak_lr": metrics.get("peak_lr"),
                             "reached_train_loss": metrics.get("reached_train_loss")})
            return rows

        record = {"base": config.to_dict(), "batch_sizes": list(batch_sizes), "lrs": lrs, "analyze_options": analyze_options}
        return [row for seed in self.seeds
                for row in self.unit(f"{key}-seed{seed}", lambda seed=seed: compute(seed), config=record, seed=seed)]

    # --- measurements -----------------------------------------------------------------------------------
    def analyze(self, key: str, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                data_spec: dict | None = None, seed: int | None = None, **options: Any) -> dict:
        """:func:`sharpness.analysis.report.analyze` once; the report dict (``sharpness.report/1``) is the unit's result."""
        options = {"device": self.device, **options}

        def run() -> dict:
            # A study's own trained model, evaluated as analyze does (eval mode): set so, without a notice, and
            # restored, since the study may train it further.
            modes = [(m, m.training) for m in model.modules()]
            model.eval()
            try:
                return analyze(model, inputs, targets, data_spec=data_spec, **options).to_dict()
            finally:
                for m, training in modes:
                    m.training = training

        return self.unit(key, run, config=options, seed=seed)

    def interpolation(self, key: str, a: Trained, b: Trained, dataset: Any, *, alphas: Sequence[float],
                      seed: int | None = None) -> Any:
        """Keskar et al.'s Fig. 3 as a landscape unit: loss and accuracy on the training split (and the test split,
        when there is one) along (1 − α)·θ_a + α·θ_b at ``alphas`` = (start, stop, points), α = 0 at ``a``."""
        from ..landscape import LineResult, grid, interpolate
        from ..objective import Objective

        def compute() -> Any:
            train_obj = Objective(a.model, dataset.x_train, dataset.y_train, device=self.device)
            test_obj = (None if dataset.x_test is None else
                        Objective(a.model, dataset.x_test, dataset.y_test, device=self.device))
            return interpolate(train_obj, train_obj.theta, flat_parameters(train_obj, b.model), grid(*alphas),
                               test_objective=test_obj)

        return self.landscape(key, compute, LineResult, seed=seed,
                              config={"a": a.checkpoint, "b": b.checkpoint, "alphas": list(alphas)})

    def landscape(self, key: str, compute: Callable[[], Any], kind: type, *, config: Any = None,
                  seed: int | None = None) -> Any:
        """A :class:`~sharpness.landscape.LineResult` or ``PlaneResult`` computed once, saved as ``<key>.npz``
        (+ ``.csv``) with a ``<key>.json`` record; ``kind`` is the result class used to load it back."""
        path = self.out / f"{key}.npz"
        if not self.rundir.done(key):
            self.say(f"[{self.name}] {key}")
            t0 = time.perf_counter()
            result = compute()
            result.save(path)
            self._record(key, {"file": path.name, "seconds": result.seconds, "num_evaluations": result.num_evaluations},
                         config=config, seed=seed, seconds=time.perf_counter() - t0)
            self.rundir.mark_done(key)
        return kind.load(path)
