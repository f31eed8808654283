"""Sharp minima can generalize (Dinh, Pascanu, Bengio, Bengio, ICML 2017): one function, many sharpnesses.

Protocol. A small-batch solution (the mlp with two hidden ReLU layers of 256, Adam, B = 32) is rescaled without changing
the function it computes: the first hidden layer's weights and bias are multiplied by α and the second
layer's weights divided by α (ReLU is positively homogeneous, so W₂/α·relu(αW₁x + αb₁) = W₂relu(W₁x + b₁);
:func:`sharpness.measures.rescale_relu_layers`). For each α we check that the outputs are unchanged and
measure, on 1000 training samples:

* raw curvature, which the rescaling can make as large as we like: λ_max and trace of the Hessian
  (H → D⁻¹HD⁻¹ with D = diag(α on layer 1, 1/α on layer 2)), plain worst-case sharpness (ρ in ℓ2), and the
  curvature of a 1D slice along a fixed, non-normalized random direction;
* Keskar's ε-sharpness, whose box ε(|θᵢ| + 1) scales with the weights only partly;
* measures built to be invariant: adaptive worst- and average-case sharpness (Andriushchenko et al. 2023,
  perturbations scaled by |w|) and the curvature of a slice along a filter-normalized direction (Li et al.
  2018).

The claim under test: raw sharpness changes by orders of magnitude at an identical minimum; the adaptive and
filter-normalized measures do not (up to floating-point rounding).

Run:  sharpness reproduce reparam [--quick]     or     python experiments/reparam.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from sharpness import Objective, load_dataset, rescale_relu_layers  # noqa: E402
from sharpness.landscape import LineResult, fit_curvature, grid, line, random_direction  # noqa: E402
from sharpness.plots import slices_1d, use_style  # noqa: E402
from sharpness.analysis.report import select_analysis_set  # noqa: E402
from sharpness.reproduce import (  # noqa: E402
    log_axis, markdown_table, plural, report_numbers, save_and_close, script_main, train_config,
)

#: Table/figure columns: summary key, label, whether the measure is meant to be invariant under rescaling.
MEASURES = (
    ("lambda_max", "λ_max", False),
    ("trace", "tr(H)", False),
    ("plain_worst", "plain worst-case ρ", False),
    ("raw_slice", "raw-direction f''(0)", False),
    ("eps_full_0.001", "ε-sharpness ε=1e-3 (%)", False),
    ("adaptive_worst", "adaptive worst-case ρ", True),
    ("adaptive_average", "adaptive average ρ", True),
    ("filter_slice", "filter-normalized f''(0)", True),
)


def settings(budget: str) -> dict:
    s = {"data": "mnist1d", "model": "mlp", "hidden": [256, 256], "optimizer": "adam", "lr": 1e-3, "batch_size": 32,
         "alphas": [1.0, 3.0, 10.0, 30.0, 100.0], "rho_adaptive": 0.1, "rho_plain": 0.1, "direction_seed": 7,
         "line_points": 51, "analysis": {"samples": 1000, "top_k": 1, "bottom_k": 0, "tol": 1e-3, "trace": True,
                                         "trace_probes": 30, "epsilon": [1e-3]}}
    if budget == "full":
        s.update(seeds=1, epochs=30)
    elif budget == "quick":
        s.update(seeds=1, epochs=10, alphas=[1.0, 10.0, 100.0])
    else:
        s.update(seeds=1, epochs=1, alphas=[1.0, 10.0], hidden=[16, 16], line_points=7,
                 analysis={**s["analysis"], "samples": 200, "trace_probes": 6, "epsilon_max_iter": 2})
    return s


def compute(run) -> dict:
    s = run.settings
    ds = load_dataset(s["data"])
    rows = []
    for seed in run.seeds:
        cfg = train_config(s, batch_size=s["batch_size"], epochs=s["epochs"], seed=seed)
        base = run.train(f"sb-seed{seed}", cfg, dataset=ds).model.eval()
        x, y, _ = select_analysis_set(ds.x_train, ds.y_train, samples=s["analysis"]["samples"], seed=seed)
        reference = Objective(base, x, y, device=run.device)
        # One raw direction for every α, as long as θ of the unscaled network: the rescaling moves the minimum
        # under it, so its slice curvature changes.
        raw = random_direction(reference, normalization="none", ignore=(), seed=s["direction_seed"])
        raw = raw * (reference.theta.norm() / raw.norm())
        with torch.no_grad():
            out_base = base(ds.x_test)
        for alpha in s["alphas"]:
            model = rescale_relu_layers(base, alpha).eval()
            with torch.no_grad():
                max_change = float((model(ds.x_test) - out_base).abs().max())
            tag = f"alpha{alpha:g}-seed{seed}"
            report = run.analyze(f"analysis-{tag}", model, ds.x_train, ds.y_train, data_spec=ds.spec, seed=seed,
                                 adaptive_rho=(s["rho_adaptive"],), rho=(s["rho_plain"],),
                                 average_adaptive_rho=(s["rho_adaptive"],), **s["analysis"])
            obj = Objective(model, x, y, device=run.device)
            filt = random_direction(obj, normalization="filter", seed=s["direction_seed"])
            alphas = grid(-1.0, 1.0, s["line_points"])
            slices = {name: run.landscape(f"line-{name}-{tag}", lambda d=d: line(obj, None, d, alphas), LineResult,
                                          seed=seed, config={"direction": name, "seed": s["direction_seed"]})
                      for name, d in (("raw", raw), ("filter", filt))}
            numbers = report_numbers(report)
            rows.append({"alpha": alpha, "seed": seed, "max_output_change": max_change,
                         "raw_slice": fit_curvature(slices["raw"]).curvature * slices["raw"].direction_norm ** 2,
                         "filter_slice": fit_curvature(slices["filter"]).curvature * slices["filter"].direction_norm ** 2,
                         "plain_worst": numbers[f"plain_worst_{s['rho_plain']:g}"],
                         "adaptive_worst": numbers[f"adaptive_worst_{s['rho_adaptive']:g}"],
                         "adaptive_average": numbers[f"adaptive_average_{s['rho_adaptive']:g}"], **numbers})
    return {"rows": rows}


def tables(saved: dict) -> str:
    S, s = saved["summary"], saved["settings"]
    seed = saved["seeds"][0]
    rows = [r for r in S["rows"] if r["seed"] == seed]
    ref = next(r for r in rows if r["alpha"] == 1.0)
    body = [[f"{r['alpha']:g}", f"{r['max_output_change']:.1e}", f"{r['loss']:.6f}"]
            + [f"{r[k]:.4g}" + ("" if r["alpha"] == 1.0 else f" (×{r[k] / ref[k]:.{7 if inv else 3}g})")
               for k, _, inv in MEASURES]  # invariant ones to 7 digits: they agree to float32 rounding
            for r in rows]
    return "\n".join([
        f"Reparameterization (Dinh et al. 2017) on MNIST-1D: mlp {s['hidden']} ReLU, Adam B={s['batch_size']}, "
        f"{plural(s['epochs'], 'epoch')}; layer 1 ×α, layer 2 ÷α; measures on {s['analysis']['samples']} training "
        f"samples (ρ = {s['rho_adaptive']:g}); (×r) = ratio to α = 1; seed {seed}.",
        "Paper: the same function can be made arbitrarily sharp; invariant measures should not move.",
        "",
        markdown_table(["α", "max ‖Δ output‖∞", "train loss"] + [label for _, label, _ in MEASURES], body),
    ])


def plot(saved: dict, results: Path, figures: Path) -> list[Path]:
    S, s = saved["summary"], saved["settings"]
    seed = saved["seeds"][0]
    rows = sorted((r for r in S["rows"] if r["seed"] == seed), key=lambda r: r["alpha"])
    ref = next(r for r in rows if r["alpha"] == 1.0)
    alphas = [r["alpha"] for r in rows]
    written: list[Path] = []
    with use_style():
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        invariant_markers = iter([("o", 9), ("D", 6), ("^", 4)])  # nested sizes: lines that coincide stay visible
        for i, (key, label, invariant) in enumerate(MEASURES):
            marker, size = next(invariant_markers) if invariant else ("s", 4)
            ax.plot(alphas, [abs(r[key] / ref[key]) for r in rows], "-" if invariant else "--", marker=marker, ms=size,
                    mfc="none" if invariant else None, color=f"C{i}", label=label + (" (invariant)" if invariant else ""))
        log_axis(ax, "x")
        log_axis(ax)
        ax.set_xlabel(r"rescaling $\alpha$ (layer 1 $\times\alpha$, layer 2 $\div\alpha$; same function)")
        ax.set_ylabel("measure relative to α = 1")
        ax.legend(fontsize=6.5, ncol=2, loc="upper left")
        ax.set_title("Dinh et al. (2017): raw sharpness moves, adaptive measures do not", fontsize=9)
        written += save_and_close(fig, figures / "reparam_measures")

        fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.5))
        for ax, name, title in ((axes[0], "raw", "fixed raw random direction"),
                                (axes[1], "filter", "filter-normalized random direction")):
            lines = [LineResult.load(results / f"line-{name}-alpha{a:g}-seed{seed}.npz") for a in alphas]
            slices_1d(ax, lines, [f"α = {a:g}" for a in alphas], log=True)
            log_axis(ax)
            ax.set_xlabel(r"$t$   (point $\theta + t\,d$)")  # α is the rescaling here
            ax.set_title(title, fontsize=9)
        axes[1].text(0.5, 0.92, "all α coincide", transform=axes[1].transAxes, ha="center", fontsize=8, color="0.3")
        fig.suptitle("Loss along a 1D slice through the same function under rescaling α")
        written += save_and_close(fig, figures / "reparam_slices")
    return written


if __name__ == "__main__":
    sys.exit(script_main("reparam"))
