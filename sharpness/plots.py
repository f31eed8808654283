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
"""

from __future__ import annotations

import contextlib
import io
import math
from importlib import resources
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .rundir import atomic_write

_TWIN_LABEL = "sharpness:twin"
#: Fixed metadata per format so the same figure gives the same bytes (no dates, no version strings).
_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": "sharpness", "Producer": None, "CreationDate": None, "ModDate": None},
    "svg": {"Creator": "sharpness", "Date": None},
}


# --------------------------------------------------------------------------------------------------------
# Style and files
# --------------------------------------------------------------------------------------------------------
def style_path() -> Path:
    """The path of the shipped ``sharpness.mplstyle``."""
    return Path(str(resources.files("sharpness") / "sharpness.mplstyle"))


@contextlib.contextmanager
def use_style() -> Iterator[None]:
    """Context manager applying the shipped style to figures created inside it (rcParams restored after)."""
    with plt.style.context(str(style_path())):
        yield


def save_figure(fig: Figure, path_stem: str | Path, formats: Sequence[str] = ("png", "pdf"), *, dpi: float | None = None) -> list[Path]:
    """Write ``path_stem.<fmt>`` for each format, atomically and byte-reproducibly; returns the paths.

    PDF uses Type-42 (TrueType) fonts and no creation date; PNG carries no software string; SVG uses a fixed
    hash salt and no date. The same figure drawn from the same data gives identical bytes.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        if fmt not in _METADATA:
            raise ValueError(f"format must be one of {', '.join(_METADATA)}, got {fmt!r}")
        buf = io.BytesIO()
        with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "sharpness"}):
            fig.savefig(buf, format=fmt, metadata=_METADATA[fmt], dpi=dpi)
        data = buf.getvalue()
        written.append(atomic_write(stem.with_name(f"{stem.name}.{fmt}"), lambda fh: fh.write(data)))
    return written


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------
def _twin(ax: Axes) -> Axes:
    """The accuracy axis sharing x with ``ax``: found if an earlier call made it, else created."""
    for other in ax.figure.axes:
        if other is not ax and other.get_label() == _TWIN_LABEL and ax.get_shared_x_axes().joined(ax, other):
            return other
    twin = ax.twinx()
    twin.set_label(_TWIN_LABEL)
    twin.grid(False)
    # each axis owns one side: a second, uncoloured spine drawn over the first would hide its colour
    twin.spines["right"].set_visible(True)
    for side in ("left", "top", "bottom"):
        twin.spines[side].set_visible(False)
    ax.spines["right"].set_visible(False)
    return twin


def _legend(ax: Axes, *others: Axes, **kwargs) -> None:
    """One legend over the labelled lines of ``ax`` and ``others``, drawn on the topmost axes."""
    handles, labels = [], []
    for a in (ax, *others):
        h, lab = a.get_legend_handles_labels()  # includes errorbar containers, unlike get_lines()
        handles += h
        labels += lab
        if a.get_legend() is not None:
            a.get_legend().remove()
    if handles:
        (others[-1] if others else ax).legend(handles=handles, labels=labels, **kwargs)


def _percent(values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None else 100.0 * np.asarray(values, dtype=np.float64)


def _color_axis(ax: Axes, color: str, side: str) -> None:
    ax.yaxis.label.set_color(color)
    ax.tick_params(axis="y", colors=color)
    ax.spines[side].set_color(color)


def _prefix(label: str | None, text: str) -> str:
    return f"{label}: {text}" if label else text


def _loss_name(result) -> str:
    kind = (getattr(result, "config", None) or {}).get("objective", {}).get("loss", "cross-entropy")
    return "cross-entropy" if kind == "cross-entropy" else "loss (MSE)" if kind == "mse" else "loss"


def _alpha_label(kind: str) -> str:
    if kind == "interpolation":
        return r"$\alpha$  (point $(1-\alpha)\,\theta_a + \alpha\,\theta_b$)"
    return r"$\alpha$  (point $\theta + \alpha d$)"


_METRIC_NAMES = {"train_loss": "train loss", "test_loss": "test loss", "train_acc": "train accuracy (%)", "test_acc": "test accuracy (%)"}


# --------------------------------------------------------------------------------------------------------
# 1D
# --------------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------------
# 2D
# --------------------------------------------------------------------------------------------------------
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


def _nice_ticks(*axes_: Axes, nbins: int = 5) -> None:
    for ax in axes_:
        ax.xaxis.set_major_locator(MaxNLocator(nbins, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_locator(MaxNLocator(nbins, steps=[1, 2, 2.5, 5, 10]))


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


# --------------------------------------------------------------------------------------------------------
# Spectra and sweeps
# --------------------------------------------------------------------------------------------------------
def spectral_density(
    ax: Axes,
    grid: np.ndarray,
    density: np.ndarray,
    *,
    log: bool = True,
    floor: float | None = None,
    label: str | None = None,
    color: str | None = None,
) -> Axes:
    """A spectral density φ(λ) against λ, on a log y axis by default.

    On a log axis the y axis starts at ``floor`` (default 1e-10·max φ: ten decades, below which stochastic
    Lanczos quadrature with Gaussian smoothing is noise; several curves on one axes share the lowest floor)
    and the curve leaves the axes where it falls below it.
    """
    grid = np.asarray(grid, dtype=np.float64)
    density = np.asarray(density, dtype=np.float64)
    if grid.shape != density.shape:
        raise ValueError(f"grid and density must have the same shape, got {grid.shape} and {density.shape}")
    if log:
        floor = float(floor) if floor is not None else 1e-10 * float(np.max(density))
        earlier = len(ax.get_lines()) > 0
        ax.plot(grid, np.where(density > 0, density, np.nan), color=color, label=label)
        ax.set_yscale("log")
        bottom = min(ax.get_ylim()[0], floor) if earlier else floor
        top = max(float(np.nanmax(line.get_ydata())) for line in ax.get_lines()) * 10**0.3
        ax.set_ylim(bottom, top)  # below the floor the curve leaves the axes instead of plunging to 1e-300
    else:
        ax.plot(grid, density, color=color, label=label)
        ax.set_ylim(bottom=0)
    ax.set_xlabel(r"eigenvalue $\lambda$")
    ax.set_ylabel(r"density $\phi(\lambda)$")
    if label is not None:
        ax.legend()
    return ax


def eigenvalue_bars(
    ax: Axes,
    values: Sequence[float] | Mapping[str, Sequence[float]],
    *,
    errors: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    ylabel: str = r"eigenvalue $\lambda_i$",
    log: bool = False,
) -> Axes:
    """Bars of eigenvalues by index i = 1..k; a mapping ``{label: values}`` gives grouped bars per checkpoint.

    ``errors`` (same structure) are drawn as error bars, e.g. ``residuals · |values|`` from an EigenResult.
    A zero line separates negative eigenvalues.
    """
    groups = dict(values) if isinstance(values, Mapping) else {"": values}
    errs = dict(errors) if isinstance(errors, Mapping) else {"": errors} if errors is not None else {}
    width = 0.8 / len(groups)
    k_max = 0
    for g, (name, vals) in enumerate(groups.items()):
        vals = np.asarray(vals, dtype=np.float64)
        k_max = max(k_max, len(vals))
        x = np.arange(1, len(vals) + 1) + (g - (len(groups) - 1) / 2) * width
        err = errs.get(name)
        ax.bar(x, vals, width=width * 0.95, yerr=None if err is None else np.asarray(err, dtype=np.float64), label=name or None, color=f"C{g % 8}", capsize=2)
    ax.axhline(0.0, color="0.3", lw=0.7)
    ax.set_xticks(np.arange(1, k_max + 1))
    ax.set_xlabel("index i")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("symlog", linthresh=1e-3)
    if any(groups):
        ax.legend()
    return ax


def _integer_log2_axis(ax: Axes, ticks: np.ndarray) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xlim(ticks.min() / 2**0.3, ticks.max() * 2**0.3)  # room for the end points' markers and error bars
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def sharpness_vs_batch(
    ax: Axes,
    batch_sizes: Sequence[int],
    sharpness: Sequence[float],
    test_acc: Sequence[float] | None = None,
    *,
    sharpness_err: Sequence[float] | None = None,
    acc_err: Sequence[float] | None = None,
    ylabel: str = r"sharpness $\lambda_{\max}$",
    color: str = "C0",
    acc_color: str = "C1",
    log_sharpness: bool = False,
    runs: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float] | None]] | None = None,
) -> Axes:
    """Sharpness (left) and test accuracy in % (right, twin axis) against batch size on a log₂ axis
    (Keskar et al. 2017, Fig. 4–5 style); error bars from ``*_err`` (e.g. standard deviations over seeds).

    ``runs`` maps a label (``"seed 0"``) to that run's own ``(batch_sizes, sharpness, test_acc)``, drawn as thin
    faint lines under the summary line, so the spread between seeds is seen rather than averaged away (one
    polyline through every seed's points would zigzag at each batch size)."""
    bs = np.asarray(batch_sizes, dtype=np.float64)
    order = np.argsort(bs)
    bs = bs[order]

    def sort(v):
        return None if v is None else np.asarray(v, dtype=np.float64)[order]

    faint = dict(lw=0.8, alpha=0.45, ms=3)
    for run_bs, run_sharp, _ in (runs or {}).values():
        o = np.argsort(np.asarray(run_bs, dtype=np.float64))
        ax.plot(np.asarray(run_bs, dtype=np.float64)[o], np.asarray(run_sharp, dtype=np.float64)[o], "-o", color=color, **faint)
    ax.errorbar(bs, sort(sharpness), yerr=sort(sharpness_err), fmt="-o", color=color, capsize=2, label=ylabel)
    _integer_log2_axis(ax, bs)
    if log_sharpness:
        ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    _color_axis(ax, color, "left")
    axes = [ax]
    if test_acc is not None:
        twin = _twin(ax)
        err = sort(acc_err)
        for run_bs, _, run_acc in (runs or {}).values():
            if run_acc is not None:
                o = np.argsort(np.asarray(run_bs, dtype=np.float64))
                twin.plot(np.asarray(run_bs, dtype=np.float64)[o], _percent(np.asarray(run_acc, dtype=np.float64)[o]),
                          "--s", color=acc_color, **faint)
        twin.errorbar(bs, _percent(sort(test_acc)), yerr=_percent(err), fmt="--s", color=acc_color, capsize=2, label="test accuracy")
        twin.set_ylabel("test accuracy (%)")
        _color_axis(twin, acc_color, "right")
        axes.append(twin)
    _legend(*axes, loc="best")
    return ax


def curvature_check(
    ax: Axes,
    line_result,
    lam: float,
    *,
    d_norm: float | None = None,
    fit=None,
    label: str = r"$\lambda_{\max}$",
) -> Axes:
    """A slice along a (top) eigenvector with the parabola f(0) + ½·λ·α²·‖d‖² that the eigenvalue predicts.

    ``d_norm`` defaults to the result's ``direction_norm``; f(0) is the slice value at the point nearest
    α = 0. ``fit`` (a :class:`~sharpness.landscape.CurvatureFit`) adds the least-squares parabola.
    Agreement near α = 0 checks the eigenvalue by plain loss evaluations.
    """
    a = np.asarray(line_result.alphas, dtype=np.float64)
    f = np.asarray(line_result.train_loss, dtype=np.float64)
    norm = float(d_norm if d_norm is not None else line_result.direction_norm)
    f0 = f[np.argmin(np.abs(a))]
    dense = np.linspace(a.min(), a.max(), 201)
    ax.plot(a, f, "o", color="C0", ms=3.5, label="loss along $d$", zorder=3)
    ax.plot(dense, f0 + 0.5 * lam * dense**2 * norm**2, "-", color="C1", label=rf"$f(0) + \frac{{1}}{{2}}\lambda\alpha^2\|d\|^2$, {label} = {lam:.4g}")
    if fit is not None:
        ax.axvspan(-fit.half_width, fit.half_width, color="0.92", zorder=0, label="fit window")
        ax.plot(dense, fit.value + fit.slope * norm * dense + 0.5 * fit.curvature * norm**2 * dense**2, "--", color="C2", label=rf"least-squares fit, $\lambda$ = {fit.curvature:.4g}")
    lo, hi = float(np.min(f[np.isfinite(f)])), float(np.max(f[np.isfinite(f)]))
    pad = 0.08 * (hi - lo if hi > lo else 1.0)
    ax.set_ylim(lo - pad, hi + pad)  # the parabola may leave the data's range: keep the data in view
    ax.set_xlabel(_alpha_label("line"))
    ax.set_ylabel(_loss_name(line_result))
    ax.legend()
    return ax


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


__all__ = [
    "render",
    "use_style",
    "style_path",
    "save_figure",
    "parametric_plot",
    "slices_1d",
    "contour_levels",
    "contour_2d",
    "surface_3d",
    "spectral_density",
    "eigenvalue_bars",
    "sharpness_vs_batch",
    "curvature_check",
]


def sharpness_trajectory(
    ax: Axes,
    steps: Sequence[float],
    lambda_max: Sequence[float],
    *,
    threshold: float | Sequence[float | None] | None = None,
    loss: Sequence[float] | None = None,
    lambda_err: Sequence[float] | None = None,
    label: str | None = None,
    color: str = "C0",
    threshold_color: str = "0.3",
    loss_color: str = "C1",
    loss_label: str = "train loss",
) -> Axes:
    """λ_max against the training step, with the stability threshold and optionally the loss (Cohen et al.
    2021, Fig. 1 style: progressive sharpening up to 2/η, then the edge of stability).

    ``threshold`` is one number (a dashed horizontal line, e.g. 2/η) or one value per measurement (a dashed
    step curve, for a learning-rate schedule; ``None`` entries, e.g. for Adam, are gaps). ``lambda_err``
    (absolute, e.g. ``lambda_max_error · lambda_max`` from the records) draws a band. ``loss`` goes on a twin
    log axis on the right. Inputs are the columns of :attr:`sharpness.tracking.SharpnessTracker.series`.
    """
    x = np.asarray(steps, dtype=np.float64)
    lam = np.asarray(lambda_max, dtype=np.float64)
    ax.plot(x, lam, "-", color=color, label=_prefix(label, r"$\lambda_{\max}$"))
    if lambda_err is not None:
        err = np.asarray([np.nan if e is None else e for e in lambda_err], dtype=np.float64)
        ax.fill_between(x, lam - err, lam + err, color=color, alpha=0.25, lw=0)
    if threshold is not None:
        if np.ndim(threshold) == 0:
            ax.axhline(float(threshold), ls="--", color=threshold_color, lw=1.0,
                       label=_prefix(label, rf"stability threshold ({float(threshold):.3g})"))
        else:
            thr = np.asarray([np.nan if t is None else t for t in threshold], dtype=np.float64)
            ax.step(x, thr, where="post", ls="--", color=threshold_color, lw=1.0, label=_prefix(label, "stability threshold"))
    ax.set_xlabel("step")
    ax.set_ylabel(r"sharpness $\lambda_{\max}$")
    ax.set_ylim(bottom=min(0.0, float(np.nanmin(lam))))
    _color_axis(ax, color, "left")
    axes = [ax]
    if loss is not None:
        twin = _twin(ax)
        values = np.asarray([np.nan if v is None else v for v in loss], dtype=np.float64)
        twin.plot(x, values, "-", color=loss_color, lw=1.0, label=_prefix(label, loss_label))
        finite = values[np.isfinite(values) & (values > 0)]
        if finite.size and finite.max() > 10 * finite.min():  # a log axis only pays off over a decade
            twin.set_yscale("log")
        twin.set_ylabel("loss")
        _color_axis(twin, loss_color, "right")
        axes.append(twin)
    _legend(*axes, loc="best")
    return ax


def draw_saved(result_path: str | Path, out_stem: str | Path | None = None, *, log: bool = False) -> list[Path]:
    """Draw a saved result file beside it (or at ``out_stem``) as PNG and PDF; returns the paths written.

    ``.npz``: a landscape (:class:`~sharpness.landscape.PlaneResult` → contours and surface; a
    :class:`~sharpness.landscape.LineResult` → the parametric plot of an interpolation or a 1D slice);
    ``.json``: a report (eigenvalues, spectral density), a tracking series (λ_max against steps with 2/η) or a
    sweep summary (sharpness and test accuracy against batch size); ``.pt``: a checkpoint's tracked series.
    Raises :class:`~sharpness.errors.InputError` for anything else. (``sharpness plot`` and the landscape
    commands draw through this; it only reads files.)
    """
    import json

    from .checkpoint import load_checkpoint
    from .errors import InputError
    from .landscape import LineResult, PlaneResult

    def _draw_tracking(records: list[dict]):
        """λ_max against the step with its stability threshold (2/η for GD), and the loss on a second axis."""
        if not records:
            raise InputError("expected tracking records to plot, got none")
        fig, ax = plt.subplots(figsize=(6.5, 4))
        steps = [r["step"] for r in records]
        lam = [np.nan if r["lambda_max"] is None else r["lambda_max"] for r in records]
        thresholds = [r.get("eos_threshold") for r in records]
        constant = len({t for t in thresholds if t is not None}) == 1
        threshold = next((t for t in thresholds if t is not None), None) if constant else thresholds
        sharpness_trajectory(ax, steps, lam, threshold=threshold, loss=[r.get("loss") for r in records])
        return fig

    def _draw_json(path: Path):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"expected a JSON result file, got {path} ({exc})") from None
        schema = str(data.get("schema", "")) if isinstance(data, dict) else ""
        if schema.startswith("sharpness.report/"):
            h = data["hessian"]
            density = h.get("density")
            fig, axes = plt.subplots(1, 2 if density else 1, figsize=(10 if density else 5.5, 4), squeeze=False)
            values = (h.get("top") or {}).get("values") or []
            eigenvalue_bars(axes[0, 0], values)
            axes[0, 0].set_title("top Hessian eigenvalues")
            if density:
                spectral_density(axes[0, 1], np.asarray(density["grid"]), np.asarray(density["density"]), log=True)
            return fig
        if isinstance(data, dict) and isinstance(data.get("tracking"), dict):  # `sharpness train --json` output
            data, schema = data["tracking"], str(data["tracking"].get("schema", ""))
        if schema.startswith("sharpness.tracking/"):
            return _draw_tracking(data["records"])
        if isinstance(data, dict) and "rows" in data and data["rows"] and "batch_size" in data["rows"][0]:
            return _draw_sweep(data, path)
        raise InputError(f"expected a sharpness report, tracking or sweep summary JSON, got another JSON in {path}")

    def _draw_sweep(data: dict, path: Path):
        """λ_max (or the final train loss, without ``--analyze``) and test accuracy against batch size: the mean
        ± std over seeds at each batch size, with each seed's own line beneath (one line per learning rate)."""
        from .reproduce import mean_std

        rows = [r for r in data["rows"] if r.get("status", "ok") == "ok"]
        if not rows:
            raise InputError(f"expected finished runs to plot in {path}, got none (status: "
                             f"{', '.join(sorted({str(r.get('status')) for r in data['rows']}))})")
        key, label = ("lambda_max", r"sharpness $\lambda_{\max}$") if any(r.get("lambda_max") is not None for r in rows) \
            else ("train_loss", "final train loss")
        lrs = sorted({r.get("lr") for r in rows}, key=lambda v: (v is None, v))
        seeds = sorted({r.get("seed") for r in rows}, key=str)
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, lr in enumerate(lrs):
            mine = [r for r in rows if r.get("lr") == lr]
            sizes = sorted({r["batch_size"] for r in mine})
            stats = {B: [mean_std(r.get(k) for r in mine if r["batch_size"] == B) for k in (key, "test_acc")] for B in sizes}
            runs = {}
            if len(seeds) > 1:
                for seed in seeds:
                    own = sorted((r for r in mine if r.get("seed") == seed), key=lambda r: r["batch_size"])
                    runs[f"seed {seed}"] = ([r["batch_size"] for r in own], [r.get(key) for r in own],
                                            [r.get("test_acc") for r in own])
            suffix = f" (lr {lr:g})" if len(lrs) > 1 else ""
            sharpness_vs_batch(
                ax, sizes, [stats[B][0][0] for B in sizes], [stats[B][1][0] for B in sizes],
                sharpness_err=[stats[B][0][1] for B in sizes], acc_err=[stats[B][1][1] for B in sizes],
                ylabel=label + suffix, color=f"C{2 * i}", acc_color=f"C{2 * i + 1}", runs=runs)
        spread = f"mean ± std over {len(seeds)} seeds, thin lines: each seed" if len(seeds) > 1 else "one seed"
        ax.set_title(f"sweep summary ({spread})", fontsize=9)
        return fig

    result_path = Path(result_path)
    stem = Path(out_stem) if out_stem else result_path.with_suffix("")
    with use_style():
        if result_path.suffix == ".npz":
            with np.load(result_path, allow_pickle=False) as data:
                is_plane = "betas" in data.files
            if is_plane:
                result = PlaneResult.load(result_path)
                fig = plt.figure(figsize=(10, 4.2))
                ax = fig.add_subplot(1, 2, 1)
                contour_2d(ax, result, log=log)
                surface_3d(fig.add_subplot(1, 2, 2, projection="3d"), result)
            else:
                result = LineResult.load(result_path)
                fig, ax = plt.subplots(figsize=(5.5, 4))
                if result.kind == "interpolation":
                    parametric_plot(ax, result, log_loss=log, endpoints=("A", "B"))
                else:
                    slices_1d(ax, [result], [stem.name], log=log)
        elif result_path.suffix == ".json":
            fig = _draw_json(result_path)
        elif result_path.suffix == ".pt":
            tracking = load_checkpoint(str(result_path)).extra.get("tracking")
            if not tracking:
                raise InputError(f"expected a checkpoint trained with --track-every, got {result_path} without a tracked series")
            fig = _draw_tracking(tracking["records"])
        else:
            raise InputError(f"expected a saved result (.npz landscape, .json report/sweep/tracking, .pt tracked run), got {result_path}")
        paths = save_figure(fig, stem)
        plt.close(fig)
    return paths
