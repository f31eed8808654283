"""Loss-landscape figures from :mod:`sharpness.landscape` results: interpolations (Keskar et al. 2017 Fig. 3),
1D slices (Li et al. 2018 Fig. 5), 2D planes as contours and surfaces (Li et al. Fig. 1, 6), and :func:`render`,
the standard figure of one saved result."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .axes import _alpha_label, _color_axis, _legend, _loss_name, _METRIC_NAMES, _nice_ticks, _percent, _prefix, _twin
from .style import save_figure, use_style


def parametric_plot(
    ax: Axes,
    result,
    *,
    log_loss: bool = False,
    label: str | None = None,
    endpoints: tuple[str, str] | None = ("a", "b"),
    loss_color: str = "C0",
    acc_color: str = "C1",
) -> Axes:
    """Keskar et al. (2017) Fig. 3: loss on the left axis, accuracy (%) on a twin right axis, against α.

    Solid lines are train, dashed lines test (when the result has them). For an interpolation, dotted
    verticals mark α = 0 and α = 1, tagged with ``endpoints`` (e.g. ``("SB", "LB")``; None for no tags).
    Call again on the same ``ax`` to overlay another pair (pass other colours and a ``label``); the twin
    axis and the legend are shared. Returns ``ax`` (the twin is ``ax.figure.axes`` with label
    ``"sharpness:twin"``).
    """
    a = np.asarray(result.alphas)
    ax.plot(a, result.train_loss, "-", color=loss_color, label=_prefix(label, "train loss"))
    if result.test_loss is not None:
        ax.plot(a, result.test_loss, "--", color=loss_color, label=_prefix(label, "test loss"))
    if log_loss:
        ax.set_yscale("log")
    ax.set_ylabel(_loss_name(result))
    _color_axis(ax, loss_color, "left")
    kind = getattr(result, "kind", "line")
    ax.set_xlabel(_alpha_label(kind))
    ax.set_xlim(a.min(), a.max())
    axes = [ax]
    if result.train_acc is not None:
        twin = _twin(ax)
        twin.plot(a, _percent(result.train_acc), "-", color=acc_color, label=_prefix(label, "train accuracy"))
        if result.test_acc is not None:
            twin.plot(a, _percent(result.test_acc), "--", color=acc_color, label=_prefix(label, "test accuracy"))
        twin.set_ylim(0, 100)
        twin.set_ylabel("accuracy (%)")
        _color_axis(twin, acc_color, "right")
        axes.append(twin)
    if kind == "interpolation":
        for x, tag in zip((0.0, 1.0), endpoints or (None, None)):
            ax.axvline(x, color="0.5", lw=0.8, ls=":", zorder=0)
            if tag:
                ax.annotate(tag, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=8)
    _legend(*axes, loc="best")
    return ax


def slices_1d(
    ax: Axes,
    results: Sequence,
    labels: Sequence[str] | None = None,
    *,
    metric: str = "loss",
    log: bool = False,
    colors: Sequence[str] | None = None,
) -> Axes:
    """Several 1D slices on shared axes: one colour per result, solid train and dashed test.

    ``metric`` is ``"loss"`` or ``"accuracy"`` (in percent). The legend names each result once by colour and
    explains the line styles once.
    """
    if metric not in ("loss", "accuracy"):
        raise ValueError(f"metric must be loss or accuracy, got {metric!r}")
    labels = list(labels) if labels is not None else [f"#{i}" for i in range(len(results))]
    if len(labels) != len(results):
        raise ValueError(f"expected one label per result ({len(results)}), got {len(labels)}")
    key = "loss" if metric == "loss" else "acc"
    any_test = False
    for i, (res, lab) in enumerate(zip(results, labels)):
        color = colors[i] if colors is not None else f"C{i % 8}"
        train, test = getattr(res, f"train_{key}"), getattr(res, f"test_{key}")
        if train is None:
            raise ValueError(f"result {lab!r} has no {metric} (regression results have no accuracy)")
        scale = 100.0 if key == "acc" else 1.0
        ax.plot(res.alphas, scale * np.asarray(train), "-", color=color, label=lab)
        if test is not None:
            any_test = True
            ax.plot(res.alphas, scale * np.asarray(test), "--", color=color, label="_nolegend_")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(_alpha_label(getattr(results[0], "kind", "line") if results else "line"))
    ax.set_xlim(min(np.min(r.alphas) for r in results), max(np.max(r.alphas) for r in results))
    ax.set_ylabel((_loss_name(results[0]) if results else "loss") if key == "loss" else "accuracy (%)")
    handles = [h for h in ax.get_lines() if not h.get_label().startswith("_")]
    if any_test:
        handles += [Line2D([], [], color="0.3", ls="-", label="train"), Line2D([], [], color="0.3", ls="--", label="test")]
    ax.legend(handles=handles)
    return ax


def _plane_values(result, metric: str) -> np.ma.MaskedArray:
    values = getattr(result, metric)
    if values is None:
        raise ValueError(f"the plane has no {metric}")
    values = np.asarray(values, dtype=np.float64) * (100.0 if metric.endswith("acc") else 1.0)
    return np.ma.masked_array(values, mask=~np.asarray(result.mask) | ~np.isfinite(values))


def contour_levels(vmin: float, vmax: float, n: int = 20, *, log: bool = False) -> np.ndarray:
    """About ``n + 1`` round contour levels covering [vmin, vmax]: multiples of 1, 2, 2.5 or 5 × 10^k
    (linear, and log over less than a decade), or mantissas from {1, 1.5, 2, 3, 5, 7} × 10^k (log, the
    densest set with at most n + 1 levels). Pass the same levels to :func:`contour_2d` for several
    checkpoints to draw them on one colour scale."""
    if not vmax > vmin or (log and not vmin > 0):
        raise ValueError(f"expected 0 < vmin < vmax for log levels or vmin < vmax, got vmin={vmin}, vmax={vmax}")
    if not log:
        return MaxNLocator(n, steps=[1, 2, 2.5, 5, 10]).tick_values(vmin, vmax)
    if vmax < 10 * vmin:  # less than a decade: log and linear spacing nearly agree; round linear steps
        values = MaxNLocator(n, steps=[1, 2, 2.5, 5, 10]).tick_values(vmin, vmax)
        return values[values > 0]
    lo, hi = math.floor(math.log10(vmin)), math.ceil(math.log10(vmax))
    for subs in ((1, 1.5, 2, 3, 5, 7), (1, 2, 5), (1, 3), (1,)):
        values = np.array(sorted(m * 10.0**e for e in range(lo, hi + 1) for m in subs))
        first = values[values <= vmin * (1 + 1e-12)].max()
        last = values[values >= vmax * (1 - 1e-12)].min()
        values = values[(values >= first) & (values <= last)]
        if len(values) <= n + 1:
            break
    return values


def contour_2d(
    ax: Axes,
    result,
    *,
    metric: str = "train_loss",
    levels: int | Sequence[float] = 20,
    vmin: float | None = None,
    vmax: float | None = None,
    log: bool = False,
    colorbar: bool | Sequence[Axes] = True,
    cmap: str = "viridis",
    trajectory: np.ndarray | None = None,
    line_labels: bool = True,
) -> Axes:
    """Filled contours of a :class:`~sharpness.landscape.PlaneResult` with contour lines and the centre marked.

    x is α (along d₁), y is β (along d₂); the white star is the centre θ (α = β = 0). Colours span the
    finished, finite values, or [vmin, vmax] in round steps (:func:`contour_levels`); values beyond take
    the end colours, unfinished points are left blank. For several checkpoints on one scale pass the same
    ``levels`` (or vmin/vmax) and ``colorbar=False`` to all but one, or ``colorbar=axes`` (a list of Axes)
    for one bar beside them all. ``log=True`` spaces levels geometrically (losses near a minimum span
    decades). ``trajectory``: optional ``(T, 2)`` coordinates (e.g. :func:`sharpness.landscape.project`),
    drawn from its first point (hollow circle) to its last.
    """
    Z = _plane_values(result, metric)
    if log:
        Z = np.ma.masked_where(Z.filled(1.0) <= 0, Z)  # a log scale has no place for zero
    if Z.count() == 0:
        raise ValueError("the plane has no finished finite points to draw")
    lo = float(Z.min()) if vmin is None else float(vmin)
    hi = float(Z.max()) if vmax is None else float(vmax)
    if np.ndim(levels) == 0:
        if hi <= lo:
            hi = lo + max(abs(lo), 1.0) * 1e-6  # a flat plane still gets a valid colour scale
        levels = contour_levels(lo, hi, int(levels), log=log)
    levels = np.asarray(levels, dtype=np.float64)
    norm = LogNorm(levels[0], levels[-1]) if log else None
    below, above = float(Z.min()) < levels[0], float(Z.max()) > levels[-1]
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get((below, above), "neither")
    A, B = np.meshgrid(result.alphas, result.betas, indexing="ij")
    filled = ax.contourf(A, B, Z, levels=levels, cmap=cmap, norm=norm, extend=extend)
    step = max(1, (len(levels) - 1) // 8)  # at most ~8 drawn lines: labels stay readable
    lines = ax.contour(A, B, Z, levels=levels[::step], colors="white", linewidths=0.5, alpha=0.8, norm=norm)
    if line_labels:
        ax.clabel(lines, fmt=lambda v: f"{v:.3g}", fontsize=6, inline=True, inline_spacing=2)
    if trajectory is not None:
        traj = np.asarray(trajectory, dtype=np.float64)
        ax.plot(traj[:, 0], traj[:, 1], "-o", color="C1", ms=2.5, lw=1.0, label="trajectory")
        ax.plot(traj[:1, 0], traj[:1, 1], "o", ms=6, mfc="none", mec="C1", mew=1.2, label="_start")
    ax.plot([0.0], [0.0], marker="*", ms=11, color="white", markeredgecolor="black", markeredgewidth=0.6, ls="none", label="centre θ")
    ax.set_xlabel(r"$\alpha$  (along $d_1$)")
    ax.set_ylabel(r"$\beta$  (along $d_2$)")
    ax.grid(False)
    if np.isclose(np.ptp(result.alphas), np.ptp(result.betas)):
        ax.set_aspect("equal", adjustable="box")
    _nice_ticks(ax)
    if colorbar is not False:
        host = ax if colorbar is True else list(colorbar)
        cb = ax.figure.colorbar(filled, ax=host, label=_METRIC_NAMES.get(metric, metric))
        if log and levels[-1] >= 10 * levels[0]:
            cb.ax.yaxis.set_major_locator(LogLocator())
        elif log:  # under a decade a log locator finds no ticks: label the drawn contour lines instead
            cb.set_ticks(levels[::step])
            cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
            cb.ax.yaxis.set_minor_formatter(NullFormatter())
    if not result.mask.all():
        ax.set_title(f"{int(result.mask.sum())}/{result.mask.size} points finished", fontsize=8)
    return ax


def surface_3d(
    ax3d: Axes,
    result,
    *,
    metric: str = "train_loss",
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
) -> Axes:
    """The plane as a surface on a 3D Axes (``fig.add_subplot(projection="3d")``), centre θ marked.

    Values above ``vmax`` are clipped to it so one far-away point cannot flatten the picture; unfinished
    points are holes.
    """
    Z = _plane_values(result, metric)
    lo = float(Z.min()) if vmin is None else float(vmin)
    hi = float(Z.max()) if vmax is None else float(vmax)
    Zs = np.clip(Z.filled(np.nan), lo, hi)
    A, B = np.meshgrid(result.alphas, result.betas, indexing="ij")
    ax3d.plot_surface(A, B, Zs, cmap=cmap, vmin=lo, vmax=hi, rstride=1, cstride=1, linewidth=0.1, edgecolor="0.3", antialiased=True, alpha=0.95)
    i, j = int(np.argmin(np.abs(result.alphas))), int(np.argmin(np.abs(result.betas)))
    if result.mask[i, j] and np.isfinite(Zs[i, j]):
        ax3d.computed_zorder = False  # the marker sits on the surface: draw it last, not by depth
        ax3d.scatter([result.alphas[i]], [result.betas[j]], [Zs[i, j]], marker="*", s=60, color="white", edgecolors="black", linewidths=0.6, depthshade=False, zorder=10)
    ax3d.set_zlim(lo, hi)
    ax3d.set_xlabel(r"$\alpha$")
    ax3d.set_ylabel(r"$\beta$")
    ax3d.set_zlabel(_METRIC_NAMES.get(metric, metric))
    ax3d.zaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
    _nice_ticks(ax3d)
    ax3d.set_box_aspect(None, zoom=0.85)  # leaves room for the z label inside the figure
    return ax3d


def render(result, path_stem: str | Path, *, formats: Sequence[str] = ("png", "pdf"), log: bool = False, label: str | None = None) -> list[Path]:
    """One saved landscape result → its standard figure, written with :func:`save_figure` in the shipped style.

    A plane gives :func:`contour_2d`; an interpolation :func:`parametric_plot`; a 1D slice :func:`slices_1d`.
    ``log`` puts the loss on a log scale. Returns the written paths.
    """
    with use_style():
        fig, ax = plt.subplots()
        if hasattr(result, "betas"):
            contour_2d(ax, result, log=log)
        elif getattr(result, "kind", "line") == "interpolation":
            parametric_plot(ax, result, log_loss=log, label=label)
        else:
            slices_1d(ax, [result], [label or "checkpoint"], log=log)
        try:
            return save_figure(fig, path_stem, formats)
        finally:
            plt.close(fig)
