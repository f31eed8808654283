"""A resumable grid of training runs: batch sizes × seeds (× learning rates), each seed from one set of weights.

Layout of the run directory ``out_dir``::

    manifest.json            the sweep's configuration and its SHA-256 (``config_hash``); see
                             :class:`~sharpness.files.rundir.RunDir`
    done/{run}               marker written after a run's checkpoint (and report) are complete
    init_seed{s}.pt          the initial weights of seed s, written once; every run of that seed starts here
    runs/bs{B}_seed{s}[_lr{η}].pt           a finished run (a sharpness checkpoint, written atomically)
    runs/bs{B}_seed{s}[_lr{η}].pt.resume    an interrupted run's state (see :mod:`sharpness.train`)
    runs/bs{B}_seed{s}[_lr{η}].report.json  with ``analyze=True``: :func:`sharpness.analysis.report.analyze` at the end
    summary.json, summary.csv                one row per run of the grid, written after every run; runs not
                                             finished yet have status "pending" (and the JSON "complete": false)

Running the same sweep again skips runs marked done, resumes a half-finished one from its ``.resume`` state (written
at every epoch's end, so a run killed without warning loses at most one epoch), and
refuses (:class:`~sharpness.errors.InputError`) a directory whose manifest describes a different sweep.
Runs that diverge keep their last good weights and appear in the summary with ``status="diverged"``.
Batch sizes such as ``"10%"`` are resolved against the training set first; ``B`` in file names is in samples.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from .data import Dataset
from .errors import InputError
from .models import build_model, model_spec
from .objective.distributed import env_context, split_work
from .files.rundir import RunDir, atomic_write
from .train import TrainConfig, TrainingDiverged, _device, load_data, resolve_batch_size, train

__all__ = ["SweepResult", "sweep", "run_name", "SUMMARY_FIELDS", "MANIFEST_SCHEMA"]

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = "sharpness.sweep/1"
SUMMARY_FIELDS = (
    "run", "batch_size", "seed", "lr", "status", "train_loss", "train_acc", "test_loss", "test_acc",
    "generalization_gap", "accuracy_gap", "dist_from_init", "epochs", "steps", "wall_time",
    "lambda_max", "lambda_min", "trace",
)
# The fields a sweep sets per run; the rest of the TrainConfig is shared and recorded in the manifest.
_PER_RUN = ("batch_size", "seed", "lr", "init_from", "resume")
_ANALYSIS_DEFAULTS = {"top_k": 1, "bottom_k": 1, "trace": True}


@dataclass(frozen=True)
class SweepResult:
    """``rows``: one summary dict per run in grid order (keys :data:`SUMMARY_FIELDS` + ``checkpoint``);
    ``trained`` / ``resumed`` / ``skipped``: run names trained from scratch, continued from ``.resume``, or
    already finished; ``summary_json`` / ``summary_csv``: where the rows were written."""

    rows: tuple[dict, ...]
    out_dir: str
    summary_json: str
    summary_csv: str
    trained: tuple[str, ...]
    resumed: tuple[str, ...]
    skipped: tuple[str, ...]


def run_name(batch_size: int, seed: int, lr: float | None = None) -> str:
    """``bs{B}_seed{s}`` or ``bs{B}_seed{s}_lr{η:g}`` without the exponent's "+" (1e+12 → 1e12), which a run
    directory's keys do not allow."""
    return f"bs{batch_size}_seed{seed}" + ("" if lr is None else f"_lr{lr:g}".replace("+", ""))


def sweep(
    base: TrainConfig,
    *,
    batch_sizes: Sequence[int | str],
    seeds: Sequence[int] = (0,),
    lrs: Sequence[float] | None = None,
    out_dir: str | os.PathLike,
    analyze: bool = False,
    analyze_options: Mapping[str, Any] | None = None,
    dataset: Dataset | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = False,
    say: Callable[[str], None] | None = None,
) -> SweepResult:
    """Train ``base`` at every (seed, batch size, lr) of the grid into ``out_dir`` (module docstring: layout).

    Args:
        base: the shared configuration; its ``batch_size``, ``seed``, ``init_from`` and ``resume`` are set per
            run, and ``lr`` too when ``lrs`` is given.
        batch_sizes: ints, ``"p%"`` or ``"full"`` (resolved against the training set; duplicates refused).
        seeds: each seed's runs start from ``out_dir/init_seed{s}.pt`` and use s as the data-order seed
            (unless ``base.data_seed`` fixes one order for all).
        lrs: learning rates (``None``: only ``base.lr``, and run names carry no ``_lr`` suffix).
        analyze: after each run, :func:`sharpness.analysis.report.analyze` on the training split with
            ``top_k=1, bottom_k=1, trace=True`` (overridden by ``analyze_options``), on ``base.device`` /
            ``base.dtype``; adds ``lambda_max``, ``lambda_min``, ``trace`` to the summary.
        dataset: tensors to use instead of loading ``base.data`` (loaded once for the whole grid).
        callbacks: passed to every :func:`~sharpness.train.train` call.
        progress: a progress bar per run on stderr.
        say: where a line per run ("[3/8] bs32_seed0: training", "… analyzing") and the analysis's stage lines
            go (the CLI prints them on stderr unless ``-q``); default: the ``sharpness.sweep`` logger at INFO.

    Raises:
        InputError: bad grid, or ``out_dir`` holding a different sweep (manifest mismatch).
        TrainingInterrupted: Ctrl-C; rerunning the same call continues where it stopped.
    """
    if not batch_sizes:
        raise InputError("expected at least one batch size, got none")
    if not seeds:
        raise InputError("expected at least one seed, got none")
    if lrs is not None and not lrs:
        raise InputError("expected at least one learning rate in lrs, got an empty list")
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise InputError(f"expected distinct seeds, got {seeds}")
    if lrs is not None:
        lrs = [float(x) for x in lrs]
        if len(set(lrs)) != len(lrs):
            raise InputError(f"expected distinct learning rates, got {lrs}")
        for lr in lrs:
            dataclasses.replace(base, lr=lr)  # validates each value
    if analyze:  # a bad analysis option is refused before the first run trains, not after it
        from .analysis.report import AnalysisConfig

        AnalysisConfig(**{**_ANALYSIS_DEFAULTS, "dtype": base.dtype, **dict(analyze_options or {})})
    dataset = dataset if dataset is not None else load_data(base)
    n_train = int(dataset.x_train.shape[0])
    resolved = _resolve_batch_sizes(batch_sizes, n_train)

    root = Path(out_dir)
    manifest = _manifest(base, batch_sizes, resolved, seeds, lrs, dataset.spec)
    rundir = RunDir(root, manifest)
    (root / "runs").mkdir(exist_ok=True)

    trained: list[str] = []
    resumed: list[str] = []
    skipped: list[str] = []
    grid = [(s, b, lr) for s in seeds for b in resolved for lr in (lrs if lrs is not None else [None])]
    # Under torchrun each rank trains its rank-strided share of the grid; runs never communicate (they may
    # take hours, longer than any collective's timeout), they only write their own files. Every rank then
    # summarizes whatever is finished, so the last one to finish writes the complete summary.
    mine = set(split_work(range(len(grid)), env_context()))
    done_rows: dict[int, dict] = {}

    def finished_rows() -> list[dict]:
        for j, (seed_j, batch_j, lr_j) in enumerate(grid):
            name_j = run_name(batch_j, seed_j, lr_j)
            if j not in done_rows and rundir.done(name_j):
                ckpt_j = root / "runs" / f"{name_j}.pt"
                row_j = _row(name_j, batch_j, seed_j, base.lr if lr_j is None else lr_j, ckpt_j)
                if analyze and row_j["status"] == "ok":
                    row_j.update(_analysis(root, name_j, ckpt_j, dataset, base, analyze_options))
                done_rows[j] = row_j
        return [done_rows[j] for j in sorted(done_rows)]

    tell = say or log.info
    for i, (seed, batch, lr) in enumerate(grid):
        if i not in mine:
            continue
        name = run_name(batch, seed, lr)
        ckpt_path = root / "runs" / f"{name}.pt"
        init_path = _ensure_init(root, base, seed, dataset)
        config = dataclasses.replace(base, batch_size=batch, seed=seed, lr=base.lr if lr is None else lr,
                                     init_from=str(init_path), resume=True)
        step = f"[{i + 1}/{len(grid)}] {name}"
        if rundir.done(name):
            skipped.append(name)
            tell(f"{step}: finished earlier, skipped")
        else:
            (resumed if Path(f"{ckpt_path}.resume").exists() else trained).append(name)
            tell(f"{step}: training")
            try:
                train(config, dataset=dataset, callbacks=callbacks, progress=progress, out=ckpt_path, keep_state=True)
            except TrainingDiverged as e:
                log.warning("%s: %s", name, e)
            if analyze and _row(name, batch, seed, config.lr, ckpt_path)["status"] == "ok":
                tell(f"{step}: analyzing")  # minutes per run on a CPU: say so, and pass on the stage lines
                _analysis(root, name, ckpt_path, dataset, base, analyze_options, say)  # cached beside the run
            rundir.mark_done(name)
        _write_summary(rundir, manifest, finished_rows(), grid, base.lr)
    rows = finished_rows()
    _write_summary(rundir, manifest, rows, grid, base.lr)
    return SweepResult(rows=tuple(rows), out_dir=str(root), summary_json=str(root / "summary.json"),
                       summary_csv=str(root / "summary.csv"), trained=tuple(trained), resumed=tuple(resumed),
                       skipped=tuple(skipped))


def _resolve_batch_sizes(batch_sizes: Sequence[int | str], n_train: int) -> list[int]:
    resolved = [resolve_batch_size(b, n_train) for b in batch_sizes]
    seen: dict[int, Any] = {}
    for given, b in zip(batch_sizes, resolved):
        if b in seen:
            raise InputError(f"expected distinct batch sizes, got {seen[b]!r} and {given!r} both resolving to {b} samples")
        seen[b] = given
    return resolved


# ----------------------------------------------------------------------------------------------------------
# The run directory
# ----------------------------------------------------------------------------------------------------------


def _manifest(base: TrainConfig, given: Sequence[int | str], resolved: list[int], seeds: list[int],
              lrs: list[float] | None, data_spec: Mapping[str, Any]) -> dict:
    shared = base.to_dict()
    for key in _PER_RUN:
        shared.pop(key)
    if lrs is None:
        shared["lr"] = base.lr
    config = {"train": shared, "batch_sizes": [str(b) for b in given], "batch_sizes_resolved": resolved,
              "seeds": seeds, "lrs": lrs, "data_sha256": data_spec.get("sha256")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    return {"kind": "sweep", "schema": MANIFEST_SCHEMA, "config_hash": digest, "config": config}


def _ensure_init(root: Path, base: TrainConfig, seed: int, dataset: Dataset) -> Path:
    """``init_seed{s}.pt``: the seeded initial weights shared by every run of seed s (written once)."""
    path = root / f"init_seed{seed}.pt"
    if not path.exists():
        spec = dataset.spec
        out_dim = spec.get("output_dim", spec.get("num_classes"))
        net = build_model(base.model, input_shape=spec.get("input_shape"), num_classes=out_dim, seed=seed,
                          **base.model_kwargs)
        save_checkpoint(path, model=model_spec(base.model, spec.get("input_shape"), out_dim, **base.model_kwargs),
                        state_dict=net.state_dict(), data=dict(spec), seed=seed, extra={"role": "sweep initial weights"})
    return path


# ----------------------------------------------------------------------------------------------------------
# Rows and analysis
# ----------------------------------------------------------------------------------------------------------


def _row(name: str, batch: int, seed: int, lr: float, ckpt_path: Path) -> dict:
    m = load_checkpoint(ckpt_path).metrics
    row = {key: None for key in SUMMARY_FIELDS}
    row.update({key: m.get(key) for key in SUMMARY_FIELDS if key in m})
    row.update(run=name, batch_size=batch, seed=seed, lr=lr, checkpoint=str(ckpt_path),
               status="diverged" if m.get("stopped_by") == "diverged" else "ok")
    return row


def _analysis(root: Path, name: str, ckpt_path: Path, dataset: Dataset, base: TrainConfig,
              options: Mapping[str, Any] | None, say: Callable[[str], None] | None = None) -> dict:
    """λ_max, λ_min and trace at the run's final weights (the report is kept as ``runs/{name}.report.json``)."""
    from .analysis.report import analyze  # only this optional path needs the estimators

    path = root / "runs" / f"{name}.report.json"
    if path.exists():
        report = json.loads(path.read_text())
    else:
        model = build_model_from_checkpoint(load_checkpoint(ckpt_path)).eval()  # evaluated as analyze does: no notice
        x, y = dataset.split("train")
        device = str(_device(base.device))
        opts = {**_ANALYSIS_DEFAULTS, "device": device, "dtype": base.dtype, **dict(options or {})}
        report = analyze(model, x, y, data_spec=dataset.spec, progress=say, **opts).to_dict()
        text = json.dumps(report, indent=2) + "\n"
        atomic_write(path, lambda fh: fh.write(text.encode()))
    h = report.get("hessian", {})
    top, bottom, trace = h.get("top") or {}, h.get("bottom") or {}, h.get("trace") or {}
    return {
        "lambda_max": (top.get("values") or [None])[0],
        "lambda_min": (bottom.get("values") or [None])[0],
        "trace": trace.get("value"),
    }


def _write_summary(rundir: RunDir, manifest: dict, rows: list[dict], grid: list[tuple], lr: float) -> None:
    """``summary.json`` and ``summary.csv``: one row per run of the grid, in grid order.

    Written after every run, so a killed sweep leaves a summary, which must not pass for a finished one: runs
    not finished yet appear with ``status="pending"`` and empty numbers, and the JSON says ``"complete": false``
    with how many runs are finished."""
    finished = {row["run"]: row for row in rows}
    every = []
    for seed, batch, run_lr in grid:
        name = run_name(batch, seed, run_lr)
        pending = {**{key: None for key in SUMMARY_FIELDS}, "run": name, "batch_size": batch, "seed": seed,
                   "lr": lr if run_lr is None else run_lr, "status": "pending", "checkpoint": None}
        every.append(finished.get(name, pending))
    rows = every
    rundir.write_json("summary.json", {"schema": "sharpness.sweep-summary/1", "config_hash": manifest["config_hash"],
                                       "config": manifest["config"], "complete": len(finished) == len(grid),
                                       "runs_finished": len(finished), "runs_total": len(grid),
                                       "fields": list(SUMMARY_FIELDS), "rows": rows})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*SUMMARY_FIELDS, "checkpoint"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in writer.fieldnames})
    atomic_write(rundir.file("summary.csv"), lambda fh: fh.write(buf.getvalue().encode()))
