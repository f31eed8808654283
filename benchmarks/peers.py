"""Side-by-side benchmark of ``sharpness`` against its peer libraries (issue #10).

One process, one set of weights and data per problem, every task run by ``sharpness`` and by each peer that is
importable: PyHessian, hessian-eigenthings, curvlinops (Hessian tasks) and loss-landscapes (2D grid). Each
number is checked against a float64 ground truth:

* ``"dense"`` problems (the small CNN): the exact Hessian, built column by column from float64
  Hessian-vector products (``HessianOperator(objective64) @ I``, the same Pearlmutter products
  :func:`sharpness.hessian.dense_hessian` stacks; ``dense_hessian`` itself, i.e. ``torch.func.hessian``, needs
  ~200 s and ~7 GB for this convnet), symmetrized and diagonalized by ``torch.linalg.eigvalsh``: exact top
  eigenvalues and trace;
* ``"lanczos"`` problems (the 85k-parameter MLP): ``extreme_eigenvalues(H64, top_k=5, tol=1e-10,
  criterion="residual")`` on a float64 :class:`~sharpness.hessian.HessianOperator`, whose residuals are
  rigorous bounds |λ − θ| ≤ r; the trace as tr(QᵀHQ) over a 200-step float64 Lanczos basis Q (= Σ α_j) plus a
  Hutchinson estimate of the deflated remainder tr((I − QQᵀ)H(I − QQᵀ)) — unbiased (the identity holds for any
  orthonormal Q), with its standard error reported as the reference's uncertainty.

Truths are cached in ``benchmarks/results/truth/`` under a SHA-256 of the weights, data and truth settings, so
only the first run on a machine pays for them (a few minutes); ``--recompute-truth`` ignores the cache.

Timing: ``time.perf_counter`` around each complete task, operator construction included (PyHessian builds its
gradient graph in its constructor, ``sharpness`` lazily at the first product: both are counted); the
``Objective`` and the peers' inputs are set up once per problem, outside the clock. Each library gets one
untimed warm-up product first. Tasks are repeated in rounds that interleave the libraries, so a burst of load
from other processes hits all of them alike; the table reports the best round (the least disturbed one), every
ratio is the median over rounds of same-round ratios, and the JSON keeps every round's wall and CPU time. The first round also samples the resident set size every 2 ms
(peak RSS above the RSS at task start).

    python benchmarks/peers.py --threads 1             # MLP + CNN on digits, every task (~4–8 min)
    python benchmarks/peers.py --quick                 # smoke run: one round, smaller density and grid
    python benchmarks/peers.py --problems cnn-fmnist-1000,cnn-fmnist-4000,cnn-fmnist-16000 --tasks hvp
    python benchmarks/peers.py --summarize benchmarks/results/peers-*.json   # spread of ratios over runs

Peers are optional: an absent or broken one is recorded as "not installable" with the reason. Install them in a
separate environment, never into the project's (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import importlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import statistics
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("hvp", "top1", "top5", "trace", "density", "grid")
LIBRARIES = ("sharpness", "pyhessian", "eigenthings", "curvlinops", "loss-landscapes", "prototype")
LIBRARY_TITLES = {
    "sharpness": "sharpness",
    "pyhessian": "PyHessian",
    "eigenthings": "hessian-eigenthings",
    "curvlinops": "curvlinops",
    "loss-landscapes": "loss-landscapes",
    "prototype": "prototype (benchmark code, not in sharpness/)",
}
#: (import name, distribution name) of each peer.
PEER_MODULES = {
    "pyhessian": ("pyhessian", "pyhessian"),
    "eigenthings": ("hessian_eigenthings", "hessian-eigenthings"),
    "curvlinops": ("curvlinops", "curvlinops-for-pytorch"),
    "loss-landscapes": ("loss_landscapes", "loss-landscapes"),
}
#: Bumped whenever a truth computation changes, so stale cache entries are never reused.
TRUTH_VERSIONS = {"dense": 2, "lanczos": 3}
#: The settings of sharpness' single products (task "hvp") that peers are compared with, and of the peers'
#: products, each with its kind: a product through a retained gradient graph, or a fresh one (a new forward and
#: backward pass per product). "N× ours" divides a peer's time by our product of the same kind on the same
#: batches (see :func:`reference_entry`), never by our gradient.
OURS_RETAINED = "HVP, retained-graph"
OURS_FRESH = "HVP, fresh double backward (1 chunk, reverse-over-reverse)"
OURS_STREAMED_AUTO = "HVP, streamed ({chunks} chunks, auto mode)"
OURS_STREAMED_RR = "HVP, streamed ({chunks} chunks, reverse-over-reverse)"
TORCH_STREAMED = "HVP, plain double backward over the same {chunks} chunks (module)"
PEER_HVP_KINDS = {
    ("pyhessian", "HVP (retained graph)"): "retained graph",
    ("pyhessian", "HVP (per-batch double backward)"): "fresh",
    ("eigenthings", "HVP (double backward)"): "fresh",
    ("curvlinops", "HVP (jvp of jacrev)"): "fresh",
}
#: The accuracy the issue asks of eigenvalues; a peer meeting it counts as "accurate".
EIG_TARGET = 1e-4
TRACE_TARGET = 1e-3


# ==========================================================================================================
# Problems
# ==========================================================================================================
@dataclass
class Problem:
    """One model at fixed weights on a fixed analysis set (everyone sees exactly these tensors)."""

    name: str
    description: str
    model: nn.Module  # float32, eval mode; libraries get deep copies
    x: Tensor
    y: Tensor
    truth: str  # "dense" | "lanczos" | "none"
    tasks: tuple[str, ...]
    stream_chunks: int = 4  # sharpness' streamed HVP splits the set into this many chunks
    peer_batches: int = 1  # peers see the set as this many equal batches (1 = one full batch)
    train: dict = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def batches(self) -> list[tuple[Tensor, Tensor]]:
        return list(zip(self.x.chunk(self.peer_batches), self.y.chunk(self.peer_batches)))

    def config(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "num_params": self.num_params,
            "n_samples": self.n,
            "input_shape": list(self.x.shape[1:]),
            "truth": self.truth,
            "tasks": list(self.tasks),
            "stream_chunks": self.stream_chunks,
            "peer_batches": self.peer_batches,
            "train": self.train,
        }


def _train_full_batch(model: nn.Module, x: Tensor, y: Tensor, *, steps: int, lr: float, batch: int | None = None) -> dict:
    """A few deterministic Adam steps so curvature is measured near a minimum, not at initialization.

    Runs on one thread whatever ``--threads`` says: the reduction order, hence the weights' bits and the truth
    cache key, must not depend on the benchmark's thread setting. Mini-batches (if any) cycle in order.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        n = x.shape[0]
        b = n if batch is None else min(batch, n)
        for step in range(steps):
            s = (step * b) % n
            idx = slice(s, min(s + b, n))
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        for p in model.parameters():
            p.grad = None
        with torch.no_grad():
            loss = float(F.cross_entropy(model(x), y))
    finally:
        torch.set_num_threads(threads)
    return {"optimizer": "adam", "lr": lr, "steps": steps, "batch": b, "final_loss": loss}


def _digits() -> tuple[Tensor, Tensor]:
    from sharpness.data import load_dataset

    ds = load_dataset("digits", test_fraction=0.0)  # all 1797 samples, pixels / 16
    return ds.x_train, ds.y_train


def build_mlp_digits(*, train_steps: int = 150) -> Problem:
    """The issue's problem: MLP 64-256-256-10, tanh (85,002 parameters) on all 1797 digits."""
    from sharpness.models import build_model

    x, y = _digits()
    model = build_model("mlp", input_shape=[64], num_classes=10, hidden=(256, 256), activation="tanh", seed=0)
    info = _train_full_batch(model, x, y, steps=train_steps, lr=1e-3)
    return Problem("mlp-digits", "MLP 64-256-256-10 (tanh) on sklearn digits", model, x, y, "lanczos", TASKS, train=info)


def build_cnn_digits(*, train_steps: int = 150) -> Problem:
    """A small convnet (conv5×5 ×4 → pool → conv5×5 ×8 → pool → 16 → 10, ReLU; 1,610 parameters) on the
    8×8 digit images: small enough for the exact dense Hessian."""
    from sharpness.models import build_model

    x, y = _digits()
    x = x.reshape(-1, 1, 8, 8)
    model = build_model("convnet", input_shape=[1, 8, 8], num_classes=10, channels=(4, 8), hidden=16, seed=0)
    info = _train_full_batch(model, x, y, steps=train_steps, lr=3e-3)
    return Problem("cnn-digits", "ConvNet 4-8 ch, 16 hidden (ReLU, max-pool) on 8×8 digits", model, x, y, "dense", TASKS, train=info)


_FMNIST_MODEL: dict[int, tuple[nn.Module, dict]] = {}


def build_cnn_fmnist(n: int, *, train_steps: int = 40) -> Problem:
    """A ~1M-parameter convnet (8-16 channels, 1280 hidden; 1,021,034 parameters) on ``n`` Fashion-MNIST
    images. The weights are trained once on the first 1000-sample subset and shared by every ``n``, so the
    HVP cost across ``n`` shows the N·P scaling. Peers see chunks of at most 4000 samples."""
    from sharpness.data import load_dataset
    from sharpness.models import build_model

    if train_steps not in _FMNIST_MODEL:
        ds = load_dataset("fashion-mnist", subset=1000)
        model = build_model("convnet", input_shape=[1, 28, 28], num_classes=10, channels=(8, 16), hidden=1280, seed=0)
        _FMNIST_MODEL[train_steps] = (model, _train_full_batch(model, ds.x_train, ds.y_train, steps=train_steps, lr=1e-3, batch=250))
    model, info = _FMNIST_MODEL[train_steps]
    ds = load_dataset("fashion-mnist", subset=n)
    batches = max(1, math.ceil(n / 4000))
    return Problem(
        f"cnn-fmnist-{n}", f"ConvNet 8-16 ch, 1280 hidden (ReLU) on {n} Fashion-MNIST images", copy.deepcopy(model),
        ds.x_train, ds.y_train, "none", ("hvp",), stream_chunks=max(4, batches), peer_batches=batches, train=info,
    )


PROBLEMS: dict[str, Callable[..., Problem]] = {
    "mlp-digits": build_mlp_digits,
    "cnn-digits": build_cnn_digits,
    "cnn-fmnist-1000": lambda **kw: build_cnn_fmnist(1000, **kw),
    "cnn-fmnist-4000": lambda **kw: build_cnn_fmnist(4000, **kw),
    "cnn-fmnist-16000": lambda **kw: build_cnn_fmnist(16000, **kw),
}
DEFAULT_PROBLEMS = ("mlp-digits", "cnn-digits")


# ==========================================================================================================
# Measurement
# ==========================================================================================================
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_free_memory() -> None:
    """Hand memory freed by earlier tasks back to the OS (glibc keeps it otherwise), so the next task's peak
    shows as a rise of the RSS instead of hiding in reused pages. A no-op where glibc is absent."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Samples the resident set size every ``interval`` s on a thread; ``peak_mb`` is the rise above the start."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakRSS":
        _release_free_memory()
        self.start = self.peak = _rss_bytes()

        def poll() -> None:
            while not self._stop.wait(self.interval):
                self.peak = max(self.peak, _rss_bytes())

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.start) / 2**20


@dataclass
class Outcome:
    """What one library returned for one task (the numbers, before comparison with the truth)."""

    values: list[float] | None = None  # eigenvalues (descending), a trace, or grid statistics
    num_hvps: int | None = None
    stderr: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Entry:
    """One (task, library, setting) measurement across rounds."""

    task: str
    library: str
    setting: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    outcome: Outcome | None = None
    peak_rss_mb: float | None = None
    status: str = "ok"  # ok | failed | unavailable
    error: str | None = None
    rel_error: float | None = None
    note: str | None = None

    @property
    def best(self) -> float | None:
        return min(self.wall) if self.wall else None

    def to_dict(self) -> dict:
        o = self.outcome
        return {
            "task": self.task,
            "library": self.library,
            "setting": self.setting,
            "status": self.status,
            "error": self.error,
            "seconds_best": self.best,
            "seconds_median": statistics.median(self.wall) if self.wall else None,
            "seconds_all": self.wall,
            "cpu_seconds_all": self.cpu,
            "num_hvps": None if o is None else o.num_hvps,
            "values": None if o is None else o.values,
            "stderr": None if o is None else o.stderr,
            "extra": {} if o is None else o.extra,
            "rel_error": self.rel_error,
            "peak_rss_mb": self.peak_rss_mb,
            "note": self.note,
        }


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """Some peers draw from torch's global RNG; seed it for them and restore it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def run_rounds(entries: Sequence[tuple[Entry, Callable[[], Outcome]]], rounds: int, *, budget_s: float, warm: bool = False) -> None:
    """Run every callable ``rounds`` times, libraries interleaved within a round; stop repeating an entry once
    its first round took more than ``budget_s`` (one measurement of a slow task is enough to rank it). With
    ``warm``, each callable runs once untimed first (single products: the first one builds a retained graph)."""
    for entry, fn in entries if warm else ():
        try:
            fn()
        except Exception as err:
            entry.status, entry.error = "failed", _one_line(err)
    for r in range(rounds):
        for entry, fn in entries:
            if entry.status != "ok" or (r > 0 and entry.wall and entry.wall[0] > budget_s):
                continue
            try:
                sampler = PeakRSS() if r == 0 else contextlib.nullcontext()
                with sampler:
                    w0, c0 = time.perf_counter(), time.process_time()
                    out = fn()
                    w1, c1 = time.perf_counter(), time.process_time()
            except Exception as err:  # a peer crashing is a result, not a reason to stop the benchmark
                entry.status, entry.error = "failed", _one_line(err)
                if os.environ.get("PEERS_DEBUG"):
                    traceback.print_exc()
                continue
            entry.wall.append(w1 - w0)
            entry.cpu.append(c1 - c0)
            if r == 0:
                entry.outcome = out
                entry.peak_rss_mb = sampler.peak_mb  # type: ignore[union-attr]


# ==========================================================================================================
# Ground truth (float64)
# ==========================================================================================================
def _objective(problem: Problem, *, dtype: torch.dtype | None = None, chunks: int = 1):
    from sharpness.objective import Objective

    chunk = math.ceil(problem.n / chunks)
    return Objective(problem.model, problem.x, problem.y, loss="cross-entropy", dtype=dtype, chunk_size=chunk)


def _truth_key(problem: Problem, settings: dict) -> str:
    from sharpness.data import hash_tensors

    named = [(f"param:{k}", v.detach()) for k, v in problem.model.state_dict().items()]
    named += [("x", problem.x), ("y", problem.y)]
    digest = hash_tensors(named)
    return hash_tensors([("digest", torch.tensor(list(digest.encode()), dtype=torch.uint8)),
                         ("settings", torch.tensor(list(json.dumps(settings, sort_keys=True).encode()), dtype=torch.uint8))])


def _dense_truth(problem: Problem, log: Callable[[str], None]) -> dict:
    from sharpness.hessian import HessianOperator

    obj = _objective(problem, dtype=torch.float64)
    H = HessianOperator(obj)
    P = obj.numel
    cols = []
    for s in range(0, P, 64):
        E = torch.zeros(P, min(64, P - s), dtype=torch.float64)
        E[s : s + E.shape[1]].fill_diagonal_(1.0)
        cols.append(H @ E)
        log(f"  dense Hessian: {s + E.shape[1]}/{P} columns")
    Hd = torch.cat(cols, dim=1)
    asym = float((Hd - Hd.T).norm() / Hd.norm())
    ev = torch.linalg.eigvalsh((Hd + Hd.T) / 2).numpy()[::-1].copy()
    return {
        "method": "eigvalsh of the exact float64 Hessian (columns H @ e_i by HessianOperator, symmetrized)",
        "top": ev[:5].tolist(),
        "top_residual_bounds": [0.0] * 5,
        "lambda_min": float(ev[-1]),
        "trace": float(ev.sum()),
        "trace_stderr": 0.0,
        "asymmetry": asym,
        "eigenvalues": ev.tolist(),
        "num_hvps": P,
    }


_ACTIVATIONS = (nn.Tanh, nn.ReLU, nn.Identity)


def _activation_derivatives(act: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
    """(σ'(z), σ''(z)) elementwise for the supported activations."""
    if isinstance(act, nn.Tanh):
        t = torch.tanh(z)
        d1 = 1 - t * t
        return d1, -2 * t * d1
    if isinstance(act, nn.ReLU):
        return (z > 0).to(z.dtype), torch.zeros_like(z)  # σ'' = 0 away from the kink (measure zero)
    return torch.ones_like(z), torch.zeros_like(z)


def exact_mlp_trace(model: nn.Module, x: Tensor, y: Tensor, *, chunk: int = 256) -> float:
    """tr ∇²f(θ) exactly, for f = mean cross-entropy of ``Sequential([Flatten], Linear, σ, …, Linear)``.

    Hessian backpropagation (Dangel, Kunstner & Hennig, "Modular block-diagonal curvature approximations",
    AISTATS 2020), per sample, with z_l = W_l a_{l−1} + b_l, a_l = σ(z_l), G_l = ∂²ℓ/∂z_l², g_l = ∂ℓ/∂z_l:

        G_L = diag(p) − ppᵀ,  g_L = p − e_y                                  (softmax cross-entropy)
        G_{l−1} = D W_lᵀ G_l W_l D + diag(σ''(z_{l−1}) ⊙ W_lᵀ g_l),  D = diag(σ'(z_{l−1}))
        g_{l−1} = σ'(z_{l−1}) ⊙ W_lᵀ g_l

    z_l is linear in (W_l, b_l), so the diagonal block of the Hessian for W_l is (a_{l−1} a_{l−1}ᵀ) ⊗ G_l and
    tr ∇²f = (1/N) Σ_n Σ_l (‖a_{l−1,n}‖² + 1) tr G_{l,n}. The trace needs only the diagonal blocks, so this is
    exact, costs O(N Σ_l width_l³) and shares no code with Hessian-vector products — an independent reference.
    Computed in the dtype of ``model``; raises ``TypeError`` for other architectures.
    """
    layers = [m for m in (model if isinstance(model, nn.Sequential) else [model]) if not isinstance(m, nn.Flatten)]
    linears: list[nn.Linear] = []
    acts: list[nn.Module] = []
    for i, m in enumerate(layers):
        if i % 2 == 0 and isinstance(m, nn.Linear):
            linears.append(m)
        elif i % 2 == 1 and isinstance(m, _ACTIVATIONS):
            acts.append(m)
        else:
            raise TypeError(f"expected Sequential(Linear, activation, ..., Linear), got {type(m).__name__} at position {i}")
    if len(acts) != len(linears) - 1:
        raise TypeError("expected the network to end with a Linear layer")
    total = 0.0
    with torch.no_grad():
        for xb, yb in zip(x.flatten(1).split(chunk), y.split(chunk)):
            inputs, pre = [xb], []
            a = xb
            for lin, act in zip(linears, acts + [None]):
                z = lin(a)
                pre.append(z)
                if act is not None:
                    a = act(z)
                    inputs.append(a)
            p = torch.softmax(pre[-1], dim=1)
            G = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
            g = p - F.one_hot(yb, p.shape[1]).to(p.dtype)
            trace_G = G.diagonal(dim1=1, dim2=2).sum(dim=1)  # tr G_l per sample
            for l in range(len(linears) - 1, -1, -1):
                bias = 1.0 if linears[l].bias is not None else 0.0
                total += float(((inputs[l].pow(2).sum(dim=1) + bias) * trace_G).sum())
                if l == 0:
                    break
                W = linears[l].weight
                d1, d2 = _activation_derivatives(acts[l - 1], pre[l - 1])
                back = g @ W  # W_lᵀ g_l per sample
                GW = G @ W
                # tr G_{l−1} = Σ_i σ'_i² (Wᵀ G W)_ii + Σ_i σ''_i (Wᵀ g)_i; the full G_{l−1} only if a layer remains.
                trace_G = (d1 * d1 * (GW * W).sum(dim=1)).sum(dim=1) + (d2 * back).sum(dim=1)
                if l > 1:
                    G = d1[:, :, None] * (W.T @ GW) * d1[:, None, :] + torch.diag_embed(d2 * back)
                    g = d1 * back
    return total / x.shape[0]


def _lanczos_truth(problem: Problem, log: Callable[[str], None]) -> dict:
    from sharpness.hessian import HessianOperator
    from sharpness.linalg import extreme_eigenvalues

    obj = _objective(problem, dtype=torch.float64)
    H = HessianOperator(obj)
    top, _ = extreme_eigenvalues(H, top_k=5, tol=1e-10, criterion="residual", seed=20240601, max_steps=400)
    log(f"  top-5 certified after {top.num_matvecs} float64 HVPs; relative residuals ≤ {np.max(top.residuals):.1e}")
    # A residual bounds the distance to *some* eigenvalue; a larger one that the Krylov space never saw would go
    # unnoticed. A second run from an independent start makes that miss very unlikely (both would have to).
    again, _ = extreme_eigenvalues(H, top_k=5, tol=1e-10, criterion="residual", seed=20240602, max_steps=400)
    disagreement = float(np.max(np.abs(again.values - top.values) / np.abs(top.values)))
    log(f"  second start agrees to {disagreement:.1e}")
    trace = exact_mlp_trace(copy.deepcopy(problem.model).double(), problem.x.double(), problem.y)
    log(f"  exact trace {trace:.10g} (Hessian backpropagation, float64)")
    return {
        "method": "float64: extreme_eigenvalues(tol=1e-10, criterion='residual') (|λ−θ| ≤ residual); exact trace by "
        "Hessian backpropagation",
        "top": top.values.tolist(),
        "top_residual_bounds": (top.residuals * np.abs(top.values)).tolist(),
        "lambda_min": None,
        "trace": trace,
        "trace_stderr": 0.0,
        "second_start_rel_disagreement": disagreement,
        "num_hvps": top.num_matvecs + again.num_matvecs,
    }


def compute_truth(problem: Problem, *, cache_dir: Path, recompute: bool, log: Callable[[str], None]) -> dict | None:
    if problem.truth == "none":
        return None
    settings = {"version": TRUTH_VERSIONS[problem.truth], "kind": problem.truth, "torch": torch.__version__}
    key = _truth_key(problem, settings)
    path = cache_dir / f"{problem.name}-{key[:16]}.json"
    if path.exists() and not recompute:
        truth = json.loads(path.read_text())
        truth["cached"] = True
        log(f"  truth from cache {path.name}")
        return truth
    log(f"  computing float64 truth ({problem.truth}); cached afterwards in {path}")
    t0 = time.perf_counter()
    truth = _dense_truth(problem, log) if problem.truth == "dense" else _lanczos_truth(problem, log)
    truth.update(seconds=time.perf_counter() - t0, key=key, settings=settings, problem=problem.name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(truth, indent=1))
    tmp.replace(path)
    truth["cached"] = False
    return truth


# ==========================================================================================================
# Libraries: each adapter builds its operator inside the timed call and returns an Outcome
# ==========================================================================================================
def _peer_status(name: str) -> tuple[Any | None, str | None]:
    """(module, None) if the peer imports, else (None, reason)."""
    module, _ = PEER_MODULES[name]
    try:
        return importlib.import_module(module), None
    except Exception as err:
        return None, f"not installable/importable: {_one_line(err)}"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _model_copy(problem: Problem) -> nn.Module:
    m = copy.deepcopy(problem.model).eval()
    for p in m.parameters():
        p.requires_grad_(True)
        p.grad = None
    return m


def _split_like(v: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    return [t.view_as(p) for t, p in zip(v.split([p.numel() for p in params]), params)]


def _descending(values: Sequence[float]) -> list[float]:
    return sorted((float(v) for v in values), reverse=True)


class _Count:
    """A mutable product counter shared with a wrapped peer function."""

    def __init__(self) -> None:
        self.n = 0


class Sharpness:
    """The library under test, called as a user would: one Objective, a fresh HessianOperator per task."""

    name = "sharpness"

    def __init__(self, problem: Problem, seed: int) -> None:
        self.problem, self.seed = problem, seed
        self.obj = _objective(problem)

    def op(self, *, chunks: int = 1, mode: str = "auto"):
        from sharpness.hessian import HessianOperator

        return HessianOperator(self.obj if chunks == 1 else _objective(self.problem, chunks=chunks), mode=mode)

    def top(self, k: int, tol: float = 1e-4) -> Outcome:
        from sharpness.linalg import top_eigenvalues

        H = self.op()
        res = top_eigenvalues(H, k, seed=self.seed, tol=tol)
        return Outcome(res.values.tolist(), H.num_matvecs,
                       extra={"error_bounds": res.error_bounds.tolist(), "mode_selection": H.selection})

    def trace(self, num_matvecs: int, *, vmap_blocks: bool = False, deflated: bool = False) -> Outcome:
        from sharpness.linalg import deflated_trace, hutchpp_trace

        H = VmapBlockHessian(self.op()) if vmap_blocks else self.op()
        res = (deflated_trace if deflated else hutchpp_trace)(H, num_matvecs, seed=self.seed)
        return Outcome([res.value], H.num_matvecs, stderr=res.stderr,
                       extra={"mode_selection": getattr(H, "selection", None)})

    def density(self, steps: int) -> Outcome:
        from sharpness.linalg import spectral_density

        H = self.op()
        res = spectral_density(H, num_steps=steps, num_runs=1, seed=self.seed)
        return Outcome([float(res.nodes.max())], H.num_matvecs, extra={"nodes": res.nodes[0].tolist(), "weights": res.weights[0].tolist()})

    def grid(self, steps: int) -> Outcome:
        from sharpness import landscape

        d1 = landscape.random_direction(self.obj, normalization="filter", seed=self.seed)
        d2 = landscape.random_direction(self.obj, normalization="filter", seed=self.seed + 1)
        g = landscape.grid(-1.0, 1.0, steps)
        res = landscape.plane(self.obj, None, d1, d2, g, g)
        loss = res.train_loss
        c = steps // 2
        return Outcome([float(loss[c, c])], extra={"centre": float(loss[c, c]), "evaluations": res.num_evaluations})


class VmapBlockHessian:
    """Prototype for a proposed change to ``sharpness.hessian`` (benchmark code, not the library): a ``(P, K)``
    block product as one ``vmap`` over the K tangents of forward-over-reverse per chunk, instead of K separate
    products. Under ``vmap`` only the tangent half of jvp(grad) is batched; the primal forward and backward are
    computed once per chunk for all K columns. Single vectors go to the wrapped operator unchanged."""

    def __init__(self, H: Any) -> None:
        self.H, self.obj = H, H.objective
        self.shape, self.dtype, self.device = H.shape, H.dtype, H.device
        self.num_matvecs = 0
        self._grad = torch.func.grad(self.obj.chunk_loss_sum)

    def __matmul__(self, V: Tensor) -> Tensor:
        if V.ndim == 1:
            out = self.H @ V
            self.num_matvecs = self.H.num_matvecs + self._block_columns
            return out
        obj, K = self.obj, V.shape[1]
        point = obj.unflatten(obj.theta)
        tangents = {k: t.T.reshape(K, *s) for k, t, s in zip(obj.names, V.to(obj.dtype).split(obj.sizes, dim=0), obj.shapes)}
        total = torch.zeros(K, obj.numel, dtype=obj.dtype, device=obj.device)
        for chunk in obj.chunks():
            column = lambda t: torch.func.jvp(lambda q: self._grad(q, *chunk), (point,), (t,))[1]  # noqa: E731
            hv = torch.func.vmap(column)(tangents)
            total += torch.cat([hv[k].reshape(K, -1) for k in obj.names], dim=1)
        self._block_columns += K
        self.num_matvecs = self.H.num_matvecs + self._block_columns
        return (total / obj.total_weight).T

    _block_columns = 0


class PyHessianAdapter:
    """PyHessian 0.1 (Yao et al. 2020): power iteration, Hutchinson, SLQ; the graph is built in the constructor."""

    name = "pyhessian"

    def __init__(self, problem: Problem, seed: int, module: Any) -> None:
        self.problem, self.seed = problem, seed
        self.hessian_cls = module.hessian
        # `pyhessian.hessian` the attribute is the class (the package re-exports it); the module is in sys.modules.
        self._ph = sys.modules["pyhessian.hessian"]

    @contextlib.contextmanager
    def counting(self) -> Iterator[_Count]:
        """PyHessian has no matvec counter: wrap its module-level product function for the duration."""
        count, original = _Count(), self._ph.hessian_vector_product

        def counted(*args: Any, **kw: Any):
            count.n += 1
            return original(*args, **kw)

        self._ph.hessian_vector_product = counted
        try:
            yield count
        finally:
            self._ph.hessian_vector_product = original

    def make(self):
        p = self.problem
        crit = nn.CrossEntropyLoss()
        if p.peer_batches == 1:
            return self.hessian_cls(_model_copy(p), crit, data=(p.x, p.y), cuda=False)
        return self.hessian_cls(_model_copy(p), crit, dataloader=p.batches(), cuda=False)

    def top(self, k: int) -> Outcome:
        with self.counting() as c, _seeded_global_rng(self.seed):
            h = self.make()
            values, _ = h.eigenvalues(top_n=k)  # defaults: maxIter=100, tol=1e-3
        return Outcome(_descending(values), c.n, extra={"order_returned": [float(v) for v in values]})

    def trace(self, probes: int) -> Outcome:
        with self.counting() as c, _seeded_global_rng(self.seed):
            samples = self.make().trace(maxIter=probes, tol=0.0)  # tol=0: exactly `probes` probes
        s = np.asarray(samples, dtype=np.float64)
        return Outcome([float(s.mean())], c.n, stderr=float(s.std(ddof=1) / math.sqrt(s.size)))

    def density(self, steps: int) -> Outcome:
        with self.counting() as c, _seeded_global_rng(self.seed):
            nodes, weights = self.make().density(iter=steps, n_v=1)
        return Outcome([float(np.max(nodes))], c.n)


class EigenthingsAdapter:
    """hessian-eigenthings 1.0: a double backward per product; Lanczos, Hutch++, SLQ."""

    name = "eigenthings"

    def __init__(self, problem: Problem, seed: int, module: Any) -> None:
        self.problem, self.seed, self.he = problem, seed, module

    def make(self) -> tuple[Any, _Count]:
        op = self.he.HessianOperator(_model_copy(self.problem), self.problem.batches(), self.he.supervised_loss(F.cross_entropy))
        count, original = _Count(), op.matvec

        def matvec(v: Tensor) -> Tensor:
            count.n += 1
            return original(v)

        op.matvec = matvec
        return op, count

    def top(self, k: int, **kw: Any) -> Outcome:
        op, c = self.make()
        res = self.he.lanczos(op, k=k, seed=self.seed, **kw)
        return Outcome(_descending(res.eigenvalues.tolist()), c.n, extra={"converged_flags": res.converged.tolist()})

    def trace(self, num_matvecs: int) -> Outcome:
        op, c = self.make()
        res = self.he.trace(op, num_matvecs=num_matvecs, seed=self.seed)  # Hutch++ by default
        return Outcome([res.estimate], c.n, stderr=res.stderr)

    def density(self, steps: int) -> Outcome:
        op, c = self.make()
        res = self.he.spectral_density(op, num_runs=1, lanczos_steps=steps, seed=self.seed)
        return Outcome([float(res.raw_eigenvalues.max())], c.n)


class CurvlinopsAdapter:
    """curvlinops 3: vmap of jvp(jacrev) products; eigenvalues via SciPy's eigsh on ``to_scipy()`` (its docs'
    recipe), Hutch++, and Papyan's (2020) Lanczos spectrum."""

    name = "curvlinops"

    def __init__(self, problem: Problem, seed: int, module: Any) -> None:
        self.problem, self.seed, self.cl = problem, seed, module
        count = self.count = _Count()

        class Counted(module.HessianLinearOperator):
            def _matmat(self, M: list[Tensor]) -> list[Tensor]:
                count.n += int(M[0].shape[-1])
                return super()._matmat(M)

        self.cls = Counted

    def make(self):
        m = _model_copy(self.problem)
        params = [p for p in m.parameters() if p.requires_grad]
        # check_deterministic=False: its check costs extra products; sharpness' check sits in the untimed set-up.
        return self.cls(m, nn.CrossEntropyLoss(), params, self.problem.batches(), check_deterministic=False)

    def top(self, k: int) -> Outcome:
        from scipy.sparse.linalg import eigsh

        self.count.n = 0
        A = self.make()
        v0 = np.random.default_rng(self.seed).standard_normal(A.shape[0])
        vals = eigsh(A.to_scipy(), k=k, which="LA", v0=v0, return_eigenvectors=False)  # tol=0: machine precision
        return Outcome(_descending(vals.tolist()), self.count.n)

    def trace(self, num_matvecs: int) -> Outcome:
        self.count.n = 0
        with _seeded_global_rng(self.seed):
            value = float(self.cl.hutchpp_trace(self.make(), num_matvecs))
        return Outcome([value], self.count.n)

    def density(self, steps: int) -> Outcome:
        self.count.n = 0
        with _seeded_global_rng(self.seed):
            grid, dens = self.cl.lanczos_approximate_spectrum(self.make(), steps)
        return Outcome([float(grid.max())], self.count.n)


# ==========================================================================================================
# Tasks
# ==========================================================================================================
@dataclass
class Settings:
    rounds: int
    hvp_rounds: int
    trace_matvecs: int
    peer_trace_probes: int
    density_steps: int
    grid_steps: int
    budget_s: float
    grid_rounds: int = 5
    seed: int = 0


class Bench:
    """Runs the tasks of one problem for every available library and collects :class:`Entry` rows."""

    def __init__(self, problem: Problem, truth: dict | None, settings: Settings, peers: dict[str, Any], log: Callable[[str], None]) -> None:
        self.p, self.truth, self.s, self.log = problem, truth, settings, log
        self.ours = Sharpness(problem, settings.seed)
        self.peers = peers
        self.entries: list[Entry] = []
        self.adapters: dict[str, Any] = {}
        for name, cls in (("pyhessian", PyHessianAdapter), ("eigenthings", EigenthingsAdapter), ("curvlinops", CurvlinopsAdapter)):
            if peers.get(name) is not None:
                self.adapters[name] = cls(problem, settings.seed, peers[name])

    # -- helpers ---------------------------------------------------------------------------------------------
    def _unavailable(self, task: str, lib: str, setting: str) -> None:
        _, reason = _peer_status(lib)
        self.entries.append(Entry(task, lib, setting, status="unavailable", error=reason))

    def _run(self, task: str, jobs: list[tuple[str, str, Callable[[], Outcome]]], rounds: int, *, warm: bool = False) -> list[Entry]:
        pairs = [(Entry(task, lib, setting), fn) for lib, setting, fn in jobs]
        run_rounds(pairs, rounds, budget_s=self.s.budget_s, warm=warm)
        entries = [e for e, _ in pairs]
        self.entries += entries
        for e in entries:
            self.log(f"    {task:8s} {e.library:16s} {e.setting:34s} " + (f"{e.best:8.3f} s" if e.best is not None else e.status + f" ({e.error})"))
        return entries

    def _missing(self, task: str, libs: Sequence[str], setting: str) -> None:
        for lib in libs:
            if lib not in self.adapters:
                self._unavailable(task, lib, setting)

    # -- warm-up ---------------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """One untimed product per library: lazy initialization (vmap tracing, allocator pools) is not timed."""
        v = torch.randn(self.p.num_params, generator=torch.Generator().manual_seed(1))
        self.ours.op() @ v
        for name, ad in self.adapters.items():
            try:
                if name == "pyhessian":
                    h = ad.make()
                    ad._ph.hessian_vector_product(h.gradsH, h.params, _split_like(v, h.params)) if self.p.peer_batches == 1 else h.dataloader_hv_product(_split_like(v, h.params))
                elif name == "eigenthings":
                    ad.make()[0].matvec(v)
                else:
                    ad.make() @ v
            except Exception as err:
                self.log(f"    warm-up of {name} failed: {_one_line(err)}")

    # -- tasks -----------------------------------------------------------------------------------------------
    def task_hvp(self) -> None:
        p = self.p
        v = torch.randn(p.num_params, generator=torch.Generator().manual_seed(2))
        model = _model_copy(p)
        params = list(model.parameters())
        batches = p.batches()

        def bare_grad() -> Outcome:
            for xb, yb in batches:  # the whole set, chunked like the peers see it
                torch.autograd.grad(F.cross_entropy(model(xb), yb), params)
            return Outcome(num_hvps=0)

        jobs: list[tuple[str, str, Callable[[], Outcome]]] = [
            ("torch", "gradient (plain autograd, module)", bare_grad),
            ("sharpness", "gradient (Objective.value_and_grad)", lambda: (self.ours.obj.value_and_grad(), Outcome(num_hvps=0))[1]),
        ]
        stream = list(zip(p.x.chunk(p.stream_chunks), p.y.chunk(p.stream_chunks)))
        v_params = _split_like(v, params)

        def bare_streamed_hvp() -> Tensor:
            # What plain PyTorch pays for a streamed product: per chunk a forward, a create_graph backward and a
            # backward through it — the floor the "streamed" target's limit is set against.
            total = [torch.zeros_like(t) for t in params]
            for xb, yb in stream:
                g = torch.autograd.grad(F.cross_entropy(model(xb), yb, reduction="sum"), params, create_graph=True)
                for t, h in zip(total, torch.autograd.grad(g, params, v_params)):
                    t += h
            return torch.cat([t.reshape(-1) for t in total]) / p.n

        H1 = self.ours.op()
        Hs = self.ours.op(chunks=p.stream_chunks)
        outs: dict[tuple[str, str], Tensor] = {}

        def keep(key: tuple[str, str], fn: Callable[[], Tensor]) -> Callable[[], Outcome]:
            def call() -> Outcome:
                outs[key] = fn().detach().reshape(-1).clone()
                return Outcome(num_hvps=1)

            return call

        def add(lib: str, setting: str, fn: Callable[[], Tensor]) -> None:
            jobs.append((lib, setting, keep((lib, setting), fn)))

        if p.peer_batches == 1:
            assert H1.mode == "retained-graph", H1.mode
            add("sharpness", OURS_RETAINED, lambda: H1 @ v)
            # The same kind of product as eigenthings' and curvlinops' on one batch: a fresh double backward.
            Hf = self.ours.op(mode="reverse-over-reverse")
            add("sharpness", OURS_FRESH, lambda: Hf @ v)
        add("torch", TORCH_STREAMED.format(chunks=p.stream_chunks), bare_streamed_hvp)
        add("sharpness", OURS_STREAMED_AUTO.format(chunks=p.stream_chunks), lambda: Hs @ v)
        Hr = self.ours.op(chunks=p.stream_chunks, mode="reverse-over-reverse")
        add("sharpness", OURS_STREAMED_RR.format(chunks=p.stream_chunks), lambda: Hr @ v)
        if "pyhessian" in self.adapters:
            h = self.adapters["pyhessian"].make()
            vl = _split_like(v, h.params)
            if p.peer_batches == 1:
                add("pyhessian", "HVP (retained graph)",
                    lambda: torch.cat([t.reshape(-1) for t in self.adapters["pyhessian"]._ph.hessian_vector_product(h.gradsH, h.params, vl)]))
            else:
                add("pyhessian", "HVP (per-batch double backward)", lambda: torch.cat([t.reshape(-1) for t in h.dataloader_hv_product(vl)[1]]))
        if "eigenthings" in self.adapters:
            op, _ = self.adapters["eigenthings"].make()
            add("eigenthings", "HVP (double backward)", lambda: op.matvec(v))
        if "curvlinops" in self.adapters:
            A = self.adapters["curvlinops"].make()
            add("curvlinops", "HVP (jvp of jacrev)", lambda: A @ v)
        self._missing("hvp", ("pyhessian", "eigenthings", "curvlinops"), "HVP")
        entries = self._run("hvp", jobs, self.s.hvp_rounds, warm=True)
        for H in (H1, Hs):  # what "auto" measured and chose, in the JSON beside the times
            self.log(f"    auto: {H!r}")
        for e in entries:
            if e.library == "sharpness" and e.outcome is not None and "auto" in e.setting:
                e.outcome.extra["mode_selection"] = Hs.selection
        # Every product is checked against one float64 product at the same point.
        try:
            from sharpness.hessian import HessianOperator

            obj64 = _objective(p, dtype=torch.float64, chunks=p.peer_batches)
            ref = (HessianOperator(obj64) @ v.double()).float()
            for e in entries:
                key = (e.library, e.setting)
                if key in outs and e.outcome is not None and e.outcome.num_hvps:
                    e.rel_error = float((outs[key] - ref).norm() / ref.norm())
        except Exception as err:
            self.log(f"    float64 HVP reference failed: {_one_line(err)}")

    def task_top(self, k: int) -> None:
        task = f"top{k}"
        jobs: list[tuple[str, str, Callable[[], Outcome]]] = [("sharpness", "top_eigenvalues(tol=1e-4)", lambda: self.ours.top(k))]
        if k == 1:  # at PyHessian's accuracy, which is what its time is compared with
            jobs.append(("sharpness", "top_eigenvalues(tol=1e-3)", lambda: self.ours.top(k, tol=1e-3)))
        if "pyhessian" in self.adapters:
            jobs.append(("pyhessian", "eigenvalues() defaults (power it., tol=1e-3)", lambda: self.adapters["pyhessian"].top(k)))
        if "eigenthings" in self.adapters:
            ad = self.adapters["eigenthings"]
            jobs.append(("eigenthings", f"lanczos() defaults (max_iter={2 * k}, LM)", lambda: ad.top(k)))
            steps = 30 if k == 1 else 60
            jobs.append(("eigenthings", f"lanczos(max_iter={steps}, LA, reorth)", lambda: ad.top(k, max_iter=steps, which="LA", reorthogonalize=True)))
        if "curvlinops" in self.adapters:
            jobs.append(("curvlinops", "scipy eigsh(LA) on to_scipy()", lambda: self.adapters["curvlinops"].top(k)))
        self._missing(task, ("pyhessian", "eigenthings", "curvlinops"), "top eigenvalues")
        for e in self._run(task, jobs, self.s.rounds):
            if self.truth and e.outcome and e.outcome.values:
                exact = self.truth["top"][:k]
                got = e.outcome.values[:k]
                e.rel_error = max(abs(a - b) / abs(b) for a, b in zip(got, exact))

    def task_trace(self) -> None:
        m, probes = self.s.trace_matvecs, self.s.peer_trace_probes
        jobs: list[tuple[str, str, Callable[[], Outcome]]] = [
            ("sharpness", f"hutchpp_trace({m} matvecs)", lambda: self.ours.trace(m)),
            ("sharpness", f"deflated_trace({m} matvecs)", lambda: self.ours.trace(m, deflated=True)),
            ("sharpness", f"deflated_trace({probes} matvecs)", lambda: self.ours.trace(probes, deflated=True)),
        ]
        if "pyhessian" in self.adapters:
            jobs.append(("pyhessian", f"trace(maxIter={probes}, tol=0) Hutchinson", lambda: self.adapters["pyhessian"].trace(probes)))
        if "eigenthings" in self.adapters:
            jobs.append(("eigenthings", f"trace({probes} matvecs) Hutch++", lambda: self.adapters["eigenthings"].trace(probes)))
        if "curvlinops" in self.adapters:
            jobs.append(("curvlinops", f"hutchpp_trace({probes} matvecs)", lambda: self.adapters["curvlinops"].trace(probes)))
        self._missing("trace", ("pyhessian", "eigenthings", "curvlinops"), "trace")
        jobs.append(("prototype", f"hutchpp_trace({m}) with vmapped block HVPs", lambda: self.ours.trace(m, vmap_blocks=True)))
        if self.p.truth == "lanczos":  # an MLP: the exact Hessian-backpropagation trace applies
            model = _model_copy(self.p)
            jobs.append(("prototype", "exact trace by Hessian backprop (float32)", lambda: Outcome([exact_mlp_trace(model, self.p.x, self.p.y)], 0)))
        for e in self._run("trace", jobs, self.s.rounds):
            if self.truth and e.outcome and e.outcome.values:
                t = self.truth["trace"]
                e.rel_error = abs(e.outcome.values[0] - t) / abs(t)

    def task_density(self) -> None:
        st = self.s.density_steps
        jobs: list[tuple[str, str, Callable[[], Outcome]]] = [("sharpness", f"spectral_density({st} steps, 1 run)", lambda: self.ours.density(st))]
        if "pyhessian" in self.adapters:
            jobs.append(("pyhessian", f"density(iter={st}, n_v=1)", lambda: self.adapters["pyhessian"].density(st)))
        if "eigenthings" in self.adapters:
            jobs.append(("eigenthings", f"spectral_density({st} steps, 1 run)", lambda: self.adapters["eigenthings"].density(st)))
        if "curvlinops" in self.adapters:
            jobs.append(("curvlinops", f"lanczos_approximate_spectrum(ncv={st})", lambda: self.adapters["curvlinops"].density(st)))
        self._missing("density", ("pyhessian", "eigenthings", "curvlinops"), "density")
        for e in self._run("density", jobs, self.s.rounds):
            # Sanity check only: the largest quadrature node (or grid end) against λ_max.
            if self.truth and e.outcome and e.outcome.values:
                e.rel_error = abs(e.outcome.values[0] - self.truth["top"][0]) / abs(self.truth["top"][0])
                e.note = "rel. error = largest node (curvlinops: grid end, padded) vs λ_max"

    def task_grid(self) -> None:
        p, n = self.p, self.s.grid_steps
        model = _model_copy(p)
        with torch.no_grad():
            f_theta = float(F.cross_entropy(model(p.x), p.y))

        def forwards() -> Outcome:
            with torch.no_grad():
                for _ in range(n * n):
                    F.cross_entropy(model(p.x), p.y)
            return Outcome()

        def ours() -> Outcome:
            out = self.ours.grid(n)
            out.extra["centre_rel_dev"] = abs(out.extra["centre"] - f_theta) / f_theta
            return out

        jobs: list[tuple[str, str, Callable[[], Outcome]]] = [
            ("torch", f"{n * n} plain forward passes (no_grad)", forwards),
        ]
        try:
            importlib.import_module("sharpness.landscape").plane  # noqa: B018
            jobs.append(("sharpness", f"random_direction ×2 + plane({n}×{n})", ours))
        except (ImportError, AttributeError):
            jobs.append(("sharpness", f"{n * n} × objective.value(θ) (landscape missing)", lambda: ([self.ours.obj.value() for _ in range(n * n)], Outcome())[1]))
        ll = self.peers.get("loss-landscapes")
        if ll is not None:
            import loss_landscapes.metrics as llm

            def theirs() -> Outcome:
                with _seeded_global_rng(self.s.seed):
                    Z = ll.random_plane(_model_copy(p), llm.Loss(F.cross_entropy, p.x, p.y), distance=1, steps=n, normalization="filter", deepcopy_model=True)
                c = n // 2
                return Outcome([float(Z[c, c])], extra={"centre": float(Z[c, c]), "centre_rel_dev": abs(float(Z[c, c]) - f_theta) / f_theta})

            jobs.append(("loss-landscapes", f"random_plane(steps={n}, filter)", theirs))
        else:
            self._unavailable("grid", "loss-landscapes", "random_plane")
        for e in self._run("grid", jobs, self.s.grid_rounds):
            if e.outcome and "centre_rel_dev" in e.outcome.extra:
                e.rel_error = e.outcome.extra["centre_rel_dev"]
                e.note = "rel. error = |loss at the grid centre − f(θ)| / f(θ)"

    def run(self, tasks: Sequence[str]) -> None:
        self.warm_up()
        for task in tasks:
            if task not in self.p.tasks:
                continue
            self.log(f"  task {task}")
            {"hvp": self.task_hvp, "top1": lambda: self.task_top(1), "top5": lambda: self.task_top(5), "trace": self.task_trace,
             "density": self.task_density, "grid": self.task_grid}[task]()


# ==========================================================================================================
# Targets (issue #10) and tables
# ==========================================================================================================
def _find(entries: Sequence[dict], task: str, library: str, contains: str = "") -> dict | None:
    for e in entries:
        if e["task"] == task and e["library"] == library and contains in e["setting"] and e["status"] == "ok" and e["seconds_best"] is not None:
            return e
    return None


#: Tasks with several sharpness entries: the setting fragment of ours a peer is compared with (like with like:
#: PyHessian's power iteration stops at tol = 1e-3); every other peer is compared with ours' first entry.
PEER_LIKE = {("top1", "pyhessian"): "tol=1e-3"}


def reference_entry(entries: Sequence[dict], e: dict, problem: dict) -> tuple[dict | None, str]:
    """The sharpness entry whose time a peer's entry is divided by ("N× ours"), and what it is.

    Single products (task ``"hvp"``) are compared kind with kind (:data:`PEER_HVP_KINDS`): a product through a
    retained graph with ours through a retained graph; a fresh product with our fresh double backward on the
    batches the peer sees (one batch: :data:`OURS_FRESH`; several: our streamed product over as many chunks).
    Every other task has one sharpness entry. ``(None, "")`` where there is nothing of the same kind (e.g. a
    result written before :data:`OURS_FRESH` was measured) or ``e`` is not a peer's.
    """
    if e["library"] in ("sharpness", "torch", "prototype") or e["status"] != "ok":
        return None, ""
    if e["task"] != "hvp":
        mine = [o for o in entries if o["task"] == e["task"] and o["library"] == "sharpness"]
        if not mine:
            raise ValueError(f"expected a sharpness entry for task {e['task']!r}, got none")
        like = PEER_LIKE.get((e["task"], e["library"]), "")
        ref = next((o for o in mine if like and like in o["setting"]), mine[0])
        ok = ref["status"] == "ok" and ref["seconds_best"] is not None
        return (ref, like) if ok else (None, "")
    kind = PEER_HVP_KINDS[(e["library"], e["setting"])]
    batches = problem.get("peer_batches", 1)
    if kind == "retained graph":
        setting = OURS_RETAINED if batches == 1 else None
    elif batches == 1:
        setting = OURS_FRESH
    else:
        setting = OURS_STREAMED_RR.format(chunks=batches) if problem.get("stream_chunks") == batches else None
    ref = next((o for o in entries if o["task"] == "hvp" and o["library"] == "sharpness" and o["setting"] == setting
                and o["status"] == "ok" and o["seconds_best"] is not None), None)
    return ref, (kind if ref else "")


def paired_ratio(a: dict, b: dict) -> float:
    """Median over rounds of a's time / b's time in the same round (rounds interleave the libraries, so a
    burst of outside load hits both sides of a pair alike); a single round gives that round's ratio."""
    pairs = [x / y for x, y in zip(a["seconds_all"], b["seconds_all"])]
    return statistics.median(pairs) if pairs else a["seconds_best"] / b["seconds_best"]


def evaluate_targets(entries: Sequence[dict], truth: dict | None) -> list[dict]:
    """The issue's targets, each with the measured value, the limit and whether it is met (None = not measured)."""
    out: list[dict] = []

    def add(name: str, value: float | None, limit: float, ok: bool | None, detail: str) -> None:
        out.append({"target": name, "value": value, "limit": limit, "met": ok, "detail": detail})

    grad = _find(entries, "hvp", "torch", "gradient")
    # Beside each HVP target, what the same kind of product costs outside sharpness in the same run.
    floors = {OURS_RETAINED: (_find(entries, "hvp", "pyhessian", "retained graph"), "PyHessian's retained graph"),
              "auto mode": (_find(entries, "hvp", "torch", "plain double backward"), "plain PyTorch over the same chunks")}
    for contains, name, limit in ((OURS_RETAINED, "HVP ≤ 1.5× gradient (retained graph)", 1.5), ("auto mode", "HVP ≤ 2.5× gradient (streamed chunks)", 2.5)):
        e = _find(entries, "hvp", "sharpness", contains)
        if grad and e:
            r = paired_ratio(e, grad)
            floor, what = floors[contains]
            beside = f"; {what} {paired_ratio(floor, grad):.2f}×" if floor else ""
            add(name, r, limit, r <= limit, f"{e['seconds_best'] * 1e3:.1f} ms vs gradient {grad['seconds_best'] * 1e3:.1f} ms{beside}")
    ours1, ph1 = _find(entries, "top1", "sharpness"), _find(entries, "top1", "pyhessian")
    if ours1 and ph1 and ours1["rel_error"] is not None:
        r = paired_ratio(ours1, ph1)
        add("top-1 error ≤ 1e-4 in ≤ PyHessian's time", r, 1.0, r <= 1.0 and ours1["rel_error"] <= EIG_TARGET,
            f"error {ours1['rel_error']:.1e} (PyHessian {ph1['rel_error']:.1e}); time {ours1['seconds_best']:.3f} s vs {ph1['seconds_best']:.3f} s")
    ours1l = _find(entries, "top1", "sharpness", "tol=1e-3")
    if ours1l and ph1 and ours1l["rel_error"] is not None:
        r = paired_ratio(ours1l, ph1)
        add("top-1 error ≤ 1e-3 (tol=1e-3, PyHessian's accuracy) in ≤ PyHessian's time", r, 1.0,
            r <= 1.0 and ours1l["rel_error"] <= 1e-3,
            f"error {ours1l['rel_error']:.1e} (PyHessian {ph1['rel_error']:.1e}); {ours1l['num_hvps']} vs {ph1['num_hvps']} HVP; "
            f"time {ours1l['seconds_best']:.3f} s vs {ph1['seconds_best']:.3f} s")
    ours5 = _find(entries, "top5", "sharpness")
    accurate = [e for e in entries if e["task"] == "top5" and e["library"] not in ("sharpness", "torch") and e["status"] == "ok"
                and e["rel_error"] is not None and e["rel_error"] <= EIG_TARGET]
    if ours5 and accurate and ours5["rel_error"] is not None:
        best = min(accurate, key=lambda e: e["seconds_best"])
        r = paired_ratio(ours5, best)
        add("top-5 error ≤ 1e-4 in ≤ ½ the fastest accurate peer's time", r, 0.5, r <= 0.5 and ours5["rel_error"] <= EIG_TARGET,
            f"error {ours5['rel_error']:.1e}; {ours5['seconds_best']:.3f} s vs {LIBRARY_TITLES[best['library']]} {best['setting']} {best['seconds_best']:.3f} s")
    ourst, pht = _find(entries, "trace", "sharpness"), _find(entries, "trace", "pyhessian")
    if ourst and pht and ourst["rel_error"] is not None and truth:
        r = paired_ratio(ourst, pht)
        rel_se = ourst["stderr"] / abs(truth["trace"])
        add("trace error ≤ 1e-3 (and stderr ≤ 1e-3) in ≤ ⅔ PyHessian's 60-probe time", r, 2 / 3,
            r <= 2 / 3 and ourst["rel_error"] <= TRACE_TARGET and rel_se <= TRACE_TARGET,
            f"error {ourst['rel_error']:.1e}, stderr {rel_se:.1e} (PyHessian error {pht['rel_error']:.1e}); {ourst['seconds_best']:.3f} s vs {pht['seconds_best']:.3f} s")
    for m_label in ("deflated_trace(39", "deflated_trace(60"):
        ourdt = _find(entries, "trace", "sharpness", m_label)
        if ourdt and pht and ourdt["rel_error"] is not None and truth:
            r = paired_ratio(ourdt, pht)
            rel_se = ourdt["stderr"] / abs(truth["trace"])
            add(f"trace error ≤ 1e-3 (and stderr ≤ 1e-3) in ≤ PyHessian's 60-probe time: {m_label} matvecs)", r, 1.0,
                r <= 1.0 and ourdt["rel_error"] <= TRACE_TARGET and rel_se <= TRACE_TARGET,
                f"error {ourdt['rel_error']:.1e}, stderr {rel_se:.1e}; {ourdt['seconds_best']:.3f} s vs {pht['seconds_best']:.3f} s")
    oursd, etd = _find(entries, "density", "sharpness"), _find(entries, "density", "eigenthings")
    if oursd and etd:
        r = paired_ratio(oursd, etd)
        add("density (80 steps) ≤ 0.6× eigenthings' time", r, 0.6, r <= 0.6, f"{oursd['seconds_best']:.3f} s vs {etd['seconds_best']:.3f} s")
    oursg, fwd, llg = _find(entries, "grid", "sharpness"), _find(entries, "grid", "torch"), _find(entries, "grid", "loss-landscapes")
    if oursg and fwd:
        r = paired_ratio(oursg, fwd)
        faster = llg is None or paired_ratio(oursg, llg) < 1.0
        add("21×21 grid ≤ 1.2× 441 forward passes, faster than loss-landscapes", r, 1.2, r <= 1.2 and faster,
            f"{oursg['seconds_best']:.3f} s vs forwards {fwd['seconds_best']:.3f} s" + (f", loss-landscapes {llg['seconds_best']:.3f} s" if llg else ""))
    return out


def _fmt_s(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_err(e: float | None) -> str:
    if e is None:
        return ""
    return f"err {e:.0e}" if e < 0.01 else f"err {e:.0%}"


def _cell(e: dict, ours: dict | None, kind: str, task: str, grad: dict | None) -> str:
    if e["status"] != "ok":
        return f"*{e['status']}*: {e['error']}" if e["status"] == "failed" else f"*{e['error']}*"
    parts = [_fmt_s(e["seconds_best"])]
    if task == "hvp" and grad and e["library"] != "torch":
        parts[0] += f" ({paired_ratio(e, grad):.2f}× grad)"
    if e["num_hvps"]:
        if task != "hvp":
            parts.append(f"{e['num_hvps']} HVP")
    if e["rel_error"] is not None:
        parts.append(_fmt_err(e["rel_error"]))
    if task == "trace" and e["stderr"] is not None and e["values"]:
        parts.append(f"stderr {e['stderr'] / abs(e['values'][0]):.0e}")
    if task != "hvp" and e["peak_rss_mb"] is not None:
        parts.append(f"ΔRSS {e['peak_rss_mb']:.0f} MB")
    if ours and e["library"] not in ("sharpness", "torch", "prototype"):
        parts.append(f"**{paired_ratio(e, ours):.1f}× ours**" + (f" ({kind})" if kind else ""))
    return f"{e['setting']}: " + ", ".join(parts)


def markdown(result: dict) -> str:
    """The per-problem tables (tasks × libraries, one cell per setting) plus the targets."""
    lines = [
        f"# sharpness vs peers — {result['date']}",
        "",
        f"Machine: {result['machine']['cpu']} ({result['machine']['logical_cpus']} logical CPUs), torch {result['versions']['torch']}, "
        f"{result['config']['threads']} torch thread(s), float32, eval mode; load average {result['machine']['loadavg_start']} at start. "
        f"Times are the best of up to {result['config']['rounds']} interleaved rounds (HVP: {result['config']['hvp_rounds']}"
        + (f", grid: {g}" if (g := result["config"].get("settings", {}).get("grid_rounds")) else "") + "); "
        "ratios (the median over rounds of same-round ratios) are what counts on a shared machine. "
        "`err` = relative error against the float64 truth; "
        "`N× ours` = that library's time / sharpness' time for the same task (a single HVP: / our product of the same "
        "kind, retained graph vs retained graph, a fresh product vs our fresh double backward on the same batches); `ΔRSS` = peak resident memory above the "
        "task's start (first round, freed memory returned to the OS before each task).",
        "",
    ]
    peers = ", ".join(f"{LIBRARY_TITLES[k]} {v or '—'}" for k, v in result["versions"]["peers"].items())
    lines += [f"Versions: sharpness {result['versions']['sharpness']}; {peers}.", ""]
    for prob in result["problems"]:
        cfg, truth, entries = prob["problem"], prob["truth"], prob["entries"]
        lines += [f"## {cfg['name']}: {cfg['description']}", "",
                  f"P = {cfg['num_params']:,} parameters, N = {cfg['n_samples']} samples (one batch for the peers"
                  + ("" if cfg["peer_batches"] == 1 else f" — no: {cfg['peer_batches']} batches") + ")."]
        if truth:
            tr = f"{truth['trace']:.6g}" + (f" ± {truth['trace_stderr']:.1g}" if truth["trace_stderr"] else " (exact)")
            lines += [f"Truth ({truth['method']}): λ₁…λ₅ = {', '.join(f'{v:.6g}' for v in truth['top'])}; tr H = {tr}."]
        lines.append("")
        libs = ["torch"] + [l for l in LIBRARIES if any(e["library"] == l for e in entries)]
        lines += ["| task | " + " | ".join("baseline (torch)" if l == "torch" else LIBRARY_TITLES[l] for l in libs) + " |",
                  "|" + "---|" * (len(libs) + 1)]
        grad = _find(entries, "hvp", "torch")
        for task in TASKS:
            rows = [e for e in entries if e["task"] == task]
            if not rows:
                continue
            cells = []
            for lib in libs:
                mine = [e for e in rows if e["library"] == lib]
                cells.append("<br>".join(_cell(e, *reference_entry(entries, e, cfg), task, grad) for e in mine) if mine else "")
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        if prob["targets"]:
            lines += ["", "| target | measured | limit | met | detail |", "|---|---|---|---|---|"]
            for t in prob["targets"]:
                lines.append(f"| {t['target']} | {t['value']:.2f} | {t['limit']:.2f} | {'yes' if t['met'] else 'no'} | {t['detail']} |")
        lines.append("")
    lines += [f"Process peak RSS (ru_maxrss): {result['peak_rss_mb']:.0f} MB. Total wall time {result['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def summarize(paths: Sequence[str]) -> str:
    """The spread of each target's ratio over several result files (one line per problem and target)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    table: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for run in runs:
        for prob in run["problems"]:
            for t in prob["targets"]:
                table.setdefault((prob["problem"]["name"], t["target"]), []).append((t["value"], bool(t["met"])))
    lines = [f"Spread over {len(runs)} runs ({', '.join(Path(p).name for p in paths)}):", "",
             "| problem | target | values | min–max | met |", "|---|---|---|---|---|"]
    for (prob, target), vals in table.items():
        v = [x for x, _ in vals]
        lines.append(f"| {prob} | {target} | {', '.join(f'{x:.2f}' for x in v)} | {min(v):.2f}–{max(v):.2f} | {sum(m for _, m in vals)}/{len(vals)} |")
    return "\n".join(lines)


# ==========================================================================================================
# Environment and main
# ==========================================================================================================
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _blas_info(threads: int) -> tuple[Any, list[dict]]:
    """Limit numpy/scipy's BLAS to one thread (torch's own pool is set separately) and describe the pools."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return None, [{"note": "threadpoolctl absent; set OPENBLAS_NUM_THREADS=1 before starting"}]
    limiter = threadpool_limits(limits=1, user_api="blas")
    info = [{k: d.get(k) for k in ("user_api", "internal_api", "num_threads", "version")} for d in threadpool_info()]
    return limiter, info


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Problems: " + ", ".join(PROBLEMS) + ". Tasks: " + ", ".join(TASKS) + ".")
    ap.add_argument("--problems", default=",".join(DEFAULT_PROBLEMS), help="comma-separated problem names (default: %(default)s)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default: all)")
    ap.add_argument("--peers", default="pyhessian,eigenthings,curvlinops,loss-landscapes", help="peers to include (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="smoke run: one round, 20-step density, 7×7 grid (same problems and truth)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per task (default: %(default)s)")
    ap.add_argument("--hvp-rounds", type=int, default=9, help="rounds for the single-HVP timing (default: %(default)s)")
    ap.add_argument("--grid-rounds", type=int, default=5,
                    help="rounds for the 21×21 grid, whose ratio spread 1.05–1.40 over 3-round runs (default: %(default)s)")
    ap.add_argument("--trace-matvecs", type=int, default=39, help="sharpness' Hutch++ budget (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: %(default)s, as in the issue)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=8.0, help="repeat a task only if one round took less than this many seconds")
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory for peers-<date>.json/.md (default: benchmarks/results)")
    ap.add_argument("--tag", default="", help="suffix for the output file names (e.g. run2)")
    ap.add_argument("--truth-cache", type=Path, default=RESULTS / "truth", help="float64 truth cache (default: %(default)s)")
    ap.add_argument("--recompute-truth", action="store_true", help="ignore the truth cache")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="print the spread of target ratios over result files and exit")
    ap.add_argument("--render", metavar="JSON", help="rewrite the markdown table (and targets) of a saved result and exit")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if args.render:
        path = Path(args.render)
        result = json.loads(path.read_text())
        for prob in result["problems"]:
            prob["targets"] = evaluate_targets(prob["entries"], prob["truth"])
        path.write_text(json.dumps(result, indent=1, default=float))
        md = markdown(result)
        path.with_suffix(".md").write_text(md)
        print(md)
        return 0
    problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [p for p in problems if p not in PROBLEMS] + [t for t in tasks if t not in TASKS]
    if unknown:
        print(f"error: unknown problem/task {', '.join(unknown)}; expected problems among {', '.join(PROBLEMS)} and tasks among {', '.join(TASKS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    _limiter, blas = _blas_info(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    settings = Settings(
        rounds=1 if args.quick else args.rounds, hvp_rounds=3 if args.quick else args.hvp_rounds,
        trace_matvecs=args.trace_matvecs, peer_trace_probes=60, density_steps=20 if args.quick else 80,
        grid_steps=7 if args.quick else 21, budget_s=args.budget, seed=args.seed,
        grid_rounds=1 if args.quick else args.grid_rounds,
    )
    wanted = {p.strip() for p in args.peers.split(",") if p.strip()}
    peers: dict[str, Any] = {}
    for name in PEER_MODULES:
        if name in wanted:
            mod, reason = _peer_status(name)
            peers[name] = mod
            log(f"peer {name}: {'ok' if mod is not None else reason}")
    import sharpness

    t_start = time.perf_counter()
    now = _dt.datetime.now()
    result: dict = {
        "schema": "sharpness.benchmark.peers/1",
        "date": now.isoformat(timespec="seconds"),
        "config": {**vars(args), "out": str(args.out), "truth_cache": str(args.truth_cache), "threads": args.threads,
                   "rounds": settings.rounds, "hvp_rounds": settings.hvp_rounds, "settings": settings.__dict__},
        "machine": {"cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "loadavg_start": [round(x, 2) for x in os.getloadavg()],
                    "torch_threads": torch.get_num_threads(), "threadpools": blas},
        "versions": {"sharpness": sharpness.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "scipy": _version("scipy"),
                     "peers": {k: (_version(PEER_MODULES[k][1]) if peers.get(k) is not None else None) for k in PEER_MODULES if k in wanted}},
        "peer_status": {k: (None if peers.get(k) is not None else _peer_status(k)[1]) for k in PEER_MODULES if k in wanted},
        "problems": [],
    }
    for name in problems:
        log(f"problem {name}")
        t0 = time.perf_counter()
        problem = PROBLEMS[name]()  # --quick too: the same weights, so the cached truth applies
        log(f"  built in {time.perf_counter() - t0:.1f} s: P = {problem.num_params:,}, N = {problem.n}, train {problem.train}")
        truth = compute_truth(problem, cache_dir=args.truth_cache, recompute=args.recompute_truth, log=log)
        bench = Bench(problem, truth, settings, peers, log)
        bench.run(tasks)
        entries = [e.to_dict() for e in bench.entries]
        slim_truth = None if truth is None else {k: v for k, v in truth.items() if k != "eigenvalues"}
        result["problems"].append({"problem": problem.config(), "truth": slim_truth, "entries": entries,
                                   "targets": evaluate_targets(entries, truth)})
    result["seconds"] = time.perf_counter() - t_start
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"peers-{now:%Y-%m-%d}" + (f"-{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=float))
    md = markdown(result)
    (args.out / f"{stem}.md").write_text(md)
    print(md)
    log(f"wrote {args.out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
