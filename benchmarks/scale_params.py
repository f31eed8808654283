"""Analyses at the size of real models: peak memory and Lanczos overhead from 1 M to 124 M parameters (issue #28).

The model is the issue's MLP, ``Linear(d, d) → tanh → Linear(d, 10)`` on 16 random samples in float32, at widths
d = 1 000, 3 160, 7 000 and 11 130 (P = 1.0 M, 10.0 M, 49.1 M and 124.0 M: GPT-2 small's count). Small batches
keep each product cheap, which makes this the hard case for the estimators' own overhead. Each task runs in its
own child process through the public path, ``sharpness.analyze`` with only that estimator switched on and the
default memory budget (8 GiB), so the child's peak RSS is the task's:

* ``top1``: λ_max at tol 1e-3; ``top5``: the top 5 at tol 1e-3 (search + verification runs);
* ``trace``: Hutchinson with 20 probes (Hutch++'s sketch of ⌊m/3⌋ vectors does not fit 8 GiB at 124 M and is
  refused up front with the budget it needs; that refusal is recorded too);
* ``epsilon``: Keskar's ε-sharpness, ε = 1e-3, the default ascent;
* ``subspace``: ε-sharpness, ε = 1e-3, in a random subspace of p = 100, from the gradient-sign corner with a
  budget of one evaluation (``epsilon_start="corner"``, no restarts, ``epsilon_max_iter=1``). Where A and its QR
  (2p vectors of P) do not fit the budget, A is regenerated tile by tile (sharpness/measures/subspace.py), and
  every pass over A draws P·p normals again: the row reports the passes and one column's draw time;
* peers, where they run: ``pyhessian-top1`` (its ``eigenvalues()``: power iteration, tol 1e-3),
  ``pyhessian-trace`` (its Hutchinson, 20 probes), ``curvlinops-top1`` (SciPy's ``eigsh`` on its
  ``to_scipy()``) and ``curvlinops-trace`` (its Hutch++, 21 products), through benchmarks/peers.py's adapters.
  A peer that does not import, fails or runs out of time gets a row saying so; one whose known memory needs
  (:data:`PEER_BYTES_PER_PARAM`) exceed :data:`RSS_LIMIT_GB` is not started and gets a row with the estimate.
  The peers live in a side environment (benchmarks/README.md, "Running peers.py"): run this script with that
  environment's Python.

Every Hessian-vector product inside the run is timed (a wrapper around ``HessianOperator.__matmul__``), so the
estimator's time splits into its products and its own overhead, measured in one process:
``ratio = stage seconds / (products × median product seconds)`` (1.0 would be no overhead at all). A local
Lanczos run writes its products into recycled vectors (``HessianOperator.matvec_into``), which makes them
cheaper than a caller's ``H @ v``; top-k rows also give ``caller_ratio``, the same time over products × the
median of three ``H @ v`` timed afterwards in the same process. ε-sharpness
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
TASKS = ("top1", "top5", "trace", "epsilon", "subspace", "pyhessian-top1", "pyhessian-trace", "curvlinops-top1",
         "curvlinops-trace")
SAMPLES = 16
SUBSPACE_DIM = 100
#: peer task → (library, what it runs)
PEER_TASKS = {"pyhessian-top1": ("pyhessian", "top1"), "pyhessian-trace": ("pyhessian", "trace"),
              "curvlinops-top1": ("curvlinops", "top1"), "curvlinops-trace": ("curvlinops", "trace")}
PEER_TRACE_PROBES = {"pyhessian": 20, "curvlinops": 21}  # curvlinops' Hutch++ wants a multiple of 3
#: Resident bytes per parameter a peer task needs, from what it holds: PyHessian keeps the model, the gradient
#: with its graph (create_graph), v, Hv and its normalized copies (≈ 9 float32 vectors); curvlinops' eigsh
#: runs ARPACK in float64 (to_scipy's default dtype) with ncv = 20 Lanczos vectors and 3 work vectors (23 × 8)
#: beside the model and a vmapped jvp-of-jacrev product (≈ 6 float32); its Hutch++ keeps six P × 7 float32
#: blocks (S·A, Q, A·Q, G, its projection, A times it) and vmaps a product over 7 columns (≈ 21 float32).
PEER_BYTES_PER_PARAM = {"pyhessian-top1": 36, "pyhessian-trace": 36, "curvlinops-top1": 208, "curvlinops-trace": 252}
#: A peer expected above this resident size is not started (the machine has 24 GB, shared).
RSS_LIMIT_GB = 14.0
CHILD_TIMEOUT_S = 900


def scale_mlp(width: int):
    """The issue's MLP ``Linear(d, d) → tanh → Linear(d, 10)`` (P = d² + 11d + 10, float32) and 16 random samples,
    seeded: (model, inputs, targets). benchmarks/gpu_check.py measures the same model at d = 11 130."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 10))
    return model, torch.randn(SAMPLES, width), torch.randint(0, 10, (SAMPLES,))


def _num_params(width: int) -> int:
    return width**2 + 11 * width + 10


def _peer_child(width: int, task: str, threads: int) -> dict:
    """One peer task on the scale MLP, through benchmarks/peers.py's adapter, with every product timed."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import peers

    torch.set_num_threads(threads)
    library, kind = PEER_TASKS[task]
    row: dict = {"width": width, "task": task, "threads": threads, "library": library,
                 "version": peers._version(peers.PEER_MODULES[library][1])}
    module, reason = peers._peer_status(library)
    if module is None:
        return {**row, "failed": reason}
    model, x, y = scale_mlp(width)
    problem = peers.Problem(name=f"scale-mlp-d{width}", description="benchmarks/scale_params.py's MLP",
                            model=model.eval(), x=x, y=y, truth="none", tasks=(kind,))
    products: list[tuple[float, int]] = []  # (seconds, columns) of every product

    def timed(fn, columns):
        def wrapper(*args, **kw):
            start = time.perf_counter()
            out = fn(*args, **kw)
            products.append((time.perf_counter() - start, columns(*args)))
            return out
        return wrapper

    if library == "pyhessian":
        ph = sys.modules["pyhessian.hessian"]  # the module (the package re-exports the class as `hessian`)
        ph.hessian_vector_product = timed(ph.hessian_vector_product, lambda *a: 1)
        adapter = peers.PyHessianAdapter(problem, 0, module)
    else:
        op = module.HessianLinearOperator
        op._matmat = timed(op._matmat, lambda self, M: int(M[0].shape[-1]))
        adapter = peers.CurvlinopsAdapter(problem, 0, module)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    try:
        outcome = adapter.top(1) if kind == "top1" else adapter.trace(PEER_TRACE_PROBES[library])
    except Exception as err:  # a peer's failure is a result: record it
        return {**row, "failed": peers._one_line(err), "seconds": time.perf_counter() - start,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}
    seconds = time.perf_counter() - start
    columns = sum(c for _, c in products)
    row.update(num_params=_num_params(width), seconds=seconds, products=columns, values=outcome.values,
               peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, base_rss_gb=base_rss / 1e9)
    if columns:
        per_column = statistics.median(s / c for s, c in products)
        row.update(product_seconds=per_column, product_seconds_sum=sum(s for s, _ in products),
                   overhead_seconds=seconds - sum(s for s, _ in products), ratio=seconds / (columns * per_column))
    return row


def _child(width: int, task: str, threads: int) -> dict:
    import torch

    import sharpness
    import sharpness.measures.epsilon as epsilon_module
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

    original_into = HessianOperator.matvec_into

    def timed_into(self, v, out):  # the products a local Lanczos run writes into its recycled vectors
        start = time.perf_counter()
        result = original_into(self, v, out)
        products.append((time.perf_counter() - start, 1))
        return result

    HessianOperator.__matmul__ = timed
    HessianOperator.matvec_into = timed_into
    generated: list = []  # the regenerated subspace, if the subspace task uses one
    make = epsilon_module._generated_subspace
    epsilon_module._generated_subspace = lambda *a: generated.append(make(*a)) or generated[-1]
    options = dict(top_k=0, bottom_k=0, trace=False, tol=1e-3)
    stage = {"top1": "eigenvalues", "top5": "eigenvalues", "trace": "trace", "epsilon": "flatness",
             "subspace": "flatness"}[task]
    if task == "top1":
        options.update(top_k=1)
    elif task == "top5":
        options.update(top_k=5)
    elif task == "trace":
        options.update(trace=True, trace_method="hutchinson", trace_probes=20)
    elif task == "subspace":
        options.update(epsilon=(1e-3,), subspace_dim=SUBSPACE_DIM, epsilon_start="corner", epsilon_restarts=0,
                       epsilon_max_iter=1)
    else:
        options.update(epsilon=(1e-3,))
    row: dict = {"width": width, "task": task, "threads": threads}
    try:
        report = sharpness.analyze(model, x, y, **options)
    except sharpness.InputError as err:  # a refusal made before the work (the memory budget)
        row.update(refused=str(err), peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9)
        return row
    HessianOperator.__matmul__, HessianOperator.matvec_into = original, original_into
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
        if task in ("top1", "top5"):  # one product as a caller gets it: H @ v, a fresh output each time
            H = HessianOperator(Objective(model, x, y))
            v = torch.randn(H.shape[0])
            H @ v  # builds the retained graph, as the analysis did before its first product
            alone = []
            for _ in range(3):
                start = time.perf_counter()
                H @ v
                alone.append(time.perf_counter() - start)
            row.update(caller_product_seconds=statistics.median(alone),
                       caller_ratio=seconds / (columns * statistics.median(alone)))
    if task in ("top1", "top5"):
        top = report.hessian["top"]
        row.update(values=top["values"], converged=top["converged"], reorthogonalization=top["reorthogonalization"],
                   num_runs=top["num_runs"], miss_bound=top["miss_bound"])
    elif task == "trace":
        row.update(trace=report.hessian["trace"]["value"], trace_stderr=report.hessian["trace"]["stderr"])
    else:
        eps = dataclasses.asdict(report.measures["epsilon_sharpness"][-1])  # the subspace's comes after the full space's
        if task == "subspace":
            seconds = eps["seconds"]  # this entry's own time, not the full space's
            P = report.hessian["num_params"]
            row.update(subspace="stored (A and its QR)" if not generated else
                       f"generated, tiles of {generated[0].rows:,} rows")
            if generated:  # the basis the run used: how many columns it drew
                row.update(passes=generated[0].draws / SUBSPACE_DIM, tiles=len(generated[0].bounds))
            gen = torch.Generator().manual_seed(0)
            start = time.perf_counter()
            torch.randn(P, generator=gen, dtype=torch.float64).mul_(1.0)
            row.update(column_draw_seconds=time.perf_counter() - start, seconds=seconds)
        objective = Objective(model, x, y)
        objective.value_and_grad()
        grads = []
        for _ in range(3):
            start = time.perf_counter()
            objective.value_and_grad()
            grads.append(time.perf_counter() - start)
        evals = eps["num_function_evals"]
        row.update(epsilon_value=eps["value"], function_evals=evals, gradient_seconds=statistics.median(grads),
                   epsilon_space=eps["space"],
                   ratio=seconds / (evals * statistics.median(grads)) if evals else None)
    return row


def _table(rows: list[dict]) -> str:
    lines = ["| P | task | products (evals) | one product (s) | task (s) | overhead (s) | ratio (in run / H @ v) | peak RSS (GB) | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        P = f"{r.get('num_params', _num_params(r['width'])) / 1e6:.1f} M"
        for key, what in (("refused", "refused up front"), ("skipped", "not started"), ("failed", "failed")):
            if key in r:
                rss = f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else "—"
                lines.append(f"| {P} | {r['task']} | — | — | — | — | — | {rss} | {what}: "
                             f"{str(r[key]).split(';')[-1].strip()} |")
                break
        else:
            lines.append(_table_row(P, r))
    return "\n".join(lines)


def _table_row(P: str, r: dict) -> str:
    if r["task"] in ("epsilon", "subspace"):
        count, one = f"({r['function_evals']})", f"{r['gradient_seconds']:.3f} (gradient)"
        overhead, note = "—", f"ε-sharpness {r['epsilon_value']:.3g}"
        if r["task"] == "subspace":
            note += f" (p = {SUBSPACE_DIM}); A {r['subspace']}"
            if "passes" in r:
                note += (f", {r['passes']:.0f} passes over A; one column's draw {r['column_draw_seconds']:.2f} s, "
                         f"so the draws ≈ {r['passes'] * SUBSPACE_DIM * r['column_draw_seconds']:.0f} s")
    else:
        count, one, overhead = str(r["products"]), f"{r['product_seconds']:.3f}", f"{r['overhead_seconds']:.2f}"
        if "library" in r:
            note = f"{r['library']} {r.get('version') or ''}: {', '.join(f'{v:.4g}' for v in r['values'])}"
        elif "values" in r:
            note = f"λ = {', '.join(f'{v:.4g}' for v in r['values'])}; {r['reorthogonalization']}, {r['num_runs']} run(s)"
        else:
            note = f"trace {r['trace']:.4g} ± {r['trace_stderr']:.2g}"
    ratio = "—" if r.get("ratio") is None else f"{r['ratio']:.2f}"
    if r.get("caller_ratio") is not None:
        ratio += f" / {r['caller_ratio']:.2f}"
    return (f"| {P} | {r['task']} | {count} | {one} | {r['seconds']:.1f} | {overhead} | {ratio} | "
            f"{r['peak_rss_gb']:.2f} | {note} |")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, WIDTHS)), help="MLP widths d (P ≈ d² + 11 d)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child-timeout", type=int, default=CHILD_TIMEOUT_S, help="seconds per task before it is stopped")
    ap.add_argument("--child", nargs=2, metavar=("WIDTH", "TASK"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child = _peer_child if a.child[1] in PEER_TASKS else _child
        print(json.dumps(child(int(a.child[0]), a.child[1], a.threads)))
        return
    rows = []
    load = [os.getloadavg()[0]]
    uptime = [_uptime()]
    print(f"uptime before: {uptime[0]}", file=sys.stderr)
    for width in map(int, a.sizes.split(",")):
        for task in a.tasks.split(","):
            need_gb = PEER_BYTES_PER_PARAM.get(task, 0) * _num_params(width) / 1e9
            if need_gb > RSS_LIMIT_GB:
                rows.append({"width": width, "task": task, "num_params": _num_params(width), "skipped":
                             f"needs ≈ {need_gb:.0f} GB resident ({PEER_BYTES_PER_PARAM[task]} B/parameter) > "
                             f"{RSS_LIMIT_GB:g} GB"})
                print(json.dumps(rows[-1]), file=sys.stderr)
                continue
            try:
                done = subprocess.run([sys.executable, __file__, "--child", str(width), task, "--threads",
                                       str(a.threads)], capture_output=True, text=True, timeout=a.child_timeout)
            except subprocess.TimeoutExpired:
                rows.append({"width": width, "task": task, "num_params": _num_params(width),
                             "failed": f"timed out after {a.child_timeout} s"})
                print(json.dumps(rows[-1]), file=sys.stderr)
                continue
            if done.returncode != 0:
                rows.append({"width": width, "task": task, "num_params": _num_params(width),
                             "failed": f"exit {done.returncode}" + (" (killed by a signal, e.g. the kernel's OOM "
                                                                      "killer)" if done.returncode < 0 else "")
                             + f"; last stderr line: {' '.join(done.stderr.strip().splitlines()[-1:])}"})
                print(f"d={width} {task}: failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            load.append(os.getloadavg()[0])
            print(json.dumps(rows[-1]), file=sys.stderr)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    out = {"commit": commit, "date": stamp, "machine": platform.machine(), "cpus": os.cpu_count(),
           "python": sys.executable, "uptime_before": uptime[0], "uptime_after": _uptime(),
           "load_1min": {"min": min(load), "max": max(load)}, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"scale_params-{stamp}.json"
    path.write_text(json.dumps(out, indent=1))
    print(_table(rows))
    print(f"\n{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}; commit {commit}; "
          f"1-min load {min(load):.1f}–{max(load):.1f}")


if __name__ == "__main__":
    main()
