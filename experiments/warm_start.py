"""Warm-started large-batch training (Keskar et al., ICLR 2017, Fig. 5): small batch for k epochs, then large batch.

Protocol. An mlp with two hidden ReLU layers of 256 is trained with Adam (lr 1e-3) at a small batch (B = 32) for
k ∈ {0, 1, 2, 5, 10, 20, 40} epochs (one run, a snapshot kept after every epoch); from each snapshot a
large-batch run (B = 10 % of the data = 400) continues for a fixed number of epochs, with a fresh Adam state.
k = 0 is pure large-batch training from the same initial weights. Each final solution is measured on 1000
training samples: λ_max of the Hessian and Keskar's ε-sharpness (ε = 1e-3, full space); plus test accuracy.

The paper's claim: after enough small-batch epochs the large-batch phase stays in the flat basin SB found:
test accuracy rises and sharpness falls with k, then both level off (Keskar et al. saw this on C1/C3 at
k ≈ 25–50 epochs).

Run:  sharpness reproduce warm-start [--quick] [--seeds N]     or     python experiments/warm_start.py
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sharpness import load_dataset  # noqa: E402
from sharpness.plots import use_style  # noqa: E402
from sharpness.reproduce import (  # noqa: E402
    RAN_OUT_NOTE,
    ran_out_mark,
    markdown_table, mean_std, plural, pm, report_numbers, save_and_close, script_main, train_config,
)
from sharpness.train import resolve_batch_size, snapshot_path  # noqa: E402


def settings(budget: str) -> dict:
    s = {"data": "mnist1d", "model": "mlp", "hidden": [256, 256], "optimizer": "adam", "lr": 1e-3,
         "sb": 32, "lb": "10%", "ks": [0, 1, 2, 5, 10, 20, 40],
         "analysis": {"samples": 1000, "top_k": 1, "bottom_k": 0, "tol": 1e-3, "trace": False,
                      "epsilon": [1e-3]}}
    if budget == "full":
        s.update(seeds=3, lb_epochs=100)
    elif budget == "quick":
        s.update(seeds=1, lb_epochs=40, ks=[0, 2, 5, 10])
    else:
        s.update(seeds=1, lb_epochs=1, ks=[0, 1], hidden=[16, 16],
                 analysis={**s["analysis"], "samples": 200, "epsilon_max_iter": 2})
    return s


def compute(run) -> dict:
    s = run.settings
    ds = load_dataset(s["data"])
    base = train_config(s, batch_size=s["sb"], epochs=max(1, max(s["ks"])), save_every=1)
    rows = []
    for seed in run.seeds:
        sb = run.train(f"sb-seed{seed}", dataclasses.replace(base, seed=seed), dataset=ds)
        sb_epochs = {h["epoch"]: h for h in sb.history}
        for k in s["ks"]:
            start = str(snapshot_path(sb.checkpoint, k)) if k > 0 else None
            lb_config = dataclasses.replace(base, seed=seed, batch_size=s["lb"], epochs=s["lb_epochs"], save_every=None,
                                            init_from=start)
            lb = run.train(f"lb-k{k}-seed{seed}", lb_config, dataset=ds)
            report = run.analyze(f"analysis-lb-k{k}-seed{seed}", lb.model, ds.x_train, ds.y_train, data_spec=ds.spec,
                                 seed=seed, **s["analysis"])
            m = lb.metrics
            rows.append({"k": k, "seed": seed, "train_loss": m["train_loss"], "train_acc": m["train_acc"],
                         "test_acc": m["test_acc"], "test_loss": m["test_loss"], "dist_from_init": m["dist_from_init"],
                         "sb_test_acc_at_k": sb_epochs[k]["test_acc"] if k in sb_epochs else None,
                         **report_numbers(report)})
    return {"rows": rows, "ks": s["ks"], "lb": resolve_batch_size(s["lb"], int(ds.x_train.shape[0]))}


def tables(saved: dict) -> str:
    S, s = saved["summary"], saved["settings"]
    body = []
    for k in S["ks"]:
        rs = [r for r in S["rows"] if r["k"] == k]
        get = lambda key: [r[key] for r in rs]  # noqa: E731
        body.append([k, pm(get("sb_test_acc_at_k"), 1, scale=100.0) if k else "—", pm(get("train_loss"), 4),
                     pm(get("test_acc"), 2, scale=100.0), pm(get("lambda_max"), 2),
                     pm(get("eps_full_0.001"), 2) + ran_out_mark(rs, "eps_full_0.001")])
    return "\n".join([
        f"Warm-started large batch on MNIST-1D (Keskar et al. 2017 Fig. 5): B={s['sb']} for k epochs, then B={S['lb']} "
        f"for {plural(s['lb_epochs'], 'epoch')} (Adam lr {s['lr']:g}, mlp {s['hidden']}); mean ± std over "
        f"{len(saved['seeds'])} seed(s); λ_max and ε-sharpness (ε=1e-3, %) on {s['analysis']['samples']} training samples.",
        "Paper (Fig. 5, no table): test accuracy rises and sharpness falls with k, then levels off. " + RAN_OUT_NOTE,
        "",
        markdown_table(["k (SB epochs)", "SB test acc at k (%)", "final train loss", "final test acc (%)", "λ_max",
                        "ε-sharpness (%)"], body),
    ])


def plot(saved: dict, results: Path, figures: Path) -> list[Path]:
    S, s = saved["summary"], saved["settings"]
    ks = S["ks"]
    x = [max(k, 0.5) for k in ks]  # k = 0 drawn at 0.5 on the log axis, labelled 0
    with use_style():
        fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.4))
        for ax, (key, label, scale) in zip(axes, (("test_acc", "test accuracy (%)", 100.0),
                                                  ("lambda_max", r"Hessian $\lambda_{\max}$", 1.0),
                                                  ("eps_full_0.001", "ε-sharpness (%), ε=1e-3", 1.0))):
            stats = [mean_std(r[key] for r in S["rows"] if r["k"] == k) for k in ks]
            ax.errorbar(x, [m * scale for m, _, _ in stats], yerr=[e * scale for _, e, _ in stats], fmt="o-", capsize=3)
            ax.set_xscale("log", base=2)
            ax.set_xticks(x, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set_xlabel(f"k: epochs at B={s['sb']} before switching to B={S['lb']}")
            ax.set_ylabel(label)
        n = len(saved["seeds"])
        fig.suptitle(f"Warm-started large-batch training on MNIST-1D (mean ± std, {n} seed{'s' * (n > 1)})")
        return save_and_close(fig, figures / "warm_start")


if __name__ == "__main__":
    sys.exit(script_main("warm-start"))
