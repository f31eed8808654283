"""The files of :func:`~sharpness.correlate.correlate` (JSON, CSV, figure) and its table for people.

Every file is written atomically (:func:`sharpness.files.rundir.atomic_write`), so a kill leaves each one either
complete or as it was; JSON numbers that are undefined (τ of a constant column) are written as ``null``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ..files.rundir import atomic_write

__all__ = ["write_outputs", "table", "MODEL_FIELDS"]

SCHEMA = "sharpness.correlate/1"
MODEL_FIELDS = ("run", "batch_size", "lr", "seed", "epochs", "steps", "stopped_by", "reached_train_loss",
                "train_loss", "test_loss", "train_error",
                "test_error", "loss_gap", "error_gap", "lambda_max", "trace", "epsilon_sharpness",
                "epsilon_sharpness_paper", "adaptive_worst",
                "adaptive_average", "pac_bayes", "pac_bayes_sigma", "param_norm", "fisher_rao",
                "dist_from_init", "analysis_loss")


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def write_outputs(out: Path, models: list[dict], excluded: list[dict], correlation: dict, axes: tuple[str, ...],
                  options: dict, manifest: dict, *, figure: bool = True) -> dict:
    """``models.json``, ``models.csv``, ``correlation.json`` and (``figure``) ``correlation.png`` in ``out``."""
    from .study import GAPS, MEASURES

    out.mkdir(parents=True, exist_ok=True)
    skipped = [m for m in MEASURES if m not in correlation]
    files = {"models_json": out / "models.json", "models_csv": out / "models.csv",
             "correlation_json": out / "correlation.json"}
    _write_text(files["models_json"], json.dumps(_clean({
        "schema": SCHEMA, "sweep_config_hash": manifest["config_hash"], "options": options,
        "fields": list(MODEL_FIELDS), "models": models, "excluded": excluded}), indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MODEL_FIELDS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for m in models:
        writer.writerow({k: "" if m.get(k) is None else m.get(k) for k in MODEL_FIELDS})
    _write_text(files["models_csv"], buf.getvalue())
    _write_text(files["correlation_json"], json.dumps(_clean({
        "schema": SCHEMA, "sweep_config_hash": manifest["config_hash"], "options": options, "n_models": len(models),
        "axes": list(axes), "gaps": GAPS, "measures": {m: MEASURES[m] for m in correlation},
        "measures_skipped": skipped, "tau": "Kendall tau-b (scipy.stats.kendalltau)", "correlation": correlation,
        "excluded": excluded}), indent=2) + "\n")
    if figure:
        from .figure import draw

        files["figure"] = draw(out / "correlation", models, correlation, axes)
    return {k: str(v) for k, v in files.items()}


def _f(x: float | None, spec: str = "+.2f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def measure_cells(by_gap: dict, axes: tuple[str, ...] | list[str]) -> tuple[list[str], list[str] | None]:
    """One measure's cells: τ with each gap and its bootstrap interval, and the loss gap's Ψ per axis (with its
    pairs) then Ψ, or ``None`` when Ψ is undefined."""
    from .study import GAPS

    taus = []
    for g in GAPS:
        ci = by_gap[g]["ci"]
        taus.append(_f(by_gap[g]["tau"]) + (f" [{_f(ci['low'])}, {_f(ci['high'])}]" if ci else ""))
    psi = by_gap["loss_gap"]["psi"]
    if psi is None:
        return taus, None
    return taus, [f"{_f(psi['axes'][a]['psi'])} ({psi['axes'][a]['pairs']})" for a in axes] + [_f(psi["psi"])]


def table(correlation: dict, axes: tuple[str, ...]) -> str:
    """One line per measure: τ with each gap [bootstrap interval], and Ψ per axis (its pairs) for the loss gap."""
    from .study import GAPS, MEASURES

    head = ["measure"] + [f"τ {g}" for g in GAPS] + [f"Ψ_{a} loss_gap (pairs)" for a in axes] + (["Ψ loss_gap"] if axes else [])
    lines = [head]
    for m, by_gap in correlation.items():
        taus, psis = measure_cells(by_gap, axes)
        lines.append([MEASURES[m], *taus, *(psis or [])])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines)
