"""Check and time the toolkit on one GPU: the CUDA tests, then the costs that matter for analysis.

    python benchmarks/gpu_check.py                 # on a CUDA machine: < 8 min on one H100/H200
    python benchmarks/gpu_check.py --device cpu --quick   # the measuring code end to end, on any machine

(a) runs ``pytest -m cuda tests/test_cuda.py`` (HVP, eigenvalues and trace on CUDA against the CPU in float64,
the TF32 policy, memory released after an analysis, ``torchrun`` with NCCL on one GPU);
(b) measures, on a ResNet-18 (CIFAR stem, 11.2M parameters) with CIFAR-shaped synthetic inputs and on the
toolkit's small GPT with synthetic tokens: one HVP as a multiple of one gradient, top-1 λ_max (seconds and
HVPs), a Hutchinson trace with 100 probes, 51×51-grid points per second batched and unbatched (timed on a
few rows of the grid), and peak GPU memory;
(c) the scale case of benchmarks/scale_params.py at P = 124 M (GPT-2 small's count): its MLP
``Linear(11130, 11130) → tanh → Linear(11130, 10)`` on 16 samples, top-1 λ_max at tol 1e-3 and one Hutchinson
trace of 20 probes, with seconds, HVPs and peak GPU memory (``torch.cuda.max_memory_allocated``; ``--quick``:
width 64). Writes ``benchmarks/results/gpu-DATE.json`` and ``.md``.

Without a CUDA device (and without ``--device cpu``) it prints one line, ``no CUDA device: gpu_check
skipped``, and exits 0. The timings use float32 under the analysis precision policy (TF32 off).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SKIP_LINE = "no CUDA device: gpu_check skipped"
#: Width of the scale MLP: P = d² + 11d + 10 = 123 999 340 at d = 11 130; --quick uses QUICK_SCALE_WIDTH.
SCALE_WIDTH, QUICK_SCALE_WIDTH, SCALE_PROBES = 11130, 64, 20


# --------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.short(x))


class ResNet18(nn.Module):
    """He et al. (2016) ResNet-18 with the CIFAR stem (3×3 conv, no max-pool): [2, 2, 2, 2] basic blocks."""

    def __init__(self, width: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, c = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            for j in range(2):
                layers.append(_Block(c, width * mult, 2 if (i > 0 and j == 0) else 1))
                c = width * mult
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        h = self.layers(self.stem(x))
        return self.head(h.mean(dim=(2, 3)))


def problems(quick: bool) -> dict[str, Callable[[], tuple[nn.Module, torch.Tensor, torch.Tensor]]]:
    """name → builder of (model, inputs, targets); seeded, synthetic, CIFAR-/token-shaped."""
    from sharpness.models import build_model

    def resnet():
        g = torch.Generator().manual_seed(0)
        n, side = (16, 16) if quick else (256, 32)
        torch.manual_seed(0)
        model = ResNet18(width=8 if quick else 64).eval()
        return model, torch.randn(n, 3, side, side, generator=g), torch.randint(0, 10, (n,), generator=g)

    def gpt():
        g = torch.Generator().manual_seed(1)
        vocab, context, n = (64, 16, 8) if quick else (512, 128, 64)
        kw = dict(d_model=16, layers=1, heads=2) if quick else dict(d_model=256, layers=4, heads=4)
        model = build_model("gpt", input_shape=(context,), num_classes=vocab, seed=0, **kw).eval()
        tokens = torch.randint(0, vocab, (n, context + 1), generator=g)
        return model, tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    return {"resnet18": resnet, "gpt": gpt}


# --------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls after one warm-up call, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def measure(name: str, build: Callable, device: torch.device, quick: bool) -> dict:
    from sharpness.hessian import HessianOperator
    from sharpness.landscape import grid, plane, random_direction
    from sharpness.linalg import extreme_eigenvalues, hutchinson_trace
    from sharpness.objective import Objective
    from sharpness.numerics.precision import precision_policy

    model, x, y = build()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    row: dict[str, Any] = {"model": name, "num_params": sum(p.numel() for p in model.parameters()),
                           "n_samples": int(x.shape[0]), "input_shape": list(x.shape[1:])}
    with precision_policy(allow_tf32=False):
        obj = Objective(model, x, y, device=device, dtype=torch.float32)
        H = HessianOperator(obj)
        v = torch.randn(obj.numel, generator=torch.Generator().manual_seed(2)).to(device)
        repeats = 2 if quick else 5
        t_grad, _ = _timed(lambda: obj.value_and_grad(), device, repeats)
        t_hvp, _ = _timed(lambda: H @ v, device, repeats)
        row.update(grad_s=t_grad, hvp_s=t_hvp, hvp_over_grad=t_hvp / t_grad)

        before = H.num_matvecs
        _sync(device)
        t0 = time.perf_counter()
        top, _ = extreme_eigenvalues(H, top_k=1, bottom_k=0, tol=1e-3, seed=0)
        _sync(device)
        row.update(lambda_max=float(top.values[0]), lambda_max_s=time.perf_counter() - t0,
                   lambda_max_hvps=H.num_matvecs - before)

        probes = 10 if quick else 100
        _sync(device)
        t0 = time.perf_counter()
        tr = hutchinson_trace(H, num_probes=probes, seed=1)
        _sync(device)
        row.update(trace=float(tr.value), trace_stderr=float(tr.stderr), trace_probes=probes,
                   trace_s=time.perf_counter() - t0)

        # 51×51 grid points/s, timed on the first rows (a whole grid is rows × this): batched vs unbatched.
        n, rows = (11, 1) if quick else (51, 2)
        axis = grid(-1.0, 1.0, n)
        d1, d2 = random_direction(obj, seed=0), random_direction(obj, seed=1)
        for label, batch_size in (("unbatched", 1), ("batched", 16)):
            _sync(device)
            t0 = time.perf_counter()
            res = plane(obj, None, d1, d2, axis, axis, batch_size=batch_size, max_rows=rows)
            _sync(device)
            row[f"grid_points_per_s_{label}"] = res.num_evaluations / (time.perf_counter() - t0)
        row["grid"] = f"{n}x{n} (timed on {rows} row{'s' if rows > 1 else ''})"
        row["grid_batched_over_unbatched"] = row["grid_points_per_s_batched"] / row["grid_points_per_s_unbatched"]
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del obj, H
    return row


def measure_scale(device: torch.device, width: int, probes: int = SCALE_PROBES) -> dict:
    """Top-1 λ_max (tol 1e-3) and a Hutchinson trace on benchmarks/scale_params.py's MLP of ``width``, in float32
    on ``device``: seconds, HVPs and (on CUDA) the peak memory allocated from building the objective on."""
    from sharpness.hessian import HessianOperator
    from sharpness.linalg import extreme_eigenvalues, hutchinson_trace
    from sharpness.objective import Objective
    from sharpness.numerics.precision import precision_policy

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scale_params import scale_mlp

    model, x, y = scale_mlp(width)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    row: dict[str, Any] = {"model": f"mlp-d{width}", "num_params": sum(p.numel() for p in model.parameters()),
                           "n_samples": int(x.shape[0]), "input_shape": list(x.shape[1:])}
    with precision_policy(allow_tf32=False):
        obj = Objective(model, x, y, device=device, dtype=torch.float32)
        H = HessianOperator(obj)
        _sync(device)
        t0 = time.perf_counter()
        top, _ = extreme_eigenvalues(H, top_k=1, bottom_k=0, tol=1e-3, seed=0)
        _sync(device)
        row.update(lambda_max=float(top.values[0]), lambda_max_s=time.perf_counter() - t0,
                   lambda_max_hvps=H.num_matvecs)
        before = H.num_matvecs
        t0 = time.perf_counter()
        tr = hutchinson_trace(H, num_probes=probes, seed=1)
        _sync(device)
        row.update(trace=float(tr.value), trace_stderr=float(tr.stderr), trace_probes=probes,
                   trace_s=time.perf_counter() - t0, trace_hvps=H.num_matvecs - before)
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del obj, H
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    cols = [("model", "model", "{}"), ("num_params", "params", "{:,}"), ("hvp_over_grad", "HVP / grad", "{:.2f}"),
            ("lambda_max_s", "λ_max s", "{:.2f}"), ("lambda_max_hvps", "λ_max HVPs", "{}"),
            ("trace_s", "trace s", "{:.2f}"), ("trace_probes", "probes", "{}"),
            ("grid_points_per_s_unbatched", "grid pts/s (loop)", "{:.1f}"),
            ("grid_points_per_s_batched", "grid pts/s (batched)", "{:.1f}"),
            ("grid_batched_over_unbatched", "batched/loop", "{:.2f}"), ("peak_memory_gib", "peak GiB", "{:.2f}")]
    lines = [f"gpu_check on {meta['device_name']} ({meta['date']}, torch {meta['torch']}, "
             f"{'quick' if meta['quick'] else 'full'}; tests: {meta['tests']})", "",
             "| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.format(r[k]) if r.get(k) is not None else "–" for k, _, fmt in cols) + " |")
    return "\n".join(lines) + "\n"


def run_tests(timeout: int) -> str:
    """The CUDA-marked tests in a subprocess; returns pytest's summary line."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_cuda.py")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n", flush=True)
    tail = [line for line in proc.stdout.splitlines() if line.strip()]
    return (tail[-1].strip("= ") if tail else f"pytest exited {proc.returncode}") + ("" if proc.returncode == 0 else " (FAILED)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:i or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny models and grids: checks the code, not the GPU")
    ap.add_argument("--no-tests", action="store_true", help="skip the CUDA tests (part a)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where gpu-DATE.{json,md} go")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    meta = {"date": date, "quick": args.quick, "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "cpu_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    meta["tests"] = "skipped" if (args.no_tests or device.type != "cuda") else run_tests(timeout=360)
    rows = []
    for name, build in problems(args.quick).items():
        t0 = time.perf_counter()
        rows.append(measure(name, build, device, args.quick))
        print(f"{name}: measured in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    rows.append(measure_scale(device, QUICK_SCALE_WIDTH if args.quick else SCALE_WIDTH))
    print(f"{rows[-1]['model']} (P = {rows[-1]['num_params']:,}): measured in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"gpu-{date}{'-quick' if args.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    table = markdown(rows, meta)
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return 0 if "FAILED" not in meta["tests"] else 1


if __name__ == "__main__":
    sys.exit(main())
