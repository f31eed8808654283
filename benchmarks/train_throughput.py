"""Throughput of ``sharpness.train.train`` against a bare PyTorch loop (samples per second).

Same model (the toolkit's MNIST-1D ``mlp``, same seed), same data as tensors on the device, same batch size,
Adam, one permutation per epoch. The bare loop is the minimal idiom::

    for idx in torch.randperm(n).split(B):          # drop_last, like the toolkit's default
        opt.zero_grad(); F.cross_entropy(model(x[idx]), y[idx]).backward(); opt.step()

The toolkit's number is reported two ways, measured by a callback: optimizer steps only (the per-epoch
evaluation of the full train and test splits excluded) and end to end (evaluation every epoch included).
Each is timed by the wall clock and by the process's CPU time; on a shared, busy machine the CPU time is the
trustworthy one (use ``--threads 1`` there, so no time is spent spinning in idle worker threads). Runs are
interleaved and repeated; medians and bests (the run least disturbed by other load) are reported, and the
ratio is toolkit / bare (1.0 = as fast; the target is ≥ 0.9 with evaluation excluded).

    python benchmarks/train_throughput.py [--batch-size 32] [--epochs 3] [--repeats 3] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from sharpness.data import load_dataset
from sharpness.models import build_model
from sharpness.train import TrainConfig, train


def _now() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time is what to trust on a shared, busy machine."""
    return time.perf_counter(), time.process_time()


def bare_loop(x: torch.Tensor, y: torch.Tensor, *, batch: int, epochs: int, lr: float, seed: int, kwargs: dict) -> tuple[float, float]:
    """Samples per second (wall, CPU) of the minimal loop; the clock covers the optimizer steps only."""
    model = build_model("mlp", input_shape=list(x.shape[1:]), num_classes=10, seed=seed, **kwargs).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    steps = n // batch
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    sync()
    wall0, cpu0 = _now()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(x.device)
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    sync()
    wall1, cpu1 = _now()
    samples = epochs * steps * batch
    return samples / (wall1 - wall0), samples / (cpu1 - cpu0)


class _Clock:
    """Callback: time spent from one step end to the next (the steps), and from begin to end (everything)."""

    def __init__(self) -> None:
        self.steps = [0.0, 0.0]

    def on_train_begin(self, state) -> None:
        self.begin = self.last = _now()

    def _lap(self, into_steps: bool) -> None:
        now = _now()
        if into_steps:
            self.steps = [a + n - l for a, n, l in zip(self.steps, now, self.last)]
        self.last = now

    def on_step_end(self, state) -> None:
        self._lap(True)

    def on_epoch_end(self, state) -> None:  # the interval since the last step is the evaluation
        self._lap(False)

    def on_train_end(self, state) -> None:
        self.total = [n - b for n, b in zip(_now(), self.begin)]


def toolkit(dataset, *, batch: int, epochs: int, lr: float, seed: int, kwargs: dict, device: str) -> dict:
    """Samples per second, wall and CPU, over optimizer steps only and end to end (evaluation every epoch)."""
    config = TrainConfig(data="mnist1d", model="mlp", model_kwargs=kwargs, optimizer="adam", lr=lr,
                         batch_size=batch, epochs=epochs, seed=seed, device=device)
    clock = _Clock()
    m = train(config, dataset=dataset, callbacks=[clock]).metrics
    samples = m["steps"] * m["batch_size"]
    return {"steps_wall": samples / clock.steps[0], "steps_cpu": samples / clock.steps[1],
            "eval_wall": samples / clock.total[0], "eval_cpu": samples / clock.total[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", default="512,512", help="mlp hidden widths")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs = {"hidden": [int(h) for h in args.hidden.split(",")]}
    dataset = load_dataset("mnist1d")
    device = torch.device(args.device)
    x, y = dataset.x_train.to(device), dataset.y_train.to(device)
    common = dict(batch=args.batch_size, epochs=args.epochs, lr=args.lr, seed=0, kwargs=kwargs)

    # Warm-up: the first optimizer construction imports torch._dynamo (seconds), kernels get loaded.
    bare_loop(x, y, **{**common, "epochs": 1})
    toolkit(dataset, **{**common, "epochs": 1}, device=args.device)

    runs: dict[str, list[float]] = {k: [] for k in ("bare_wall", "bare_cpu", "steps_wall", "steps_cpu", "eval_wall", "eval_cpu")}
    for _ in range(args.repeats):  # interleaved, so load on a shared machine hits both alike
        wall, cpu = bare_loop(x, y, **common)
        runs["bare_wall"].append(wall)
        runs["bare_cpu"].append(cpu)
        for k, v in toolkit(dataset, **common, device=args.device).items():
            runs[k].append(v)
    med = {k: statistics.median(v) for k, v in runs.items()}
    best = {k: max(v) for k, v in runs.items()}  # least disturbed by other load: the intrinsic cost
    ratio = {f"{what}_{clock}": med[f"{what}_{clock}"] / med[f"bare_{clock}"]
             for what in ("steps", "eval") for clock in ("wall", "cpu")}
    ratio_best = {f"{what}_{clock}": best[f"{what}_{clock}"] / best[f"bare_{clock}"]
                  for what in ("steps", "eval") for clock in ("wall", "cpu")}
    result = {
        "benchmark": "train_throughput",
        "setup": {**common, "dataset": "mnist1d", "n_train": int(x.shape[0]), "optimizer": "adam",
                  "device": str(device), "threads": torch.get_num_threads(), "repeats": args.repeats,
                  "torch": torch.__version__, "python": platform.python_version()},
        "samples_per_second_median": med,
        "samples_per_second_best": best,
        "ratio_toolkit_over_bare": ratio,
        "ratio_toolkit_over_bare_best": ratio_best,
        "raw": runs,
    }
    for name, values, ratios in (("median", med, ratio), ("best", best, ratio_best)):
        print(f"{'samples/s (' + name + ')':<28}{'wall':>10}{'CPU':>10}{'ratio wall':>12}{'ratio CPU':>11}")
        print(f"{'bare PyTorch loop':<28}{values['bare_wall']:>10.0f}{values['bare_cpu']:>10.0f}")
        for what, label in (("steps", "sharpness.train, steps"), ("eval", "sharpness.train, +eval")):
            print(f"{label:<28}{values[what + '_wall']:>10.0f}{values[what + '_cpu']:>10.0f}"
                  f"{ratios[what + '_wall']:>12.3f}{ratios[what + '_cpu']:>11.3f}")
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
