"""Small axis helpers shared by the figure modules: twin axes, merged legends, coloured spines, labels,
and the log axes the studies use (batch sizes on log₂, plain-number log ticks)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator

_TWIN_LABEL = "sharpness:twin"


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


def _nice_ticks(*axes_: Axes, nbins: int = 5) -> None:
    for ax in axes_:
        ax.xaxis.set_major_locator(MaxNLocator(nbins, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_locator(MaxNLocator(nbins, steps=[1, 2, 2.5, 5, 10]))


def _integer_log2_axis(ax: Axes, ticks: np.ndarray) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xlim(ticks.min() / 2**0.3, ticks.max() * 2**0.3)  # room for the end points' markers and error bars
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def batch_size_axis(ax: Axes, sizes: Sequence[int], label: str = "batch size B") -> None:
    """A log₂ x axis ticked at exactly the batch sizes used, labelled with plain integers."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(sizes), [str(int(b)) for b in sizes])
    ax.minorticks_off()
    ax.set_xlim(min(sizes) / 2**0.35, max(sizes) * 2**0.35)
    ax.set_xlabel(label)


def log_axis(ax: Axes, which: str = "y") -> None:
    """A log axis labelled with plain numbers (``0.3``, ``2``, ``50``) at 1, 2 and 5 × 10^k, so that a range
    narrower than a decade still carries readable labels."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(NullLocator())
