"""Redrawing a saved result file: the one dispatcher behind ``sharpness plot`` and the landscape commands' figures.

It reads a file (a landscape ``.npz``, a report / tracking / sweep-summary ``.json``, a tracked ``.pt``) and
draws it with the themed functions of this package; it never evaluates a model.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .curvature import eigenvalue_bars, sharpness_trajectory, sharpness_vs_batch, spectral_density
from .landscape import contour_2d, parametric_plot, slices_1d, surface_3d
from .style import save_figure, use_style

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

    from ..checkpoint import load_checkpoint
    from ..errors import InputError
    from ..landscape import LineResult, PlaneResult

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
        from ..numerics.stats import mean_std

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
