"""Is the biggest batch the best? The batch-size trade-off: throughput, time to a target loss, generalization
and sharpness, measured on this machine (Keskar et al. 2017; Goyal et al. 2017; Shallue et al. 2019).

Protocol. The mlp of the ``batch-sweep`` study (two hidden ReLU layers of 256) is trained on MNIST-1D with SGD
(momentum 0.9, lr 0.02) from the same initial weights, at every batch size from 1/500 of the training set
(B = 8 of 4 000) to the full batch, doubling (:func:`sharpness.train.throughput.fraction_batch_sizes`), under two
learning-rate rules: the same lr for every batch size, and Goyal's linear scaling lr·B/128 after a linear
warmup of 5 epochs. Every run trains until its training loss falls below 0.2 (checked at each epoch's end,
capped at 300 epochs; a run that hits the cap did not reach the target), 3 seeds. Then, per run:

* **time to target**: the optimizer steps until the first epoch below the target, divided by the measured
  training throughput of that batch size (steps/s of the optimizer steps alone, the fastest of 5 timed runs,
  :func:`sharpness.train.throughput.measure_throughput`); the seconds training takes on this machine without its
  evaluations (:func:`sharpness.train.throughput.time_to_target`);
* **generalization** at that matched training loss: test accuracy, and the gap to the training accuracy;
* **sharpness** there: Hessian λ_max (Lanczos) and ε-sharpness (ε = 1e-3, full space, default maximizer) on
  1 000 training samples.

The sweet spot (marked on the figure) is, for each rule, the batch size with the shortest time to target
among those that reached it in every seed with a mean test accuracy within 1 percentage point of the best
batch size's.

Run:  sharpness reproduce batch-tradeoff [--quick] [--seeds N]     or     python experiments/batch_tradeoff.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sharpness import load_checkpoint, load_dataset  # noqa: E402
from sharpness.plots import use_style  # noqa: E402
from sharpness.reproduce import (  # noqa: E402
    RAN_OUT_NOTE,
    batch_size_axis, log_axis, markdown_table, mean_std, plural, pm, ran_out_mark, save_and_close, script_main,
    train_config,
)
from sharpness.train.throughput import fraction_batch_sizes, measure_throughput, time_to_target  # noqa: E402

RULES = {"none": "same lr", "linear": "linear scaling + warmup"}
COLORS = {"none": "C0", "linear": "C1"}
ACCURACY_TOLERANCE = 0.01  # the sweet spot may give up at most 1 percentage point of test accuracy


def settings(budget: str) -> dict:
    """Every number of the study. ``full`` is what experiments/README.md reports."""
    s = {
        "data": "mnist1d", "model": "mlp", "hidden": [256, 256], "optimizer": "sgd", "momentum": 0.9, "lr": 0.02,
        "base_batch_size": 128, "warmup_epochs": 5.0, "target_loss": 0.2, "max_epochs": 300,
        "smallest_fraction": 1 / 500, "rules": list(RULES), "throughput_steps": 40, "throughput_repeats": 5,
        "analysis": {"samples": 1000, "top_k": 1, "bottom_k": 0, "tol": 1e-3, "trace": False, "epsilon": [1e-3]},
    }
    if budget == "full":
        s.update(seeds=3)
    elif budget == "quick":  # one seed, every other batch size: ≤ 2 min on two cores
        s.update(seeds=1, smallest_fraction=1 / 250, factor=4, max_epochs=150, throughput_repeats=1)
    else:  # smoke: only proves the pipeline runs
        s.update(seeds=1, smallest_fraction=1 / 8, factor=4, hidden=[16, 16], target_loss=2.25, max_epochs=3,
                 warmup_epochs=1.0, throughput_steps=3, throughput_repeats=1,
                 analysis={**s["analysis"], "samples": 200, "epsilon_max_iter": 2})
    return s


def compute(run) -> dict:
    s = run.settings
    ds = load_dataset(s["data"])
    n_train = int(ds.x_train.shape[0])
    sizes = fraction_batch_sizes(n_train, s["smallest_fraction"], factor=s.get("factor", 2))
    throughput = {}
    for B in sizes:  # the speed of a batch size does not depend on the seed or the lr rule: measured once
        cfg = train_config(s, batch_size=B, seed=0, device=run.device, steps=s["throughput_steps"])
        throughput[str(B)] = run.unit(f"throughput-bs{B}", lambda cfg=cfg: measure_throughput(
            cfg, dataset=ds, steps=s["throughput_steps"], repeats=s["throughput_repeats"]).to_dict(),
            config=cfg.to_dict())
    rows = []
    for rule in s["rules"]:
        base = train_config(s, lr_scaling=rule, base_batch_size=s["base_batch_size"],
                            warmup_epochs=s["warmup_epochs"] if rule == "linear" else 0.0,
                            until_train_loss=s["target_loss"], max_epochs=s["max_epochs"])
        for row in run.sweep(f"sweep-{rule}", base, batch_sizes=sizes, dataset=ds, analyze_options=s["analysis"]):
            history = load_checkpoint(row["checkpoint"]).history
            speed = throughput[str(row["batch_size"])]
            reach = time_to_target(history, s["target_loss"], speed["steps_per_second"])
            rows.append({**row, "rule": rule, "reached": reach.reached and row["status"] == "ok",
                         "target_epochs": reach.epochs, "target_steps": reach.steps, "target_seconds": reach.seconds,
                         "steps_per_second": speed["steps_per_second"], "samples_per_second": speed["samples_per_second"]})
    return {"batch_sizes": sizes, "n_train": n_train, "throughput": throughput, "rows": rows,
            "sweet_spot": {rule: sweet_spot(rows, rule, sizes) for rule in s["rules"]}}


def sweet_spot(rows: list[dict], rule: str, sizes: list[int]) -> int | None:
    """The batch size with the least mean time to target among those that reached the target in every seed
    and whose mean test accuracy is within :data:`ACCURACY_TOLERANCE` of the best such batch size's."""
    ok = {}
    for B in sizes:
        rs = [r for r in rows if r["rule"] == rule and r["batch_size"] == B]
        if rs and all(r["reached"] for r in rs):
            ok[B] = (mean_std(r["target_seconds"] for r in rs)[0], mean_std(r["test_acc"] for r in rs)[0])
    if not ok:
        return None
    best_acc = max(acc for _, acc in ok.values())
    good = [B for B, (_, acc) in ok.items() if acc >= best_acc - ACCURACY_TOLERANCE]
    return min(good, key=lambda B: ok[B][0])


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------


def _rows(S: dict, rule: str, B: int) -> list[dict]:
    return [r for r in S["rows"] if r["rule"] == rule and r["batch_size"] == B]


def _cell(rs: list[dict], key: str, digits: int, scale: float = 1.0) -> str:
    ok = [r for r in rs if r["status"] == "ok"]
    if not ok:
        return "diverged" if rs else "—"
    return pm([r[key] for r in ok], digits, scale=scale) + ran_out_mark(ok, key) + ("*" if not all(r["reached"] for r in rs) else "")


def tables(saved: dict) -> str:
    S, s = saved["summary"], saved["settings"]
    tp = S["throughput"]
    out = [f"Batch-size trade-off on MNIST-1D ({S['n_train']} training samples): mlp {s['hidden']}, SGD momentum "
           f"{s['momentum']}, lr {s['lr']:g} (linear rule: lr·B/{s['base_batch_size']} after {s['warmup_epochs']:g} warmup "
           f"epochs), trained until train loss < {s['target_loss']:g} (* = not reached in {s['max_epochs']} epochs in "
           f"at least one seed); mean ± std over {len(saved['seeds'])} seed(s). Time to target = optimizer steps ÷ "
           f"measured steps/s on this machine ({saved['provenance']['device']}, {saved['provenance']['threads']} "
           "thread(s)), evaluations excluded. λ_max and ε-sharpness (ε=1e-3, %) on "
           f"{s['analysis']['samples']} training samples.",
           "Papers: larger batches compute faster per sample (Goyal et al. 2017; Shallue et al. 2019) but end in "
           "sharper minima that generalize worse (Keskar et al. 2017).", RAN_OUT_NOTE, "",
           f"Throughput (the fastest of {s['throughput_repeats']} timed runs of {s['throughput_steps']} optimizer steps)",
           markdown_table(["B", "steps/s", "samples/s"],
                          [[B, f"{tp[str(B)]['steps_per_second']:.1f}", f"{tp[str(B)]['samples_per_second']:.0f}"]
                           for B in S["batch_sizes"]])]
    for rule in s["rules"]:
        spot = S["sweet_spot"].get(rule)
        body = []
        for B in S["batch_sizes"]:
            rs = _rows(S, rule, B)
            body.append([f"{B}{' ← sweet spot' if B == spot else ''}", f"{rs[0]['peak_lr']:.4g}" if rs and rs[0].get("peak_lr") else "—",
                         _cell(rs, "target_epochs", 0), _cell(rs, "target_steps", 0), _cell(rs, "target_seconds", 1),
                         _cell(rs, "train_acc", 1, 100.0), _cell(rs, "test_acc", 1, 100.0),
                         _cell(rs, "lambda_max", 1), _cell(rs, "eps_full_0.001", 2)])
        out += ["", f"Rule: {RULES[rule]} (sweet spot: fastest to the target within "
                    f"{100 * ACCURACY_TOLERANCE:g} pp of the best test accuracy: B = {spot})",
                markdown_table(["B", "lr", "epochs", "steps", "time to target (s)", "train acc (%)", "test acc (%)",
                                "λ_max", "ε-sharp. (%)"], body)]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------
# Figure
# ----------------------------------------------------------------------------------------------------------


def _series(S: dict, rule: str, key: str, scale: float = 1.0, reached_only: bool = False):
    xs, ms, es, hollow = [], [], [], []
    for B in S["batch_sizes"]:
        if reached_only and not all(r["reached"] for r in _rows(S, rule, B)):
            continue  # not at the target loss: no comparison "at the target" to draw
        rs = [r for r in _rows(S, rule, B) if r["status"] == "ok" and r.get(key) is not None]
        mean, std, n = mean_std(r[key] for r in rs)
        if n:
            xs.append(B), ms.append(mean * scale), es.append(std * scale)
            hollow.append(not all(r["reached"] for r in _rows(S, rule, B)))
    return xs, ms, es, hollow


def _draw(ax, S: dict, rule: str, key: str, scale: float = 1.0, marker: str = "o", label: str | None = None,
          color: str | None = None, ls: str = "-", reached_only: bool = False):
    xs, ms, es, hollow = _series(S, rule, key, scale, reached_only)
    color = color or COLORS[rule]
    ax.errorbar(xs, ms, yerr=es, color=color, fmt=ls, capsize=2, label=label)
    for x, m, h in zip(xs, ms, hollow):
        ax.plot([x], [m], marker=marker, color=color, mfc="white" if h else color, ms=5, ls="none")
    return xs, ms


def plot(saved: dict, results: Path, figures: Path) -> list[Path]:
    S, s = saved["summary"], saved["settings"]
    sizes = S["batch_sizes"]
    with use_style():
        fig, axes = plt.subplots(1, 4, figsize=(16.0, 4.1), gridspec_kw={"width_ratios": [0.8, 1, 1, 1]})
        ax_p, ax_t, ax_a, ax_s = axes
        tp = [S["throughput"][str(B)]["samples_per_second"] for B in sizes]
        ax_p.plot(sizes, tp, "-o", color="0.35", ms=4)
        for rule in s["rules"]:
            _draw(ax_t, S, rule, "target_seconds", label=RULES[rule])
            # Keskar's generalization gap: the test accuracy given up against the best batch size, shaded
            xs, test = _draw(ax_a, S, rule, "test_acc", 100.0, label=f"test, {RULES[rule]}", reached_only=True)
            if test:
                best = max(test)
                ax_a.axhline(best, color=COLORS[rule], lw=0.8, ls=":")
                ax_a.fill_between(xs, test, [best] * len(test), color=COLORS[rule], alpha=0.15, lw=0)
            _draw(ax_s, S, rule, "lambda_max", marker="o", label=fr"$\lambda_{{\max}}$, {RULES[rule]}",
                  reached_only=True)
            _draw(ax_s, S, rule, "eps_full_0.001", marker="^", ls="--", label=f"ε-sharpness (%), {RULES[rule]}",
                  reached_only=True)
            spot = S["sweet_spot"].get(rule)
            if spot is not None:
                for ax in axes[1:]:
                    ax.axvline(spot, color=COLORS[rule], lw=7, alpha=0.15, zorder=0)
                ax_t.annotate(f"sweet spot B={spot}", xy=(spot, 1), xycoords=("data", "axes fraction"),
                              xytext=(0, -4 - 11 * s["rules"].index(rule)), textcoords="offset points",
                              ha="right" if spot == sizes[-1] else "left" if spot == sizes[0] else "center", va="top", color=COLORS[rule], fontsize=8)
        for ax in axes:
            batch_size_axis(ax, sizes)
            ax.tick_params(axis="x", labelrotation=45)
        log_axis(ax_p)
        ax_p.set_ylabel("samples / s")
        ax_p.set_title(f"measured throughput ({saved['provenance']['device']})", fontsize=9)
        log_axis(ax_t)
        ax_t.set_ylabel(f"seconds to train loss < {s['target_loss']:g}")
        ax_t.set_title("time to target on this machine", fontsize=9)
        ax_a.set_ylabel("test accuracy (%)")
        ax_a.set_title("test accuracy at the target loss; shaded: the\ngeneralization gap to the best batch (dotted)",
                       fontsize=9)
        unreached = {rule: [str(B) for B in sizes if not all(r["reached"] for r in _rows(S, rule, B))]
                     for rule in s["rules"]}
        missing = "; ".join(f"{RULES[rule]}: B = {', '.join(bs)}" for rule, bs in unreached.items() if bs)
        if missing:
            ax_a.text(0.02, 0.02, f"not at the target (left out here):\n{missing}", transform=ax_a.transAxes,
                      fontsize=7, va="bottom", color="0.3")
        log_axis(ax_s)
        ax_s.set_ylabel("sharpness at the target loss")
        ax_s.set_title(r"$\lambda_{\max}$ (solid) and ε-sharpness % at ε=1e-3 (dashed)", fontsize=9)
        ax_t.legend(loc="lower left", fontsize=7)
        ax_a.legend(fontsize=7, loc="upper right")
        n = len(saved["seeds"])
        fig.suptitle(f"Is the biggest batch the best? MNIST-1D, mean ± std over {plural(n, 'seed')}; "
                     f"hollow: target not reached in {s['max_epochs']} epochs; band: sweet spot", fontsize=10)
        return save_and_close(fig, figures / "batch_tradeoff")


if __name__ == "__main__":
    sys.exit(script_main("batch-tradeoff"))
