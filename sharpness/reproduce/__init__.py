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

Modules: :mod:`~sharpness.reproduce.registry` (studies, budgets, directories),
:mod:`~sharpness.reproduce.study` (:class:`StudyRun`, :func:`train_config`), :mod:`~sharpness.reproduce.run`
(:func:`run_study`, :func:`script_main`), :mod:`~sharpness.reproduce.tables` (cells and tables) and
:mod:`~sharpness.reproduce.provenance`. Every name is importable from ``sharpness.reproduce``.
"""

from __future__ import annotations

from typing import Any

from ..numerics.stats import mean_std  # noqa: F401  (the studies' tables use it from here)
from .provenance import git_commit, provenance
from .registry import (  # noqa: F401
    BUDGETS, ENV_EXPERIMENTS, SCHEMA, STUDIES, UNIT_SCHEMA, StudyInfo, default_figures_dir, default_results_dir,
    experiments_dir, load_study, study_names,
)
from .run import StudyOutcome, describe_outcome, run_study, script_main
from .study import StudyRun, Trained, flat_parameters, train_config
from .tables import RAN_OUT_NOTE, markdown_table, plural, pm, ran_out_mark, report_numbers  # noqa: F401

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


#: Figure helpers the studies import from here; they live in :mod:`sharpness.plots` (all drawing does) and are
#: looked up on first use, so importing this module does not import matplotlib.
_FROM_PLOTS = ("batch_size_axis", "log_axis", "save_and_close")


def __getattr__(name: str) -> Any:
    if name in _FROM_PLOTS:
        from .. import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
