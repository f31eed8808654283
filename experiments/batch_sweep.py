"""Test accuracy and sharpness against batch size (Keskar et al., ICLR 2017, Fig. 4), with and without the
linear learning-rate scaling rule and gradual warmup of Goyal et al. (2017, "Accurate, Large Minibatch SGD").

Protocol. An mlp with two hidden ReLU layers of 256 is trained on MNIST-1D with SGD
(momentum 0.9) from the same initial weights at every batch size from 16 to the full training set, under
four protocols:

* ``fixed`` epoch budget, one learning rate for every batch size (``none``): the paper's setting, where a
  larger batch takes proportionally fewer steps;
* ``fixed`` epochs with ``linear`` scaling, lr = lr₀·B/B₀ (B₀ = 128) after a linear warmup of 5 epochs;
* ``matched`` training loss: each run trains until its training loss falls below a common target (capped
  at ``max_epochs``; runs that hit the cap are drawn hollow), with and without the scaling rule.

Each solution is measured on 1000 training samples: λ_max of the Hessian (Lanczos) and Keskar's ε-sharpness
(ε = 1e-3, full space). The claim under test (Keskar Fig. 4): test accuracy falls and sharpness rises as the
batch grows. Runs whose loss becomes NaN/Inf (large scaled learning rates) keep their last good weights and
are reported as diverged, not measured.

Run:  sharpness reproduce batch-sweep [--quick] [--seeds N]     or     python experiments/batch_sweep.py
"""

from __future__ import annotations

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
    batch_size_axis, log_axis, markdown_table, mean_std, plural, pm, save_and_close, script_main, train_config,
)

PROTOCOLS = (("fixed", "none"), ("fixed", "linear"), ("matched", "none"), ("matched", "linear"))
RULE_NAMES = {"none": "same lr", "linear": "linear scaling + warmup"}


def settings(budget: str) -> dict:
    s = {
        "data": "mnist1d", "model": "mlp", "hidden": [256, 256], "optimizer": "sgd", "momentum": 0.9, "lr": 0.02,
        "base_batch_size": 128, "warmup_epochs": 5.0, "target_loss": 0.2,
        "batch_sizes": [16, 32, 64, 128, 256, 512, 1024, 2048, "full"],
        "analysis": {"samples": 1000, "top_k": 1, "bottom_k": 0, "tol": 1e-3, "trace": False, "epsilon": [1e-3]},
    }
    if budget == "full":
        s.update(seeds=2, epochs=40, max_epochs=300)
    elif budget == "quick":
        s.update(seeds=1, epochs=10, max_epochs=60, batch_sizes=[16, 64, 256, 1024, "full"])
    else:
        s.update(seeds=1, epochs=1, max_epochs=2, batch_sizes=[256, "full"], hidden=[16, 16], target_loss=2.2,
                 warmup_epochs=1.0, analysis={**s["analysis"], "samples": 200, "epsilon_max_iter": 2})
    return s


def compute(run) -> dict:
    s = run.settings
    ds = load_dataset(s["data"])
    rows = []
    for protocol, rule in PROTOCOLS:
        duration = ({"epochs": s["epochs"]} if protocol == "fixed"
                    else {"until_train_loss": s["target_loss"], "max_epochs": s["max_epochs"]})
        base = train_config(s, lr_scaling=rule, base_batch_size=s["base_batch_size"],
                            warmup_epochs=s["warmup_epochs"] if rule == "linear" else 0.0, **duration)
        for row in run.sweep(f"{protocol}-{rule}", base, batch_sizes=s["batch_sizes"], dataset=ds,
                             analyze_options=s["analysis"]):
            rows.append({**row, "protocol": protocol, "rule": rule})
    return {"rows": rows, "batch_sizes": sorted({r["batch_size"] for r in rows})}


def _cell(rows: list[dict], key: str, digits: int, scale: float = 1.0) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return "diverged" if rows else "—"
    text = pm([r[key] for r in ok], digits, scale=scale) + ran_out_mark(ok, key)
    return text + ("*" if any(r.get("reached_train_loss") is False for r in ok) else "")


def tables(saved: dict) -> str:
    S, s = saved["summary"], saved["settings"]
    out = [f"Batch-size sweep on MNIST-1D (Keskar et al. 2017 Fig. 4; Goyal et al. 2017): mlp {s['hidden']}, SGD "
           f"momentum {s['momentum']}, lr {s['lr']:g} (linear rule: lr·B/{s['base_batch_size']}, {s['warmup_epochs']:g} "
           f"warmup epochs); mean ± std over {len(saved['seeds'])} seed(s); λ_max and ε-sharpness (ε=1e-3, %) on "
           f"{s['analysis']['samples']} training samples.",
           "Paper (Fig. 4, no table): test accuracy falls and sharpness rises with the batch size.", RAN_OUT_NOTE]
    for protocol, title in (("fixed", plural(s["epochs"], "epoch")),
                            ("matched", f"until train loss < {s['target_loss']:g} (* = cap of {s['max_epochs']} "
                                        "epochs reached first)")):
        header, body = ["B"], []
        for rule in ("none", "linear"):
            header += [f"{RULE_NAMES[rule]}: peak lr", "epochs", "train loss", "test acc (%)", "λ_max", "ε-sharp. (%)"]
        for B in S["batch_sizes"]:
            row = [str(B)]
            for rule in ("none", "linear"):
                rs = [r for r in S["rows"] if r["protocol"] == protocol and r["rule"] == rule and r["batch_size"] == B]
                row += [f"{rs[0]['peak_lr']:.4g}" if rs else "—", _cell(rs, "epochs", 0), _cell(rs, "train_loss", 3),
                        _cell(rs, "test_acc", 1, 100.0), _cell(rs, "lambda_max", 1), _cell(rs, "eps_full_0.001", 2)]
            body.append(row)
        out += ["", f"Protocol: {title}", markdown_table(header, body)]
    return "\n".join(out)


def plot(saved: dict, results: Path, figures: Path) -> list[Path]:
    S, s = saved["summary"], saved["settings"]
    sizes = S["batch_sizes"]
    panels = [("test_acc", "test accuracy (%)", 100.0), ("lambda_max", r"Hessian $\lambda_{\max}$", 1.0),
              ("eps_full_0.001", "ε-sharpness (%), ε=1e-3", 1.0)]
    with use_style():
        fig, axes = plt.subplots(2, 3, figsize=(12.0, 6.4), squeeze=False)
        for i, (protocol, title) in enumerate((("fixed", plural(s["epochs"], "epoch")),
                                               ("matched", f"train loss < {s['target_loss']:g}"))):
            for j, (key, label, scale) in enumerate(panels):
                ax = axes[i, j]
                for rule, color, marker in (("none", "C0", "o"), ("linear", "C1", "s")):
                    xs, ms, es, hollow = [], [], [], []
                    for B in sizes:
                        rs = [r for r in S["rows"] if r["protocol"] == protocol and r["rule"] == rule
                              and r["batch_size"] == B and r["status"] == "ok"]
                        mean, std, n = mean_std(r[key] for r in rs)
                        if n:
                            xs.append(B), ms.append(mean * scale), es.append(std * scale)
                            hollow.append(any(r.get("reached_train_loss") is False for r in rs))
                    ax.errorbar(xs, ms, yerr=es, color=color, fmt="-", capsize=2, label=RULE_NAMES[rule])
                    for x, m, h in zip(xs, ms, hollow):
                        ax.plot([x], [m], marker=marker, color=color, mfc="white" if h else color, ms=5, ls="none")
                batch_size_axis(ax, sizes)
                ax.set_ylabel(label)
                ax.set_title(title, fontsize=9)
                if key == "lambda_max":
                    log_axis(ax)
        axes[0, 0].legend(title="learning rate", loc="lower left")
        n = len(saved["seeds"])
        fig.suptitle(f"Batch-size sweep on MNIST-1D (mean ± std, {plural(n, 'seed')}; hollow: loss target not "
                     f"reached in {plural(s['max_epochs'], 'epoch')}; missing: diverged)", fontsize=10)
        return save_and_close(fig, figures / "batch_sweep")


if __name__ == "__main__":
    sys.exit(script_main("batch-sweep"))
