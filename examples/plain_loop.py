"""A plain PyTorch loop, then `sharpness.analyze` on its own DataLoader: the sharpness of the minimum it reached.

    python examples/plain_loop.py [--steps 200] [--json report.json]

Trains a small MLP on a synthetic 3-class problem with SGD, then measures λ_max, λ_min and the Hessian trace of
the mean training loss over the same DataLoader it trained on (shuffling is fine: the analysis is the exact
mean over the set, whatever the order and batching). CPU, a few seconds.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import sharpness


def make_data(n: int = 256, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # three classes
    return TensorDataset(x, y)


def main(argv: list[str] | None = None) -> tuple[nn.Module, dict]:
    """Train, analyze, print; returns the trained model and the report dict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--json", help="write the sharpness report here")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 3))
    loader = DataLoader(make_data(), batch_size=32, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = 0
    while step < args.steps:
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == args.steps:
                break

    report = sharpness.analyze(model, loader, top_k=1, bottom_k=1, trace_probes=30, seed=0)
    result = report.to_dict()
    print(f"after {step} steps: loss {result['loss']:.4f}, λ_max {report.hessian['top']['values'][0]:.4g}, "
          f"λ_min {report.hessian['bottom']['values'][0]:.4g}, trace {report.hessian['trace']['value']:.4g}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return model, result


if __name__ == "__main__":
    main()
