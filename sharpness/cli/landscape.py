"""``sharpness interpolate``, ``sharpness landscape`` and ``sharpness plot``: the 1D and 2D pictures.

Each command computes with :mod:`sharpness.landscape`, saves the arrays (``.npz`` + ``.csv``) in ``--out``,
and draws them with :mod:`sharpness.plots` from the saved file; ``sharpness plot`` re-draws any saved result
without recomputing.

Why ``sharpness landscape`` calls :func:`~sharpness.landscape.choose_directions` and then
:func:`~sharpness.landscape.line` / :func:`~sharpness.landscape.plane` itself rather than the one-call
:func:`~sharpness.landscape.landscape` (the direction choice is still the library's single function):

* the command needs the direction vectors after the choice: ``--direction eigen --dims 1`` prints the
  curvature fitted along the top eigenvector (:func:`~sharpness.landscape.fit_curvature`), and
  ``landscape()`` returns only the grid;
* under ``torchrun`` each rank computes its rank-strided rows (``plane(row_indices=...)``) into the shared
  run directory and rank 0 then assembles them (``plane(rows=())``); ``landscape()`` has no row split, and
  calling it twice on rank 0 would recompute the directions (a second Lanczos run for ``eigen``);
* ``landscape()`` records its choice under ``config["directions"]``, so the saved ``.npz`` metadata would
  gain a key that results written by this command never had.

Routing through ``landscape()`` would need it to grow a row split and return its directions; until a caller
of the library needs those, the command keeps these two calls.
"""

from __future__ import annotations

import glob
import logging
import math
from pathlib import Path

import click
import numpy as np
import torch

from ..objective import distributed
from .. import landscape as ls
from ..errors import InputError
from ..files.loading import Loaded, load_model_and_data
from ..objective import Objective
from ..objective.analysis_set import DEFAULT_DATASET_BATCH
from ..objective.streams import analysis_stream
from ..objective.subsets import select_analysis_set
from ..files.rundir import check_writable
from . import cli
from .options import DTYPES, common_options, parse_json_option, resolve_device, setup_logging, tf32_option


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--range expects two numbers LO,HI such as -1,1, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"--range expects finite LO < HI, got {text!r}")
    return lo, hi


def _objectives(loaded: Loaded, *, samples, seed, chunk_size, bn_mode, device, dtype, with_test=True):
    """Objectives on the training split (the analysis set) and, when the data has one, the test split.

    ``--samples`` larger than the training split is refused (as in ``analyze``); the test curve, only a
    companion, takes the whole test split when it is smaller, and says so on stderr (unless ``-q``)."""
    if loaded.dataset is None:  # --data FILE.py:FN: the user's own pipeline (default forward and loss)
        data, targets = loaded.user_data, None
        if isinstance(data, tuple):  # (x, y) tensors
            data, targets, _ = select_analysis_set(*data, samples=samples, seed=seed)
        else:  # the finite-set contract and --samples of a loader, as in analyze (sharpness.objective.streams)
            data = analysis_stream(data, samples=samples, seed=seed, split="train",
                                   batch_size=chunk_size or DEFAULT_DATASET_BATCH,
                                   progress=lambda msg: click.echo(f"sharpness: {msg}", err=True))[0]
        return Objective(loaded.model, data, targets, chunk_size=chunk_size, bn_mode=bn_mode,
                         dtype=DTYPES[dtype], device=device), None
    out = []
    for split in ("train", "test") if with_test and loaded.dataset.x_test is not None else ("train",):
        x, y = loaded.dataset.split(split)
        if split == "test" and samples is not None and samples > x.shape[0]:
            logging.getLogger(__name__).warning(f"the test split has {x.shape[0]} samples, fewer than --samples "
                                                f"{samples}; the test curve uses all {x.shape[0]}")
            samples = int(x.shape[0])
        x, y, _ = select_analysis_set(x, y, samples=samples, seed=seed, split=split)
        out.append(Objective(loaded.model, x, y, chunk_size=chunk_size, bn_mode=bn_mode,
                             dtype=DTYPES[dtype], device=device))
    return out[0], (out[1] if len(out) > 1 else None)


def grid_options(fn):
    for decorator in reversed([
        click.option("--points", type=click.IntRange(min=2), help="Grid points per axis."),
        click.option("--range", "range_", metavar="LO,HI", help="Coordinate range of each axis."),
        click.option("--samples", type=click.IntRange(min=1), help="A seeded subset of this many training samples, at most the split's size (the test curve takes at most its whole split; default: all)."),
        click.option("--chunk-size", type=click.IntRange(min=1), help="Samples per forward pass (memory only)."),
        click.option("--bn-mode", type=click.Choice(["eval", "train"]), default="eval", show_default=True),
        click.option("--data", metavar="NAME|FILE.npz|FILE.py:FN",
                     help="Dataset (default: the one the checkpoint records), or FILE.py:FN returning a Dataset, "
                          "DataLoader or (x, y) tensors (naming code RUNS it)."),
        click.option("--data-dir", type=click.Path(file_okay=False), help="Where dataset files live."),
        click.option("--model", "model_ref", metavar="NAME|FILE.py:FN", help="Architecture of a foreign state_dict."),
        click.option("--model-kwargs", metavar="JSON", help="Keyword arguments for --model."),
        click.option("--trust-checkpoint", is_flag=True, help="Unpickle arbitrary objects (RUNS CODE from the file)."),
        click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory for arrays and figures."),
        tf32_option,
    ]):
        fn = decorator(fn)
    return common_options(fn)


def _load(path, opts, dtype: str) -> Loaded:
    """The model and its data, floating data in the grid's ``dtype`` (a float64 slice sees float64 data)."""
    return load_model_and_data(path, model=opts["model_ref"], model_kwargs=parse_json_option(opts["model_kwargs"], "--model-kwargs"),
                               data=opts["data"], data_dir=opts["data_dir"], trust_checkpoint=opts["trust_checkpoint"],
                               dtype=DTYPES[dtype])


def draw(result_path: Path, out_stem: Path | None = None, *, log: bool = False) -> list[Path]:
    """Draw a saved result file (landscape .npz, report/sweep/tracking .json) next to it or at ``out_stem``."""
    import matplotlib

    matplotlib.use("Agg")
    from .. import plots

    return plots.draw_saved(result_path, out_stem, log=log)


@cli.command()
@click.argument("checkpoint_a", type=click.Path(dir_okay=False))
@click.argument("checkpoint_b", type=click.Path(dir_okay=False))
@grid_options
def interpolate(checkpoint_a, checkpoint_b, points, range_, samples, chunk_size, bn_mode, out, device, dtype, seed,
                verbose, quiet, **opts):
    """Loss and accuracy on the line (1−α)·A + α·B through two solutions (Keskar et al. 2017, Fig. 3).

    Pass the small-batch solution as A and the large-batch one as B for Keskar's orientation. Default:
    25 points on [−1, 2]. Writes OUT/interpolation.{npz,csv,png,pdf}.
    """
    setup_logging(verbose, quiet)
    check_writable(Path(out) / "interpolation.npz", "--out")
    lo, hi = _range(range_ or "-1,2")  # before any work
    a, b = _load(checkpoint_a, opts, dtype), _load(checkpoint_b, opts, dtype)
    kw = dict(samples=samples, seed=seed, chunk_size=chunk_size, bn_mode=bn_mode, device=resolve_device(device), dtype=dtype)
    train_a, test_a = _objectives(a, **kw)
    train_b, _ = _objectives(b, with_test=False, **kw)
    if train_a.names != train_b.names or train_a.shapes != train_b.shapes:
        raise InputError(f"expected two checkpoints of the same architecture, got {checkpoint_a} and {checkpoint_b} with different parameters")
    result = ls.interpolate(train_a, train_a.theta, train_b.theta, ls.grid(lo, hi, points or 25),
                            test_objective=test_a, obj_b=train_b, allow_tf32=opts["allow_tf32"])
    _finish(result, Path(out), "interpolation")


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--dims", type=click.Choice(["1", "2"]), default="2", show_default=True)
@click.option("--direction", type=click.Choice(["random", "eigen", "pca", "checkpoint"]), default="random",
              show_default=True, help="Filter-normalized random (Li et al.), top Hessian eigenvectors, PCA of a "
              "trajectory, or towards other checkpoints.")
@click.option("--normalization", type=click.Choice(["filter", "layer", "none"]), default="filter", show_default=True)
@click.option("--ignore", default="bias,bn", show_default=True, help="Parameters whose random direction is zero.")
@click.option("--other", multiple=True, type=click.Path(dir_okay=False), help="--direction checkpoint: target(s).")
@click.option("--trajectory", metavar="GLOB", help="--direction pca: snapshot checkpoints (e.g. 'run.epoch*.pt').")
@click.option("--backend", type=click.Choice(["auto", "gloo", "nccl"]), default="auto", show_default=True,
              help="torch.distributed backend when a 2D grid is split across torchrun ranks.")
@grid_options
def landscape(checkpoint, dims, direction, normalization, ignore, other, trajectory, backend, points, range_, samples,
              chunk_size, bn_mode, out, device, dtype, seed, verbose, quiet, **opts):
    """1D or 2D slice of the loss around CHECKPOINT (Li et al. 2018). Default: 51 points on [−1, 1].

    A 2D grid is resumable: rerunning the same command continues where it stopped.
    Writes OUT/landscape_{1d,2d}.{npz,csv,png,pdf}.
    """
    setup_logging(verbose, quiet)
    dims = int(dims)
    check_writable(Path(out) / f"landscape_{dims}d.npz", "--out")
    lo, hi = _range(range_ or "-1,1")  # before any work
    loaded = _load(checkpoint, opts, dtype)
    obj, test_obj = _objectives(loaded, samples=samples, seed=seed, chunk_size=chunk_size, bn_mode=bn_mode,
                                device=resolve_device(device), dtype=dtype)
    directions, info = _directions(obj, direction, dims, normalization=normalization, ignore=ignore, other=other,
                                   trajectory=trajectory, seed=seed, opts=opts)
    coords = ls.grid(lo, hi, points or 51)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if dims == 1:
        result = ls.line(obj, None, directions[0], coords, test_objective=test_obj, allow_tf32=opts["allow_tf32"])
        if direction == "eigen":
            fit = ls.fit_curvature(result, directions[0])
            click.echo(f"curvature along the top eigenvector: fitted {fit.curvature:.6g} (Lanczos λ_max {info['eigenvalues'][0]:.6g})")
        _finish(result, out_dir, "landscape_1d")
        return
    # The run directory's manifest hashes the centre, directions, grid and data: a changed command is refused.
    # Under torchrun each rank computes its rank-strided rows into that shared directory; rank 0 assembles.
    rundir = out_dir / "landscape_2d.run"
    plane = lambda rows=None: ls.plane(obj, None, directions[0], directions[1], coords, coords,  # noqa: E731
                                       test_objective=test_obj, rundir=rundir, row_indices=rows,
                                       allow_tf32=opts["allow_tf32"])
    ctx = distributed.env_context()
    if ctx is None:
        _finish(plane(), out_dir, "landscape_2d")
        return
    with distributed.session(backend, device=obj.device) as ctx:
        plane(distributed.split_work(range(len(coords)), ctx))
        distributed.barrier()
        if ctx.is_rank0:
            _finish(plane(rows=()), out_dir, "landscape_2d")


def _directions(obj, kind, dims, *, normalization, ignore, other, trajectory, seed, opts) -> tuple[list, dict]:
    """Load what ``--other``/``--trajectory`` name, then the one choice :func:`sharpness.landscape.choose_directions`
    makes (the library's :func:`~sharpness.landscape.landscape` uses it too)."""
    targets = points = None
    if kind == "checkpoint":
        if len(other) != dims:
            raise InputError(f"--direction checkpoint needs {dims} --other checkpoint(s), got {len(other)}")
        targets = [_theta(path, obj, seed, opts) for path in other]
    elif kind == "pca":
        paths = sorted(glob.glob(trajectory or ""))
        if len(paths) < dims + 1:
            raise InputError(f"--direction pca needs --trajectory matching at least {dims + 1} checkpoints, got {len(paths)}")
        points = torch.stack([_theta(p, obj, seed, opts) for p in paths])
    found, info = ls.choose_directions(obj, kind, dims, normalization=normalization, ignore=ignore, seed=seed,
                                       trajectory=points, targets=targets)
    if kind == "pca":
        click.echo("PCA explained variance: " + ", ".join(f"{r:.1%}" for r in info["explained_variance_ratio"]))
    return found, info


def _theta(path, obj: Objective, seed, opts):
    """The flat parameters of another checkpoint of the same model, on ``obj``'s device and dtype."""
    dtype = str(obj.dtype).removeprefix("torch.")
    return _objectives(_load(path, opts, dtype), samples=1, seed=seed, chunk_size=None, bn_mode="eval",
                       device=obj.device, dtype=dtype, with_test=False)[0].theta


def _finish(result, out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    npz, csv = result.save(out_dir / f"{name}.npz")
    figures = draw(npz)
    centre = ""
    if hasattr(result, "betas"):
        i, j = int(np.argmin(np.abs(result.alphas))), int(np.argmin(np.abs(result.betas)))
        centre = f", centre loss {result.train_loss[i, j]:.6g}"
    click.echo(f"{name}: {result.num_evaluations} evaluations in {result.seconds:.1f} s{centre}")
    for path in (npz, csv, *figures):
        click.echo(f"  wrote {path}")


@cli.command()
@click.argument("result", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_stem", type=click.Path(), help="Output path without extension (default: beside RESULT).")
@click.option("--log", is_flag=True, help="Log-scale loss.")
def plot(result, out_stem, log):
    """Re-draw a saved RESULT without recomputing: a landscape/interpolation .npz, a report JSON (eigenvalues,
    spectral density), a tracked run (.pt or JSON: λ_max vs steps with 2/η) or a sweep summary.json."""
    for path in draw(Path(result), Path(out_stem) if out_stem else None, log=log):
        click.echo(f"wrote {path}")
