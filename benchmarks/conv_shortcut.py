"""Hessian-vector products with and without the convolution rerouting, in paired rounds (issue #18).

:mod:`sharpness.hessian.conv_double_backward` reroutes a convolution whose input needs no gradient (a network's first)
so the double backward skips PyTorch's wasted ∂/∂input product, and a plain inner convolution so its backward
products run as forward convolutions. This script measures what each buys on the benchmark convnets, the same
:class:`~sharpness.hessian.HessianOperator` with PyTorch's path, the first-convolution shortcut alone and both
(``HessianOperator(convolutions=...)``), alternating within each round so outside load hits all
alike:

* ``cnn-digits`` of ``peers.py`` (1,610 parameters, 1 797 digits): one chunk (retained graph) and 4 chunks
  (double backward per chunk);
* the ~1 M-parameter Fashion-MNIST convnet of ``scaling.py`` (seed-0 initialization) at N = 8 000 in chunks of
  6 117, as the default 2 GiB budget cuts it.

Reported: seconds per product (minimum over rounds) and × a gradient over the same chunks, and the medians over
rounds of the paired ratios.

    python benchmarks/conv_shortcut.py --out benchmarks/results/conv-shortcut-DATE.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from paired import write_result  # noqa: E402


def problems():
    import peers

    from sharpness import Objective
    from sharpness.data import load_dataset
    from sharpness.models import build_model

    cnn = peers.build_cnn_digits()
    yield "cnn-digits, 1 chunk (retained graph)", peers._objective(cnn)
    yield "cnn-digits, 4 chunks (double backward)", peers._objective(cnn, chunks=4)
    ds = load_dataset("fashion-mnist", subset=8000)
    model = build_model("convnet", input_shape=[1, 28, 28], num_classes=10, channels=(8, 16), hidden=1280, seed=0)
    yield "cnn-fmnist 1.02M parameters, N = 8000 in chunks of 6117", Objective(model, ds.x_train, ds.y_train, chunk_size=6117)


def measure(objective, rounds: int) -> dict:
    from sharpness import HessianOperator

    v = torch.randn(objective.numel, generator=torch.Generator().manual_seed(0))
    # the three routings: PyTorch's own double backward, the first-convolution shortcut alone, and the default
    # (first and plain inner convolutions rerouted)
    variants = {"pytorch": "pytorch", "first": "first", "all": "rerouted"}
    ops = {}
    for name, route in variants.items():
        H = HessianOperator(objective, convolutions=route)
        H @ v  # builds a retained graph; warms every path
        ops[name] = H
    times: dict[str, list[float]] = {name: [] for name in variants}
    grads: list[float] = []
    for _ in range(rounds):
        t = time.perf_counter()
        objective.value_and_grad()
        grads.append(time.perf_counter() - t)
        for name in variants:
            t = time.perf_counter()
            ops[name] @ v
            times[name].append(time.perf_counter() - t)
    g = min(grads)

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    return {
        "mode": ops["all"].mode,
        "chunk_size": objective.chunk_size,
        "gradient_s": g,
        "hvp_s": {name: min(t) for name, t in times.items()},
        "hvp_x_gradient": {name: min(t) / g for name, t in times.items()},
        "median_ratio_first_to_pytorch": paired("first", "pytorch"),
        "median_ratio_all_to_first": paired("all", "first"),
        "median_ratio_all_to_pytorch": paired("all", "pytorch"),
        "rounds": {**times, "gradient": grads},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    load0 = os.getloadavg()
    for name, objective in problems():
        row = {"problem": name, "num_params": objective.numel, "n_samples": objective.n_samples,
               **measure(objective, args.rounds if objective.n_samples < 5000 else max(3, args.rounds // 2))}
        rows.append(row)
        x = row["hvp_x_gradient"]
        print(f"{name}: HVP × a gradient: PyTorch {x['pytorch']:.2f}, first convolutions {x['first']:.2f}, "
              f"first and inner {x['all']:.2f} (median paired ratios: first/PyTorch "
              f"{row['median_ratio_first_to_pytorch']:.3f}, all/first {row['median_ratio_all_to_first']:.3f})",
              flush=True)
    write_result(args.out, rows, load_before=load0, threads=args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
