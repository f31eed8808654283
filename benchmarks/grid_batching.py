"""Landscape grids one point at a time against vmapped blocks of points, in paired rounds.

``landscape.plane`` evaluates its points either in a loop (each point as ``Objective.value`` does) or in
``vmap``-ed blocks (:func:`sharpness.objective.points.default_batch_size` decides). This script times both beside
plain ``no_grad`` forward passes of the same model on the same data, round by round (the median of same-round
ratios is reported), on models the rule must get right:

* a small tanh MLP 40-64-10 on MNIST-1D (3 274 parameters, 1 000 samples): per-point dispatch dominates;
* ``peers.py``'s ``cnn-digits`` convnet (1 610 parameters, 1 797 samples);
* the ``cnn1d`` convnet on MNIST-1D (8 010 parameters, 1 000 samples).

    python benchmarks/grid_batching.py --out benchmarks/results/grid-batching-DATE.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from paired import write_result  # noqa: E402


def problems():
    import peers

    from sharpness import Objective
    from sharpness.data import load_dataset
    from sharpness.models import build_model

    ds = load_dataset("mnist1d")
    x, y = ds.x_train[:1000], ds.y_train[:1000]
    mlp = build_model("mlp", input_shape=list(x.shape[1:]), num_classes=10, hidden=(64,), activation="tanh", seed=0).eval()
    yield "mlp 40-64-10 (tanh), MNIST-1D", mlp, x, y, Objective(mlp, x, y)
    cnn = peers.build_cnn_digits()
    yield "convnet 4-8 ch, 8×8 digits", cnn.model, cnn.x, cnn.y, peers._objective(cnn)
    c1d = build_model("cnn1d", input_shape=list(x.shape[1:]), num_classes=10, seed=0).eval()
    yield "cnn1d, MNIST-1D", c1d, x, y, Objective(c1d, x, y)


def measure(model, x, y, objective, steps: int, rounds: int) -> dict:
    from sharpness import landscape
    from sharpness.objective.points import BATCH_POINTS, default_batch_size

    d1 = landscape.random_direction(objective, normalization="filter", seed=0)
    d2 = landscape.random_direction(objective, normalization="filter", seed=1)
    g = landscape.grid(-1.0, 1.0, steps)

    def forwards() -> None:
        with torch.no_grad():
            for _ in range(steps * steps):
                F.cross_entropy(model(x), y)

    jobs = {"forwards": forwards,
            "loop": lambda: landscape.plane(objective, None, d1, d2, g, g, batch_size=1),
            f"blocks of {BATCH_POINTS}": lambda: landscape.plane(objective, None, d1, d2, g, g, batch_size=BATCH_POINTS)}
    for fn in jobs.values():  # warm-up (vmap's first call, allocator)
        fn()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(rounds):
        for k, fn in jobs.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    ratio = {k: statistics.median(a / b for a, b in zip(times[k], times["forwards"])) for k in jobs if k != "forwards"}
    return {"num_params": objective.numel, "n_samples": objective.n_samples, "points": steps * steps,
            "default_batch_size": default_batch_size(objective), "x_forwards": ratio, "seconds": times}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=15, help="grid points per axis (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    rows = []
    for name, model, x, y, objective in problems():
        row = {"problem": name, **measure(model, x, y, objective, args.steps, args.rounds)}
        rows.append(row)
        print(f"{name} (P = {row['num_params']:,}, default batch {row['default_batch_size']}): × forwards "
              + ", ".join(f"{k} {v:.2f}" for k, v in row["x_forwards"].items()), flush=True)
    write_result(args.out, rows, load_before=load0, threads=args.threads, steps=args.steps, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
