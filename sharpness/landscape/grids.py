"""The loss along lines and planes: :func:`interpolate` (Keskar et al. 2017), :func:`line` and the resumable
:func:`plane` (Li et al. 2018), and :func:`landscape`, one call from an objective to a slice around it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..objective import Objective
from ..numerics.precision import with_precision_policy
from ..files.rundir import RunDir, array_digest
from .directions import _as_vector, choose_directions
from .evaluate import _affine_points, _check_compatible, _coords, _float_buffers, _stack, _Sweep, default_batch_size, grid
from .results import _METRICS, LineResult, PlaneResult

PLANE_SCHEMA = "sharpness.plane/1"


@with_precision_policy
def interpolate(
    objective: Objective,
    theta_a: Tensor,
    theta_b: Tensor,
    alphas: Sequence[float] | np.ndarray | None = None,
    *,
    test_objective: Objective | None = None,
    obj_b: Objective | None = None,
    batch_size: int | None = None,
) -> LineResult:
    """Loss and accuracy along the line through two solutions (Keskar et al. 2017, Fig. 3).

        f((1 − α)·θ_a + α·θ_b),   α ∈ ``alphas`` (default: 25 points on [−1, 2], Keskar's range)

    α = 0 is θ_a and α = 1 is θ_b exactly (``grid`` makes 0 and 1 exact values). Keskar et al. write
    f(α·x_LB + (1 − α)·x_SB): pass θ_a = small-batch and θ_b = large-batch solution for their orientation.

    Buffers: the objective's model supplies BatchNorm running statistics. If the two checkpoints have
    different ones, pass ``obj_b`` (an objective built from model b) and the floating-point buffers are
    interpolated with the same weights, so both endpoints reproduce their own checkpoint's loss.
    """
    batch_size = default_batch_size(objective) if batch_size is None else batch_size
    theta_a = _as_vector(theta_a, "theta_a", objective.numel).to(objective.device, objective.dtype)
    theta_b = _as_vector(theta_b, "theta_b", objective.numel).to(objective.device, objective.dtype)
    a = _coords(alphas, grid(-1.0, 2.0, 25), "alphas")
    coords = np.stack([1.0 - a, a], axis=1)
    buffers: dict[str, tuple[Tensor, Tensor]] = {}
    if obj_b is not None:
        _check_compatible(objective, obj_b, "objective of model b")
        bufs_a, bufs_b = _float_buffers(objective), _float_buffers(obj_b)
        buffers = {k: (bufs_a[k], bufs_b[k].to(bufs_a[k])) for k in bufs_a if k in bufs_b and not torch.equal(bufs_a[k], bufs_b[k].to(bufs_a[k]))}

    def make(start: int, stop: int) -> dict[str, Tensor]:
        c = coords[start:stop]
        extra = {k: _affine_points(None, [ba.reshape(-1), bb.reshape(-1)], c).reshape(stop - start, *ba.shape) for k, (ba, bb) in buffers.items()}
        return _stack(objective, _affine_points(None, [theta_a, theta_b], c), extra)

    t0 = time.perf_counter()
    sweep = _Sweep(objective, test_objective, batch_size)
    metrics = sweep.run(make, len(a), exact=np.flatnonzero((a == 0.0) | (a == 1.0)))
    return LineResult(
        alphas=a,
        **metrics,
        kind="interpolation",
        direction_norm=float((theta_b - theta_a).norm()),
        seconds=time.perf_counter() - t0,
        num_evaluations=sweep.num_evaluations,
        config=_grid_config(objective, test_objective, batch_size, interpolated_buffers=sorted(buffers)),
    )


def _grid_config(objective: Objective, test_objective: Objective | None, batch_size: int, **extra: Any) -> dict:
    return {
        "objective": objective.config,
        "test_objective": None if test_objective is None else test_objective.config,
        "batch_size": batch_size,
        **extra,
    }


@with_precision_policy
def line(
    objective: Objective,
    center: Tensor | None,
    d: Tensor,
    alphas: Sequence[float] | np.ndarray | None = None,
    *,
    test_objective: Objective | None = None,
    batch_size: int | None = None,
) -> LineResult:
    """Loss and accuracy on the 1D slice f(θ + α·d) (Li et al. 2018, Fig. 2/5).

    Args:
        center: θ (default: the objective's point); d: the direction ``(P,)``.
        alphas: default ``grid(-1, 1, 51)``, whose middle value is exactly 0, so that point is θ itself.
    """
    batch_size = default_batch_size(objective) if batch_size is None else batch_size
    center = objective.theta if center is None else _as_vector(center, "center", objective.numel)
    center = center.to(objective.device, objective.dtype)
    d = _as_vector(d, "d", objective.numel).to(objective.device, objective.dtype)
    a = _coords(alphas, grid(-1.0, 1.0, 51), "alphas")
    coords = a[:, None]
    t0 = time.perf_counter()
    sweep = _Sweep(objective, test_objective, batch_size)
    metrics = sweep.run(lambda s, e: _stack(objective, _affine_points(center, [d], coords[s:e])), len(a), exact=np.flatnonzero(a == 0.0))
    return LineResult(
        alphas=a,
        **metrics,
        kind="line",
        direction_norm=float(d.norm()),
        seconds=time.perf_counter() - t0,
        num_evaluations=sweep.num_evaluations,
        config=_grid_config(objective, test_objective, batch_size),
    )


def plane_manifest(
    objective: Objective,
    center: Tensor,
    d1: Tensor,
    d2: Tensor,
    alphas: np.ndarray,
    betas: np.ndarray,
    *,
    test_objective: Objective | None = None,
    batch_size: int | None = None,
) -> dict:
    """What a resumable :func:`plane` run is: configuration, grid and SHA-256 digests of every input."""
    batch_size = default_batch_size(objective) if batch_size is None else batch_size

    def data_digest(obj: Objective | None) -> str | None:
        if obj is None:
            return None
        if obj.inputs is None:  # a streamed set: its order-independent content hash stands for the data
            content = np.frombuffer(bytes.fromhex(obj.fingerprint()["sample_sha256"]), dtype=np.uint8)
            return array_digest(content, *_float_buffers(obj).values())
        extras = [] if obj.weights is None else [obj.weights]
        return array_digest(obj.inputs, obj.targets, *extras, *_float_buffers(obj).values())

    return {
        "schema": PLANE_SCHEMA,
        **_grid_config(objective, test_objective, batch_size),
        "names": list(objective.names),
        "center": array_digest(center),
        "d1": array_digest(d1),
        "d2": array_digest(d2),
        "alphas": [float(x) for x in alphas],
        "betas": [float(x) for x in betas],
        "data": data_digest(objective),
        "test_data": data_digest(test_objective),
    }


@with_precision_policy
def plane(
    objective: Objective,
    center: Tensor | None,
    d1: Tensor,
    d2: Tensor,
    alphas: Sequence[float] | np.ndarray | None = None,
    betas: Sequence[float] | np.ndarray | None = None,
    *,
    test_objective: Objective | None = None,
    rundir: RunDir | str | Path | None = None,
    batch_size: int | None = None,
    max_rows: int | None = None,
    row_indices: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PlaneResult:
    """Loss and accuracy on the plane f(θ + α·d₁ + β·d₂) (Li et al. 2018, Fig. 1/6), row by row.

    Args:
        center: θ (default: the objective's point).
        d1: the first direction ``(P,)``.
        d2: the second direction ``(P,)``.
        alphas: coordinates along d1, the rows of the result (default ``grid(-1, 1, 51)``, so α = 0 is
            exactly θ).
        betas: coordinates along d2, the columns (same default).
        rundir: a :class:`~sharpness.files.rundir.RunDir` or a directory path. Each finished row is written
            atomically (``row-IIIII.npz`` + a done marker) and a rerun with the same arguments continues with
            the missing rows; the final arrays are identical to an uninterrupted run. A directory holding a
            different run (see :func:`plane_manifest`) raises :class:`InputError`.
        batch_size: points per vmapped evaluation (default :func:`default_batch_size`); blocks never span
            rows, so results do not depend on where a run was interrupted.
        max_rows: compute at most this many new rows in this call (the rest stay unmasked).
        row_indices: compute only these rows (others are loaded from ``rundir`` if done, else masked): how
            ranks under torchrun split a grid, each writing its rows into a shared ``rundir``.
        progress: called as ``progress(rows_done, rows_total)`` after each row (it may raise to stop the run;
            rows already recorded in ``rundir`` are kept).
    """
    batch_size = default_batch_size(objective) if batch_size is None else batch_size
    center = objective.theta if center is None else _as_vector(center, "center", objective.numel)
    center = center.to(objective.device, objective.dtype)
    d1 = _as_vector(d1, "d1", objective.numel).to(objective.device, objective.dtype)
    d2 = _as_vector(d2, "d2", objective.numel).to(objective.device, objective.dtype)
    a = _coords(alphas, grid(-1.0, 1.0, 51), "alphas")
    b = _coords(betas, grid(-1.0, 1.0, 51), "betas")
    if rundir is not None and not isinstance(rundir, RunDir):
        rundir = RunDir(rundir, plane_manifest(objective, center, d1, d2, a, b, test_objective=test_objective, batch_size=batch_size))

    only = None if row_indices is None else {int(i) for i in row_indices}
    t0 = time.perf_counter()
    sweep = _Sweep(objective, test_objective, batch_size)
    rows: dict[int, dict[str, np.ndarray | None]] = {}
    computed = 0
    for i, alpha in enumerate(a):
        key = f"row-{i:05d}"
        if rundir is not None and rundir.done(key):
            saved = rundir.load_npz(key)
            rows[i] = {m: saved.get(m) for m in _METRICS}
        elif (max_rows is None or computed < max_rows) and (only is None or i in only):
            coords = np.stack([np.full_like(b, alpha), b], axis=1)
            exact = np.flatnonzero(b == 0.0) if alpha == 0.0 else ()
            rows[i] = sweep.run(lambda s, e: _stack(objective, _affine_points(center, [d1, d2], coords[s:e])), len(b), exact)
            computed += 1
            if rundir is not None:
                rundir.save_npz(key, **{m: v for m, v in rows[i].items() if v is not None})
                rundir.mark_done(key)
        if progress is not None and i in rows:
            progress(len(rows), len(a))

    mask = np.zeros((len(a), len(b)), dtype=bool)
    for i in rows:
        mask[i] = True
    present = {m for row in rows.values() for m, v in row.items() if v is not None}
    if not rows:  # nothing computed yet: report which metrics the run will have
        present = {"train_loss", "test_loss"} if test_objective is not None else {"train_loss"}
        if objective.has_accuracy:
            present |= {m.replace("loss", "acc") for m in present}
    metrics: dict[str, np.ndarray | None] = {}
    for m in _METRICS:
        if m not in present:
            metrics[m] = None
            continue
        arr = np.full((len(a), len(b)), np.nan)
        for i, row in rows.items():
            arr[i] = row[m]
        metrics[m] = arr
    return PlaneResult(
        alphas=a,
        betas=b,
        mask=mask,
        **metrics,
        direction_norms=(float(d1.norm()), float(d2.norm())),
        seconds=time.perf_counter() - t0,
        num_evaluations=sweep.num_evaluations,
        config=_grid_config(objective, test_objective, batch_size, rundir=None if rundir is None else str(rundir.path)),
    )



@with_precision_policy
def landscape(
    objective: Objective,
    *,
    dims: int = 2,
    directions: str = "random",
    normalization: str = "filter",
    ignore: str | Sequence[str] = ("bias", "bn"),
    seed: int = 0,
    trajectory: Sequence[Tensor] | Tensor | None = None,
    targets: Sequence[Tensor] | None = None,
    alphas: Sequence[float] | np.ndarray | None = None,
    betas: Sequence[float] | np.ndarray | None = None,
    test_objective: Objective | None = None,
    rundir: RunDir | str | Path | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    tol: float = 1e-4,
) -> LineResult | PlaneResult:
    """One call from a checkpoint's objective to a 1D slice (``dims=1``) or a 2D plane (``dims=2``) around it.

    Directions: ``"random"`` — :func:`random_direction` with seeds ``seed`` and ``seed + 1`` (Li et al. 2018;
    in high dimension two Gaussian directions are nearly orthogonal); ``"eigen"`` — the top ``dims`` Hessian
    eigenvectors (:func:`eigen_directions`, unit norm, so choose ``alphas`` on the scale 1/√λ); ``"pca"`` —
    the principal directions of ``trajectory`` around the checkpoint (:func:`pca_directions`);
    ``"checkpoint"`` — towards each of the ``dims`` flat parameter vectors ``targets``
    (:func:`checkpoint_direction`). See :func:`choose_directions`. The result's ``config["directions"]`` records the choice (and the eigenvalues or explained variances).
    ``rundir`` and ``progress`` apply to planes only.
    """
    if dims not in (1, 2):
        raise InputError(f"dims must be 1 or 2, got {dims}")
    dirs, info = choose_directions(objective, directions, dims, normalization=normalization, ignore=ignore, seed=seed,
                                   trajectory=trajectory, targets=targets, tol=tol)
    if dims == 1:
        result: LineResult | PlaneResult = line(objective, None, dirs[0], alphas, test_objective=test_objective, batch_size=batch_size)
    else:
        result = plane(objective, None, dirs[0], dirs[1], alphas, betas, test_objective=test_objective, rundir=rundir, batch_size=batch_size, progress=progress)
    return dataclasses.replace(result, config={**result.config, "directions": info})
