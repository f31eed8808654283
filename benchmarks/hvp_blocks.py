"""Cost of Hessian-vector products per product, as a multiple of a gradient, for blocks of K vectors (issue #18).

On the peer benchmark's problems (``peers.py``: mlp-digits, cnn-digits; optionally cnn-fmnist-N), the set split
into 4 chunks (the streamed path every real data set takes) and as one chunk (retained graph), it times

* a gradient over the same chunks (``Objective.value_and_grad``), the unit;
* the forward pass and forward + ``create_graph`` backward alone (the part of a fresh product a block shares);
* ``HessianOperator @ V`` for V of shape (P, K), K = 1, 4, 16, in each mode: reverse-over-reverse (one gradient
  graph per chunk, K backward passes through it), forward-over-reverse (``vmap`` over the K tangents), the
  retained graph; and a prototype (benchmark code) with one ``is_grads_batched`` backward for the K columns.

Entries are interleaved round by round and each ratio is the median over rounds of same-round ratios, so load
from other processes hits both sides alike; the load average is recorded beside every run.

    python benchmarks/hvp_blocks.py --threads 1          # → results/hvp-blocks-<date>.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402  (the problems, trained exactly as in the peer benchmark)

from sharpness import HessianOperator, Objective  # noqa: E402


def batched_rr(obj: Objective, V: torch.Tensor) -> torch.Tensor:
    """Prototype: one ``is_grads_batched`` backward through each chunk's gradient graph for all K columns."""
    total = torch.zeros(V.shape[1], obj.numel, dtype=obj.dtype)
    for chunk in obj.chunks():
        with torch.enable_grad():
            theta = obj.theta.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(obj.chunk_loss_sum(obj.unflatten(theta), *chunk), theta, create_graph=True)
            (hv,) = torch.autograd.grad(g, theta, grad_outputs=V.T.contiguous(), is_grads_batched=True)
        total += hv
    return total.T / obj.total_weight


def shared_parts(obj: Objective, create_graph: bool) -> None:
    for chunk in obj.chunks():
        with torch.enable_grad():
            theta = obj.theta.detach().clone().requires_grad_(True)
            loss = obj.chunk_loss_sum(obj.unflatten(theta), *chunk)
            if create_graph:
                torch.autograd.grad(loss, theta, create_graph=True)


def measure(problem, ks, rounds: int, log) -> dict:
    streamed = Objective(problem.model, problem.x, problem.y, loss="cross-entropy", chunk_size=math.ceil(problem.n / 4))
    whole = Objective(problem.model, problem.x, problem.y, loss="cross-entropy")
    g = torch.Generator().manual_seed(0)
    Vs = {k: torch.randn(streamed.numel, k, generator=g) for k in ks}
    entries = {"gradient (4 chunks)": (lambda: streamed.value_and_grad(), 1),
               "gradient (1 chunk)": (lambda: whole.value_and_grad(), 1),
               "forward only (4 chunks)": (lambda: shared_parts(streamed, False), 1),
               "forward + create_graph backward (4 chunks)": (lambda: shared_parts(streamed, True), 1)}
    ops = {"reverse-over-reverse": HessianOperator(streamed, mode="reverse-over-reverse"),
           "forward-over-reverse": HessianOperator(streamed, mode="forward-over-reverse"),
           "retained-graph": HessianOperator(whole, mode="retained-graph")}
    for k in ks:
        V = Vs[k]
        for mode, op in ops.items():
            entries[f"{mode}, K={k}"] = ((lambda op=op, V=V: op @ (V[:, 0] if V.shape[1] == 1 else V)), k)
        if k > 1:
            entries[f"prototype is_grads_batched (4 chunks), K={k}"] = ((lambda V=V: batched_rr(streamed, V)), k)
    # exactness of the prototype against the library (float32 rounding)
    ref = ops["reverse-over-reverse"] @ Vs[max(ks)]
    proto_err = float((batched_rr(streamed, Vs[max(ks)]) - ref).norm() / ref.norm())
    times = {name: [] for name in entries}
    for name, (f, _) in entries.items():
        f()  # warm: builds the retained graph, vmap caches
    for r in range(rounds):
        for name, (f, _) in entries.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
        log(f"  {problem.name}: round {r + 1}/{rounds}, load {os.getloadavg()[0]:.2f}")
    out = {}
    for name, (_, k) in entries.items():
        unit = "gradient (1 chunk)" if name.startswith("retained") or name == "gradient (1 chunk)" else "gradient (4 chunks)"
        ratios = [t / k / u for t, u in zip(times[name], times[unit])]
        out[name] = {"K": k, "best_s": min(times[name]), "per_product_x_gradient": statistics.median(ratios),
                     "unit": unit, "rounds_s": times[name]}
    return {"num_params": streamed.numel, "n_samples": problem.n, "results": out, "prototype_rel_err": proto_err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="mlp-digits,cnn-digits")
    ap.add_argument("--ks", default="1,4,16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ks = [int(k) for k in a.ks.split(",")]
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "threads": a.threads, "torch": torch.__version__, "load_start": os.getloadavg(), "problems": {}}
    for name in a.problems.split(","):
        problem = peers.PROBLEMS[name]()
        result["problems"][name] = measure(problem, ks, a.rounds, log)
        print(f"\n{name} (P = {result['problems'][name]['num_params']:,}, N = {problem.n}): per product, × a gradient over the same chunks")
        for entry, r in result["problems"][name]["results"].items():
            print(f"  {entry:<48} {r['per_product_x_gradient']:6.2f}   (best {r['best_s'] * 1e3:8.1f} ms)")
    result["load_end"] = os.getloadavg()
    out = a.out or HERE / "results" / f"hvp-blocks-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load {result['load_start'][0]:.2f} → {result['load_end'][0]:.2f}; → {out}")


if __name__ == "__main__":
    main()
