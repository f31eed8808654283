"""Edge of stability (Cohen, Kaur, Li, Kolter, Talwalkar, ICLR 2021, "Gradient Descent on Neural Networks
Typically Occurs at the Edge of Stability", Fig. 1).

Protocol (theirs, at MNIST-1D scale). Full-batch gradient descent (SGD without momentum, B = all samples) on
a 1000-sample subset of MNIST-1D, mean-squared error against one-hot targets (Cohen et al.'s main setting;
our MSE averages over the 10 outputs), a tanh mlp with two hidden layers of 128, at several step sizes η.
:class:`sharpness.tracking.SharpnessTracker` measures λ_max of the Hessian of the full training loss every
few steps (Lanczos, warm-started from the previous top eigenvector).

The claim under test: λ_max first rises (progressive sharpening) until it reaches 2/η, the largest
curvature gradient descent with step η is stable on, and then hovers there while the loss keeps falling,
non-monotonically. The table compares the plateau (median λ_max over the last third of training, with the
25–75 % range) with 2/η.

Run:  sharpness reproduce edge-of-stability [--quick]     or     python experiments/edge_of_stability.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from sharpness import Dataset, load_dataset  # noqa: E402
from sharpness.data import hash_tensors  # noqa: E402
from sharpness.plots import use_style  # noqa: E402
from sharpness.reproduce import markdown_table, save_and_close, script_main, train_config  # noqa: E402
from sharpness.tracking import SharpnessTracker, progressive_sharpening_summary  # noqa: E402
from sharpness.train import train  # noqa: E402


def settings(budget: str) -> dict:
    s = {"data": "mnist1d", "subset": 1000, "model": "mlp", "hidden": [128, 128], "activation": "tanh",
         "loss": "mse", "lrs": [0.5, 1.0, 2.0], "steps": 2000, "every": 10, "tol": 1e-3}
    if budget == "full":
        s.update(seeds=1)
    elif budget == "quick":
        s.update(seeds=1, lrs=[1.0, 2.0], steps=800, every=25)
    else:
        s.update(seeds=1, lrs=[2.0], steps=20, every=10, hidden=[16, 16], subset=200)
    return s


def one_hot_dataset(s: dict) -> Dataset:
    """MNIST-1D (a seeded training subset) with one-hot float targets, for the mean-squared error."""
    ds = load_dataset(s["data"], subset=s["subset"])
    hot = lambda y: torch.nn.functional.one_hot(y, int(ds.spec["num_classes"])).to(ds.x_train.dtype)  # noqa: E731
    y_train, y_test = hot(ds.y_train), hot(ds.y_test)
    digest = hash_tensors([("x_train", ds.x_train), ("y_train", y_train), ("x_test", ds.x_test), ("y_test", y_test)])
    spec = {**ds.spec, "targets": "one-hot", "output_dim": int(ds.spec["num_classes"]), "sha256": digest}
    return Dataset(ds.x_train, y_train, ds.x_test, y_test, spec=spec)


def compute(run) -> dict:
    s = run.settings
    ds = one_hot_dataset(s)
    runs = []
    for seed in run.seeds:
        for lr in s["lrs"]:
            config = train_config(s, optimizer="sgd", lr=lr, batch_size="full", steps=s["steps"], seed=seed,
                                  eval_every=10**6, device=run.device)

            def go(config=config):
                # The full training set is the analysis set: the threshold 2/η concerns the loss being descended.
                tracker = SharpnessTracker(every=s["every"], analysis_samples=None, held_out=False, tol=s["tol"], seed=seed)
                result = train(config, dataset=ds, callbacks=[tracker])
                return {"metrics": result.metrics, "tracker": tracker.to_dict()}

            out = run.unit(f"gd-lr{lr:g}-seed{seed}", go, config=config.to_dict(), seed=seed)
            records = out["tracker"]["records"]
            summary = progressive_sharpening_summary(records, lr).to_dict()
            runs.append({"lr": lr, "seed": seed, "steps": [r["step"] for r in records],
                         "lambda_max": [r["lambda_max"] for r in records], "loss": [r["loss"] for r in records],
                         "final_loss": out["metrics"]["train_loss"], **summary})
    return {"runs": runs}


def tables(saved: dict) -> str:
    S, s = saved["summary"], saved["settings"]
    body = [[f"{r['lr']:g}", f"{r['threshold']:.2f}", f"{r['initial']:.2f}",
             f"{r['plateau']:.2f} [{r['plateau_low']:.2f}, {r['plateau_high']:.2f}]", f"{r['ratio']:.3f}",
             "—" if r["first_crossing_step"] is None else r["first_crossing_step"], f"{r['tail_rise']:+.3f}",
             f"{r['final_loss']:.4f}"] for r in S["runs"]]
    return "\n".join([
        f"Edge of stability (Cohen et al. 2021) on MNIST-1D: full-batch GD on {s['subset']} samples, MSE on one-hot "
        f"targets, mlp {s['hidden']} {s['activation']}, {s['steps']} steps; λ_max of the training loss every "
        f"{s['every']} steps.",
        "Paper: λ_max rises to 2/η and hovers there (ratio ≈ 1) while the loss keeps falling non-monotonically.",
        "",
        markdown_table(["η", "2/η", "λ_max at start", "plateau λ_max [25-75 %]", "plateau·η/2",
                        "first step ≥ 0.9·2/η", "rise over plateau", "final loss"], body),
    ])


def plot(saved: dict, results: Path, figures: Path) -> list[Path]:
    S = saved["summary"]
    with use_style():
        fig, (ax_loss, ax_lam) = plt.subplots(1, 2, figsize=(10.0, 3.6))
        for i, r in enumerate(sorted(S["runs"], key=lambda r: r["lr"])):
            color = f"C{i}"
            label = f"η = {r['lr']:g}" + (f", seed {r['seed']}" if len(saved["seeds"]) > 1 else "")
            ax_loss.plot(r["steps"], r["loss"], color=color, label=label)
            ax_lam.plot(r["steps"], r["lambda_max"], color=color, label=label)
            ax_lam.axhline(r["threshold"], color=color, ls="--", lw=1.0)
        ax_lam.plot([], [], color="0.4", ls="--", lw=1.0, label="2/η")
        ax_loss.set_xlabel("gradient descent step")
        ax_loss.set_ylabel("train loss (MSE)")
        ax_lam.set_xlabel("gradient descent step")
        ax_lam.set_ylabel(r"Hessian $\lambda_{\max}$")
        ax_lam.legend()
        ax_loss.legend()
        fig.suptitle("Edge of stability on MNIST-1D: λ_max rises to 2/η and hovers there (Cohen et al. 2021)")
        return save_and_close(fig, figures / "edge_of_stability")


if __name__ == "__main__":
    sys.exit(script_main("edge-of-stability"))
