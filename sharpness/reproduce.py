"""Paper reproductions with one command each: the registry of studies and the machinery they share.

A *study* reproduces one paper's tables and figures at laptop scale (MNIST-1D, small MLPs). Its code is a
script in the repository's ``experiments/`` folder, written against the public API only, and it runs two
ways with the same result::

    sharpness reproduce keskar --quick          # the command line (``sharpness.cli.reproduce``)
    python experiments/keskar.py --quick        # the script itself (:func:`script_main`)

A study script defines four functions, and this module does everything around them:

* ``settings(budget) -> dict`` — every number of the study at a budget (JSON values; ``"seeds"`` is the
  default seed count). Budgets: ``"full"`` (the numbers in ``experiments/README.md``), ``"quick"`` (minutes on
  two CPU cores; CI runs it) and ``"smoke"`` (seconds; the test suite's knob, not for science).
* ``compute(run: StudyRun) -> dict`` — trains and measures through the resumable helpers of
  :class:`StudyRun`, and returns the study's summary (plain JSON values).
* ``tables(summary) -> str`` — the printed tables (Markdown), our numbers beside the paper's.
* ``plot(summary, results_dir, figures_dir) -> list[Path]`` — figures from saved results only (never trains).

and may define a fifth, ``warnings(summary) -> list[str]``: the study's check of its own answer (e.g. a
contrast within one standard deviation). Each line is printed on stderr; the run still succeeds (exit 0).

Results directory (default ``experiments/results/<study>``, ``<study>-quick`` or ``<study>-smoke``)::

    manifest.json       study, budget and settings (another configuration is refused: use another --out)
    done/<unit>         a marker per finished unit of work, written after the unit's files
    runs/<unit>.pt      trained checkpoints (self-describing, see :mod:`sharpness.checkpoint`)
    <unit>.json         each unit's raw result with its configuration, seed, provenance and wall time
    <unit>.npz/.csv     landscapes (:class:`~sharpness.landscape.LineResult`, ``PlaneResult``)
    summary.json        the aggregated numbers + settings, seeds, provenance, wall and CPU seconds
    tables.md           what was printed

Resuming: a killed study rerun with the same arguments skips every finished unit (a training run, an
analysis, a landscape); a run interrupted by Ctrl-C/SIGTERM continues from its ``.resume`` state. The seed
count is not part of the manifest, so ``--seeds 5`` after ``--seeds 3`` reuses seeds 0–2.

Provenance (:func:`provenance`): library versions, Python and platform, the git commit of the source tree
(``git rev-parse HEAD``, ``None`` outside a checkout), the device and the thread count.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from . import __version__
from .checkpoint import build_model_from_checkpoint, load_checkpoint
from .errors import InputError
from .report import analyze, jsonable
from .rundir import RunDir
from .stats import mean_std
from .train import TrainConfig, TrainingDiverged, train

__all__ = [
    "BUDGETS",
    "STUDIES",
    "StudyInfo",
    "StudyRun",
    "StudyOutcome",
    "Trained",
    "run_study",
    "describe_outcome",
    "load_study",
    "study_names",
    "experiments_dir",
    "default_results_dir",
    "default_figures_dir",
    "provenance",
    "git_commit",
    "mean_std",
    "pm",
    "markdown_table",
    "report_numbers",
    "flat_parameters",
    "batch_size_axis",
    "log_axis",
    "plural",
    "train_config",
    "save_and_close",
    "script_main",
]

BUDGETS = ("full", "quick", "smoke")
SCHEMA = "sharpness.reproduce/1"
UNIT_SCHEMA = "sharpness.reproduce-unit/1"
ENV_EXPERIMENTS = "SHARPNESS_EXPERIMENTS_DIR"


# ----------------------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyInfo:
    """One reproducible study: its command name, the script in ``experiments/``, and what it reproduces."""

    name: str
    script: str
    title: str
    paper: str


STUDIES: dict[str, StudyInfo] = {
    s.name: s
    for s in (
        StudyInfo("keskar", "keskar.py", "small- vs large-batch minima: Tables 2-4 and Fig. 3",
                  "Keskar et al., ICLR 2017"),
        StudyInfo("lm-batch", "lm_batch.py", "small vs large batch for a byte-level transformer (tiny GPT)",
                  "Keskar et al., ICLR 2017"),
        StudyInfo("batch-tradeoff", "batch_tradeoff.py",
                  "is the biggest batch best? throughput, time to a target loss, test accuracy, sharpness",
                  "Keskar et al., ICLR 2017; Goyal et al., 2017; Shallue et al., JMLR 2019"),
        StudyInfo("batch-sweep", "batch_sweep.py", "test accuracy and sharpness vs batch size (Fig. 4)",
                  "Keskar et al., ICLR 2017; Goyal et al., 2017"),
        StudyInfo("warm-start", "warm_start.py", "small batch for k epochs, then large batch (Fig. 5)",
                  "Keskar et al., ICLR 2017"),
        StudyInfo("li-landscapes", "li_landscapes.py", "filter-normalized 1D/2D landscapes, weight decay 0 vs 5e-4",
                  "Li et al., NeurIPS 2018"),
        StudyInfo("edge-of-stability", "edge_of_stability.py", "full-batch GD: lambda_max rises to 2/lr and hovers",
                  "Cohen et al., ICLR 2021"),
        StudyInfo("noise-scale", "noise_scale.py", "lr x batch grid: equal lr/B gives alike minima",
                  "Jastrzebski et al., 2017; Smith & Le, ICLR 2018"),
        StudyInfo("reparam", "reparam.py", "function-preserving rescaling changes raw, not adaptive, sharpness",
                  "Dinh et al., ICML 2017"),
    )
}


def study_names() -> list[str]:
    """The registered study names, in registry order."""
    return list(STUDIES)


def _source_root() -> Path:
    """The directory holding the ``sharpness`` package: the repository root of a source checkout."""
    return Path(__file__).resolve().parents[1]


def experiments_dir() -> Path:
    """Where the study scripts live: ``$SHARPNESS_EXPERIMENTS_DIR`` if set, else ``experiments/`` of the checkout.

    Raises:
        InputError: neither holds the study scripts (an installed wheel carries no ``experiments/``).
    """
    override = os.environ.get(ENV_EXPERIMENTS)
    candidate = Path(override) if override else _source_root() / "experiments"
    if not (candidate / STUDIES["keskar"].script).is_file():
        where = f"${ENV_EXPERIMENTS}={override}" if override else str(candidate)
        raise InputError(f"expected the study scripts in {where}, got no {STUDIES['keskar'].script} there; "
                         f"run from a source checkout of sharpness or set {ENV_EXPERIMENTS}")
    return candidate


def _check_name(name: str) -> StudyInfo:
    if name not in STUDIES:
        raise InputError(f"expected a study name ({', '.join(STUDIES)}), got {name!r}")
    return STUDIES[name]


def load_study(name: str) -> ModuleType:
    """Import the script of study ``name`` from :func:`experiments_dir` (once per process)."""
    info = _check_name(name)
    module_name = f"sharpness_experiments.{info.script[:-3]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = experiments_dir() / info.script
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    for fn in ("settings", "compute", "tables", "plot"):
        if not callable(getattr(module, fn, None)):
            raise InputError(f"expected {path} to define {fn}(), got none")
    return module


def default_results_dir(name: str, budget: str) -> Path:
    """``experiments/results/<name>`` for the full budget, ``<name>-quick`` / ``<name>-smoke`` otherwise."""
    suffix = "" if budget == "full" else f"-{budget}"
    return experiments_dir() / "results" / f"{name}{suffix}"


def default_figures_dir(budget: str, results: Path) -> Path:
    """The committed ``figures/`` for the full budget; ``<results>/figures`` for quick and smoke runs, so a
    quick run never overwrites the figures of a full one."""
    return experiments_dir().parent / "figures" if budget == "full" else results / "figures"


# ----------------------------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def git_commit(path: str | None = None) -> str | None:
    """``git rev-parse HEAD`` of the tree at ``path`` (default: the source checkout), or None without one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path or _source_root(), capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def provenance(device: str = "cpu") -> dict:
    """Versions, platform, git commit, device and threads: what a saved number needs to be traced back."""
    dev = torch.device(device)
    name = str(dev)
    if dev.type == "cuda" and torch.cuda.is_available():
        name = f"{dev} ({torch.cuda.get_device_name(dev)})"
    return {
        "sharpness": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "device": name,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


# ----------------------------------------------------------------------------------------------------------
# Small statistics and tables
# ----------------------------------------------------------------------------------------------------------


def ran_out_mark(rows: Iterable[dict], key: str) -> str:
    """" †" when the maximizer behind ``key`` ran out of budget in any of ``rows`` (its mean is a lower bound)."""
    return " †" if any(r.get(f"{key}_ran_out") for r in rows) else ""


RAN_OUT_NOTE = "† the ε-sharpness maximizer's budget ran out in at least one seed: that mean is a lower bound."


def pm(values: Iterable[float | None] | float | None, digits: int = 2, *, scale: float = 1.0) -> str:
    """``"mean ± std"`` of ``values`` × ``scale`` with ``digits`` decimals (just the value for one; ``—`` for none).

    A nonzero mean that would print as zero at ``digits`` decimals is written in scientific notation instead
    (``1.2e-05 ± 3.0e-06``), so a tiny loss never reads as an exact 0.
    """
    if values is None or isinstance(values, (int, float)):
        values = [values]
    mean, std, n = mean_std(values)
    if n == 0:
        return "—"
    mean, std = mean * scale, std * scale
    spec = f".{digits}f" if mean == 0 or abs(mean) >= 0.5 * 10.0**-digits else ".1e"
    return f"{mean:{spec}}" if n == 1 else f"{mean:{spec}} ± {std:{spec}}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown pipe table with padded columns (readable on a terminal, pasteable into a README)."""
    cells = [[str(h) for h in header]] + [["—" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])


def report_numbers(report: Mapping[str, Any]) -> dict[str, float | None]:
    """The scalars of a ``sharpness.report/1`` dict under flat names, for tables and figures.

    ``loss, accuracy, lambda_max, lambda_min, trace, trace_stderr, analysis_seconds``, and one key per
    measure present: ``eps_{full|random}_{ε:g}`` (Keskar ε-sharpness, %, by the default ascent;
    ``eps_paper_…`` by Keskar's L-BFGS-B protocol; ``…_ran_out`` whether its budget ran out), ``{adaptive|plain}_worst_{ρ:g}``
    and ``{adaptive|plain}_average_{ρ:g}`` (Andriushchenko et al. worst- and average-case sharpness).
    Quantities the report does not hold are None.
    """
    h = report.get("hessian") or {}
    top, bottom, trace = h.get("top") or {}, h.get("bottom") or {}, h.get("trace") or {}
    out: dict[str, float | None] = {
        "loss": report.get("loss"), "accuracy": report.get("accuracy"),
        "lambda_max": (top.get("values") or [None])[0], "lambda_min": (bottom.get("values") or [None])[0],
        "trace": trace.get("value"), "trace_stderr": trace.get("stderr"),
        "analysis_seconds": (report.get("cost") or {}).get("seconds"),
    }
    for e in report.get("epsilon_sharpness") or []:
        key = f"eps_{'paper_' if e.get('method') == 'paper' else ''}{e['space']}_{e['epsilon']:g}"
        out[key] = e["value"]
        out[f"{key}_ran_out"] = bool(e.get("budget_exhausted"))
    for kind, tag in (("adaptive_sharpness", "worst"), ("average_sharpness", "average")):
        for e in report.get(kind) or []:
            out[f"{'adaptive' if e['adaptive'] else 'plain'}_{tag}_{e['rho']:g}"] = e["value"]
    return out


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


def plural(n: int | float, word: str) -> str:
    """``"1 epoch"``, ``"30 epochs"``."""
    return f"{n:g} {word}{'' if n == 1 else 's'}"


# ----------------------------------------------------------------------------------------------------------
# The context a study computes in
# ----------------------------------------------------------------------------------------------------------


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
        from .sweep import sweep

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
        """:func:`sharpness.report.analyze` once; the report dict (``sharpness.report/1``) is the unit's result."""
        options = {"device": self.device, **options}
        return self.unit(key, lambda: analyze(model, inputs, targets, data_spec=data_spec, **options).to_dict(),
                         config=options, seed=seed)

    def interpolation(self, key: str, a: Trained, b: Trained, dataset: Any, *, alphas: Sequence[float],
                      seed: int | None = None) -> Any:
        """Keskar et al.'s Fig. 3 as a landscape unit: loss and accuracy on the training split (and the test split,
        when there is one) along (1 − α)·θ_a + α·θ_b at ``alphas`` = (start, stop, points), α = 0 at ``a``."""
        from .landscape import LineResult, grid, interpolate
        from .objective import Objective

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


# ----------------------------------------------------------------------------------------------------------
# Running a study
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyOutcome:
    """What :func:`run_study` did: the results directory, summary file, tables text, figure files and time."""

    name: str
    budget: str
    results_dir: str
    summary_path: str
    tables: str
    figures: tuple[str, ...]
    wall_seconds: float
    cpu_seconds: float
    warnings: tuple[str, ...] = ()


def _resolve_budget(quick: bool, budget: str | None) -> str:
    budget = budget or ("quick" if quick else "full")
    if budget not in BUDGETS:
        raise InputError(f"expected a budget in ({', '.join(BUDGETS)}), got {budget!r}")
    if quick and budget == "full":
        raise InputError("expected quick=True with budget quick or smoke, got budget 'full'")
    return budget


def run_study(
    name: str,
    *,
    quick: bool = False,
    budget: str | None = None,
    seeds: int | None = None,
    device: str = "cpu",
    out: str | os.PathLike | None = None,
    figures: str | os.PathLike | None = None,
    plot_only: bool = False,
    threads: int | None = None,
    say: Callable[[str], None] | None = None,
) -> StudyOutcome:
    """Run (or resume) study ``name``, write ``summary.json`` and ``tables.md``, and draw its figures.

    Args:
        name: one of :func:`study_names`.
        quick: the quick budget (minutes on two CPU cores). ``budget`` names one explicitly (``"smoke"`` is
            the test suite's smaller-than-quick budget).
        seeds: how many seeds (0 … seeds−1); default the study's own count at this budget.
        device: where to train and measure (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        out: results directory (default :func:`default_results_dir`).
        figures: figures directory (default :func:`default_figures_dir`).
        plot_only: draw the figures and print the tables from the saved summary only; nothing is computed.
        threads: torch intra-op threads while the study runs (restored afterwards). Default: 1 on CPU, where
            the studies' small models gain nothing from splitting each op and a shared machine loses a lot
            (measured on 2 loaded cores: a batch-32 epoch 4.1 s with 1 thread, 27 s with 2); unchanged on CUDA.
        say: receives one-line progress messages.

    Raises:
        InputError: unknown study or budget, a results directory holding another configuration, or
            ``plot_only`` without saved results.
    """
    _check_name(name)
    budget = _resolve_budget(quick, budget)
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise InputError(f"expected seeds to be a positive integer, got {seeds!r}")
    module = load_study(name)
    out_dir = Path(out) if out is not None else default_results_dir(name, budget)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"expected threads to be a positive integer, got {threads!r}")
    if threads is None and torch.device(device).type == "cpu":
        threads = 1
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(name, module, budget, seeds, device, out_dir, figures, plot_only, say)
    finally:
        torch.set_num_threads(previous)


def _run(name: str, module: ModuleType, budget: str, seeds: int | None, device: str, out_dir: Path,
         figures: str | os.PathLike | None, plot_only: bool, say: Callable[[str], None] | None) -> StudyOutcome:
    summary_path = out_dir / "summary.json"
    t0, c0 = time.perf_counter(), time.process_time()
    if plot_only:
        if not summary_path.is_file():
            raise InputError(f"expected saved results in {summary_path} for --plot-only, got none; "
                             "run the study without --plot-only first")
        saved = json.loads(summary_path.read_text())
        if saved.get("study") != name:
            raise InputError(f"expected results of study {name!r} in {out_dir}, got {saved.get('study')!r}")
        budget = saved["budget"]  # the figures' default place follows the results, not the flags
    else:
        settings = module.settings(budget)
        n_seeds = seeds if seeds is not None else int(settings.get("seeds", 1))
        run = StudyRun(name, budget, settings, seeds=n_seeds, device=device, out=out_dir, say=say)
        summary = module.compute(run)
        saved = jsonable({
            "schema": SCHEMA, "study": name, "budget": budget, "title": STUDIES[name].title,
            "paper": STUDIES[name].paper, "settings": settings, "seeds": run.seeds, "summary": summary,
            "provenance": provenance(device), "unit_seconds": run.unit_seconds,
            "wall_seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
        })
        run.rundir.write_json("summary.json", saved)
    fig_dir = Path(figures) if figures is not None else default_figures_dir(budget, out_dir)
    text = module.tables(saved)
    (out_dir / "tables.md").write_text(text + "\n")
    paths = [str(p) for p in module.plot(saved, out_dir, fig_dir)]
    # a study may check its own answer (e.g. a contrast within the noise): one line each, the run still succeeds
    warns = tuple(getattr(module, "warnings", lambda _saved: [])(saved))
    return StudyOutcome(name=name, budget=budget, results_dir=str(out_dir), summary_path=str(summary_path),
                        tables=text, figures=tuple(paths), wall_seconds=time.perf_counter() - t0,
                        cpu_seconds=time.process_time() - c0, warnings=warns)


def describe_outcome(outcome: StudyOutcome) -> str:
    """The closing line printed after the tables: where results and figures went, and the time taken."""
    figs = ", ".join(Path(p).name for p in outcome.figures if p.endswith(".png")) or "none"
    where = str(Path(outcome.figures[0]).parent) if outcome.figures else "—"
    return (f"{outcome.name} ({outcome.budget}): results in {outcome.results_dir}; figures in {where} ({figs}); "
            f"{outcome.wall_seconds:.0f} s wall, {outcome.cpu_seconds:.0f} s CPU")


def script_main(name: str, argv: Sequence[str] | None = None) -> int:
    """The command line of ``python experiments/<study>.py``: the same options as ``sharpness reproduce``."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"experiments/{STUDIES[name].script}",
                                     description=f"{STUDIES[name].paper}: {STUDIES[name].title}.")
    parser.add_argument("--quick", action="store_true", help="the quick budget (minutes on two CPU cores)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # the test suite's budget
    parser.add_argument("--seeds", type=int, help="number of seeds (default: the study's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:i (default cpu)")
    parser.add_argument("--out", help="results directory (default experiments/results/<study>[-quick])")
    parser.add_argument("--figures", help="figures directory (default figures/ for full runs, <out>/figures otherwise)")
    parser.add_argument("--plot-only", action="store_true", help="redraw figures and tables from saved results")
    parser.add_argument("--threads", type=int, help="torch threads (default 1 on CPU)")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr even when not a terminal")
    args = parser.parse_args(argv)
    chatty = args.verbose or sys.stderr.isatty()
    try:
        outcome = run_study(name, quick=args.quick or args.smoke, budget="smoke" if args.smoke else None,
                            seeds=args.seeds, device=args.device, out=args.out, figures=args.figures,
                            plot_only=args.plot_only, threads=args.threads, say=(lambda m: print(m, file=sys.stderr, flush=True)) if chatty else None)
    except InputError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(outcome.tables)
    print(describe_outcome(outcome))
    for line in outcome.warnings:
        print(f"{parser.prog}: warning: {line}", file=sys.stderr)
    return 0


#: Figure helpers the studies import from here; they live in :mod:`sharpness.plots` (all drawing does) and are
#: looked up on first use, so importing this module does not import matplotlib.
_FROM_PLOTS = ("batch_size_axis", "log_axis", "save_and_close")


def __getattr__(name: str) -> Any:
    if name in _FROM_PLOTS:
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
