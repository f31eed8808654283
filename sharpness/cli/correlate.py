"""``sharpness correlate SWEEP_DIR``: Kendall τ and Jiang's Ψ of sharpness measures with the generalization gap.

A thin shell over :func:`sharpness.correlate.correlate`; the table goes to stdout, one line per measured model
to stderr (``-q`` silences it).
"""

from __future__ import annotations

import click

from ..correlate import correlate as run_correlate
from ..correlate.output import table
from . import cli
from .options import apply_threads, common_options, resolve_device, setup_logging, threads_option


@cli.command(epilog="\b\nExit codes: 0 success · 2 bad usage or input (not a sweep directory, < 3 usable runs).")
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where the per-model cache, models.json/.csv, correlation.json and correlation.png go "
                   "[default: SWEEP_DIR/correlate].")
@click.option("--epsilon", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="ε of Keskar's ε-sharpness.")
@click.option("--epsilon-paper", is_flag=True, help="Also ε-sharpness by Keskar's own protocol (L-BFGS-B).")
@click.option("--rho", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="ρ of adaptive worst-/average-case sharpness.")
@click.option("--no-adaptive", is_flag=True, help="Skip adaptive sharpness.")
@click.option("--pac-bayes-rise", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="The training-loss rise that defines the PAC-Bayes σ.")
@click.option("--pac-bayes-draws", type=click.IntRange(min=1), default=32, show_default=True,
              help="Fixed Gaussian draws per σ of the PAC-Bayes search.")
@click.option("--samples", type=click.IntRange(min=1), help="Analyze a seeded subset of this many training samples.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples of the τ interval (0: none).")
@click.option("--no-figure", is_flag=True, help="Do not draw correlation.png.")
@threads_option
@common_options
def correlate(sweep_dir: str, out_dir: str | None, epsilon: float, epsilon_paper: bool, rho: float, no_adaptive: bool,
              pac_bayes_rise: float, pac_bayes_draws: int, samples: int | None, bootstrap: int, no_figure: bool,
              threads: int | None, device: str, dtype: str, seed: int, verbose: int, quiet: int) -> None:
    """Rank the measures of a sweep's models by Kendall τ with their generalization gap.

    For every finished run of SWEEP_DIR (written by `sharpness sweep`): λ_max, trace, ε-sharpness, adaptive
    sharpness, PAC-Bayes flatness, parameter and Fisher-Rao norms, distance from the initialization and steps, cached per
    model (a rerun resumes); then τ with test − train loss and error, a bootstrap interval, and the
    granulated Ψ per hyperparameter axis (Jiang et al. 2020).

    \b
    Example:
      sharpness sweep --data mnist1d --batch-sizes 32,128,512 --lrs 0.05,0.1 --seeds 0,1 --epochs 20 --out runs/g
      sharpness correlate runs/g
    """
    level = setup_logging(verbose, quiet)
    apply_threads(threads)
    say = (lambda msg: click.echo(f"sharpness: {msg}", err=True)) if level >= 0 else None
    result = run_correlate(sweep_dir, out_dir=out_dir, epsilon=epsilon, epsilon_paper=epsilon_paper, rho=None if no_adaptive else rho,
                           pac_bayes_rise=pac_bayes_rise, pac_bayes_draws=pac_bayes_draws, samples=samples,
                           seed=seed, bootstrap=bootstrap, device=str(resolve_device(device)), dtype=dtype,
                           figure=not no_figure, progress=say)
    click.echo(table(result.correlation, result.axes))
    for e in result.excluded:
        click.echo(f"excluded {e['run']}: {e['reason']}")
    missed = [m["run"] for m in result.models if m.get("reached_train_loss") is False]
    if missed:  # Jiang et al. compare models at one training loss; these stopped at the epoch cap instead
        click.echo(f"{len(missed)} models missed the --until-train-loss target (kept, marked in models.csv): "
                   + ", ".join(missed))
    click.echo(f"{len(result.models)} models ({len(result.computed)} measured, {len(result.cached)} cached) → "
               f"{result.files['correlation_json']}")
