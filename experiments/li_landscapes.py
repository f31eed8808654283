"""Filter-normalized loss landscapes of small- and large-batch minima, with and without weight decay
(Li, Xu, Taylor, Studer, Goldstein, NeurIPS 2018, "Visualizing the Loss Landscape of Neural Nets", §5, Figs. 2-6).

Protocol. An mlp with two hidden ReLU layers of 256 is trained on MNIST-1D with SGD (momentum 0.9, constant lr 0.02)
at a small batch (B = 32) and a large one (16 % of the data, B = 640; Li et al. used 128 and 8192 of
CIFAR-10's 50 000, also about 6 steps per epoch for the large batch) with weight decay 0 and 5e-4, for the
same number of epochs (300: the small batch takes 20× more steps, and so 20× more weight-decay steps) from
the same initial weights. Then:

* the *non-normalized* linear interpolation f((1 − α)θ_SB + αθ_LB), α ∈ [−0.5, 1.5] (Li Fig. 2), whose
  picture depends on the scale of the weights: weight decay acts once per step, so the small batch (many
  more steps) ends with much smaller weights, and a fixed step in α is a larger *relative* step for it;
* 1D slices f(θ + αd) along a *filter-normalized* random direction d (each filter of d rescaled to the norm
  of the same filter of θ; biases left at zero), α ∈ [−1, 1] (Li Fig. 5), and the curvature of the slice at
  α = 0 (a parabola fitted to the 5 central points, f''(0) in α units);
* 2D filter-normalized planes f(θ + αd₁ + βd₂) on a subset of the training set (Li Fig. 6);
* ‖θ‖ and λ_max of the Hessian (raw, scale-dependent curvature) for reference.

Li et al.'s claims: the interpolation suggests the small-batch minimum is flatter without weight decay and
sharper with it (a misleading reversal); the filter-normalized plots show the small-batch minimum flatter in
both cases.

Run:  sharpness reproduce li-landscapes [--quick]     or     python experiments/li_landscapes.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sharpness import Objective, load_dataset  # noqa: E402
from sharpness.landscape import (  # noqa: E402
    LineResult, PlaneResult, fit_curvature, grid, line, plane, random_direction,
)
from sharpness.plots import contour_2d, contour_levels, parametric_plot, slices_1d, use_style  # noqa: E402
from sharpness.analysis.report import select_analysis_set  # noqa: E402
from sharpness.reproduce import (  # noqa: E402
    markdown_table, plural, pm, report_numbers, save_and_close, script_main, train_config,
)
from sharpness.train import resolve_batch_size  # noqa: E402


def settings(budget: str) -> dict:
    s = {"data": "mnist1d", "model": "mlp", "hidden": [256, 256], "optimizer": "sgd", "momentum": 0.9, "lr": 0.02,
         "sb": 32, "lb": "16%", "weight_decays": [0.0, 5e-4], "interp_range": [-0.5, 1.5], "interp_points": 41,
         "line_points": 51, "plane_points": 41, "plane_samples": 1000, "direction_seeds": [1, 2],
         "analysis": {"samples": 1000, "top_k": 1, "bottom_k": 0, "tol": 1e-3, "trace": False}}
    if budget == "full":
        s.update(seeds=1, epochs=300)
    elif budget == "quick":  # the large batch is still far from converged after 60 epochs
        s.update(seeds=1, epochs=60, plane_points=21, interp_points=25, line_points=25)
    else:
        s.update(seeds=1, epochs=1, hidden=[16, 16], plane_points=5, interp_points=5, line_points=5, plane_samples=200,
                 analysis={**s["analysis"], "samples": 200})
    return s


def _key(wd: float, B: int, seed: int) -> str:
    return f"wd{wd:g}-bs{B}-seed{seed}"


def compute(run) -> dict:
    s = run.settings
    ds = load_dataset(s["data"])
    n_train = int(ds.x_train.shape[0])
    sizes = {"SB": resolve_batch_size(s["sb"], n_train), "LB": resolve_batch_size(s["lb"], n_train)}
    rows, files = [], {}
    for seed in run.seeds:
        x_plane, y_plane, _ = select_analysis_set(ds.x_train, ds.y_train, samples=s["plane_samples"], seed=seed)
        for wd in s["weight_decays"]:
            models = {}
            for role, B in sizes.items():
                cfg = train_config(s, weight_decay=wd, batch_size=B, epochs=s["epochs"], seed=seed)
                key = _key(wd, B, seed)
                trained = models[role] = run.train(key, cfg, dataset=ds)
                train_obj = Objective(trained.model, ds.x_train, ds.y_train, device=run.device)
                test_obj = Objective(trained.model, ds.x_test, ds.y_test, device=run.device)
                plane_obj = Objective(trained.model, x_plane, y_plane, device=run.device)
                d1, d2 = (random_direction(train_obj, normalization="filter", seed=1000 * seed + k) for k in s["direction_seeds"])
                slice_ = run.landscape(f"line-{key}", lambda: line(train_obj, None, d1, grid(-1.0, 1.0, s["line_points"]),
                                                                   test_objective=test_obj), LineResult, seed=seed,
                                       config={"normalization": "filter", "direction_seed": 1000 * seed + s["direction_seeds"][0]})
                run.landscape(f"plane-{key}", lambda: plane(plane_obj, None, d1, d2, grid(-1.0, 1.0, s["plane_points"]),
                                                            grid(-1.0, 1.0, s["plane_points"]),
                                                            rundir=run.out / f"plane-{key}.rows"), PlaneResult, seed=seed,
                              config={"normalization": "filter", "samples": s["plane_samples"],
                                      "direction_seeds": [1000 * seed + k for k in s["direction_seeds"]]})
                fit = fit_curvature(slice_)
                report = run.analyze(f"analysis-{key}", trained.model, ds.x_train, ds.y_train, data_spec=ds.spec,
                                     seed=seed, **s["analysis"])
                m = trained.metrics
                rows.append({"wd": wd, "role": role, "batch_size": B, "seed": seed, "train_loss": m["train_loss"],
                             "train_acc": m["train_acc"], "test_acc": m["test_acc"],
                             "weight_norm": float(train_obj.theta.norm()),
                             "slice_curvature": fit.curvature * slice_.direction_norm ** 2,
                             **report_numbers(report)})
                files[f"line-{key}"] = f"line-{key}.npz"
                files[f"plane-{key}"] = f"plane-{key}.npz"
            key = f"interp-wd{wd:g}-seed{seed}"
            run.interpolation(key, models["SB"], models["LB"], ds, seed=seed,
                              alphas=(*s["interp_range"], s["interp_points"]))
            files[key] = f"{key}.npz"
    return {"rows": rows, "sizes": sizes, "files": files}


def tables(saved: dict) -> str:
    S, s = saved["summary"], saved["settings"]
    body = []
    for wd in s["weight_decays"]:
        for role in ("SB", "LB"):
            rs = [r for r in S["rows"] if r["wd"] == wd and r["role"] == role]
            get = lambda k: [r[k] for r in rs]  # noqa: E731
            body.append([f"{wd:g}", f"{role} B={S['sizes'][role]}", pm(get("train_loss"), 4),
                         pm(get("test_acc"), 2, scale=100.0), pm(get("weight_norm"), 1), pm(get("lambda_max"), 2),
                         pm(get("slice_curvature"), 3)])
    return "\n".join([
        f"Li et al. (2018) on MNIST-1D: mlp {s['hidden']}, SGD momentum {s['momentum']}, lr {s['lr']:g}, "
        f"{plural(s['epochs'], 'epoch')}; {len(saved['seeds'])} seed(s).",
        "Paper: without weight decay the SB minimum looks flatter in the raw interpolation, with weight decay "
        "sharper; filter-normalized slices show SB flatter in both cases.",
        "",
        markdown_table(["weight decay", "run", "train loss", "test acc (%)", "‖θ‖", "λ_max (raw)",
                        "filter-normalized f''(0)"], body),
    ])


def plot(saved: dict, results: Path, figures: Path) -> list[Path]:
    S, s = saved["summary"], saved["settings"]
    seed = saved["seeds"][0]
    wds = s["weight_decays"]
    sb, lb = S["sizes"]["SB"], S["sizes"]["LB"]
    load = lambda kind, key: kind.load(results / S["files"][key])  # noqa: E731
    written: list[Path] = []
    with use_style():
        fig, axes = plt.subplots(1, len(wds), figsize=(4.8 * len(wds), 3.5), squeeze=False)
        for ax, wd in zip(axes[0], wds):
            parametric_plot(ax, load(LineResult, f"interp-wd{wd:g}-seed{seed}"), endpoints=(f"SB B={sb}", f"LB B={lb}"))
            ax.set_title(f"weight decay {wd:g}: raw interpolation", pad=14)
        written += save_and_close(fig, figures / "li_interpolation")

        fig, axes = plt.subplots(2, len(wds), figsize=(4.8 * len(wds), 6.4), squeeze=False)
        for j, wd in enumerate(wds):
            lines = [load(LineResult, f"line-{_key(wd, B, seed)}") for B in (sb, lb)]
            for i, metric in enumerate(("loss", "accuracy")):
                slices_1d(axes[i, j], lines, [f"SB B={sb}", f"LB B={lb}"], metric=metric)
                axes[i, j].set_title(f"weight decay {wd:g}: filter-normalized direction", fontsize=9)
        written += save_and_close(fig, figures / "li_1d_filter_normalized")

        planes = {(wd, B): load(PlaneResult, f"plane-{_key(wd, B, seed)}") for wd in wds for B in (sb, lb)}
        values = np.concatenate([p.train_loss[p.mask].ravel() for p in planes.values()])
        values = values[np.isfinite(values) & (values > 0)]
        levels = contour_levels(float(values.min()), float(np.quantile(values, 0.98)), 16, log=True)
        fig, axes = plt.subplots(len(wds), 2, figsize=(8.4, 3.7 * len(wds)), squeeze=False)
        for i, wd in enumerate(wds):
            for j, (role, B) in enumerate((("SB", sb), ("LB", lb))):
                last = (i, j) == (len(wds) - 1, 1)  # one colour bar for all panels: they share the levels
                contour_2d(axes[i, j], planes[(wd, B)], levels=levels, log=True,
                           colorbar=axes.ravel().tolist() if last else False)
                axes[i, j].set_title(f"{role} B={B}, weight decay {wd:g}", fontsize=9)
        written += save_and_close(fig, figures / "li_2d_filter_normalized")
    return written


if __name__ == "__main__":
    sys.exit(script_main("li-landscapes"))
