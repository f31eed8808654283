"""``sharpness reproduce NAME``: one paper's tables and figures with one command (a shell over
:func:`sharpness.reproduce.run_study`)."""

from __future__ import annotations

import logging

import click

from ..reproduce import STUDIES, describe_outcome, run_study
from . import cli
from .options import progress_enabled, resolve_device, setup_logging

_LIST = "\n".join(f"  {s.name:<18} {s.paper}: {s.title}" for s in STUDIES.values())


@cli.command(epilog=f"\b\nStudies:\n{_LIST}\n\n\b\nExit codes: 0 success · 2 bad usage or input · 130 interrupted "
             "(rerun the same command to resume).")
@click.argument("name", type=click.Choice(list(STUDIES)), metavar="NAME")
@click.option("--quick", is_flag=True, help="Minutes on two CPU cores: one seed, fewer epochs, smaller budgets.")
@click.option("--smoke", is_flag=True, hidden=True, help="Seconds: the test suite's budget (not for science).")
@click.option("--seeds", type=click.IntRange(min=1), help="Number of seeds 0..N-1 (default: the study's).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:i or auto.")
@click.option("--out", type=click.Path(file_okay=False), help="Results directory [default: experiments/results/NAME[-quick]].")
@click.option("--figures", type=click.Path(file_okay=False),
              help="Figures directory [default: figures/ for full runs, OUT/figures for --quick].")
@click.option("--plot-only", is_flag=True, help="Redraw the figures and tables from saved results; compute nothing.")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads while the study runs [default: 1 on CPU].")
@click.option("-v", "--verbose", count=True, help="More output on stderr.")
@click.option("-q", "--quiet", count=True, help="Less output on stderr.")
def reproduce(name: str, quick: bool, smoke: bool, seeds: int | None, device: str, out: str | None,
              figures: str | None, plot_only: bool, threads: int | None, verbose: int, quiet: int) -> None:
    """Reproduce a paper's tables and figures (MNIST-1D scale); our numbers are printed beside the paper's.

    Raw results (JSON/NPZ with configuration, seed, versions, git commit, device and wall time) go to OUT;
    figures are drawn from those saved results only. A killed run resumes when rerun with the same arguments.

    \b
    Example:
      sharpness reproduce keskar --quick
    """
    level = setup_logging(verbose, quiet)
    # -v is for our progress: figure-writing libraries log every font subset at INFO
    for noisy in ("fontTools", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger(noisy).level))
    chatty = progress_enabled(level) or level > 0
    outcome = run_study(name, quick=quick or smoke, budget="smoke" if smoke else None, seeds=seeds,
                        device=str(resolve_device(device)), out=out, figures=figures, plot_only=plot_only, threads=threads,
                        say=(lambda m: click.echo(m, err=True)) if chatty else None)
    click.echo(outcome.tables)
    click.echo(describe_outcome(outcome))
    for line in outcome.warnings:
        click.echo(f"sharpness: warning: {line}", err=True)
