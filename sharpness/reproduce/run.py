"""Running a study: :func:`run_study` (compute → summary → tables → figures, resumable), the outcome, and
:func:`script_main`, the command line every ``experiments/*.py`` script shares."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

import torch

from ..errors import InputError
from ..analysis.report import jsonable
from .provenance import provenance
from .registry import BUDGETS, SCHEMA, STUDIES, _check_name, default_figures_dir, default_results_dir, load_study
from .study import StudyRun


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
            (benchmarks/README.md has the timing); unchanged on CUDA.
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
