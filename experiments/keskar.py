"""Keskar et al. (ICLR 2017), "On Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima":
Tables 2-4 and Fig. 3, with the small and the large batch chosen as Keskar chose them: as fractions of the data.

Protocol (the paper's, at CPU scale). Keskar's SB and LB are not fixed numbers but fractions of the training
set: LB is 10 % of it, and SB 1/200 (0.5 %) in the authors' PyTorch code (the paper's own SB is 256 on
MNIST's 60 000 samples, about 1/234). So on MNIST-1D's 4 000 training samples SB is B = 20 and LB is B = 400;
the batch sizes are derived from the training-set size (:func:`batch_sizes`), never written down. Each
network is trained with Adam (lr 1e-3, as the paper) from the same initial weights and the same data order
(same seed) at both batch sizes, **to convergence**, as Keskar trained both regimes (to ≈ 100 % training
accuracy): each run stops at the end of the first epoch whose accuracy on the full training split is at least
``until_train_accuracy`` = 99 %, within its network's epoch cap ``max_epochs``. A fixed epoch budget would
compare stopping times instead of minima: LB takes 20× fewer steps per epoch, so after the same epochs it is
further from a minimum. Each cap leaves room (≥ 1.4×) over the epochs a one-seed probe needed to reach the
criterion (experiments/README.md gives the probe). A run that reaches the cap first is never dropped: its rows are marked ‡ and a
warning line names it (:func:`missed_lines`).

* **F1** (Keskar's fully connected network, at MNIST-1D scale): three hidden ReLU layers of 512 (the paper's F1
  has 512-wide layers with batch norm on 784-pixel MNIST; batch norm is the ``batchnorm`` option of the
  network below, off by default, and the analysis then evaluates BatchNorm in eval mode, ``bn_mode``);
  at most 60 epochs;
* **C1** (Keskar's convolutional network, reduced to fit two CPU cores): two 5×5 convolutions of 8 and 16
  channels with 2×2 max-pooling and a 64-unit hidden layer, on seeded subsets of Fashion-MNIST (4 000 training
  and 2 000 test images), at most 300 epochs. Its SB is again 1/200 (B = 20), its LB 1/10 (B = 400). Its LB
  converges slowly (about 200 epochs, several CPU minutes per seed, to reach 99 %), so to keep the study within
  about 45 minutes on two cores C1 runs the first 2 seeds only, and is measured on 250 training samples (F1 on
  500). Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``.

Every solution is measured on a seeded subset of its training set:

* Table 2: train and test accuracy (mean ± std over seeds);
* Tables 3-4: ε-sharpness (Keskar's metric, in %) at ε = 1e-3 and 5e-4, in the full space and in a random
  p = 100 dimensional subspace, each by our default maximizer (projected sign ascent from the box's corners)
  and by Keskar's protocol ("paper mode": L-BFGS-B, 10 iterations from θ);
* λ_max and λ_min of the Hessian (Lanczos), its trace (Hutch++), and the distance from the initial weights;
* Fig. 3: loss and accuracy along f((1 − α)·θ_SB + α·θ_LB), α ∈ [−1, 2] (α = 0 is SB, 1 is LB), first seed.

Matched training loss. Sharpness depends on how far training got: cross-entropy curvature vanishes as the
loss does, and at the same training accuracy SB and LB need not have the same loss. So every comparison is
also made at matched loss: per seed the target is the larger of the two converged final training losses; the
run that ended below it is retrained (bit-identically, same seed and data order) with ``until_train_loss`` and
stops at the first epoch whose training loss is below the target. The run that set the target is reused.

The study checks its own answer: when an SB-vs-LB contrast (test accuracy, ε-sharpness, λ_max) of the
converged runs is within one standard deviation, or points the other way on a single seed, a warning line says
so (:func:`warnings`), as it does for every run that missed its criterion.

Run:  sharpness reproduce keskar [--quick] [--seeds N]     or     python experiments/keskar.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sharpness import load_dataset  # noqa: E402
from sharpness.landscape import LineResult  # noqa: E402
from sharpness.plots import parametric_plot, use_style  # noqa: E402
from sharpness.reproduce import (  # noqa: E402
    RAN_OUT_NOTE,
    ran_out_mark,
    log_axis, markdown_table, mean_std, plural, pm, report_numbers, save_and_close, script_main, train_config,
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
PAPER_NETWORK = "F1"  # the paper's numbers above are for F1; our C1 runs on another dataset than the paper's
REGIMES = ("converged", "matched")
ROLES = ("SB", "LB")


def batch_sizes(n_train: int, sb: str, lb: str) -> dict[str, int]:
    """SB and LB in samples from their fractions of the ``n_train`` training samples (``"0.5%"`` → 20 of 4 000)."""
    return {"SB": resolve_batch_size(sb, n_train), "LB": resolve_batch_size(lb, n_train)}


def settings(budget: str) -> dict:
    """Every number of the study. ``full`` is what experiments/README.md reports.

    ``until_train_accuracy`` is the convergence criterion (a fraction of the full training split) and each
    network's ``max_epochs`` the budget within which both SB and LB must meet it."""
    analysis = {"tol": 1e-3, "top_k": 1, "bottom_k": 1, "trace": True, "trace_probes": 30,
                "epsilon": [1e-3, 5e-4], "subspace_dim": 100, "epsilon_method": "both", "bn_mode": "eval"}
    f1 = {"data": "mnist1d", "subset": None, "model": "mlp",
          "model_kwargs": {"hidden": [512, 512, 512], "activation": "relu", "batchnorm": False},
          "test_subset": None, "max_epochs": 60, "analysis_samples": 500, "seeds": None}
    c1 = {"data": "fashion-mnist", "subset": 4000, "test_subset": 2000, "model": "convnet",
          "model_kwargs": {"channels": [8, 16], "hidden": 64, "activation": "relu", "batchnorm": False},
          "max_epochs": 300, "analysis_samples": 250, "seeds": 2}
    s = {"sb": "0.5%", "lb": "10%", "optimizer": "adam", "lr": 1e-3, "until_train_accuracy": 0.99, "analysis": analysis,
         "regimes": list(REGIMES), "interp_range": [-1.0, 2.0], "interp_points": 25, "networks": {"F1": f1, "C1": c1}}
    if budget == "full":
        s.update(seeds=5)
    elif budget == "quick":  # one seed of F1, converged only, a lighter analysis: ≤ 2 min on two cores
        s.update(seeds=1, regimes=["converged"], interp_points=13, networks={"F1": f1},
                 analysis={**analysis, "bottom_k": 0, "trace": False, "subspace_dim": None})
    else:  # smoke: only proves the pipeline runs; its small-data network cannot reach the criterion in 2 epochs
        s.update(seeds=1, interp_points=7, sb="5%", lb="25%", until_train_accuracy=0.14,
                 networks={"F1": {**f1, "model_kwargs": {"hidden": [16, 16]}, "max_epochs": 6, "analysis_samples": 200},
                           "F1-small-data": {**f1, "subset": 400, "test_subset": 200, "model_kwargs": {"hidden": [8]},
                                             "max_epochs": 2, "analysis_samples": 100}},
                 analysis={**analysis, "trace_probes": 6, "subspace_dim": 5, "epsilon_max_iter": 2})
    return s


def compute(run) -> dict:
    s = run.settings
    networks, interps = {}, {}
    rows = []
    for name, net in s["networks"].items():
        ds = load_dataset(net["data"], subset=net["subset"], test_subset=net["test_subset"])
        n_train = int(ds.x_train.shape[0])
        sizes = batch_sizes(n_train, s["sb"], s["lb"])
        seeds = run.seeds[: net["seeds"]]  # a network's own cap on the seed count (None: all of them)
        analysis = {k: (tuple(v) if isinstance(v, list) else v) for k, v in s["analysis"].items()}
        networks[name] = {"batch_sizes": sizes, "n_train": n_train, "seeds": seeds, "targets": {},
                          "analysis": {**analysis, "samples": net["analysis_samples"], "split": "train"}}
        for seed in seeds:
            tag = f"{name}-seed{seed}"
            converged = {role: run.train(f"{name}-converged-{role}-bs{B}-seed{seed}",
                                         train_config({**s, **net}, batch_size=B, seed=seed, max_epochs=net["max_epochs"],
                                                      until_train_accuracy=s["until_train_accuracy"]), dataset=ds)
                         for role, B in sizes.items()}
            by_regime = {"converged": converged}
            reached = {("converged", role): t.metrics["reached_train_accuracy"] for role, t in converged.items()}
            if "matched" in s["regimes"]:
                target = max(t.metrics["train_loss"] for t in converged.values())
                networks[name]["targets"][str(seed)] = target
                matched = {}
                for role, B in sizes.items():
                    if converged[role].metrics["train_loss"] >= target:  # it set the target: its own matched run
                        matched[role], reached["matched", role] = converged[role], True
                    else:
                        cfg = train_config({**s, **net}, batch_size=B, seed=seed, until_train_loss=target,
                                           max_epochs=net["max_epochs"])
                        matched[role] = run.train(f"{name}-matched-{role}-bs{B}-seed{seed}", cfg, dataset=ds)
                        reached["matched", role] = matched[role].metrics["reached_train_loss"]
                by_regime["matched"] = matched
            for regime, by_role in by_regime.items():
                for role, trained in by_role.items():
                    key = Path(trained.checkpoint).stem  # a reused run shares its analysis
                    report = run.analyze(f"analysis-{key}", trained.model, ds.x_train, ds.y_train, data_spec=ds.spec,
                                         seed=seed, samples=net["analysis_samples"], **analysis)
                    m = trained.metrics
                    rows.append({"network": name, "regime": regime, "role": role, "batch_size": sizes[role],
                                 "seed": seed, "run": key, "epochs": m["epochs"], "steps": m["steps"],
                                 "train_loss": m["train_loss"], "train_acc": m["train_acc"], "test_loss": m["test_loss"],
                                 "test_acc": m["test_acc"], "dist_from_init": m["dist_from_init"],
                                 "stopped_by": m["stopped_by"], "reached": reached[regime, role],
                                 **report_numbers(report)})
            if seed == seeds[0]:  # Fig. 3 for the first seed, as the paper draws one pair
                for regime, by_role in by_regime.items():
                    key = f"interp-{regime}-{tag}"
                    run.interpolation(key, by_role["SB"], by_role["LB"], ds, seed=seed,
                                      alphas=(*s["interp_range"], s["interp_points"]))
                    interps.setdefault(name, {})[regime] = f"{key}.npz"
    return {"networks": networks, "rows": rows, "interpolations": interps}


# ----------------------------------------------------------------------------------------------------------
# The study's own check of its answer
# ----------------------------------------------------------------------------------------------------------

#: The contrasts the study claims, with the direction Keskar et al. found (SB minus LB): SB generalizes better
#: and sits in a flatter minimum.
CONTRASTS = (("test_acc", "test accuracy", +1), ("eps_full_0.001", "ε-sharpness (ε=1e-3, full space)", -1),
             ("lambda_max", "λ_max", -1))


#: The mark of a table row in which at least one seed missed its stopping criterion within the epoch cap.
MISSED_MARK = " ‡"


def missed_lines(saved: dict) -> list[str]:
    """One line per run that missed its criterion within its network's ``max_epochs``: a converged run whose
    training accuracy never reached ``until_train_accuracy``, or a matched run whose loss never fell below the
    target. Such runs stay in every table (their rows marked ‡): dropping them would keep only the easy seeds."""
    S, s = saved["summary"], saved["settings"]
    out = []
    for r in S["rows"]:
        if r["reached"] is not False:
            continue
        cap = s["networks"][r["network"]]["max_epochs"]
        if r["regime"] == "converged":
            what = (f"training accuracy {100 * r['train_acc']:.2f} %, short of the criterion "
                    f"{100 * s['until_train_accuracy']:g} %")
        else:
            target = S["networks"][r["network"]]["targets"][str(r["seed"])]
            what = f"training loss {r['train_loss']:.4g}, above the matched target {target:.4g}"
        out.append(f"{r['network']} {r['role']} B={r['batch_size']} seed {r['seed']} ({r['regime']}) stopped at its "
                   f"{cap}-epoch cap with {what}; kept in the tables, its rows marked ‡")
    return out


def warnings(saved: dict) -> list[str]:
    """The runs that missed their criterion (:func:`missed_lines`), then one line per SB-vs-LB contrast (trained
    to convergence) that does not stand out of the noise: the means differ by at most one standard deviation
    (the larger of SB's and LB's), or, on a single seed, the difference points the other way than Keskar et al.
    found. Empty when every run converged and every contrast is clear."""
    S = saved["summary"]
    out = missed_lines(saved)
    for name, net in S["networks"].items():
        for key, label, sign in CONTRASTS:
            stats = {role: mean_std(r.get(key) for r in _select(S["rows"], name, "converged", role)) for role in ROLES}
            (m_sb, s_sb, n_sb), (m_lb, s_lb, n_lb) = stats["SB"], stats["LB"]
            if not n_sb or not n_lb:
                continue
            diff = m_sb - m_lb
            if min(n_sb, n_lb) >= 2 and abs(diff) <= max(s_sb, s_lb):
                out.append(f"{name}: the SB-vs-LB contrast in {label} is within one standard deviation "
                           f"(SB {m_sb:.4g} ± {s_sb:.2g}, LB {m_lb:.4g} ± {s_lb:.2g}, {min(n_sb, n_lb)} seeds)")
            elif min(n_sb, n_lb) < 2 and sign * diff <= 0:
                out.append(f"{name}: on one seed, SB's {label} ({m_sb:.4g}) is not on the side Keskar et al. "
                           f"found relative to LB's ({m_lb:.4g})")
    return out


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------


def _networks(S: dict) -> list[str]:
    """The networks in reading order: the paper's F1 first (saved JSON keeps keys sorted, not in run order)."""
    return sorted(S["networks"], key=lambda name: (name != PAPER_NETWORK, name))


def _select(rows: list[dict], network: str, regime: str, role: str) -> list[dict]:
    return [r for r in rows if r["network"] == network and r["regime"] == regime and r["role"] == role]


def flagged(rows: list[dict], key: str) -> str:
    """mean ± std of ``key`` over ``rows``, with † when the maximizer's budget ran out in any of them."""
    return pm([r.get(key) for r in rows], 2) + ran_out_mark(rows, key)


def missed_mark(rows: list[dict]) -> str:
    """:data:`MISSED_MARK` when any of ``rows`` missed its stopping criterion, else nothing."""
    return MISSED_MARK if any(r.get("reached") is False for r in rows) else ""


def criterion(s: dict) -> str:
    """The convergence criterion in words: ``"train acc ≥ 99 %"``."""
    return f"train acc ≥ {100 * s['until_train_accuracy']:g} %"


def _describe(name: str, net: dict, info: dict) -> str:
    kw = net["model_kwargs"]
    if net["model"] == "mlp":
        arch = f"MLP {'-'.join(map(str, kw['hidden']))} {kw.get('activation', 'relu')}"
    else:
        arch = f"CNN conv {'-'.join(map(str, kw['channels']))} + {kw['hidden']} hidden"
    arch += ", batch norm (analysed in eval mode)" if kw.get("batchnorm") else ", no batch norm"
    data = net["data"] + (f" (seeded subsets: {net['subset']} training, {net['test_subset']} test samples)"
                          if net["subset"] and net.get("test_subset") else
                          f" (seeded subset of {net['subset']} training samples)" if net["subset"] else "")
    B = info["batch_sizes"]
    return (f"{name}: {arch} on {data}; {info['n_train']} training samples, so SB = B {B['SB']} and LB = B {B['LB']}; "
            f"at most {plural(net['max_epochs'], 'epoch')}; {plural(len(info['seeds']), 'seed')}")


def tables(saved: dict) -> str:
    S, s = saved["summary"], saved["settings"]
    rows = S["rows"]
    nets = [(name, S["networks"][name]) for name in _networks(S)]

    def paper(key: str, name: str, role: str, regime: str) -> str:
        # the paper compares F1 trained to convergence only
        return PAPER[key][role] if name == PAPER_NETWORK and regime == "converged" else "—"

    acc, eps, curv = [], [], []
    for name, info in nets:
        targets = pm(list(info["targets"].values()), 4)
        for regime in s["regimes"]:
            title = criterion(s) if regime == "converged" else f"matched loss {targets}"
            for role in ROLES:
                rs = _select(rows, name, regime, role)
                if not rs:
                    continue
                label = f"{name} {role} B={info['batch_sizes'][role]}, {title}{missed_mark(rs)}"
                get = lambda k: [r[k] for r in rs]  # noqa: E731
                acc.append([label, pm(get("epochs"), 0), pm(get("train_loss"), 4), pm(get("train_acc"), 2, scale=100),
                            paper("train_acc", name, role, regime), pm(get("test_acc"), 2, scale=100),
                            paper("test_acc", name, role, regime)])
                eps.append([label] + [c for e in s["analysis"]["epsilon"] for sp in _spaces(s)
                                      for c in (flagged(rs, f"eps_{sp}_{e:g}"), flagged(rs, f"eps_paper_{sp}_{e:g}"),
                                                paper(f"eps_{sp}_{e:g}", name, role, regime))])
                curv.append([label, pm(get("train_loss"), 4), pm(get("lambda_max"), 2), pm(get("lambda_min"), 3),
                             pm(get("trace"), 1), pm(get("dist_from_init"), 2)])
    a = s["analysis"]
    e0 = f"{a['epsilon'][0]:g}"
    headline = [[f"{name} {role} B={info['batch_sizes'][role]}{missed_mark(rs)}", pm([r["test_acc"] for r in rs], 2, scale=100),
                 flagged(rs, f"eps_full_{e0}"), flagged(rs, f"eps_paper_full_{e0}"), pm([r["lambda_max"] for r in rs], 2),
                 paper("test_acc", name, role, "converged"), paper(f"eps_full_{e0}", name, role, "converged")]
                for name, info in nets for role in ROLES
                for rs in [_select(rows, name, "converged", role)] if rs]
    eps_header = ["run"] + [h for e in a["epsilon"] for sp in _spaces(s)
                            for h in (f"{'full' if sp == 'full' else 'p=' + str(a['subspace_dim'])} ε={e:g}",
                                      "paper mode", "paper")]
    samples = ", ".join(f"{name}: {info['analysis']['samples']}" for name, info in nets)
    out = [f"Keskar et al. (2017) by fractions of the data: SB = {s['sb']} (1/200), LB = {s['lb']} (1/10) of the "
           f"training set, same initial weights and data order, Adam lr {s['lr']:g}, mean ± std over seeds.",
           *(f"- {_describe(name, s['networks'][name], info)}" for name, info in nets),
           f"Converged: each run stops at the first epoch whose {criterion(s)} on the full training split, within "
           "its network's epoch cap; matched: the run that ended below the larger of the two converged training "
           "losses is retrained to it. ‡ a seed missed its criterion within the cap (kept, listed below).",
           "Paper: network F1 on MNIST (5 trials), its SB B=256 (1/234 of 60 000), its LB 10 % of the data.",
           "",
           f"Headline: SB vs LB trained to convergence, {criterion(s)} (ε-sharpness in %, full space, ε={e0}; ours, "
           "then Keskar's protocol on the same weights)",
           markdown_table(["run", "test acc (%)", "ε-sharpness", "paper mode", "λ_max", "paper F1 test acc",
                           "paper F1 ε-sharpness"], headline),
           "",
           "Table 2: accuracy (%)",
           markdown_table(["run", "epochs", "train loss", "train acc", "paper F1", "test acc", "paper F1"], acc),
           "",
           f"Tables 3-4: ε-sharpness (%) on training samples ({samples}), full space"
           + (" and random subspace" if a["subspace_dim"] else "") + ". Each group: our default maximizer "
           "(projected sign ascent from box corners), then Keskar's protocol (\"paper mode\": L-BFGS-B, 10 iterations "
           "from θ), then the paper's F1 number. " + RAN_OUT_NOTE,
           markdown_table(eps_header, eps),
           "",
           "Curvature at the solution: Hessian λ_max, λ_min (Lanczos), trace (Hutch++, "
           f"{a['trace_probes']} matvecs), distance from the initial weights (— = not measured at this budget)",
           markdown_table(["run", "train loss", "λ_max", "λ_min", "tr(H)", "‖θ−θ₀‖"], curv)]
    out += [f"WARNING: {w}" for w in warnings(saved)]
    return "\n".join(out)


def _spaces(s: dict) -> tuple[str, ...]:
    return ("full", "random") if s["analysis"]["subspace_dim"] else ("full",)


# ----------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------


def plot(saved: dict, results: Path, figures: Path) -> list[Path]:
    S, s = saved["summary"], saved["settings"]
    written: list[Path] = []
    interps = S["interpolations"]
    names = [n for n in _networks(S) if n in interps]
    regimes = [r for r in s["regimes"] if all(r in interps[n] for n in names)]

    def regime_title(name: str, regime: str) -> str:
        if regime == "converged":
            return criterion(s)
        return f"matched train loss ({pm(S['networks'][name]['targets'][str(S['networks'][name]['seeds'][0])], 3)})"

    with use_style():
        fig, axes = plt.subplots(len(names), len(regimes), figsize=(4.8 * len(regimes), 3.4 * len(names)), squeeze=False)
        for i, name in enumerate(names):
            B = S["networks"][name]["batch_sizes"]
            for j, regime in enumerate(regimes):
                res = LineResult.load(results / interps[name][regime])
                ax = axes[i, j]
                parametric_plot(ax, res, log_loss=True, endpoints=(f"SB B={B['SB']}", f"LB B={B['LB']}"))
                ax.set_xlabel(r"$\alpha$   ($\theta = (1-\alpha)\,\theta_{SB} + \alpha\,\theta_{LB}$)")
                ax.set_title(f"{name}, {regime_title(name, regime)}, seed {S['networks'][name]['seeds'][0]}", pad=14)
                if (i, j) != (0, 0):  # one legend explains every panel
                    for a in fig.axes:
                        if a.get_legend() is not None and (a is ax or ax.get_shared_x_axes().joined(ax, a)):
                            a.get_legend().remove()
        written += save_and_close(fig, figures / "keskar_fig3_parametric")
        written += _plot_contrast(saved, figures)
    return written


def _plot_contrast(saved: dict, figures: Path) -> list[Path]:
    """SB vs LB per network: one thin line per seed (the same initial weights trained at both batch sizes) and
    the mean ± std beside it, for test accuracy, ε-sharpness (both maximizers) and λ_max."""
    S, s = saved["summary"], saved["settings"]
    e = s["analysis"]["epsilon"][0]
    panels = [("test_acc", "test accuracy (%)", 100.0, None), (f"eps_full_{e:g}", f"ε-sharpness (%), ε={e:g}", 1.0,
              f"eps_paper_full_{e:g}"), ("lambda_max", r"Hessian $\lambda_{\max}$", 1.0, None)]
    names = _networks(S)
    markers = {"converged": ("o", "-"), "matched": ("s", "--")}
    fig, axes = plt.subplots(len(names), len(panels), figsize=(12.0, 3.2 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        B = S["networks"][name]["batch_sizes"]
        for j, (key, label, scale, paper_key) in enumerate(panels):
            ax = axes[i, j]
            series = [(key, "C0", "")] + ([(paper_key, "C3", " (paper mode)")] if paper_key else [])
            for k, regime in enumerate(s["regimes"]):
                marker, ls = markers[regime]
                for kk, color, suffix in series:
                    offset = 0.08 * (k + (0.5 if suffix else 0))
                    xs = [0 + offset, 1 + offset]
                    for seed in S["networks"][name]["seeds"]:
                        ys = [next((r.get(kk) for r in _select(S["rows"], name, regime, role) if r["seed"] == seed), None)
                              for role in ROLES]
                        if None not in ys:
                            ax.plot(xs, [y * scale for y in ys], ls, color=color, alpha=0.35, lw=0.8)
                    stats = [mean_std(r.get(kk) for r in _select(S["rows"], name, regime, role)) for role in ROLES]
                    ax.errorbar(xs, [m * scale for m, _, _ in stats], yerr=[sd * scale for _, sd, _ in stats],
                                fmt=marker, color=color, capsize=3, mfc=color if regime == "converged" else "white",
                                label=f"{regime}{suffix}")
            ax.set_xticks([0.1, 1.1], [f"SB B={B['SB']}", f"LB B={B['LB']}"])
            ax.set_xlim(-0.4, 1.6)
            ax.set_ylabel(label)
            if key != "test_acc":
                log_axis(ax)
            ax.set_title(name, fontsize=9)
        axes[i, 1].legend(fontsize=7)
    n = max(len(info["seeds"]) for info in S["networks"].values())
    spread = "mean ± std over seeds, one thin line per seed" if n > 1 else "one seed"
    hollow = "; hollow = matched training loss" if "matched" in s["regimes"] else ""  # quick runs draw none
    fig.suptitle(f"Keskar et al. by fractions (SB = 1/200, LB = 1/10 of the data), trained to {criterion(s)}\n"
                 f"{spread}{hollow}")
    return save_and_close(fig, figures / "keskar_sharpness")


if __name__ == "__main__":
    sys.exit(script_main("keskar"))
