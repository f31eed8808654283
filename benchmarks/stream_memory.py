"""Peak memory of a streamed analysis grows with the batch, not with N (issue #15).

For each N the script starts a fresh Python process that builds an :class:`~sharpness.objective.Objective`
on a ``DataLoader`` over a *lazy* map-style dataset (sample i is generated from seed i on demand, so the data
itself never sits in memory, as with files on disk), then evaluates the loss, the gradient, and the top
Hessian eigenvalue by Lanczos, and reports its peak resident set size (``ru_maxrss``) and the wall time.
The loader's batch size is fixed, so a toolkit that streams has the same peak at N = 2 000 and N = 32 000;
one that gathered the set, its activations or its graph would grow ~16×.

    python benchmarks/stream_memory.py                     # N = 2000, 8000, 32000 → results/stream-memory-<date>.json
    python benchmarks/stream_memory.py --sizes 2000,32000 --batch-size 500 --threads 1

The pass/fail figure is ``growth = peak(N_max) / peak(N_min) − 1`` (the issue asks for < 20 %).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(n: int, batch_size: int, threads: int) -> dict:
    import resource

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from sharpness import HessianOperator, Objective, top_eigenvalues

    torch.set_num_threads(threads)

    class Lazy(Dataset):
        """MNIST-sized samples made on demand: x_i ~ N(0, I_784) from seed i, label from a fixed teacher."""

        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int):
            x = torch.randn(784, generator=torch.Generator().manual_seed(i))
            return x, int(x[:10].argmax())

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.Tanh(), nn.Linear(128, 10))
    loader = DataLoader(Lazy(), batch_size=batch_size, shuffle=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    obj = Objective(model, loader)
    loss, grad = obj.value_and_grad()
    H = HessianOperator(obj)
    top = top_eigenvalues(H, k=1, tol=1e-3, max_steps=12, seed=0)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "batch_size": batch_size, "peak_mb": peak, "peak_before_objective_mb": before,
            "seconds": seconds, "loss": float(loss), "lambda_max": float(top.values[0]),
            "num_matvecs": H.num_matvecs, "hessian_mode": H.mode, "num_batches": obj.num_batches}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,8000,32000")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help="JSON file (default: benchmarks/results/stream-memory-<date>.json)")
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.batch_size, args.threads)))
        return
    runs = []
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--batch-size", str(args.batch_size),
                              "--threads", str(args.threads)], check=True, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(HERE.parent)})
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = runs[-1]
        print(f"N={r['n']:>6}  peak {r['peak_mb']:.1f} MB  ({r['seconds']:.1f} s, {r['num_matvecs']} HVPs, "
              f"{r['num_batches']} batches)", flush=True)
    growth = runs[-1]["peak_mb"] / runs[0]["peak_mb"] - 1
    print(f"peak growth N={runs[0]['n']} → {runs[-1]['n']}: {100 * growth:+.1f} %")
    import torch

    result = {
        "benchmark": "stream-memory",
        "date": datetime.date.today().isoformat(),
        "runs": runs,
        "growth": growth,
        "passes": growth < 0.20,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "config": {"sizes": args.sizes, "batch_size": args.batch_size, "threads": args.threads,
                   "model": "784-128-10 tanh MLP", "measure": "ru_maxrss of a fresh process"},
    }
    path = Path(args.out) if args.out else HERE / "results" / f"stream-memory-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"→ {path}")


if __name__ == "__main__":
    main()
