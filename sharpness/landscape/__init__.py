"""Directions in parameter space and the loss evaluated along them: 1D interpolations, 1D slices, 2D planes.

Directions are flat ``(P,)`` tensors in the parameter order of an :class:`~sharpness.objective.Objective`
(:attr:`~sharpness.objective.Objective.names`), on its device and in its dtype:

* :func:`random_direction` — a seeded zero-mean Gaussian direction, filter-normalized as in Li et al.
  (NeurIPS 2018, "Visualizing the Loss Landscape of Neural Nets", §4): each filter d_{i,j} is rescaled to
  ‖d_{i,j}‖ = ‖θ_{i,j}‖, so a step α along d moves every filter by the same *relative* amount and slices of
  networks with different weight scales become comparable;
* :func:`eigen_directions` — Hessian eigenvectors (Lanczos, :func:`sharpness.linalg.extreme_eigenvalues`);
* :func:`checkpoint_direction` — θ_b − θ_a between two solutions;
* :func:`pca_directions` — principal components of an optimization trajectory (Li et al. §7);
* :func:`orthogonalize` — Gram–Schmidt of one direction against another.

Grids evaluate the objective (and optionally a test objective) at points on a line or a plane:

* :func:`interpolate`: f((1 − α)·θ_a + α·θ_b), Keskar et al. (ICLR 2017) Fig. 3 (α ∈ [−1, 2], 25 points);
* :func:`line`: f(θ + α·d), Li et al. Fig. 2 and 5 (α ∈ [−1, 1], 51 points);
* :func:`plane`: f(θ + α·d₁ + β·d₂), Li et al. Fig. 1 and 6 (51 × 51), resumable through a
  :class:`~sharpness.files.rundir.RunDir`.

The centre of a default grid is exactly a grid point (α = 0.0, β = 0.0, not 1e-17), and there the point is
θ itself bit for bit; interpolation endpoints are θ_a and θ_b exactly. Several points are evaluated at once
with :func:`torch.func.vmap` (``batch_size``), which equals one-at-a-time evaluation up to the rounding of a
batched matrix product (last bits); these reference points (centre, endpoints) are always evaluated
unbatched, as :meth:`Objective.value` does, so they equal ``objective.value()`` exactly. BatchNorm follows the
objective's policy (eval mode: the checkpoint's running statistics at every point); running statistics are
not recalibrated per point.

:func:`fit_curvature` fits a parabola to the centre of a slice: f''(0)/‖d‖², which equals dᵀHd/‖d‖² on a
quadratic and λ_max along a top eigenvector — a cross-check of the Hessian estimators by plain evaluation.

The package: :mod:`~sharpness.landscape.directions` (the directions and :func:`choose_directions`),
:mod:`~sharpness.landscape.evaluate` (many points per launch), :mod:`~sharpness.landscape.grids` (lines,
planes, :func:`landscape`) and :mod:`~sharpness.landscape.results` (what they return and save). Every public
name is importable from ``sharpness.landscape`` itself.
"""

from __future__ import annotations

from .directions import (
    DIRECTIONS,
    NORM_LAYERS,
    NORMALIZATIONS,
    checkpoint_direction,
    choose_directions,
    eigen_directions,
    ignored_parameters,
    orthogonalize,
    pca_directions,
    project,
    random_direction,
)
from .evaluate import BATCH_POINTS, BATCH_WORK_LIMIT, default_batch_size, grid
from .grids import PLANE_SCHEMA, interpolate, landscape, line, plane, plane_manifest
from .results import CurvatureFit, LineResult, PlaneResult, fit_curvature, load_result

__all__ = [
    "random_direction",
    "ignored_parameters",
    "eigen_directions",
    "checkpoint_direction",
    "pca_directions",
    "project",
    "orthogonalize",
    "choose_directions",
    "grid",
    "interpolate",
    "line",
    "plane",
    "plane_manifest",
    "landscape",
    "load_result",
    "fit_curvature",
    "LineResult",
    "PlaneResult",
    "CurvatureFit",
    "default_batch_size",
    "NORM_LAYERS",
    "NORMALIZATIONS",
    "DIRECTIONS",
    "BATCH_POINTS",
    "BATCH_WORK_LIMIT",
    "PLANE_SCHEMA",
]
