"""Curvature figures: a spectral density on a log axis (Ghorbani et al. 2019), top/bottom eigenvalue bars,
sharpness and test accuracy against batch size (Keskar et al. Fig. 4/5), a slice against its implied parabola,
and λ_max along training with the stability threshold (Cohen et al. 2021)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes

from .axes import _alpha_label, _color_axis, _integer_log2_axis, _legend, _loss_name, _percent, _prefix, _twin


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
