"""Measure vs generalization gap: one panel per measure, models coloured by the varied hyperparameter.

The colour is the first varied axis (batch size, else learning rate) on a log scale; marker shapes tell the seeds
apart; a red cross marks a model trained to a loss target that stopped at its epoch cap first. Each title carries Kendall's τ with the loss gap (and Ψ, Jiang et al. 2020, when an axis varies).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from ..plots import save_figure, use_style  # noqa: E402

__all__ = ["draw"]

_MARKERS = "os^Dv<>pX*"


def draw(stem: Path, models: list[dict], correlation: dict, axes: tuple[str, ...], gap: str = "loss_gap",
         formats: tuple[str, ...] = ("png",)) -> Path:
    """Write ``stem.<fmt>`` for each of ``formats`` and return the first path."""
    from .study import GAPS, MEASURES

    names = list(correlation)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    colour = axes[0] if axes else "batch_size"
    values = [m[colour] for m in models]
    norm = LogNorm(min(values), max(values)) if min(values) > 0 and max(values) > min(values) else None
    seeds = sorted({m["seed"] for m in models})
    with use_style():
        fig, grid = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
        for ax, name in zip(grid.flat, names):
            for k, s in enumerate(seeds):
                mine = [m for m in models if m["seed"] == s]
                sc = ax.scatter([m[name] for m in mine], [m[gap] for m in mine], c=[m[colour] for m in mine],
                                cmap="viridis", norm=norm, marker=_MARKERS[k % len(_MARKERS)], s=36,
                                edgecolors="black", linewidths=0.4, label=f"seed {s}")
            late = [m for m in models if m.get("reached_train_loss") is False]
            if late:  # trained --until-train-loss but stopped by the epoch cap: not at the common loss
                ax.scatter([m[name] for m in late], [m[gap] for m in late], marker="x", color="red", s=18,
                           linewidths=0.9, label="missed loss target", zorder=3)
            stats = correlation[name][gap]
            psi = stats["psi"]["psi"] if stats["psi"] else None
            title = f"τ = {stats['tau']:+.2f}" + (f", Ψ = {psi:+.2f}" if psi is not None and not math.isnan(psi) else "")
            ax.set_title(f"{MEASURES[name]}\n{title}", fontsize=9)
            ax.set_xlabel(MEASURES[name], fontsize=8)
            ax.set_ylabel(GAPS[gap], fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in list(grid.flat)[len(names):]:
            ax.set_visible(False)
        bar = fig.colorbar(sc, ax=grid.ravel().tolist(), label=colour.replace("_", " "), shrink=0.8)
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")  # 10, 20, 50 rather than 10¹, 2×10¹
        bar.ax.yaxis.set_major_formatter(plain)
        bar.ax.yaxis.set_minor_formatter(plain)
        if len(seeds) > 1 or any(m.get("reached_train_loss") is False for m in models):
            legend = grid.flat[0].legend(fontsize=7)
            for handle, text in zip(legend.legend_handles, legend.get_texts()):  # marker = seed; colour: the bar
                if text.get_text() != "missed loss target":
                    handle.set_array(None)
                    handle.set_facecolor("0.6")
        paths = save_figure(fig, stem, formats=formats)
        plt.close(fig)
    return paths[0]
