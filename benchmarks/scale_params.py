"""Analyses at the size of real models: peak memory and Lanczos overhead from 1 M to 124 M parameters (issue #28).

The model is the issue's MLP, ``Linear(d, d) → tanh → Linear(d, 10)`` on 16 random samples in float32, at widths
d = 1 000, 3 160, 7 000 and 11 130 (P = 1.0 M, 10.0 M, 49.1 M and 124.0 M: GPT-2 small's count). Small batches
keep each product cheap, which makes this the hard case for the estimators' own overhead. Each task runs in its
own child process through the public path, ``sharpness.analyze`` with only that estimator switched on and the
default memory budget (8 GiB), so the child's peak RSS is the task's:

* ``top1``: λ_max at tol 1e-3; ``top5``: the top 5 at tol 1e-3 (search + verification runs);
* ``trace``: Hutchinson with 20 probes (Hutch++'s sketch of ⌊m/3⌋ vectors does not fit 8 GiB at 124 M and is
  refused up front with the budget it needs; that refusal is recorded too);
* ``epsilon``: Keskar's ε-sharpness, ε = 1e-3, the default ascent.

Every Hessian-vector product inside the run is timed (a wrapper around ``HessianOperator.__matmul__``), so the
estimator's time splits into its products and its own overhead, measured in one process:
``ratio = stage seconds / (products × median product seconds)`` (1.0 would be no overhead at all). ε-sharpness
makes no products; its overhead is reported against one gradient (``Objective.value_and_grad``).

    python benchmarks/scale_params.py                       # every size and task (≈ 10 min on one thread)
    python benchmarks/scale_params.py --sizes 1000,3160 --tasks top1,trace

Results: ``benchmarks/results/scale_params-<date>.json`` and a Markdown table on stdout
(benchmarks/README.md, "Scale").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WIDTHS = (1000, 3160, 7000, 11130)
TASKS = ("top1", "top5", "trace", "epsilon")
SAMPLES = 16


def scale_mlp(width: int):
    """The issue's MLP ``Linear(d, d) → tanh → Linear(d, 10)`` (P = d² + 11d + 10, float32) and 16 random samples,
    seeded: (model, inputs, targets). benchmarks/gpu_check.py measures the same model at d = 11 130."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 10))
    return model, torch.randn(SAMPLES, width), torch.randint(0, 10, (SAMPLES,))


def _child(width: int, task: str, threads: int) -> dict:
    import torch

    import sharpness
    from sharpness.hessian import HessianOperator
    from sharpness.objective import Objective

    torch.set_num_threads(threads)
    model, x, y = scale_mlp(width)
    sharpness.analyze(model, x[:2], y[:2], top_k=1, bottom_k=0, trace=False, tol=1e-1)  # imports, first-call setup
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    products: list[tuple[float, int]] = []  # (seconds, columns) of every product in the run
    original = HessianOperator.__matmul__

    def timed(self, v):
        start = time.perf_counter()
        out = original(self, v)
        products.append((time.perf_counter() - start, 1 if v.ndim == 1 else int(v.shape[1])))
        return out

    HessianOperator.__matmul__ = timed
    options = dict(top_k=0, bottom_k=0, trace=False, tol=1e-3)
    stage = {"top1": "eigenvalues", "top5": "eigenvalues", "trace": "trace", "epsilon": "flatness"}[task]
    if task == "top1":
        options.update(top_k=1)
    elif task == "top5":
        options.update(top_k=5)
    elif task == "trace":
        options.update(trace=True, trace_method="hutchinson", trace_probes=20)
    else:
        options.update(epsilon=(1e-3,))
    row: dict = {"width": width, "task": task, "threads": threads}
    try:
        report = sharpness.analyze(model, x, y, **options)
    except sharpness.InputError as err:  # a refusal made before the work (the memory budget)
        row.update(refused=str(err), peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9)
        return row
    HessianOperator.__matmul__ = original
    seconds = report.cost["seconds_by_measure"][stage]
    columns = sum(c for _, c in products)
    row.update(num_params=report.hessian["num_params"], seconds=seconds, products=columns,
               peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
               base_rss_gb=base_rss / 1e9, model_gb=report.hessian["num_params"] * 4 / 1e9,
               memory=report.cost["memory"])
    if columns:
        per_column = statistics.median(s / c for s, c in products)
        row.update(product_seconds=per_column, product_seconds_sum=sum(s for s, _ in products),
                   overhead_seconds=seconds - sum(s for s, _ in products), ratio=seconds / (columns * per_column))
    if task in ("top1", "top5"):
        top = report.hessian["top"]
        row.update(values=top["values"], converged=top["converged"], reorthogonalization=top["reorthogonalization"],
                   num_runs=top["num_runs"], miss_bound=top["miss_bound"])
    elif task == "trace":
        row.update(trace=report.hessian["trace"]["value"], trace_stderr=report.hessian["trace"]["stderr"])
    else:
        eps = dataclasses.asdict(report.measures["epsilon_sharpness"][0])
        objective = Objective(model, x, y)
        objective.value_and_grad()
        grads = []
        for _ in range(3):
            start = time.perf_counter()
            objective.value_and_grad()
            grads.append(time.perf_counter() - start)
        evals = eps["num_function_evals"]
        row.update(epsilon_value=eps["value"], function_evals=evals, gradient_seconds=statistics.median(grads),
                   ratio=seconds / (evals * statistics.median(grads)) if evals else None)
    return row


def _table(rows: list[dict]) -> str:
    lines = ["| P | task | products (evals) | one product (s) | task (s) | overhead (s) | ratio | peak RSS (GB) | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        P = f"{r.get('num_params', r['width'] ** 2 + 11 * r['width'] + 10) / 1e6:.1f} M"
        if "refused" in r:
            lines.append(f"| {P} | {r['task']} | — | — | — | — | — | {r['peak_rss_gb']:.2f} | refused up front: "
                         f"{r['refused'].split(';')[-1].strip()} |")
            continue
        if r["task"] == "epsilon":
            count, one = f"({r['function_evals']})", f"{r['gradient_seconds']:.3f} (gradient)"
            overhead, note = "—", f"ε-sharpness {r['epsilon_value']:.3g}"
        else:
            count, one, overhead = str(r["products"]), f"{r['product_seconds']:.3f}", f"{r['overhead_seconds']:.2f}"
            note = (f"λ = {', '.join(f'{v:.4g}' for v in r['values'])}; {r['reorthogonalization']}, {r['num_runs']} run(s)"
                    if "values" in r else f"trace {r['trace']:.4g} ± {r['trace_stderr']:.2g}")
        ratio = "—" if r.get("ratio") is None else f"{r['ratio']:.2f}"
        lines.append(f"| {P} | {r['task']} | {count} | {one} | {r['seconds']:.1f} | {overhead} | {ratio} | "
                     f"{r['peak_rss_gb']:.2f} | {note} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, WIDTHS)), help="MLP widths d (P ≈ d² + 11 d)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", nargs=2, metavar=("WIDTH", "TASK"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_child(int(a.child[0]), a.child[1], a.threads)))
        return
    rows = []
    load = [os.getloadavg()[0]]
    for width in map(int, a.sizes.split(",")):
        for task in a.tasks.split(","):
            done = subprocess.run([sys.executable, __file__, "--child", str(width), task, "--threads", str(a.threads)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                rows.append({"width": width, "task": task, "failed": done.stderr.strip().splitlines()[-1:]})
                print(f"d={width} {task}: failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            load.append(os.getloadavg()[0])
            print(json.dumps(rows[-1]), file=sys.stderr)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    out = {"commit": commit, "date": stamp, "machine": platform.machine(), "cpus": os.cpu_count(),
           "load_1min": {"min": min(load), "max": max(load)}, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"scale_params-{stamp}.json"
    path.write_text(json.dumps(out, indent=1))
    print(_table([r for r in rows if "failed" not in r]))
    print(f"\n{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}; commit {commit}; "
          f"1-min load {min(load):.1f}–{max(load):.1f}")


if __name__ == "__main__":
    main()
