"""How close each ε-sharpness maximizer comes to the box maximum on real checkpoints.

For every checkpoint and ε, in the full space and (``--subspace-dim``) a random subspace, it runs:

* ``default``: :func:`sharpness.measures.epsilon_sharpness` as `sharpness analyze` runs it (the ascent);
* ``paper``: Keskar's protocol, L-BFGS-B, 10 iterations from y = 0;
* ``lbfgsb-100``: the same L-BFGS-B with 100 iterations;
* ``sign-200``: an independent reference, 200 plain projected sign-ascent steps y ← Π(y + b ⊙ sign ∇f(y))
  from y = 0 (no step control, no restarts; the best iterate counts), written here from the definition;
* ``strong``: the ascent with a 200-evaluation budget, 10 random restarts and 50 L-BFGS-B polishing steps.

Every value is a feasible point's, so the largest one is the best known lower bound of the maximum; the table
gives each method's value and its ratio to that best value, with the evaluations it spent.

    python benchmarks/epsilon_accuracy.py CKPT [CKPT ...] --samples 1000 --epsilon 1e-3 --epsilon 5e-4
    python benchmarks/epsilon_accuracy.py --render RESULT.json [RESULT.json ...]   # benchmarks/README.md's table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from sharpness.files.loading import load_model_and_data
from sharpness.measures.epsilon import epsilon_sharpness, random_subspace
from sharpness.objective import Objective
from sharpness.analysis.report import select_analysis_set


def sign_ascent_reference(objective: Objective, epsilon: float, steps: int, basis: torch.Tensor | None) -> tuple[float, int]:
    """max over 200 projected sign-ascent iterates from y = 0 (φ in percent) and the gradients spent."""
    theta = objective.theta
    if basis is None:
        centre = theta
    else:
        centre = torch.linalg.lstsq(basis, theta.unsqueeze(1)).solution.squeeze(1)
    b = epsilon * (centre.abs() + 1)
    lift = (lambda y: y) if basis is None else (lambda y: basis @ y)
    base = float(objective.value())
    y, best = torch.zeros_like(b), base
    for _ in range(steps):
        f, g = objective.value_and_grad(theta + lift(y))
        best = max(best, float(f))
        g = g if basis is None else basis.T @ g
        y = (y + b * g.sign()).clamp(-b, b)
    best = max(best, float(objective.value(theta + lift(y))))
    return 100 * (best - base) / (1 + base), steps + 1


def render(paths: list[str]) -> str:
    """benchmarks/README.md's table from saved ``--out`` files: values in % (4 significant digits), the ratio to
    the row's best value, and the evaluations the default and the strong search spent."""
    out = ["| checkpoint (train loss) | space | ε | default | paper | L-BFGS-B 100 | sign ascent 200 | strong |",
           "|---|---|---|---|---|---|---|---|"]
    for path in paths:
        with open(path) as fh:
            rows = json.load(fh)["rows"]
        for row in rows:
            m, best = row["methods"], row["best"]
            ratio = lambda k: f"{m[k]['value'] / best:.3f}" if best > 0 else "nan"  # noqa: E731
            name = row["checkpoint"].removesuffix(".pt")
            out.append(f"| {name}, {row['train_loss']:.1e} | {row['space']} | {row['epsilon']:g} "
                       f"| **{m['default']['value']:.4g}** ({ratio('default')}, {m['default']['evals']} ev) "
                       f"| {m['paper']['value']:.4g} ({ratio('paper')}) | {m['lbfgsb-100']['value']:.4g} "
                       f"({ratio('lbfgsb-100')}) | {m['sign-200']['value']:.4g} ({ratio('sign-200')}) "
                       f"| {m['strong']['value']:.4g} ({ratio('strong')}, {m['strong']['evals']} ev) |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--render", nargs="+", metavar="RESULT.json", help="print the README table of saved runs")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--epsilon", type=float, action="append")
    parser.add_argument("--subspace-dim", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    if args.render:
        print(render(args.render))
        return
    torch.set_num_threads(args.threads)
    epsilons = args.epsilon or [1e-3, 5e-4]
    rows = []
    for path in args.checkpoints:
        loaded = load_model_and_data(path)
        x, y = loaded.dataset.split("train")
        x, y, _ = select_analysis_set(x, y, samples=args.samples, seed=0)
        obj = Objective(loaded.model, x, y)
        loss = float(obj.value())
        for dim in [None] + ([args.subspace_dim] if args.subspace_dim else []):
            basis = None if dim is None else random_subspace(obj.numel, dim, seed=0, dtype=obj.dtype)
            for eps in epsilons:
                results = {}
                for name, kwargs in (("default", {}), ("paper", {"method": "paper"}),
                                     ("lbfgsb-100", {"method": "paper", "max_iter": 100}),
                                     ("strong", {"max_iter": 200, "restarts": 10, "polish": 50})):
                    t0 = time.perf_counter()
                    r = epsilon_sharpness(obj, eps, subspace_dim=dim, seed=0, **kwargs)
                    results[name] = {"value": r.value, "evals": r.num_function_evals, "hvps": r.num_hvps,
                                     "status": list(r.status), "seconds": time.perf_counter() - t0}
                t0 = time.perf_counter()
                value, evals = sign_ascent_reference(obj, eps, 200, basis)
                results["sign-200"] = {"value": value, "evals": evals, "hvps": 0, "status": [],
                                       "seconds": time.perf_counter() - t0}
                best = max(r["value"] for r in results.values())
                rows.append({"checkpoint": os.path.basename(path), "train_loss": loss, "epsilon": eps,
                             "space": "full" if dim is None else f"p={dim}", "best": best, "methods": results})
                cells = "  ".join(f"{k} {v['value']:.4g} ({v['value'] / best if best > 0 else float('nan'):.3f}, "
                                  f"{v['evals']} ev)" for k, v in results.items())
                print(f"{os.path.basename(path)} loss {loss:.2e} ε={eps:g} {rows[-1]['space']}: {cells}", flush=True)
    if args.out:
        meta = {"torch": torch.__version__, "python": platform.python_version(), "threads": args.threads,
                "load_average": os.getloadavg(), "samples": args.samples}
        with open(args.out, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
