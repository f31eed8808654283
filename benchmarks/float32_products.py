"""How far a float32 Hessian-vector product is from the float64 one along the top eigenvector (issue #28).

At 10 M parameters and above, tolerances near 1e-3 meet the float32 product's own error. This script measures
it on the scale benchmark's MLP (``scale_params.py``: ``Linear(d, d) → tanh → Linear(d, 10)``, 16 samples,
seed 0): power iteration in float32 gives a unit vector v close to the top eigenvector; its Rayleigh quotient
vᵀHv is then evaluated with the float32 product and with the product of a float64 copy of the same model and
data, and the float64 λ_max comes from Lanczos (tol 1e-8), warm-started from v.

    python benchmarks/float32_products.py --width 3160 --iterations 80

Results: ``benchmarks/results/float32-products-<date>.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import subprocess
from pathlib import Path

import torch
from torch import nn

from sharpness.hessian import HessianOperator
from sharpness.linalg import top_eigenvalues
from sharpness.objective import Objective

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=3160)
    ap.add_argument("--iterations", type=int, default=80)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = args.width
    model = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 10))
    x, y = torch.randn(16, d), torch.randint(0, 10, (16,))
    H32 = HessianOperator(Objective(model, x, y))
    H64 = HessianOperator(Objective(copy.deepcopy(model).double(), x.double(), y))
    v = torch.randn(H32.shape[0], generator=torch.Generator().manual_seed(1))
    v /= v.norm()
    for _ in range(args.iterations):
        w = H32 @ v
        v = w / w.norm()
    v64 = v.double() / v.double().norm()
    rq32, rq64 = float(v @ (H32 @ v)), float(v64 @ (H64 @ v64))
    lam = float(top_eigenvalues(H64, 1, tol=1e-8, seed=0, v0=v64).values[0])
    row = {"width": d, "num_params": H32.shape[0], "iterations": args.iterations, "rayleigh_float32": rq32,
           "rayleigh_float64": rq64, "lambda_max_float64": lam, "relative_error_float32": (rq32 - rq64) / rq64,
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
           "load_1min": os.getloadavg()[0]}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"float32-products-{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row, indent=2), f"\n{out.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
