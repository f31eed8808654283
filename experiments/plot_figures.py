"""Redraw the committed figures (``figures/``) and the tables from saved results only; nothing is retrained.

Every study's raw results live in ``experiments/results/<study>`` (full budget) or ``<study>-quick``; this
script reads each ``summary.json`` found there and calls the study's own ``plot`` and ``tables`` on it
(:func:`sharpness.reproduce.run_study` with ``plot_only=True``). Studies without saved results are skipped.

Usage:
    python experiments/plot_figures.py                     # every study with full results → figures/
    python experiments/plot_figures.py keskar reparam      # only these
    python experiments/plot_figures.py --quick             # from the quick results, into <results>/figures
    python experiments/plot_figures.py --results DIR --figures DIR keskar
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sharpness.errors import InputError
from sharpness.reproduce import default_results_dir, describe_outcome, run_study, study_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="experiments/plot_figures.py", description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", metavar="STUDY", help=f"studies to redraw (default: all of {', '.join(study_names())})")
    parser.add_argument("--quick", action="store_true", help="use the quick results (experiments/results/<study>-quick)")
    parser.add_argument("--results", help="results directory (only with a single study)")
    parser.add_argument("--figures", help="figures directory (default: figures/ for full results, <results>/figures for quick)")
    args = parser.parse_args(argv)
    names = args.studies or study_names()
    unknown = [n for n in names if n not in study_names()]
    if unknown:
        parser.error(f"expected study names among {', '.join(study_names())}, got {', '.join(unknown)}")
    if args.results and len(names) != 1:
        parser.error(f"--results needs exactly one study, got {len(names)}")
    budget = "quick" if args.quick else "full"
    drawn = 0
    for name in names:
        results = Path(args.results) if args.results else default_results_dir(name, budget)
        if not (results / "summary.json").is_file():
            print(f"{name}: no saved results in {results}, skipped", file=sys.stderr)
            continue
        try:
            outcome = run_study(name, quick=args.quick, out=results, figures=args.figures, plot_only=True)
        except InputError as err:
            print(f"{name}: error: {err}", file=sys.stderr)
            return 2
        print(describe_outcome(outcome))
        drawn += 1
    return 0 if drawn else 1


if __name__ == "__main__":
    sys.exit(main())
