"""``correlate``: does a sharpness measure rank the models of a sweep by their generalization gap?

For every finished run of a directory written by :func:`sharpness.sweep.sweep`, the measures of
:data:`MEASURES` at its final weights (one :func:`sharpness.analysis.report.analyze` pass, the PAC-Bayes σ of
:mod:`~sharpness.correlate.flatness`, the Fisher-Rao norm of :mod:`~sharpness.correlate.norms`, ‖θ‖ and
‖θ − θ₀‖ from the checkpoints), then Kendall's τ of each measure with each gap,
Jiang et al.'s granulated Ψ per hyperparameter axis and a bootstrap interval (:mod:`~sharpness.correlate.ranks`).

Gaps (Jiang et al. 2020 §2): ``loss_gap`` = test − train cross-entropy and ``error_gap`` = test − train error
(1 − accuracy), both as the sweep's training run measured them at its end.

Layout written under ``out_dir`` (default ``SWEEP_DIR/correlate``)::

    cache-{h}/manifest.json, cache-{h}/{run}.json, cache-{h}/done/{run}   one model's measures, h = the options'
                                                                          hash; a rerun reuses finished models
    cache-{h}/{run}.report.json                                           its sharpness.report/1 analysis
    models.json, models.csv     the per-model values (everything τ is computed from)
    correlation.json            τ, intervals, per-seed τ and Ψ per measure × gap
    correlation.png             measure vs gap, one panel per measure (:mod:`~sharpness.correlate.figure`)

Runs that diverged or are unfinished are listed in ``excluded`` with the reason, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..checkpoint import build_model_from_checkpoint, load_checkpoint
from ..errors import InputError
from ..files.rundir import RunDir
from .flatness import pac_bayes_sigma
from .norms import fisher_rao_norm
from .ranks import bootstrap_tau, granulated_psi, kendall_tau

__all__ = ["correlate", "CorrelateResult", "MEASURES", "GAPS", "AXES"]

# name → what it is (the label drawn and printed). Sharpness measures read "larger = sharper" (PAC-Bayes as 1/σ'²).
MEASURES = {
    "lambda_max": "λ_max (Lanczos)",
    "trace": "tr H (Hutch++)",
    "epsilon_sharpness": "ε-sharpness (Keskar, %)",
    "epsilon_sharpness_paper": "ε-sharpness, paper mode (%)",
    "adaptive_worst": "adaptive worst-case sharpness",
    "adaptive_average": "adaptive average-case sharpness",
    "pac_bayes": "PAC-Bayes flatness 1/σ'²",
    "param_norm": "‖θ‖₂",
    "fisher_rao": "Fisher-Rao norm",
    "dist_from_init": "‖θ − θ₀‖₂",
    "steps": "optimizer steps",
}
GAPS = {"loss_gap": "test − train loss", "error_gap": "test − train error"}
AXES = ("batch_size", "lr")
CACHE_SCHEMA = "sharpness.correlate-cache/1"


@dataclass(frozen=True)
class CorrelateResult:
    """``models``: one dict per usable run (hyperparameters, gaps, measures); ``excluded``: ``{run, reason}``;
    ``correlation``: ``{measure: {gap: {"tau", "ci", "per_seed", "psi"}}}``; ``axes``: the hyperparameters
    that vary; ``files``: what was written; ``computed`` / ``cached``: runs measured now / read back."""

    models: tuple[dict, ...]
    excluded: tuple[dict, ...]
    correlation: dict
    axes: tuple[str, ...]
    files: dict = field(default_factory=dict)
    computed: tuple[str, ...] = ()
    cached: tuple[str, ...] = ()


def correlate(sweep_dir: str | os.PathLike, *, out_dir: str | os.PathLike | None = None, epsilon: float = 1e-3,
              epsilon_paper: bool = False, rho: float | None = 0.1, pac_bayes_rise: float = 0.1, pac_bayes_draws: int = 32,
              samples: int | None = None, seed: int = 0, bootstrap: int = 1000, device: str = "cpu",
              dtype: str = "float32", figure: bool = True, progress: Callable[[str], None] | None = None
              ) -> CorrelateResult:
    """Measures of every run of ``sweep_dir`` against its generalization gap (module docstring).

    Args:
        epsilon: the ε of Keskar's ε-sharpness (the ascent method; their paper used 1e-3 and 5e-4).
        epsilon_paper: also Keskar's own protocol (scipy L-BFGS-B; :mod:`sharpness.measures.epsilon`).
        rho: the radius of adaptive worst- and average-case sharpness (Andriushchenko et al. 2023, ℓ₂,
            elementwise |θ| scaling); ``None`` skips both.
        pac_bayes_rise: the loss rise that defines the PAC-Bayes σ.
        pac_bayes_draws: the fixed number of noise draws per σ of that search.
        samples: analyze a seeded subset of this many training samples (default: the whole training split).
        seed: the seed of every estimator and of the bootstrap.
        bootstrap: resamples of the τ interval (0: none).

    Raises:
        InputError: ``sweep_dir`` is not a sweep directory, or fewer than 3 of its runs can be used.
    """
    root = Path(sweep_dir)
    say = progress or (lambda _msg: None)
    manifest, summary = _read_sweep(root)
    options = {"epsilon": epsilon, "epsilon_paper": epsilon_paper, "rho": rho, "pac_bayes_rise": pac_bayes_rise, "pac_bayes_draws": pac_bayes_draws,
               "samples": samples, "seed": seed, "dtype": dtype}
    out = Path(out_dir) if out_dir is not None else root / "correlate"
    digest = hashlib.sha256(json.dumps({"sweep": manifest["config_hash"], **options}, sort_keys=True).encode()).hexdigest()
    usable, excluded = [], []
    for row in summary["rows"]:
        if row.get("status") != "ok":
            excluded.append({"run": row["run"], "reason": row.get("status") or "no status"})
        elif None in (row.get("train_loss"), row.get("test_loss"), row.get("train_acc"), row.get("test_acc")):
            excluded.append({"run": row["run"], "reason": "no test split (no generalization gap)"})
        else:
            usable.append(row)
    if len(usable) < 3:
        raise InputError(f"expected at least 3 finished runs in {root} to rank, got {len(usable)}"
                         + (f" ({len(excluded)} excluded: {', '.join(e['run'] + ' ' + e['reason'] for e in excluded[:3])})"
                            if excluded else ""))
    cache = RunDir(out / f"cache-{digest[:12]}", {"kind": "correlate-cache", "schema": CACHE_SCHEMA,
                                                  "sweep_config_hash": manifest["config_hash"], "options": options})
    dataset = None
    models, computed, cached = [], [], []
    for i, row in enumerate(usable):
        name = row["run"]
        ckpt = root / "runs" / f"{name}.pt"
        if cache.done(name):
            values = cache.read_json(f"{name}.json")
            cached.append(name)
        else:
            if dataset is None:
                dataset = _dataset(ckpt)
            say(f"[{i + 1}/{len(usable)}] {name}: measuring")
            values, report = _measure(root, ckpt, dataset, options, device)
            cache.write_json(f"{name}.report.json", report)  # the whole analysis, for provenance
            cache.write_json(f"{name}.json", values)
            cache.mark_done(name)
            computed.append(name)
        models.append({**_identity(row), **values})
    axes = tuple(a for a in AXES if len({m[a] for m in models}) > 1)
    correlation = {m: {g: _statistics(models, m, g, axes, bootstrap, seed) for g in GAPS} for m in MEASURES
                   if all(_finite(r.get(m)) for r in models)}
    from .output import write_outputs

    files = write_outputs(out, models, excluded, correlation, axes, options, manifest, figure=figure)
    return CorrelateResult(models=tuple(models), excluded=tuple(excluded), correlation=correlation, axes=axes,
                           files=files, computed=tuple(computed), cached=tuple(cached))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _read_sweep(root: Path) -> tuple[dict, dict]:
    paths = [root / "manifest.json", root / "summary.json"]
    if not root.is_dir():
        raise InputError(f"expected a sweep directory (written by `sharpness sweep`), got {str(root)!r}: not a directory")
    for p in paths:
        if not p.is_file():
            raise InputError(f"expected a sweep directory (written by `sharpness sweep`), got {str(root)!r} without {p.name}")
    try:
        manifest, summary = (json.loads(p.read_text()) for p in paths)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"expected JSON in {root}'s manifest.json and summary.json, got unreadable content ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "sweep" or not isinstance(summary, dict) or "rows" not in summary:
        raise InputError(f"expected a sweep directory (written by `sharpness sweep`), got {str(root)!r} holding "
                         f"a manifest of kind {manifest.get('kind') if isinstance(manifest, dict) else None!r}")
    return manifest, summary


def _identity(row: dict) -> dict:
    return {"run": row["run"], "batch_size": row["batch_size"], "lr": row["lr"], "seed": row["seed"],
            "train_loss": row["train_loss"], "test_loss": row["test_loss"],
            "train_error": 1 - row["train_acc"], "test_error": 1 - row["test_acc"],
            "loss_gap": row["test_loss"] - row["train_loss"], "error_gap": row["train_acc"] - row["test_acc"],
            "epochs": row["epochs"]}


def _dataset(ckpt: Path):
    from ..train import TrainConfig, load_data

    return load_data(TrainConfig.from_dict(load_checkpoint(ckpt).train_config))


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


def _measure(root: Path, ckpt_path: Path, dataset: Any, options: dict, device: str) -> dict:
    """One model's measures (module docstring); the model is built from the checkpoint, nobody else's."""
    from ..objective import Objective
    from ..analysis.report import analyze, select_analysis_set

    ckpt = load_checkpoint(ckpt_path)
    model = build_model_from_checkpoint(ckpt).eval()
    x, y = dataset.split("train")
    rho = options["rho"]
    extra = {"adaptive_rho": (rho,), "average_adaptive_rho": (rho,)} if rho is not None else {}
    report = analyze(model, x, y, data_spec=dataset.spec, top_k=1, bottom_k=0, trace=True,
                     epsilon=(options["epsilon"],), epsilon_method="both" if options["epsilon_paper"] else "ascent",
                     samples=options["samples"], seed=options["seed"],
                     device=device, dtype=options["dtype"], **extra).to_dict()
    xs, ys, _ = select_analysis_set(x, y, samples=options["samples"], seed=options["seed"])
    torch_dtype = torch.float64 if options["dtype"] == "float64" else torch.float32
    objective = Objective(model, xs, ys, dtype=torch_dtype, device=device)
    try:
        pac = pac_bayes_sigma(objective.losses_at, objective.theta, rise=options["pac_bayes_rise"],
                              num_draws=options["pac_bayes_draws"], seed=options["seed"])
    except ValueError as err:  # no σ brackets the rise: recorded, and the measure is left out of the ranking
        pac = {"inverse_sigma2": None, "sigma": None, "increase": None, "evaluations": None, "note": str(err)}
    theta = _flat(model)
    init = root / f"init_seed{ckpt.seed}.pt"
    if init.is_file():
        dist = float(torch.linalg.vector_norm(theta - _flat(build_model_from_checkpoint(load_checkpoint(init)))))
    else:
        dist = ckpt.metrics.get("dist_from_init")
    h = report["hessian"]
    eps = {e["method"]: e for e in report["epsilon_sharpness"]}
    values = {
        "lambda_max": h["top"]["values"][0],
        "trace": h["trace"]["value"],
        "epsilon_sharpness": eps["ascent"]["value"],
        "epsilon_budget_exhausted": eps["ascent"]["budget_exhausted"],
        "pac_bayes": pac["inverse_sigma2"], "pac_bayes_sigma": pac["sigma"], "pac_bayes_increase": pac["increase"],
        "pac_bayes_evaluations": pac["evaluations"], **({"pac_bayes_note": pac["note"]} if "note" in pac else {}),
        "param_norm": float(torch.linalg.vector_norm(theta)),
        "fisher_rao": fisher_rao_norm(model, xs.to(device, torch_dtype), ys.to(device), objective.loss_kind),
        "dist_from_init": dist,
        "steps": ckpt.metrics.get("steps"),
        "stopped_by": ckpt.metrics.get("stopped_by"),
        "reached_train_loss": ckpt.metrics.get("reached_train_loss"),  # None unless trained --until-train-loss
        "analysis_loss": report["loss"],
        "analysis_seconds": report["cost"]["seconds"],
    }
    if "paper" in eps:
        values["epsilon_sharpness_paper"] = eps["paper"]["value"]
        values["epsilon_paper_budget_exhausted"] = eps["paper"]["budget_exhausted"]
    if rho is not None:
        values["adaptive_worst"] = report["adaptive_sharpness"][0]["value"]
        values["adaptive_average"] = report["average_sharpness"][0]["value"]
    return values, report


def _statistics(models: list[dict], measure: str, gap: str, axes: tuple[str, ...], bootstrap: int, seed: int) -> dict:
    x, y = [m[measure] for m in models], [m[gap] for m in models]
    per_seed = {}
    for s in sorted({m["seed"] for m in models}):
        mine = [m for m in models if m["seed"] == s]
        per_seed[str(s)] = kendall_tau([m[measure] for m in mine], [m[gap] for m in mine])
    return {"tau": kendall_tau(x, y), "n": len(models),
            "ci": bootstrap_tau(x, y, resamples=bootstrap, seed=seed) if bootstrap else None,
            "per_seed": per_seed, "psi": granulated_psi(models, measure, gap, axes) if axes else None}
