"""Re-measure the Lanczos eigenvalues of every saved study checkpoint with the current code.

When the eigen solver's stopping rule changes, the studies' published λ_max / λ_min change within their
tolerance. This script says by how much without re-running whole studies: for each analysis a study saved
(``analysis-KEY.json`` beside ``runs/KEY.pt``, or a sweep's ``X.report.json`` beside ``X.pt``) it rebuilds the
same analysis set from the checkpoint's recorded data (checked by its SHA-256), runs only the eigenvalue part
(with ``--trace`` also the trace) of :func:`sharpness.analysis.report.analyze` with the saved options, and compares values and Hessian-vector products.

    python benchmarks/study_eigen_recheck.py experiments/results --out benchmarks/results/eigen-recheck-DATE.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sharpness.files.loading import load_model_and_data
from sharpness.analysis.report import analyze

# The options of a saved report that decide its eigenvalues; everything else (trace, ε, ...) is switched off.
EIGEN_OPTIONS = ("samples", "split", "top_k", "bottom_k", "tol", "max_steps", "bn_mode", "weight_decay", "seed",
                 "dtype", "params", "loss")
#: With --trace, the stochastic trace is re-measured too (same probes: the seed is in EIGEN_OPTIONS).
TRACE_OPTIONS = ("trace_probes", "trace_method")


def saved_analyses(root: Path):
    """(report dict, checkpoint path) for every saved analysis below ``root`` whose checkpoint still exists."""
    for path in sorted(root.rglob("*.json")):
        if path.name.endswith(".report.json"):
            ckpt, report = path.with_name(path.name[: -len(".report.json")] + ".pt"), json.loads(path.read_text())
        elif path.name.startswith("analysis-"):
            record = json.loads(path.read_text())
            report = record.get("result") if isinstance(record, dict) else None
            ckpt = path.parent / "runs" / (path.stem[len("analysis-"):] + ".pt")
        else:
            continue
        if isinstance(report, dict) and report.get("hessian") and ckpt.is_file():
            yield report, ckpt


def recheck(report: dict, ckpt: Path, *, trace: bool = False) -> dict:
    config = report["config"]
    options = {k: config[k] for k in EIGEN_OPTIONS + (TRACE_OPTIONS if trace else ()) if k in config}
    loaded = load_model_and_data(str(ckpt), split=options.get("split", "train"))
    x, y = loaded.dataset.split(options.get("split", "train"))
    t0 = time.process_time()
    new = analyze(loaded.model, x, y, data_spec=loaded.dataset.spec, trace=trace and bool(config.get("trace")),
                  epsilon=[], **options).to_dict()
    row = {"checkpoint": str(ckpt), "cpu_seconds": time.process_time() - t0,
           "same_analysis_set": new["analysis_set"]["sha256"] == report["analysis_set"]["sha256"]}
    for side in ("top", "bottom"):
        old_side, new_side = report["hessian"].get(side), new["hessian"].get(side)
        if not old_side or not new_side:
            continue
        old_v, new_v = old_side["values"], new_side["values"]
        row[side] = {"old": old_v, "new": new_v, "old_matvecs": old_side["num_matvecs"],
                     "new_matvecs": new_side["num_matvecs"],
                     "max_rel_change": max(abs(a - b) / max(abs(a), 1e-30) for a, b in zip(old_v, new_v))}
    old_t, new_t = report["hessian"].get("trace"), new["hessian"].get("trace")
    if trace and old_t and new_t:
        row["trace"] = {"old": old_t["value"], "new": new_t["value"],
                        "rel_change": abs(old_t["value"] - new_t["value"]) / max(abs(old_t["value"]), 1e-30)}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trace", action="store_true", help="also re-measure the trace where the report has one")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for report, ckpt in saved_analyses(args.root):
        row = recheck(report, ckpt, trace=args.trace)
        rows.append(row)
        parts = [f"{side} {row[side]['old'][0]:.6g} → {row[side]['new'][0]:.6g} (rel {row[side]['max_rel_change']:.1e}, "
                 f"{row[side]['old_matvecs']} → {row[side]['new_matvecs']} HVPs)" for side in ("top", "bottom") if side in row]
        if "trace" in row:
            parts.append(f"trace {row['trace']['old']:.6g} → {row['trace']['new']:.6g} (rel {row['trace']['rel_change']:.1e})")
        print(f"{ckpt.relative_to(args.root)}: {'; '.join(parts)}{'' if row['same_analysis_set'] else '  DIFFERENT SET'}",
              flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"root": str(args.root), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
