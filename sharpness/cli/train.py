"""``sharpness train`` (one run) and ``sharpness sweep`` (batch sizes × seeds × learning rates).

Every option is the :class:`~sharpness.train.TrainConfig` field of the same name; the commands are thin shells
over :func:`sharpness.train.train` and :func:`sharpness.sweep.sweep`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import click

from ..errors import InputError
from ..sweep import SUMMARY_FIELDS, sweep as run_sweep
from ..tracking import SharpnessTracker, progressive_sharpening_summary
from ..train import (OPTIMIZERS, LR_SCALINGS, SCHEDULES, TrainConfig, TrainingInterrupted, resume_path,
                     train as run_train)
from . import cli
from .options import (apply_threads, check_outputs, common_options, parse_json_option, progress_enabled, resolve_device,
                      setup_logging, threads_option, write_json)

EXIT_CODES = """\b
Exit codes: 0 success · 2 bad usage or input, or the loss became NaN/Inf (the last good weights are kept)
· 130 interrupted (rerun with --resume to continue)."""

SWEEP_EXIT_CODES = """\b
Exit codes: 0 success · 2 bad usage or input · 130 interrupted (rerun the same command to continue)."""

_INT_OR_NONE = click.IntRange(min=1)


def _option_list(per_run: bool) -> list[Callable]:
    """The TrainConfig options; ``per_run`` adds those a sweep sets itself (batch size, lr, init, resume)."""
    opts = [
        click.option("--data", default="mnist1d", show_default=True, metavar="NAME|FILE.npz|FILE.py:FN",
                     help="Dataset name, .npz file, or FN (FILE.py:FN, pkg.mod:FN) returning (x, y) tensors, a Dataset or a "
                          "DataLoader of (x, y); FN(split='test') gives the test split if FN takes split. Read once "
                          "into tensors: the toolkit draws its own seeded batches (a loader's batching and shuffling "
                          "are not used; one that changes between passes is refused). Naming code here RUNS it; "
                          "analyze needs the same --data again."),
        click.option("--data-kwargs", metavar="JSON", help="Dataset options as a JSON object (e.g. '{\"n\": 500}'; \"seed\" regenerates synthetic data)."),
        click.option("--data-dir", type=click.Path(file_okay=False), help="Where dataset files live."),
        click.option("--subset", type=_INT_OR_NONE, help="Train on a seeded random subset of this many training samples."),
        click.option("--model", default="mlp", show_default=True, metavar="NAME|FILE.py:FN|pkg.mod:FN", help="Architecture."),
        click.option("--model-kwargs", metavar="JSON", help="Architecture options as a JSON object (e.g. '{\"hidden\": [64]}')."),
        click.option("--loss", type=click.Choice(["auto", "cross-entropy", "mse"]), default="auto", show_default=True),
        click.option("--drop-last/--keep-last", default=True, show_default=True,
                     help="Drop the short last batch of each epoch, so every step sees exactly B samples."),
        click.option("--accumulate", type=_INT_OR_NONE, help="Split each batch into this many micro-batches (gradient accumulation)."),
        click.option("--max-micro-batch", type=_INT_OR_NONE, help="Accumulate over micro-batches of at most this many samples."),
        click.option("--ghost-batch", type=_INT_OR_NONE, help="Ghost batch norm: BatchNorm statistics over virtual batches of this size."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True),
        click.option("--momentum", type=float, default=0.0, show_default=True, help="SGD momentum."),
        click.option("--nesterov", is_flag=True, help="Nesterov momentum (SGD with --momentum > 0)."),
        click.option("--weight-decay", type=float, default=0.0, show_default=True, help="L2 (decoupled for adamw)."),
        click.option("--lr-scaling", type=click.Choice(LR_SCALINGS), default="none", show_default=True,
                     help="Scale --lr by B/base (linear, Goyal et al.) or its square root."),
        click.option("--base-batch-size", type=_INT_OR_NONE, default=256, show_default=True, help="Reference batch for --lr-scaling."),
        click.option("--warmup-epochs", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Linear warmup length."),
        click.option("--schedule", type=click.Choice(SCHEDULES), default="constant", show_default=True),
        click.option("--milestones", metavar="E1,E2,...", help="Epochs where --schedule step multiplies the lr by --gamma."),
        click.option("--gamma", type=float, default=0.1, show_default=True, help="Factor of the step schedule."),
        click.option("--epochs", type=_INT_OR_NONE, help="Train for this many epochs."),
        click.option("--steps", type=_INT_OR_NONE, help="Train for this many optimizer steps."),
        click.option("--until-train-loss", type=float, help="Stop at the first epoch whose train loss is below this."),
        click.option("--until-train-accuracy", type=float,
                     help="Stop at the first epoch whose train accuracy (a fraction, e.g. 0.99) is at least this."),
        click.option("--max-epochs", type=_INT_OR_NONE, help="Cap for --until-train-loss or --until-train-accuracy."),
        click.option("--data-seed", type=int, help="Data-order seed (default: --seed)."),
        click.option("--eval-every", type=_INT_OR_NONE, default=1, show_default=True, help="Evaluate train/test every k epochs."),
        click.option("--eval-chunk", type=_INT_OR_NONE, default=4096, show_default=True, help="Samples per evaluation pass."),
        click.option("--save-every", type=_INT_OR_NONE, help="Also write OUT_STEM.epoch{k}.pt every k epochs."),
    ]
    if per_run:
        opts += [
            click.option("--batch-size", default="32", show_default=True, metavar="B|P%|full", help="Batch size: samples, a percentage of the training set, or full."),
            click.option("--lr", type=float, default=0.1, show_default=True, help="Learning rate (at --base-batch-size when scaling)."),
            click.option("--init-from", type=click.Path(dir_okay=False), help="Start from this checkpoint's weights."),
            click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT.resume."),
        ]
    return opts


def _with_options(per_run: bool) -> Callable:
    def decorate(fn: Callable) -> Callable:
        for opt in reversed(_option_list(per_run)):
            fn = opt(fn)
        return common_options(fn)
    return decorate


def _float_list(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{option} expects comma-separated numbers, got {text!r}") from None


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{option} expects comma-separated integers, got {text!r}") from None


def _config(options: dict[str, Any], device: str, dtype: str, seed: int) -> TrainConfig:
    """Options → TrainConfig: the JSON and list options parsed, everything else by name."""
    values = dict(options)
    values["model_kwargs"] = parse_json_option(values.pop("model_kwargs"), "--model-kwargs")
    values["data_kwargs"] = parse_json_option(values.pop("data_kwargs"), "--data-kwargs")
    values["milestones"] = tuple(_float_list(values.pop("milestones"), "--milestones") or ())
    return TrainConfig(**values, seed=seed, device=str(resolve_device(device)), dtype=dtype)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def summary_line(metrics: dict, out: str | None) -> str:
    """One line for people: duration, final train/test loss and accuracy, gap, distance, time."""
    m = metrics
    return (f"{m['epochs']} epochs, {m['steps']} steps at batch {m['batch_size']} (peak lr {m['peak_lr']:g}, "
            f"stopped by {m['stopped_by']}) | train loss {_num(m['train_loss'])} acc {_pct(m['train_acc'])} | "
            f"test loss {_num(m['test_loss'])} acc {_pct(m['test_acc'])} | gap {_num(m['generalization_gap'])} | "
            f"‖θ−θ₀‖ {_num(m['dist_from_init'])} | {m['wall_time']:.3g} s" + (f" → {out}" if out else ""))


def tracking_line(records: list[dict], lr: float) -> str:
    """One line for people: λ_max at the first and last measurement, and its plateau against the threshold."""
    first, last = records[0], records[-1]
    line = (f"λ_max {_num(first['lambda_max'])} (step {first['step']}) → {_num(last['lambda_max'])} "
            f"(step {last['step']}), {len(records)} measurements, {sum(r['num_matvecs'] for r in records)} HVPs")
    threshold = last["eos_threshold"]
    if threshold is None:
        return f"{line} | no stability threshold ({last['eos_formula'].removeprefix('none: ')})"
    s = progressive_sharpening_summary(records, lr, threshold=threshold)
    return (f"{line} | last-third median {_num(s.plateau)} vs threshold {_num(threshold)} ({last['eos_formula']}): "
            f"ratio {s.ratio:.2f}")


def _interrupted(exc: TrainingInterrupted) -> None:
    click.echo(f"sharpness: {exc}", err=True)


@cli.command(epilog=EXIT_CODES)
@_with_options(per_run=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write (e.g. sb.pt).")
@click.option("--json", "json_path", metavar="PATH|-", help="Write metrics, history and config as JSON ('-' for stdout only).")
@click.option("--track-every", type=_INT_OR_NONE, metavar="K",
              help="Measure λ_max on a fixed analysis batch every K steps (edge of stability, Cohen et al. 2021).")
@click.option("--track-samples", type=_INT_OR_NONE, default=1000, show_default=True, metavar="N",
              help="Size of the fixed analysis batch for --track-every, drawn once from the training split.")
@click.option("--track-full", is_flag=True, help="Use the whole training split as the analysis batch (what 2/η concerns).")
@click.option("--track-top-k", type=_INT_OR_NONE, default=1, show_default=True, help="Top eigenvalues per measurement.")
@click.option("--track-lambda-min", is_flag=True, help="Also λ_min per measurement.")
@click.option("--track-trace", is_flag=True, help="Also the Hessian trace per measurement (Hutch++, 30 HVPs).")
@click.option("--track-out", type=click.Path(dir_okay=False), metavar="PATH",
              help="Write the tracked series: CSV for a .csv path, JSON otherwise.")
@click.option("--track-verify-every", type=click.IntRange(min=0), default=10, show_default=True, metavar="K",
              help="Check every K-th warm-started measurement against a cold Lanczos start (0: never).")
@click.option("--keep-state/--no-keep-state", default=True, show_default=True,
              help="Write OUT.resume at the end of every epoch (one torch.save of weights, optimizer and RNG states), "
                   "so a run killed without warning (SIGKILL, a lost machine) continues with --resume from its last "
                   "finished epoch; removed when the run finishes.")
@threads_option
def train(out: str, json_path: str | None, device: str, dtype: str, seed: int, verbose: int, quiet: int,
          track_every: int | None, track_samples: int, track_full: bool, track_top_k: int, track_lambda_min: bool,
          track_trace: bool, track_out: str | None, track_verify_every: int, keep_state: bool, **options: Any) -> None:
    """Train a model at one batch size and write a self-describing checkpoint.

    Small vs large batch is only --batch-size (e.g. 256 vs 10%); runs with the same --seed (or --init-from)
    start from bit-identical weights. Ctrl-C saves OUT.resume, and so does the end of every epoch (--keep-state,
    the default), so even a killed run loses at most one epoch; --resume continues bit-identically.

    \b
    Example:
      sharpness train --data mnist1d --model mlp --batch-size 32 --epochs 50 --seed 0 --out sb.pt
    """
    level = setup_logging(verbose, quiet)
    apply_threads(options.pop("threads"))
    check_outputs(json_path=json_path, track_out=track_out)
    config = _config(options, device, dtype, seed)
    if config.resume and not os.path.exists(resume_path(out)):
        # The library resumes "if there is a state" (a sweep relies on that); a person who asked to continue
        # and would silently start from scratch instead is told so.
        done = f"; {out} is a finished run" if os.path.exists(out) else ""
        raise InputError(f"expected a saved state {resume_path(out)} to continue with --resume, got none{done}; "
                         "drop --resume to start from scratch")
    if not config.resume and os.path.exists(resume_path(out)):
        # A killed run's state (kept at every epoch end) is about to be replaced by this fresh start: say so.
        click.echo(f"sharpness: warning: {resume_path(out)} holds an unfinished run; starting over replaces it "
                   "(--resume continues it instead)", err=True)
    if track_out and not track_every:
        raise InputError(f"expected --track-every with --track-out, got --track-out {track_out} alone")
    tracker = None if not track_every else SharpnessTracker(
        every=track_every, analysis_samples=None if track_full else track_samples, top_k=track_top_k,
        lambda_min=track_lambda_min, trace=track_trace, verify_every=track_verify_every, seed=seed)
    try:
        result = run_train(config, progress=progress_enabled(level), out=out, callbacks=[tracker] if tracker else [],
                           keep_state=keep_state)
    except TrainingInterrupted as exc:
        _interrupted(exc)
        raise
    if tracker is not None and track_out:
        if track_out.endswith(".csv"):
            tracker.to_csv(track_out)
        else:
            write_json(tracker.to_dict(), track_out)
    if json_path:
        payload = {"checkpoint": out, "metrics": result.metrics, "history": result.history, "config": config.to_dict()}
        if tracker is not None:
            payload["tracking"] = tracker.to_dict()
        write_json(payload, json_path)
    if json_path != "-":
        click.echo(summary_line(result.metrics, out))
        if tracker is not None:
            click.echo(tracking_line(tracker.records, result.metrics["peak_lr"]))


def _table(rows: list[dict]) -> str:
    cols = [c for c in SUMMARY_FIELDS if c not in ("wall_time",) and any(r.get(c) is not None for r in rows)]
    def cell(v: Any) -> str:
        return "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    table = [cols] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in table)


@cli.command(epilog=SWEEP_EXIT_CODES)
@_with_options(per_run=False)
@click.option("--batch-sizes", required=True, metavar="B,B,...", help="Batch sizes: samples, percentages or full (e.g. 32,256,10%).")
@click.option("--seeds", metavar="S,S,...", help="Seeds (default: --seed); each seed's runs share their initial weights.")
@click.option("--lrs", metavar="LR,LR,...", help="Learning rates to sweep too (default: --lr only).")
@click.option("--lr", type=float, default=0.1, show_default=True, help="Learning rate when --lrs is not given.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory (resumable).")
@click.option("--analyze", is_flag=True, help="λ_max, λ_min and Hessian trace of each finished run.")
@click.option("--json", "json_path", metavar="PATH|-", help="Write the summary as JSON ('-' for stdout only).")
def sweep(batch_sizes: str, seeds: str | None, lrs: str | None, lr: float, out_dir: str, analyze: bool,
          json_path: str | None, device: str, dtype: str, seed: int, verbose: int, quiet: int, **options: Any) -> None:
    """Train every batch size × seed (× lr) into a resumable run directory and summarize.

    Rerunning the same command skips finished runs and resumes an interrupted one; a directory holding a
    different sweep is refused.

    \b
    Example:
      sharpness sweep --data mnist1d --model mlp --batch-sizes 32,256,10% --seeds 0,1 --epochs 20 --out runs/bs
    """
    level = setup_logging(verbose, quiet)
    check_outputs(json_path=json_path)
    base = _config({**options, "lr": lr}, device, dtype, seed)
    sizes = [b.strip() for b in batch_sizes.split(",") if b.strip()]
    try:
        result = run_sweep(base, batch_sizes=sizes, seeds=_int_list(seeds, "--seeds") if seeds else [seed],
                           lrs=_float_list(lrs, "--lrs"), out_dir=out_dir, analyze=analyze,
                           progress=progress_enabled(level),
                           say=(lambda msg: click.echo(f"sharpness: {msg}", err=True)) if level >= 0 else None)
    except TrainingInterrupted as exc:
        # The run's own message says "--resume", which `sweep` does not have: rerunning the command continues.
        click.echo(f"sharpness: interrupted after step {exc.step} of a run; rerun the same command to continue "
                   f"(finished runs are skipped, this one resumes{' from ' + exc.resume_path if exc.resume_path else ''})",
                   err=True)
        raise
    rows = list(result.rows)
    if json_path:
        write_json({"out_dir": result.out_dir, "rows": rows, "trained": list(result.trained),
                    "resumed": list(result.resumed), "skipped": list(result.skipped)}, json_path)
    if json_path != "-":
        click.echo(_table(rows))
        click.echo(f"{len(rows)} runs ({len(result.trained)} trained, {len(result.resumed)} resumed, "
                   f"{len(result.skipped)} already done) → {result.summary_csv}")
