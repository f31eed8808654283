"""The studies: their names and scripts in ``experiments/``, the budgets, and where results and figures go."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import InputError


BUDGETS = ("full", "quick", "smoke")
SCHEMA = "sharpness.reproduce/1"
UNIT_SCHEMA = "sharpness.reproduce-unit/1"
ENV_EXPERIMENTS = "SHARPNESS_EXPERIMENTS_DIR"


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
        StudyInfo("generalization-measures", "generalization_measures.py",
                  "does sharpness predict the generalization gap across a sweep? Kendall τ and Ψ",
                  "Jiang et al., ICLR 2020; Andriushchenko et al., ICML 2023"),
    )
}


def study_names() -> list[str]:
    """The registered study names, in registry order."""
    return list(STUDIES)


def _source_root() -> Path:
    """The directory holding the ``sharpness`` package: the repository root of a source checkout."""
    return Path(__file__).resolve().parents[2]  # sharpness/reproduce/registry.py → the checkout


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
