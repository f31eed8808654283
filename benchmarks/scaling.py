"""Time and memory of Hessian-vector products against N at fixed P (issue #18, item 6).

For each N (default 2 000, 8 000, 32 000, 60 000 Fashion-MNIST training images) a fresh Python process builds the
~1 M-parameter convnet of ``peers.py``'s ``cnn-fmnist`` problem (8-16 channels, 1280 hidden; 1,021,034
parameters; at its seed-0 initialization — timing and memory do not depend on the weights), an
:class:`~sharpness.objective.Objective` with the default chunking (``memory`` budget, 2 GiB unless
``--memory`` says otherwise), and times one gradient and ``--hvps`` Hessian-vector products (each after one
untimed warm-up call: the product's builds the retained graph of a one-chunk set, and both pay the process's
one-time costs at these shapes). Peak RSS is sampled every
2 ms from just before the ``Objective`` is built (the data are already loaded), so it is the analysis' own
memory. A full analysis (top-1 + trace, ~110 products) at N = 60 000 would take over an hour on 2 shared cores;
per-product time is what it scales with.

    python benchmarks/scaling.py                       # → results/scaling-<date>.json and .png
    python benchmarks/scaling.py --sizes 2000,8000 --memory 0.5

Reported per N: chunk size and policy, wall per gradient and per HVP, HVP ÷ gradient, wall per HVP per 1 000
samples (∝ N means constant), peak ΔRSS, and the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(n: int, memory_gib: float, hvps: int, threads: int) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from peers import PeakRSS

    from sharpness import HessianOperator, Objective
    from sharpness.data import load_dataset
    from sharpness.models import build_model

    torch.set_num_threads(threads)
    ds = load_dataset("fashion-mnist", subset=n)
    model = build_model("convnet", input_shape=[1, 28, 28], num_classes=10, channels=(8, 16), hidden=1280, seed=0)
    x, y = ds.x_train, ds.y_train
    with PeakRSS() as rss:
        obj = Objective(model, x, y, loss="cross-entropy", memory=int(memory_gib * 2**30))
        obj.value_and_grad()  # untimed, like the first product below: the process's first pass at these shapes
        t0 = time.perf_counter()
        obj.value_and_grad()
        grad_s = time.perf_counter() - t0
        H = HessianOperator(obj)
        v = torch.randn(obj.numel, generator=torch.Generator().manual_seed(0))
        # One untimed product first, in every mode: for one chunk it builds the retained graph; for streamed
        # chunks it pays the process's one-time costs at these shapes (allocator growth, kernel setup), which
        # inflated the smallest streamed N in the run of 2026-12-02 (results/scaling-2026-12-02-convs).
        H @ v
        t0 = time.perf_counter()
        for _ in range(hvps):
            H @ v
        hvp_s = (time.perf_counter() - t0) / hvps
    return {"n": n, "num_params": obj.numel, "chunk_size": obj.chunk_size, "chunk_policy": obj.chunk_policy,
            "mode": H.mode, "grad_s": grad_s, "hvp_s": hvp_s, "hvp_x_grad": hvp_s / grad_s,
            "hvp_s_per_1000": hvp_s / n * 1000, "peak_rss_mb": rss.peak_mb}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    ax[0].loglog(ns, [r["hvp_s"] for r in rows], "o-", label="HVP")
    ax[0].loglog(ns, [r["grad_s"] for r in rows], "s-", label="gradient")
    ax[0].loglog(ns, [rows[0]["hvp_s"] * n / ns[0] for n in ns], ":", color="grey", label="∝ N (from the first HVP)")
    ax[0].set_xlabel("N (samples)")
    ax[0].set_ylabel("wall per call (s)")
    ax[0].legend()
    ax[1].semilogx(ns, [r["peak_rss_mb"] for r in rows], "o-")
    ax[1].set_xlabel("N (samples)")
    ax[1].set_ylabel("peak ΔRSS (MB)")
    ax[1].set_ylim(bottom=0)
    for r in rows:  # below each point, so neighbouring labels at the right edge do not overlap
        ax[1].annotate(f"chunk\n{r['chunk_size']:,}", (r["n"], r["peak_rss_mb"]), xytext=(0, -8),
                       textcoords="offset points", ha="center", va="top", fontsize=7)
    for a_ in ax:
        a_.set_xticks(ns, [f"{n:,}" for n in ns], fontsize=7)
        a_.minorticks_off()
    fig.suptitle("1.02 M-param CNN, Fashion-MNIST: HVP time and memory against N", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,8000,32000,60000")
    ap.add_argument("--memory", type=float, default=2.0, help="GiB budget for one chunk's graph")
    ap.add_argument("--hvps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", type=int)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--plot", type=Path, help="only redraw the PNG of a saved results JSON")
    a = ap.parse_args()
    if a.plot:
        plot(json.loads(a.plot.read_text())["rows"], a.plot.with_suffix(".png"))
        return
    if a.child:
        print(json.dumps(child(a.child, a.memory, a.hvps, a.threads)))
        return
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        load = os.getloadavg()
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--memory", str(a.memory), "--hvps",
                              str(a.hvps), "--threads", str(a.threads)], check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1]) | {"load_before": load, "load_after": os.getloadavg()}
        rows.append(row)
        print(f"N={n}: chunk {row['chunk_size']} ({row['mode']}), grad {row['grad_s']:.2f} s, HVP {row['hvp_s']:.2f} s "
              f"({row['hvp_x_grad']:.2f}× grad, {row['hvp_s_per_1000']:.3f} s per 1000), peak ΔRSS "
              f"{row['peak_rss_mb']:.0f} MB, load {load[0]:.2f}", flush=True)
    stem = a.out or HERE / "results" / f"scaling-{datetime.date.today().isoformat()}"
    Path(f"{stem}.json").write_text(json.dumps({"config": {k: str(v) for k, v in vars(a).items()}, "rows": rows}, indent=2) + "\n")
    plot(rows, Path(f"{stem}.png"))
    print(f"→ {stem}.json, {stem}.png")


if __name__ == "__main__":
    main()
