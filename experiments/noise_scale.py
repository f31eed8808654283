"""The SGD noise scale η/B (Jastrzębski et al. 2017, "Three Factors Influencing Minima in SGD"; Smith & Le,
ICLR 2018, "A Bayesian Perspective on Generalization and Stochastic Gradient Descent").

Protocol. Plain SGD (no momentum) trains the mlp with two hidden ReLU layers of 256 on MNIST-1D for a fixed number of
epochs over a grid of learning rates η and batch sizes B chosen so that several (η, B) pairs share the same
ratio η/B (the diagonals of the grid), all from the same initial weights. Each solution is measured on 1000
training samples: λ_max of the Hessian, its trace (Hutch++) and test accuracy.

The claim under test: SGD's noise scale is g ≈ ηN/B (for B ≪ N), so minima reached with equal η/B look
alike — similar sharpness and test accuracy along a diagonal — while a larger η/B gives flatter minima
(λ_max falls as η/B grows). The table lists every run grouped by η/B; the figure plots λ_max and test
accuracy against η/B, one colour per batch size: equal η/B should collapse onto one curve.

Run:  sharpness reproduce noise-scale [--quick]     or     python experiments/noise_scale.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sharpness import load_dataset  # noqa: E402
from sharpness.plots import use_style  # noqa: E402
from sharpness.reproduce import (  # noqa: E402
    log_axis, markdown_table, mean_std, plural, pm, save_and_close, script_main, train_config,
)


def settings(budget: str) -> dict:
    s = {"data": "mnist1d", "model": "mlp", "hidden": [256, 256], "optimizer": "sgd",
         "lrs": [0.0125, 0.025, 0.05, 0.1], "batch_sizes": [16, 32, 64, 128],
         "analysis": {"samples": 1000, "top_k": 1, "bottom_k": 0, "tol": 1e-3, "trace": True, "trace_probes": 30}}
    if budget == "full":
        s.update(seeds=1, epochs=30)
    elif budget == "quick":
        s.update(seeds=1, epochs=8, lrs=[0.025, 0.05, 0.1], batch_sizes=[32, 64, 128])
    else:
        s.update(seeds=1, epochs=1, lrs=[0.05, 0.1], batch_sizes=[64, 128], hidden=[16, 16],
                 analysis={**s["analysis"], "samples": 200, "trace_probes": 6})
    return s


def compute(run) -> dict:
    s = run.settings
    ds = load_dataset(s["data"])
    base = train_config(s, lr=s["lrs"][0], epochs=s["epochs"])
    rows = run.sweep("grid", base, batch_sizes=s["batch_sizes"], lrs=s["lrs"], dataset=ds, analyze_options=s["analysis"])
    for r in rows:
        r["ratio"] = r["lr"] / r["batch_size"]
    return {"rows": rows}


def _ratios(rows: list[dict]) -> list[float]:
    # η/B values that agree to 1e-9 relative are the same diagonal (0.025/32 == 0.05/64 in floating point)
    return sorted({float(f"{r['ratio']:.9e}") for r in rows})


def tables(saved: dict) -> str:
    S, s = saved["summary"], saved["settings"]
    body = []
    for ratio in _ratios(S["rows"]):
        group = [r for r in S["rows"] if float(f"{r['ratio']:.9e}") == ratio]
        for lr, B in sorted({(r["lr"], r["batch_size"]) for r in group}, key=lambda p: p[1]):
            rs = [r for r in group if r["lr"] == lr and r["batch_size"] == B and r["status"] == "ok"]
            get = lambda k: [r[k] for r in rs]  # noqa: E731
            body.append([f"{ratio:.2e}", f"{lr:g}", B, pm(get("train_loss"), 4), pm(get("test_acc"), 2, scale=100.0),
                         pm(get("lambda_max"), 2), pm(get("trace"), 1)] if rs else
                        [f"{ratio:.2e}", f"{lr:g}", B, "diverged", "—", "—", "—"])
    return "\n".join([
        f"Noise scale η/B (Jastrzębski et al. 2017; Smith & Le 2018) on MNIST-1D: plain SGD, mlp {s['hidden']}, "
        f"{plural(s['epochs'], 'epoch')}, {len(saved['seeds'])} seed(s); λ_max and trace on {s['analysis']['samples']} "
        "training samples.",
        "Paper: runs with equal η/B reach alike minima; larger η/B gives flatter minima.",
        "",
        markdown_table(["η/B", "η", "B", "train loss", "test acc (%)", "λ_max", "tr(H)"], body),
    ])


def plot(saved: dict, results: Path, figures: Path) -> list[Path]:
    S = saved["summary"]
    sizes = sorted({r["batch_size"] for r in S["rows"]})
    keys = ("train_loss", "lambda_max", "trace", "test_acc")
    labels = ("train loss", r"Hessian $\lambda_{\max}$", "Hessian trace", "test accuracy (%)")
    markers = [("o", 8), ("s", 6), ("D", 4.5), ("^", 3.5)]  # nested sizes: coinciding points stay visible
    with use_style():
        fig, axes = plt.subplots(1, 4, figsize=(14.0, 3.5))
        for i, B in enumerate(sizes):
            pts = []
            for lr in sorted({r["lr"] for r in S["rows"] if r["batch_size"] == B}):
                rs = [r for r in S["rows"] if r["batch_size"] == B and r["lr"] == lr and r["status"] == "ok"]
                if rs:
                    pts.append((lr / B, *(mean_std(r[k] for r in rs)[0] for k in keys)))
            if not pts:
                continue
            x, *ys = (np.array(v) for v in zip(*pts))
            marker, size = markers[i % len(markers)]
            for ax, key, y in zip(axes, keys, ys):
                ax.plot(x, 100.0 * y if key == "test_acc" else y, "-", marker=marker, ms=size, mfc="none",
                        color=f"C{i}", label=f"B = {B}")
        for ax, key, label in zip(axes, keys, labels):
            log_axis(ax, "x")
            if key != "test_acc":
                log_axis(ax)
            ax.set_xlabel(r"noise scale $\eta / B$")
            ax.set_ylabel(label)
        axes[0].legend()
        fig.suptitle(f"Equal η/B, alike minima? Plain SGD on MNIST-1D, {plural(saved['settings']['epochs'], 'epoch')}, "
                     "one line per batch size")
        return save_and_close(fig, figures / "noise_scale")


if __name__ == "__main__":
    sys.exit(script_main("noise-scale"))
