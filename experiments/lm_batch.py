"""Small vs large batch for a byte-level transformer: Keskar et al. (ICLR 2017)'s protocol on the zoo's tiny GPT.

Question. Does Keskar et al.'s finding — the large batch generalizes worse and ends in a sharper minimum — hold
for a language model, once the batch size is the *only* difference between the two runs? (The README's
``gpt`` pair trained SB at Adam lr 0.003 and LB at 0.01, which confounds batch size with step size.)

Protocol (full budget; CPU scale, one thread):

* data: the ``text`` dataset, next-byte windows of 32 bytes of Python's bundled ``pydoc_data.topics``, first
  32 768 bytes: 1 023 windows, the last 10 % (103) held out as the test split, 920 for training;
* model: ``gpt`` with d_model 64, 2 layers, 4 heads (135 k parameters);
* SB and LB are fractions of the training windows, as Keskar's are of the training set (:func:`batch_sizes`):
  SB = 1/32 (B = 29 windows, 928 tokens) and LB = 1/4 (B = 230). Keskar's 1/200 would give B = 5 here, a
  batch of noise on 920 windows, so SB is the smallest fraction that keeps B_SB ≥ 16 with room to spare, and
  LB = 1/4 keeps an 8× ratio (Keskar's is 20×) while LB still takes 4 steps per epoch;
* both trained with Adam at the **same** learning rate (0.003, the README's SB rate) from the same initial
  weights and the same data order (same seed), for a fixed number of epochs (60): the batch size is the only
  difference, so LB takes 8× fewer steps, as in the paper. (At 30 epochs, 120 LB steps, LB was still on the
  byte-frequency plateau in one of three seeds, train loss 2.75, and the whole study took 5.5 min; at 60
  epochs every seed's LB ends below 2.3 and the study takes ≈ 10 min);
* matched training loss (as the ``keskar`` study): per seed the target is the larger final training loss of
  SB and LB; the run that ended below it is retrained bit-identically with ``until_train_loss`` and stops at
  the first epoch below the target;
* measured on a seeded subset of the training windows (128 windows, 4 096 tokens): test loss and token
  accuracy (whole test split), Hessian λ_max (Lanczos, tol 1e-3) and Keskar's ε-sharpness (ε = 1e-3, full
  space, our default projected sign ascent). λ_min, the trace and the paper-mode maximizer are left out to fit
  the 15-minute budget;
* Fig. 3: loss and token accuracy along (1 − α)·θ_SB + α·θ_LB, α ∈ [−1, 2], train and test, first seed.

The study checks its own answer (:func:`warnings`): a contrast within one standard deviation, or pointing
the other way on a single seed, is named on stderr.

Run:  sharpness reproduce lm-batch [--quick] [--seeds N]     or     python experiments/lm_batch.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sharpness import load_dataset  # noqa: E402
from sharpness.errors import InputError  # noqa: E402
from sharpness.landscape import LineResult  # noqa: E402
from sharpness.plots import parametric_plot, use_style  # noqa: E402
from sharpness.reproduce import (  # noqa: E402
    log_axis, markdown_table, mean_std, plural, pm, ran_out_mark, report_numbers, save_and_close, script_main,
    train_config, RAN_OUT_NOTE,
)
from sharpness.train import resolve_batch_size  # noqa: E402

REGIMES = ("fixed", "matched")
ROLES = ("SB", "LB")

#: What Keskar et al. (2017) found for SB vs LB, the claim our numbers are set against (they report no language
#: model); the numbers are their network F1 on MNIST, Tables 2-3, as in the ``keskar`` study.
PAPER_CLAIM = ("LB generalizes worse and sits in a sharper minimum; F1 on MNIST: test accuracy SB 98.03 ± 0.07 % vs "
               "LB 97.81 ± 0.07 %, ε-sharpness (ε=1e-3, full space) SB 1.23 ± 0.83 % vs LB 205.14 ± 69.52 %")


def batch_sizes(n_train: int, sb: str, lb: str, *, min_sb: int = 1) -> dict[str, int]:
    """SB and LB in windows from their fractions of the ``n_train`` training windows (``"3.125%"`` of 920 → 29).

    Raises:
        InputError: SB comes out below ``min_sb`` windows, or not smaller than LB.
    """
    sizes = {"SB": resolve_batch_size(sb, n_train), "LB": resolve_batch_size(lb, n_train)}
    if sizes["SB"] < min_sb:
        raise InputError(f"expected SB = {sb} of {n_train} training windows to be at least {min_sb}, got {sizes['SB']}")
    if sizes["SB"] >= sizes["LB"]:
        raise InputError(f"expected SB smaller than LB, got SB = {sizes['SB']} and LB = {sizes['LB']} "
                         f"({sb} and {lb} of {n_train} windows)")
    return sizes


def settings(budget: str) -> dict:
    """Every number of the study. ``full`` is what experiments/README.md reports."""
    s = {"data": "text", "data_kwargs": {"context": 32, "max_bytes": 32768}, "model": "gpt",
         "model_kwargs": {"d_model": 64, "layers": 2, "heads": 4}, "sb": "3.125%", "lb": "25%", "min_sb": 16,
         "optimizer": "adam", "lr": 3e-3, "epochs": 60, "regimes": list(REGIMES), "seeds": 3,
         "analysis": {"samples": 128, "tol": 1e-3, "top_k": 1, "bottom_k": 0, "trace": False, "epsilon": [1e-3],
                      "subspace_dim": None, "epsilon_method": "ascent"},
         "interp_range": [-1.0, 2.0], "interp_points": 25}
    if budget == "quick":  # one seed, fixed epochs only, a lighter analysis: ≤ 2 min on two cores
        s.update(seeds=1, epochs=10, regimes=["fixed"], interp_points=13, analysis={**s["analysis"], "samples": 64})
    elif budget == "smoke":  # only proves the pipeline runs
        s.update(seeds=1, epochs=2, data_kwargs={"context": 16, "max_bytes": 2048}, sb="12.5%", lb="50%", min_sb=1,
                 model_kwargs={"d_model": 8, "layers": 1, "heads": 2}, interp_points=5,
                 analysis={**s["analysis"], "samples": 16, "epsilon_max_iter": 2})
    return s


def compute(run) -> dict:
    s = run.settings
    ds = load_dataset(s["data"], **s["data_kwargs"])
    n_train, n_test = int(ds.x_train.shape[0]), int(ds.x_test.shape[0])
    sizes = batch_sizes(n_train, s["sb"], s["lb"], min_sb=s["min_sb"])
    analysis = {k: (tuple(v) if isinstance(v, list) else v) for k, v in s["analysis"].items()}
    rows, targets, interps = [], {}, {}
    for seed in run.seeds:
        fixed = {role: run.train(f"fixed-{role}-bs{B}-seed{seed}", train_config(s, batch_size=B, seed=seed,
                                                                                epochs=s["epochs"]), dataset=ds)
                 for role, B in sizes.items()}
        by_regime = {"fixed": fixed}
        if "matched" in s["regimes"]:
            target = targets[str(seed)] = max(t.metrics["train_loss"] for t in fixed.values())
            by_regime["matched"] = {
                role: fixed[role] if fixed[role].metrics["train_loss"] >= target else  # it set the target
                run.train(f"matched-{role}-bs{B}-seed{seed}", train_config(
                    s, batch_size=B, seed=seed, until_train_loss=target, max_epochs=s["epochs"]), dataset=ds)
                for role, B in sizes.items()}
        for regime, by_role in by_regime.items():
            for role, trained in by_role.items():
                key = Path(trained.checkpoint).stem  # a reused run shares its analysis
                report = run.analyze(f"analysis-{key}", trained.model, ds.x_train, ds.y_train, data_spec=ds.spec,
                                     seed=seed, split="train", **analysis)
                m = trained.metrics
                rows.append({"regime": regime, "role": role, "batch_size": sizes[role], "seed": seed, "run": key,
                             "epochs": m["epochs"], "steps": m["steps"], "train_loss": m["train_loss"],
                             "train_acc": m["train_acc"], "test_loss": m["test_loss"], "test_acc": m["test_acc"],
                             "dist_from_init": m["dist_from_init"], **report_numbers(report)})
        if seed == run.seeds[0]:  # Fig. 3 for the first seed, as the paper draws one pair
            for regime, by_role in by_regime.items():
                key = f"interp-{regime}-seed{seed}"
                run.interpolation(key, by_role["SB"], by_role["LB"], ds, seed=seed,
                                  alphas=(*s["interp_range"], s["interp_points"]))
                interps[regime] = f"{key}.npz"
    n_params = sum(p.numel() for p in fixed["SB"].model.parameters())
    return {"n_train": n_train, "n_test": n_test, "n_params": n_params, "batch_sizes": sizes, "seeds": run.seeds,
            "targets": targets, "rows": rows, "interpolations": interps}


# ----------------------------------------------------------------------------------------------------------
# The study's own check of its answer
# ----------------------------------------------------------------------------------------------------------

#: The contrasts the study claims, with the direction Keskar et al. found (SB minus LB).
CONTRASTS = (("test_loss", "test loss", -1), ("test_acc", "test token accuracy", +1),
             ("eps_full_0.001", "ε-sharpness (ε=1e-3)", -1), ("lambda_max", "λ_max", -1))


def _select(rows: list[dict], regime: str, role: str) -> list[dict]:
    return [r for r in rows if r["regime"] == regime and r["role"] == role]


def warnings(saved: dict) -> list[str]:
    """One line per SB-vs-LB contrast in either regime that does not stand out of the noise: the means differ by
    at most one standard deviation (the larger of SB's and LB's), or, on a single seed, the difference points
    the other way than Keskar et al. found. Empty when every contrast is clear."""
    rows = saved["summary"]["rows"]
    out = []
    for regime in REGIMES:
        for key, label, sign in CONTRASTS:
            (m_sb, s_sb, n_sb), (m_lb, s_lb, n_lb) = (mean_std(r.get(key) for r in _select(rows, regime, role))
                                                      for role in ROLES)
            if not n_sb or not n_lb:
                continue
            n, diff = min(n_sb, n_lb), m_sb - m_lb
            if n >= 2 and abs(diff) <= max(s_sb, s_lb):
                out.append(f"{regime}: the SB-vs-LB contrast in {label} is within one standard deviation "
                           f"(SB {m_sb:.4g} ± {s_sb:.2g}, LB {m_lb:.4g} ± {s_lb:.2g}, {n} seeds)")
            elif n < 2 and sign * diff <= 0:
                out.append(f"{regime}: on one seed, SB's {label} ({m_sb:.4g}) is not on the side Keskar et al. "
                           f"found relative to LB's ({m_lb:.4g})")
    return out


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------


def _regime_title(S: dict, s: dict, regime: str, seed: int | None = None) -> str:
    """``"60 epochs"`` or ``"matched loss …"``: the targets' mean ± std over seeds, or one ``seed``'s target."""
    if regime == "fixed":
        return plural(s["epochs"], "epoch")
    targets = list(S["targets"].values()) if seed is None else S["targets"][str(seed)]
    return f"matched loss {pm(targets, 3)}"


def tables(saved: dict) -> str:
    S, s = saved["summary"], saved["settings"]
    B, a = S["batch_sizes"], s["analysis"]
    e0 = f"eps_full_{a['epsilon'][0]:g}"
    kw, dk = s["model_kwargs"], s["data_kwargs"]
    headline, detail = [], []
    for regime in s["regimes"]:
        for role in ROLES:
            rs = _select(S["rows"], regime, role)
            if not rs:
                continue
            get = lambda k: [r[k] for r in rs]  # noqa: E731
            label = f"{role} B={B[role]}, {_regime_title(S, s, regime)}"
            headline.append([label, pm(get("test_loss"), 3), pm(get("test_acc"), 1, scale=100),
                             pm(get("lambda_max"), 1), pm(get(e0), 2) + ran_out_mark(rs, e0)])
            detail.append([label, pm(get("epochs"), 1), pm(get("steps"), 0), pm(get("train_loss"), 3),
                           pm(get("train_acc"), 1, scale=100), pm(get("test_loss"), 3),
                           pm(get("dist_from_init"), 1)])
    spread = "mean ± std over " + plural(len(S["seeds"]), "seed") if len(S["seeds"]) > 1 else "one seed"
    out = [f"LM small vs large batch (Keskar et al. 2017 protocol on a byte-level GPT): gpt d_model {kw['d_model']}, "
           f"{plural(kw['layers'], 'layer')}, {kw['heads']} heads ({S['n_params']} parameters) on {S['n_train']} "
           f"training / {S['n_test']} test windows of {dk['context']} bytes; SB = {s['sb']} (B={B['SB']}) and "
           f"LB = {s['lb']} (B={B['LB']}) of the training windows; same initial weights, data order and Adam lr "
           f"{s['lr']:g} for both; {spread}.",
           f"Paper (no language model): {PAPER_CLAIM}.",
           "",
           f"Headline: SB vs LB (test split; λ_max and ε-sharpness in % at ε={a['epsilon'][0]:g}, full space, on "
           f"{a['samples']} training windows)",
           markdown_table(["run", "test loss", "test token acc (%)", "λ_max", "ε-sharpness (%)"], headline),
           "",
           "Training: epochs, optimizer steps, final train loss and token accuracy, test loss, distance from the "
           "initial weights",
           markdown_table(["run", "epochs", "steps", "train loss", "train acc (%)", "test loss", "‖θ−θ₀‖"], detail)]
    if any(r.get(f"{e0}_ran_out") for r in S["rows"]):
        out.append(RAN_OUT_NOTE)
    out += [f"WARNING: {w}" for w in warnings(saved)]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------
# Figure
# ----------------------------------------------------------------------------------------------------------


def plot(saved: dict, results: Path, figures: Path) -> list[Path]:
    """One figure: SB vs LB per seed (thin lines) and mean ± std for test loss, test token accuracy, λ_max and
    ε-sharpness (top row), and the SB→LB interpolation of the first seed in each regime (bottom row)."""
    S, s = saved["summary"], saved["settings"]
    B, e = S["batch_sizes"], s["analysis"]["epsilon"][0]
    panels = [("test_loss", "test loss (nats/byte)", 1.0, False), ("test_acc", "test token accuracy (%)", 100.0, False),
              ("lambda_max", r"Hessian $\lambda_{\max}$", 1.0, True), (f"eps_full_{e:g}", f"ε-sharpness (%), ε={e:g}",
                                                                       1.0, True)]
    regimes = [r for r in s["regimes"] if r in S["interpolations"]]
    markers = {"fixed": ("o", "-", "C0"), "matched": ("s", "--", "C3")}
    with use_style():
        bottom = [r for r in regimes for _ in range(2)] if len(regimes) > 1 else [regimes[0]] * 4
        fig, axd = plt.subplot_mosaic([[key for key, *_ in panels], bottom], figsize=(13.0, 7.0),
                                      height_ratios=[1.0, 1.2])
        for j, (key, label, scale, log) in enumerate(panels):
            ax = axd[key]
            for k, regime in enumerate(s["regimes"]):
                marker, ls, color = markers[regime]
                xs = [0.1 * k, 1 + 0.1 * k]
                for seed in S["seeds"]:
                    ys = [next((r.get(key) for r in _select(S["rows"], regime, role) if r["seed"] == seed), None)
                          for role in ROLES]
                    if None not in ys:
                        ax.plot(xs, [y * scale for y in ys], ls, color=color, alpha=0.35, lw=0.8)
                stats = [mean_std(r.get(key) for r in _select(S["rows"], regime, role)) for role in ROLES]
                ax.errorbar(xs, [m * scale for m, _, _ in stats], yerr=[sd * scale for _, sd, _ in stats], fmt=marker,
                            color=color, capsize=3, mfc=color if regime == "fixed" else "white",
                            label=_regime_title(S, s, regime))
            ax.set_xticks([0.05, 1.05], [f"SB\nB={B['SB']}", f"LB\nB={B['LB']}"])
            ax.set_xlim(-0.4, 1.5)
            ax.set_ylabel(label)
            if log:
                log_axis(ax)
            if j == 0:
                ax.legend(fontsize=7)
        for j, regime in enumerate(regimes):
            before = len(fig.axes)
            ax = axd[regime]
            res = LineResult.load(results / S["interpolations"][regime])
            parametric_plot(ax, res, log_loss=True, endpoints=(f"SB B={B['SB']}", f"LB B={B['LB']}"))
            log_axis(ax)
            ax.set_xlabel(r"$\alpha$   ($\theta = (1-\alpha)\,\theta_{SB} + \alpha\,\theta_{LB}$)")
            ax.set_title(f"SB→LB line, {_regime_title(S, s, regime, S['seeds'][0])}, seed {S['seeds'][0]}", pad=14,
                         fontsize=9)
            if j:  # one legend explains both panels: drop this panel's (on its axis or its twin)
                for other in fig.axes[before:]:
                    if other.get_legend() is not None:
                        other.get_legend().remove()
        n = len(S["seeds"])
        spread = f"mean ± std over {n} seeds, one thin line per seed" if n > 1 else "one seed"
        fig.suptitle(f"Byte-level GPT, SB = {s['sb']} vs LB = {s['lb']} of the windows, same Adam lr {s['lr']:g}: "
                     f"{spread}" + ("; hollow = matched training loss" if "matched" in s["regimes"] else ""))
        return save_and_close(fig, figures / "lm_batch")


if __name__ == "__main__":
    sys.exit(script_main("lm-batch"))
