"""Does sharpness predict generalization across a sweep? (Jiang et al., ICLR 2020, "Fantastic Generalization
Measures and Where to Find Them"; Andriushchenko et al., ICML 2023, "A Modern Look at the Relationship between
Sharpness and Generalization").

Protocol. An mlp with two hidden ReLU layers is trained on MNIST-1D (4000 training samples) with SGD (momentum
0.9) over a grid of batch sizes (1/200 to 1/10 of the training set) × learning rates × seeds; every run of a seed
starts from the same initial weights. Jiang et al.'s stopping rule: each model trains until its training
cross-entropy falls below one common target (``target_loss``), capped at ``max_epochs``; models that hit the cap
first are listed (and kept in the ranking: their gap is still a gap, but they are not at the common loss).
Then :func:`sharpness.correlate.correlate` measures every model (λ_max, trace, ε-sharpness by our ascent and by
Keskar's protocol (paper mode: L-BFGS-B, 10 iterations from θ), adaptive worst- and average-case sharpness,
PAC-Bayes flatness 1/σ'², ‖θ‖, ‖θ − θ₀‖, the Fisher-Rao norm, optimizer steps) and ranks each by Kendall's τ with the generalization gap, Jiang's granulated Ψ per axis and a bootstrap interval.

Why the target and the grid: Jiang et al. stop at cross-entropy 0.01 on CIFAR-10/SVHN; the full budget uses the
same 0.01, which an MLP 256-256 reaches on MNIST-1D's 4000 training samples (measured on this machine: B = 20,
lr 0.01 in 34 epochs; B = 400, lr 0.05 in 127 epochs). The learning rates are bounded on both sides by the batch
range: at B = 20, lr 0.05 (momentum 0.9) never settles (training loss 0.3–0.8 after 40 epochs), and at B = 400,
lr 0.01 is still at 0.38 after 200 epochs; so lr ∈ {0.005, 0.01, 0.02} with a cap of 400 epochs, and the
large-batch, small-lr corner is expected to miss the target — those models are listed and ranked twice: with
all models and with only those at the target. The quick budget stops at 0.1 (a smaller net, 60 epochs): it proves
the pipeline, not the science.

Run:  sharpness reproduce generalization-measures [--quick]     or     python experiments/generalization_measures.py
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

from sharpness import load_dataset
from sharpness.correlate import GAPS, MEASURES, bootstrap_tau, correlate, granulated_psi, kendall_tau
from sharpness.correlate.figure import draw
from sharpness.correlate.output import measure_cells
from sharpness.reproduce import markdown_table, plural, script_main, train_config
from sharpness.sweep import sweep

#: The two papers' columns of the τ/Ψ table: per measure, what could be read in a stored copy of the paper, and
#: the closest measure of the paper; the footnote marks refer to :data:`PAPER_NOTES`, printed under the table.
#: No number is quoted: the stored copies searched (2026-12-08) hold only each page's opening — title, abstract,
#: the start of the introduction — and none of the results tables (note [1]). A number goes in a cell only with its
#: page, table and column in a note.
PAPER = {
    "jiang": {
        "column": "Jiang et al. 2020",
        "cells": {
            "lambda_max": "— (no Hessian measure named [7])",
            "trace": "— (no Hessian measure named [7])",
            "epsilon_sharpness": "not read [1] (≈ sharpness 1/α′², [2])",
            "adaptive_worst": "not read [1] (≈ \"mag\" measures [3])",
            "adaptive_average": "not read [1] (≈ \"mag\" measures [3])",
            "pac_bayes": "not read [1] (pacbayes.flatness [4])",
            "param_norm": "not read [1] (param_norm [5])",
            "dist_from_init": "not read [1] (fro_dist [5])",
        },
        "default": "not read [1]",
    },
    "andriushchenko": {
        "column": "Andriushchenko et al. 2023",
        "cells": {
            "adaptive_worst": "\"does not correlate well\" [6]; τ not read [1]",
            "adaptive_average": "\"does not correlate well\" [6]; τ not read [1]",
        },
        "default": "— (not named in the abstract [6])",
    },
}
PAPER_NOTES = [
    "[1] No number of either paper is quoted. Searched: the stored copies of Jiang et al. "
    "(https://www.arxiv-vanity.com/papers/1912.02178v1/, https://documents.pub/document/fantastic-generalization-"
    "measures-and-where-to-find-them.html) and of Andriushchenko et al. (https://ar5iv.labs.arxiv.org/html/2302.07011, "
    "https://rag-chunk-visualizer-proxy.modelpark.app/papers/2302.07011.md); every search returned only a page's "
    "opening (title, abstract, start of the introduction), never the results tables, so no τ, per-axis τ or Ψ "
    "could be read with its column.",
    "[2] Ours is Keskar's ε-sharpness: the relative rise (%) of the training loss maximized over the box "
    "|δᵢ| ≤ ε(|θᵢ| + 1), ε = 1e-3 — a rise at a fixed radius. Jiang's sharpness measures, as issue #30 defines them "
    "(their appendix is not in the stored copies), go the other way: the largest radius α′ at which the worst-case "
    "loss rise stays within a fixed bound, reported as 1/α′²; the summary of note [7] names 1/α′.",
    "[3] Adaptive sharpness scales the perturbation of weight i by |θᵢ| (ours: ρ = 0.1, worst case over the ℓ₂ ball, "
    "average over its sphere). Jiang's magnitude-aware (\"mag\") measures also scale the noise of weight i with "
    "|θᵢ| (plus 1e-3, in the implementation of note [4]), at a searched noise level instead of a fixed ρ.",
    "[4] pacbayes.flatness = 1/σ′², σ′ the Gaussian weight-noise level at which the mean training accuracy drops by "
    "0.1 (bisection, tolerance 0.01): CT.PACBAYES_FLATNESS, marked \"# 53\", in a public implementation of "
    "Jiang's measures (github.com/nitarshan/robust-generalization-measures, data/generation/measures.py). Ours is "
    "also 1/σ′², but σ′ bounds the rise of the mean training *loss* by 0.1 (over fixed draws).",
    "[5] In that implementation param_norm = Σ‖W‖²_F and fro_dist = Σ‖W − W₀‖²_F over the weight matrices, biases "
    "excluded (marked 42 and 40); ours are ‖θ‖₂ and ‖θ − θ₀‖₂ over all parameters: the same ranking when the "
    "biases' share is negligible.",
    "[6] Andriushchenko et al.'s abstract (https://ar5iv.labs.arxiv.org/html/2302.07011): several definitions of "
    "adaptive sharpness, on ImageNet and CIFAR-10 trained from scratch, CLIP fine-tuned on ImageNet and BERT "
    "fine-tuned on MNLI, mostly transformers; sharpness \"does not correlate well\" with generalization but with "
    "training parameters such as the learning rate, and in several settings correlates negatively with "
    "out-of-distribution error. The abstract does not separate worst- from average-case; the other measures of "
    "this table are not among those it names.",
    "[7] Jiang et al.'s abstract (https://www.arxiv-vanity.com/papers/1912.02178v1/): more than 40 complexity "
    "measures, more than 10,000 convolutional networks over systematically varied hyperparameters; it names "
    "neither the best nor the failing measures. A third-party summary (https://www.sciencestack.ai/paper/1912.02178, "
    "its TL;DR, not the paper) reports 2187 CIFAR-10 models plus SVHN over seven hyperparameters, PAC-Bayes and "
    "magnitude-aware perturbation measures (1/α′) as reliable predictors, and many norm and spectral measures "
    "failing or correlating negatively — not checked against the paper's tables. None of these sources names a "
    "Hessian measure, a Fisher-Rao norm or a step count among Jiang's measures.",
]


def paper_cell(paper: str, measure: str) -> str:
    """The cell of ``paper``'s column (``"jiang"`` or ``"andriushchenko"``) for ``measure``."""
    entry = PAPER[paper]
    return entry["cells"].get(measure, entry["default"])


def settings(budget: str) -> dict:
    s = {
        "data": "mnist1d", "model": "mlp", "hidden": [256, 256], "optimizer": "sgd", "momentum": 0.9,
        "batch_sizes": [20, 40, 100, 400], "lrs": [0.005, 0.01, 0.02], "target_loss": 0.01, "max_epochs": 400,
        "correlate": {"samples": 1000, "bootstrap": 1000, "pac_bayes_draws": 16, "rho": 0.1, "epsilon": 1e-3,
                      "epsilon_paper": True},
    }
    if budget == "full":
        s.update(seeds=2)
    elif budget == "quick":
        s.update(seeds=2, hidden=[64, 64], batch_sizes=[20, 100, 400], lrs=[0.01, 0.02], target_loss=0.1,
                 max_epochs=60, correlate={**s["correlate"], "samples": 300, "bootstrap": 200, "pac_bayes_draws": 8})
    else:
        s.update(seeds=1, hidden=[16, 16], batch_sizes=[200, 400], lrs=[0.05, 0.1], target_loss=1.9, max_epochs=3,
                 correlate={**s["correlate"], "samples": 100, "bootstrap": 50, "pac_bayes_draws": 4})
    return s


def compute(run) -> dict:
    s = run.settings
    ds = load_dataset(s["data"])
    base = train_config(s, lr=s["lrs"][0], until_train_loss=s["target_loss"], max_epochs=s["max_epochs"])
    sweep_dir = run.out / "sweep"

    def train_all() -> list[dict]:
        return [{k: v for k, v in row.items() if k != "checkpoint"} for row in
                sweep(dataclasses.replace(base, device=run.device),
                      batch_sizes=s["batch_sizes"], seeds=run.seeds, lrs=s["lrs"], out_dir=sweep_dir,
                      dataset=ds, say=run.say).rows]

    rows = run.unit("sweep", train_all, config={"base": base.to_dict(), "batch_sizes": s["batch_sizes"],
                                                "lrs": s["lrs"], "seeds": run.seeds})

    def rank() -> dict:
        c = s["correlate"]
        result = correlate(sweep_dir, out_dir=run.out / "correlate", epsilon=c["epsilon"],
                           epsilon_paper=c.get("epsilon_paper", False), rho=c["rho"],
                           pac_bayes_draws=c["pac_bayes_draws"], samples=c["samples"], bootstrap=c["bootstrap"],
                           device=run.device, figure=False, progress=run.say)
        return {"models": list(result.models), "excluded": list(result.excluded), "correlation": result.correlation,
                "axes": list(result.axes), "files": result.files}

    ranked = run.unit("correlate", rank, config=s["correlate"])
    missed = [m["run"] for m in ranked["models"] if m.get("reached_train_loss") is False]
    return {"sweep_rows": rows, **ranked, "missed_target": missed}


def _ordered(correlation: dict) -> dict:
    """The measures in :data:`MEASURES` order (summary.json is written with sorted keys)."""
    return {m: correlation[m] for m in MEASURES if m in correlation}


def _f(x, spec: str = "+.2f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def at_target(models: list[dict], measures, axes: list[str], *, resamples: int = 1000, seed: int = 0) -> dict:
    """τ with the loss gap [bootstrap], and Ψ, over only the models that reached the training-loss target
    (Jiang et al.'s comparison at one common loss); ``{}`` when fewer than 3 did."""
    mine = [m for m in models if m.get("reached_train_loss") is True]
    if len(mine) < 3:
        return {}
    out = {}
    for name in measures:
        x, y = [m[name] for m in mine], [m["loss_gap"] for m in mine]
        out[name] = {"tau": kendall_tau(x, y), "n": len(mine),
                     "ci": bootstrap_tau(x, y, resamples=resamples, seed=seed) if resamples else None,
                     "psi": granulated_psi(mine, name, "loss_gap", axes)["psi"] if axes else None}
    return out


def tables(saved: dict) -> str:
    S, s = saved["summary"], saved["settings"]
    axes, corr = S["axes"], _ordered(S["correlation"])
    n = len(S["models"])
    head = (["measure"] + [f"τ {GAPS[g]} [95 % bootstrap]" for g in GAPS]
            + [f"Ψ_{a.replace('_size', '')} (pairs)" for a in axes] + ["Ψ", "τ per seed"]
            + [PAPER[p]["column"] for p in PAPER])
    body = []
    for m, by_gap in corr.items():
        taus, psis = measure_cells(by_gap, axes)
        row = [MEASURES[m], *taus, *(psis if psis is not None else ["—"] * (len(axes) + 1))]
        row.append(" / ".join(_f(v) for v in by_gap["loss_gap"]["per_seed"].values()))
        row += [paper_cell(p, m) for p in PAPER]
        body.append(row)
    skipped = [MEASURES[m] for m in MEASURES if m not in corr]
    missed = S["missed_target"]
    models = [[m["run"], m["batch_size"], f"{m['lr']:g}", m["seed"], m["epochs"], m["steps"],
               _f(m["train_loss"], ".4f") + ("" if m.get("reached_train_loss") is not False else " (missed)"),
               _f(100 * (1 - m["test_error"]), ".1f"), _f(m["loss_gap"], ".3f"), _f(m["error_gap"] * 100, ".1f")]
              for m in S["models"]]
    out = [
        f"Generalization measures across a sweep on MNIST-1D (Jiang et al. 2020 protocol): mlp {s['hidden']}, SGD "
        f"momentum {s['momentum']}, B ∈ {s['batch_sizes']}, lr ∈ {s['lrs']}, {plural(len(saved['seeds']), 'seed')}; "
        f"every model trained until training cross-entropy < {s['target_loss']:g} (cap {plural(s['max_epochs'], 'epoch')}); "
        f"{n} models ranked; measures on {s['correlate']['samples']} training samples; τ = Kendall τ-b with the gap "
        f"(test − train), Ψ = Jiang's granulated τ on the loss gap (mean over the axes of the τ within groups "
        "where only that axis varies).",
        "Papers: Jiang et al. (ICLR 2020, convolutional networks) and Andriushchenko et al. (ICML 2023, mostly "
        "transformers on ImageNet, CIFAR-10, CLIP and BERT); their columns name the paper's closest measure and "
        "what a stored copy of the paper says, with the sources in the notes below the table. No number of theirs "
        "is quoted: none could be read (note [1]). Their data, architectures and scale are not ours.",
        "",
        markdown_table(head, body),
        "",
        "\n\n".join(PAPER_NOTES),
    ]
    if skipped:
        out += ["", f"Not ranked (not computed by this study, or undefined for a model): {', '.join(skipped)}."]
    reached = at_target(S["models"], corr, axes, resamples=s["correlate"]["bootstrap"])
    if reached:
        n_at = next(iter(reached.values()))["n"]
        out += ["", f"Only the {n_at} models at the target (training cross-entropy < {s['target_loss']:g}), loss gap:",
                markdown_table(["measure", "τ [95 % bootstrap]", "Ψ"],
                               [[MEASURES[m], _f(r["tau"]) + (f" [{_f(r['ci']['low'])}, {_f(r['ci']['high'])}]"
                                                            if r["ci"] else ""), _f(r["psi"])]
                                for m, r in reached.items()])]
    else:
        out += ["", "Fewer than 3 models reached the target: no ranking at the common loss."]
    out += ["", f"Models that missed the target (kept in the ranking, not at the common loss): "
                f"{', '.join(missed) if missed else 'none'}."]
    if S["excluded"]:
        out.append("Excluded (no gap to rank): " + ", ".join(f"{e['run']} ({e['reason']})" for e in S["excluded"]) + ".")
    out += ["", "Per model (the values τ is computed from are in correlate/models.csv):",
            markdown_table(["run", "B", "lr", "seed", "epochs", "steps", "train loss", "test acc (%)", "loss gap",
                            "error gap (pt)"], models)]
    return "\n".join(out)


def plot(saved: dict, results: Path, figures: Path) -> list[Path]:
    S = saved["summary"]
    formats = ("png", "pdf")
    stem = figures / "generalization_measures"
    draw(stem, S["models"], _ordered(S["correlation"]), tuple(S["axes"]), formats=formats)
    return [stem.with_suffix(f".{f}") for f in formats]


if __name__ == "__main__":
    sys.exit(script_main("generalization-measures"))
