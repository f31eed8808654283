"""What λ_min costs against λ_max, before and after the spectral-scale tolerance (issue #18, item 2).

Trains a 3×512 MLP on MNIST-1D at a large batch (400, 30 epochs of Adam: a large-batch minimum whose
Hessian bulk piles up at 0), then runs ``sharpness analyze --top-k 1 --bottom-k 1 --no-trace`` twice in
fresh processes on the same checkpoint: ``--scale-floor 0`` (every value held to tol relative to itself, the
rule before 2026-12-02) and the default ``--scale-floor 0.01`` (a value below 1 % of the spectral scale is
held to tol·0.01·Λ). Records Lanczos steps, wall time, λ_max, λ_min with their residuals, and the load.

    python benchmarks/lambda_min_cost.py                  # → results/lambda-min-cost-<date>.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _sh(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sharpness", *args], check=True, env=os.environ)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=400)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lambda-min-"))
    ck = tmp / "mlp512.pt"
    _sh("train", "--data", "mnist1d", "--model", "mlp", "--model-kwargs", '{"hidden": [512, 512, 512]}',
        "--batch-size", str(a.batch_size), "--epochs", str(a.epochs), "--optimizer", "adam", "--lr", "1e-3",
        "--seed", "0", "--threads", str(a.threads), "--out", str(ck), "-q")
    runs = []
    for floor in (0.0, 0.01):
        js = tmp / f"floor-{floor}.json"
        load = os.getloadavg()
        t0 = time.perf_counter()
        _sh("analyze", str(ck), "--top-k", "1", "--bottom-k", "1", "--no-trace", "--tol", str(a.tol),
            "--scale-floor", str(floor), "--threads", str(a.threads), "--json", str(js), "-q")
        wall = time.perf_counter() - t0
        rep = json.loads(js.read_text())
        h = rep["hessian"]
        runs.append({
            "scale_floor": floor, "wall_s_process": wall, "load_before": load, "load_after": os.getloadavg(),
            "eigen_seconds": rep.get("timings", {}).get("eigenvalues"), "top": h["top"], "bottom": h["bottom"],
            "eigen_num_matvecs": h["eigen_num_matvecs"], "num_params": rep.get("model", {}).get("num_params"),
        })
        print(f"scale_floor={floor}: {h['top']['num_steps']} steps, λ_max {h['top']['values'][0]:.6g}, "
              f"λ_min {h['bottom']['values'][0]:.6g} (residual {h['bottom']['residuals'][0]:.2g}), "
              f"{wall:.1f} s, load {load[0]:.2f}", flush=True)
    out = a.out or HERE / "results" / f"lambda-min-cost-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps({"config": vars(a) | {"out": str(out)}, "runs": runs}, indent=2, default=str) + "\n")
    print(f"→ {out}")


if __name__ == "__main__":
    main()
