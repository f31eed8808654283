"""Keskar et al. (ICLR 2017), "On Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima":
Tables 2-4 and Fig. 3 on MNIST-1D.

Protocol (the paper's, at MNIST-1D scale). An F1-like fully connected ReLU network (``mlp``, two hidden layers
of 256; the paper's F1 has 512-wide hidden layers with batch norm, on 784-pixel MNIST) is trained with Adam (lr 1e-3)
from the same initial weights (same seed) at the paper's small batch B = 256, at B = 32, and at the paper's
large batch, 10 % of the training set (B = 400 of MNIST-1D's 4000 samples), for a fixed number of epochs.
Every solution is then measured on a seeded subset of the training set (1000 samples in the full and quick runs):

* Table 2: train and test accuracy (mean ± std over seeds);
* Tables 3-4: ε-sharpness (Keskar's metric, in percent) at ε = 1e-3 and 5e-4, in the full space and in a
  random p = 100 dimensional subspace (L-BFGS-B, 10 iterations, as in the paper);
* λ_max and λ_min of the Hessian (Lanczos), its trace (Hutch++), and the distance from the initial weights;
* Fig. 3: loss and accuracy along f((1 − α)·θ_SB + α·θ_LB), α ∈ [−1, 2], 25 points (α = 0 is SB, 1 is LB).

Matched training loss. Sharpness depends on how far training got: cross-entropy curvature vanishes as the
loss does, and at a fixed epoch budget the small batch takes many more steps. So every comparison is also
made at matched loss: per seed the target is the largest final training loss among the batch sizes; each run
that ended below it is retrained (bit-identically, same seed and data order) with ``until_train_loss`` and
stops at the first epoch whose training loss is below the target. The run that set the target is reused.

Run:  sharpness reproduce keskar [--quick] [--seeds N]     or     python experiments/keskar.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sharpness import Objective, load_dataset  # noqa: E402
from sharpness.landscape import LineResult, grid, interpolate  # noqa: E402
from sharpness.plots import parametric_plot, use_style  # noqa: E402
from sharpness.reproduce import (  # noqa: E402
    RAN_OUT_NOTE,
    ran_out_mark,
    batch_size_axis, flat_parameters, markdown_table, mean_std, plural, pm, report_numbers, save_and_close, script_main,
    train_config,
)
from sharpness.train import resolve_batch_size  # noqa: E402

#: Keskar et al. (2017), network F1 on MNIST, mean ± std over 5 trials: Table 2 (accuracy, %), Table 3
#: (ε-sharpness in the full space, %) and Table 4 (in a random 100-dimensional subspace, %).
PAPER = {
    "train_acc": {"SB": "99.66 ± 0.05", "LB": "99.92 ± 0.01"},
    "test_acc": {"SB": "98.03 ± 0.07", "LB": "97.81 ± 0.07"},
    "eps_full_0.001": {"SB": "1.23 ± 0.83", "LB": "205.14 ± 69.52"},
    "eps_full_0.0005": {"SB": "0.61 ± 0.27", "LB": "42.90 ± 17.14"},
    "eps_random_0.001": {"SB": "0.11 ± 0.00", "LB": "9.22 ± 0.56"},
    "eps_random_0.0005": {"SB": "0.05 ± 0.00", "LB": "9.17 ± 0.14"},
}


def settings(budget: str) -> dict:
    """Every number of the study. ``full`` is what experiments/README.md reports."""
    s = {
        "data": "mnist1d", "model": "mlp", "hidden": [256, 256], "activation": "relu",
        "optimizer": "adam", "lr": 1e-3, "sb": 256, "lb": "10%", "batch_sizes": [32, 256, "10%"],
        "epsilon": [1e-3, 5e-4], "subspace_dim": 100, "epsilon_method": "both",
        "lanczos_tol": 1e-3, "trace_probes": 30, "interp_range": [-1.0, 2.0], "interp_points": 25,
    }
    if budget == "full":
        s.update(seeds=5, epochs=100, analysis_samples=1000)
    elif budget == "quick":
        s.update(seeds=1, epochs=60, analysis_samples=1000)
    else:  # smoke: only proves the pipeline runs
        s.update(seeds=1, epochs=2, hidden=[16, 16], analysis_samples=200, trace_probes=6, subspace_dim=5,
                 epsilon_max_iter=2, interp_points=7)  # the budget of both methods, as small as it goes
    return s


def compute(run) -> dict:
    s = run.settings
    ds = load_dataset(s["data"])
    n_train = int(ds.x_train.shape[0])
    sizes = [resolve_batch_size(b, n_train) for b in s["batch_sizes"]]
    sb, lb = resolve_batch_size(s["sb"], n_train), resolve_batch_size(s["lb"], n_train)
    analysis = dict(samples=s["analysis_samples"], top_k=1, bottom_k=1, tol=s["lanczos_tol"], trace=True,
                    trace_probes=s["trace_probes"], epsilon=tuple(s["epsilon"]), subspace_dim=s["subspace_dim"],
                    epsilon_method=s["epsilon_method"], epsilon_max_iter=s.get("epsilon_max_iter"))
    rows, targets, interps = [], {}, {}
    for seed in run.seeds:
        runs = {"fixed": {B: run.train(f"fixed-bs{B}-seed{seed}", train_config(s, batch_size=B, seed=seed, epochs=s["epochs"]), dataset=ds)
                          for B in sizes}}
        target = max(runs["fixed"][B].metrics["train_loss"] for B in sizes)
        targets[seed] = target
        runs["matched"] = {}
        for B in sizes:
            fixed = runs["fixed"][B]
            if fixed.metrics["train_loss"] >= target:  # this run set the target: it is its own matched run
                runs["matched"][B] = fixed
            else:
                cfg = train_config(s, batch_size=B, seed=seed, until_train_loss=target, max_epochs=s["epochs"])
                runs["matched"][B] = run.train(f"matched-bs{B}-seed{seed}", cfg, dataset=ds)
        for regime, by_batch in runs.items():
            for B, trained in by_batch.items():
                key = Path(trained.checkpoint).stem  # a reused run shares its analysis
                report = run.analyze(f"analysis-{key}", trained.model, ds.x_train, ds.y_train, data_spec=ds.spec,
                                     seed=seed, **analysis)
                m = trained.metrics
                rows.append({"regime": regime, "batch_size": B, "seed": seed, "run": key, "epochs": m["epochs"],
                             "steps": m["steps"], "train_loss": m["train_loss"], "train_acc": m["train_acc"],
                             "test_loss": m["test_loss"], "test_acc": m["test_acc"],
                             "dist_from_init": m["dist_from_init"], "stopped_by": m["stopped_by"], **report_numbers(report)})
        if seed == run.seeds[0]:  # Fig. 3 for the first seed, as the paper draws one pair
            for regime, by_batch in runs.items():
                for B in sizes:
                    if B == lb:
                        continue
                    a, b = by_batch[B], by_batch[lb]

                    def line(a=a, b=b):
                        train_obj = Objective(a.model, ds.x_train, ds.y_train, device=run.device)
                        test_obj = Objective(a.model, ds.x_test, ds.y_test, device=run.device)
                        alphas = grid(*s["interp_range"], s["interp_points"])
                        return interpolate(train_obj, train_obj.theta, flat_parameters(train_obj, b.model), alphas,
                                           test_objective=test_obj)

                    key = f"interp-{regime}-bs{B}-bs{lb}-seed{seed}"
                    run.landscape(key, line, LineResult, seed=seed,
                                  config={"a": a.checkpoint, "b": b.checkpoint, "range": s["interp_range"],
                                          "points": s["interp_points"]})
                    interps.setdefault(regime, {})[str(B)] = f"{key}.npz"
    return {"batch_sizes": sizes, "sb": sb, "lb": lb, "targets": targets, "rows": rows, "interpolations": interps,
            "analysis": {**analysis, "split": "train", "n_train": n_train}}


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------


def _label(B: int, sb: int, lb: int) -> str:
    role = "SB" if B == sb else "LB" if B == lb else "small"
    return f"{role} B={B}"


def _role(B: int, sb: int, lb: int) -> str | None:
    return "SB" if B == sb else "LB" if B == lb else None


def _select(rows: list[dict], regime: str, B: int) -> list[dict]:
    return [r for r in rows if r["regime"] == regime and r["batch_size"] == B]


def flagged(rows: list[dict], key: str) -> str:
    """mean ± std of ``key`` over ``rows``, with † when the maximizer's budget ran out in any of them."""
    return pm([r.get(key) for r in rows], 2) + ran_out_mark(rows, key)


def tables(saved: dict) -> str:
    S, s = saved["summary"], saved["settings"]
    rows, sizes, sb, lb = S["rows"], S["batch_sizes"], S["sb"], S["lb"]
    n = len(saved["seeds"])
    target = pm(list(S["targets"].values()), 4)
    regimes = [("fixed", plural(s["epochs"], "epoch")), ("matched", f"matched loss {target}")]

    def paper(key: str, B: int, regime: str) -> str:
        role = _role(B, sb, lb)  # the paper compares at a fixed epoch budget only
        return PAPER[key][role] if role and regime == "fixed" else "—"

    acc, eps, curv = [], [], []
    for regime, title in regimes:
        for B in sizes:
            rs = _select(rows, regime, B)
            if not rs:
                continue
            name = f"{_label(B, sb, lb)}, {title}"
            get = lambda k: [r[k] for r in rs]  # noqa: E731
            acc.append([name, pm(get("epochs"), 0), pm(get("train_loss"), 4), pm(get("train_acc"), 2, scale=100),
                        paper("train_acc", B, regime), pm(get("test_acc"), 2, scale=100), paper("test_acc", B, regime)])
            eps.append([name] + [c for e in s["epsilon"] for sp in ("full", "random")
                                 for c in (flagged(rs, f"eps_{sp}_{e:g}"), flagged(rs, f"eps_paper_{sp}_{e:g}"),
                                           paper(f"eps_{sp}_{e:g}", B, regime))])
            curv.append([name, pm(get("train_loss"), 4), pm(get("lambda_max"), 2), pm(get("lambda_min"), 3),
                         pm(get("trace"), 1), pm(get("dist_from_init"), 2)])
    eps_header = ["run"] + [h for e in s["epsilon"] for sp in ("full", f"p={s['subspace_dim']}")
                            for h in (f"{sp} ε={e:g}", "paper mode", "paper")]
    samples = S["analysis"]["samples"] or S["analysis"]["n_train"]
    out = [
        f"Keskar et al. (2017) on MNIST-1D: mlp {s['hidden']} ReLU, Adam lr {s['lr']:g}, mean ± std over {n} seed(s).",
        "Paper: network F1 on MNIST (5 trials); its SB is B=256, its LB 10 % of the data.",
        "",
        "Table 2: accuracy (%)",
        markdown_table(["run", "epochs", "train loss", "train acc", "paper", "test acc", "paper"], acc),
        "",
        f"Tables 3-4: ε-sharpness (%) on the training set ({samples} samples), full space and random subspace. "
        "Each pair: our default maximizer (projected sign ascent from box corners), then Keskar's protocol "
        "(\"paper mode\": L-BFGS-B, 10 iterations from θ), then the paper's number. " + RAN_OUT_NOTE,
        markdown_table(eps_header, eps),
        "",
        f"Curvature at the solution ({samples} training samples): Hessian λ_max, λ_min (Lanczos), trace (Hutch++, "
        f"{S['analysis']['trace_probes']} matvecs), distance from the initial weights",
        markdown_table(["run", "train loss", "λ_max", "λ_min", "tr(H)", "‖θ−θ₀‖"], curv),
    ]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------


def plot(saved: dict, results: Path, figures: Path) -> list[Path]:
    S, s = saved["summary"], saved["settings"]
    sb, lb = S["sb"], S["lb"]
    written: list[Path] = []
    titles = {"fixed": plural(s["epochs"], "epoch"), "matched": f"matched train loss ({pm(list(S['targets'].values()), 3)})"}
    interps = S["interpolations"]
    regimes = [r for r in ("fixed", "matched") if r in interps]
    cols = sorted({int(b) for r in regimes for b in interps[r]}, reverse=True)
    with use_style():
        fig, axes = plt.subplots(len(regimes), len(cols), figsize=(4.8 * len(cols), 3.3 * len(regimes)), squeeze=False)
        for i, regime in enumerate(regimes):
            for j, B in enumerate(cols):
                res = LineResult.load(results / interps[regime][str(B)])
                ax = axes[i, j]
                parametric_plot(ax, res, endpoints=(f"B={B}", f"B={lb}"))
                ax.set_xlabel(r"$\alpha$   ($\theta = (1-\alpha)\,\theta_{SB} + \alpha\,\theta_{LB}$)")
                ax.set_title(f"B={B} → B={lb}, {titles[regime]}", pad=14)
                if (i, j) != (0, 0):  # one legend explains every panel
                    for a in fig.axes:
                        if a.get_legend() is not None and (a is ax or ax.get_shared_x_axes().joined(ax, a)):
                            a.get_legend().remove()
        written += save_and_close(fig, figures / "keskar_fig3_parametric")

        fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.4))
        panels = [("lambda_max", r"Hessian $\lambda_{\max}$", 1.0), (f"eps_full_{s['epsilon'][0]:g}",
                  f"ε-sharpness (%), full space, ε={s['epsilon'][0]:g}", 1.0), ("test_acc", "test accuracy (%)", 100.0)]
        for ax, (key, label, scale) in zip(axes, panels):
            for regime, marker in (("fixed", "o-"), ("matched", "s--")):
                xs, ms, es = [], [], []
                for B in S["batch_sizes"]:
                    mean, std, n = mean_std(r[key] for r in _select(S["rows"], regime, B))
                    if n:
                        xs.append(B), ms.append(mean * scale), es.append(std * scale)
                ax.errorbar(xs, ms, yerr=es, fmt=marker, capsize=3, label=titles[regime])
            batch_size_axis(ax, S["batch_sizes"])
            ax.set_ylabel(label)
        axes[0].legend()
        n = len(saved["seeds"])
        spread = f"mean ± std over {n} seeds" if n > 1 else "one seed"  # a std over one seed does not exist
        fig.suptitle(f"Keskar et al. on MNIST-1D: sharpness and accuracy vs batch size ({spread})")
        written += save_and_close(fig, figures / "keskar_sharpness")
    return written


if __name__ == "__main__":
    sys.exit(script_main("keskar"))
