"""Figures from saved results: every function takes data and a matplotlib Axes, draws, and returns the Axes.

Nothing here evaluates a model or a loss; the inputs are the result objects of :mod:`sharpness.landscape`
(or plain arrays), so a figure can always be redrawn from files without recomputing.

* :func:`parametric_plot` — Keskar et al. (ICLR 2017) Fig. 3: loss (left axis) and accuracy (right axis)
  along the interpolation between two solutions; solid train, dashed test;
* :func:`slices_1d` — 1D slices of several checkpoints on shared axes (Li et al. 2018, Fig. 5);
* :func:`contour_2d`, :func:`surface_3d` — 2D planes as filled contours and as a surface (Li et al. Fig. 1, 6);
* :func:`spectral_density` — a Hessian spectral density on a log axis (Ghorbani et al. 2019);
* :func:`eigenvalue_bars` — top/bottom eigenvalues of one or several checkpoints;
* :func:`sharpness_vs_batch` — sharpness and test accuracy against batch size (Keskar et al. Fig. 4/5);
* :func:`curvature_check` — a slice along a top eigenvector against the parabola ½λα²‖d‖² it implies.

:func:`use_style` applies the shipped style; :func:`save_figure` writes byte-reproducible PNG/PDF/SVG files.
Accuracies are fractions in [0, 1] in the data and drawn in percent.
:func:`sharpness_trajectory` draws λ_max along training (Cohen et al. 2021); :func:`batch_size_axis` and
:func:`log_axis` are the axes the studies share, and :func:`save_and_close` writes and frees a study's figure.

All drawing in the package lives here, in themed modules: :mod:`~sharpness.plots.landscape` (interpolations,
slices, planes, :func:`render`), :mod:`~sharpness.plots.curvature` (spectra, eigenvalues, batch-size sweeps,
trajectories), :mod:`~sharpness.plots.axes` (shared axis helpers) and :mod:`~sharpness.plots.style` (the style
and the files) and :mod:`~sharpness.plots.saved` (:func:`draw_saved`: a saved result file redrawn). Every name is importable from ``sharpness.plots``.
"""

from __future__ import annotations

from .axes import batch_size_axis, log_axis
from .curvature import curvature_check, eigenvalue_bars, sharpness_trajectory, sharpness_vs_batch, spectral_density
from .landscape import contour_2d, contour_levels, parametric_plot, render, slices_1d, surface_3d
from .saved import draw_saved
from .style import save_and_close, save_figure, style_path, use_style

__all__ = [
    "render",
    "draw_saved",
    "use_style",
    "style_path",
    "save_figure",
    "save_and_close",
    "parametric_plot",
    "slices_1d",
    "contour_levels",
    "contour_2d",
    "surface_3d",
    "spectral_density",
    "eigenvalue_bars",
    "sharpness_vs_batch",
    "curvature_check",
    "sharpness_trajectory",
    "batch_size_axis",
    "log_axis",
]
