"""``analyze``: the one orchestration function, from a model and its data to a :class:`Report`.

It fixes the analysis set (split, seeded subset, SHA-256), builds the :class:`~sharpness.objective.Objective`
and :class:`~sharpness.hessian.HessianOperator` once, runs the requested estimators on them, times each, and
returns a frozen report whose :meth:`Report.to_dict` is the versioned JSON contract (``sharpness.report/1``):
every number with its uncertainty and cost, the exact configuration, the analysis-set hash, device, dtype and
library versions. Nothing here draws or prints.

Layout: this module holds the options (:class:`AnalysisConfig`) and the pass itself (:func:`analyze`, with
its per-measure helpers and :func:`with_gates`); the result type and its JSON conversion live in
:mod:`sharpness.analysis.schema`, the choice of samples in :mod:`sharpness.objective.subsets`, the pass/fail checks in
:mod:`sharpness.analysis.gate`. Every name is still importable from here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..objective.distributed import all_reduce_sum, current_context, rank_device, shard_tensors
from .gate import check_same_analysis_set, evaluate_gates, load_baseline, parse_increase
from ..files.hashing import tensor_sha256
from ..hessian.operator import MODES as HVP_MODES, HessianOperator
from ..linalg import deflated_trace, extreme_eigenvalues, hutchinson_trace, hutchpp_trace, spectral_density
from ..linalg.trace import DEFLATION_SHARE
from ..measures import average_sharpness, epsilon_sharpness, worst_case_sharpness
from ..measures.adaptive import ROUNDING_SHARE_NOTICE
from ..measures.subspace import smallest_rows, tile_bytes
from ..objective.batches import DATA_POLICIES, combine_digests, sample_digests
from .budget import ASCENT_VECTORS, LBFGS_FLOAT64_VECTORS, SUBSPACE_VECTORS, MemoryPlan, graph_bytes, lanczos_vectors, parse_memory
from ..objective.losses import IGNORE_INDEX
from ..objective import Objective, callable_name
from ..objective.analysis_set import DEFAULT_DATASET_BATCH
from ..numerics.precision import precision_policy
# Re-exported: sharpness.analysis.report.Report, .jsonable, .select_analysis_set, ... stay where callers import them.
from .schema import SCHEMA, Report, eigen_dict, environment, jsonable  # noqa: F401
from ..objective.streams import analysis_stream
from .validation import check_numbers, mode_notice
from ..objective.subsets import dataset_subset, select_analysis_set  # noqa: F401

log = logging.getLogger("sharpness.analysis")

TRACE_METHODS = ("hutch++", "hutchinson", "lanczos-deflated")
EPSILON_METHODS = ("ascent", "paper", "both")
AVERAGE_DISTRIBUTIONS = ("sphere", "gaussian", "gaussian-paper")


@dataclass(frozen=True)
class AnalysisConfig:
    """Every option of an analysis; the CLI's options map one-to-one onto these fields."""

    split: str = "train"
    samples: int | None = None
    chunk_size: int | None = None
    memory: int | str | None = None  # the analysis's budget: bytes, or "8GiB", "512MiB" (None: 8 GiB; budget.py)
    params: str | None = None
    loss: str = "auto"
    bn_mode: str = "eval"
    weight_decay: float = 0.0
    hvp_mode: str = "auto"
    top_k: int = 1
    bottom_k: int = 1
    tol: float = 1e-4
    scale_floor: float = 1e-2
    max_steps: int | None = None
    trace: bool = True
    trace_probes: int = 99
    trace_method: str = "hutch++"
    density: bool = False
    density_steps: int = 80
    density_runs: int = 10
    per_layer: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    epsilon: tuple[float, ...] = ()
    subspace_dim: int | None = None
    epsilon_method: str = "ascent"
    epsilon_start: str | None = None
    epsilon_restarts: int | None = None
    epsilon_max_iter: int | None = None
    epsilon_polish: int = 0
    adaptive_rho: tuple[float, ...] = ()
    rho: tuple[float, ...] = ()
    average_adaptive_rho: tuple[float, ...] = ()
    average_rho: tuple[float, ...] = ()
    average_distribution: str = "sphere"
    sharpness_p: str = "2"
    sharpness_steps: int = 20
    sharpness_batch_size: int | None = None
    average_draws: int = 100
    max_eigenvalue: float | None = None
    max_trace: float | None = None
    max_epsilon_sharpness: float | None = None
    baseline: str | None = None
    max_increase: float | str | None = None
    data_policy: str = "verify"
    target_key: str = "labels"
    ignore_index: int = IGNORE_INDEX
    label_smoothing: float = 0.0
    allow_tf32: bool = False

    def __post_init__(self) -> None:
        check_numbers(self)  # every number finite and in range, before any work (sharpness.analysis.validation)
        for name in ("epsilon", "adaptive_rho", "rho", "average_adaptive_rho", "average_rho"):
            values = getattr(self, name)  # one value or several, as floats
            object.__setattr__(self, name, tuple(map(float, values if isinstance(values, (tuple, list)) else (values,))))
        if self.split not in ("train", "test"):
            raise InputError(f"split must be train or test, got {self.split!r}")
        if self.hvp_mode not in HVP_MODES:
            raise InputError(f"hvp_mode must be one of {', '.join(HVP_MODES)}, got {self.hvp_mode!r}")
        if self.trace_method not in TRACE_METHODS:
            raise InputError(f"trace_method must be one of {', '.join(TRACE_METHODS)}, got {self.trace_method!r}")
        if self.trace and self.trace_probes < 3:
            raise InputError(f"trace_probes must be ≥ 3 (a standard error needs several probes), got {self.trace_probes}")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be float32 or float64, got {self.dtype!r}")
        parse_memory(self.memory)  # a bad size fails here, before the work
        if self.average_distribution not in AVERAGE_DISTRIBUTIONS:
            raise InputError(f"average_distribution must be one of {', '.join(AVERAGE_DISTRIBUTIONS)}, "
                             f"got {self.average_distribution!r}")
        if self.epsilon_method not in EPSILON_METHODS:
            raise InputError(f"epsilon_method must be one of {', '.join(EPSILON_METHODS)}, got {self.epsilon_method!r}")
        if self.data_policy not in DATA_POLICIES:
            raise InputError(f"data_policy must be one of {', '.join(DATA_POLICIES)}, got {self.data_policy!r}")
        if self.sharpness_p not in ("2", "inf"):
            raise InputError(f"sharpness_p must be 2 or inf, got {self.sharpness_p!r}")
        if self.max_steps is not None and self.max_steps < max(self.top_k, self.bottom_k):
            raise InputError(f"expected --max-steps ≥ {max(self.top_k, self.bottom_k)} (the number of requested "
                             f"eigenvalues), got {self.max_steps}")
        # The two halves of the baseline gate only mean something together; say so before any work is done.
        if self.max_increase is not None and self.baseline is None:
            raise InputError(f"expected --baseline REPORT.json with --max-increase {self.max_increase}, got "
                             "--max-increase alone (it compares against a baseline report)")
        if self.baseline is not None and self.max_increase is None:
            raise InputError("expected --max-increase (e.g. 25%) with --baseline, got --baseline alone")
        parse_increase(self.max_increase)
        for option, threshold, computed, needs in (
                ("--max-eigenvalue", self.max_eigenvalue, self.top_k > 0, "--top-k ≥ 1"),
                ("--max-trace", self.max_trace, self.trace, "--trace"),
                ("--max-epsilon-sharpness", self.max_epsilon_sharpness, bool(self.epsilon), "--epsilon E")):
            if threshold is not None and not computed:
                raise InputError(f"expected {needs} with {option} {threshold:g}, got a gate on a measure that is not computed")

    def check_counts(self, num_params: int) -> None:
        """Refuse counts the model cannot supply, before any estimator runs: Lanczos cannot return more
        eigenvalues than the P parameters have, and a random subspace cannot exceed R^P."""
        for option, k in (("--top-k", self.top_k), ("--bottom-k", self.bottom_k), ("--subspace-dim", self.subspace_dim)):
            if k is not None and k > num_params:
                raise InputError(f"expected {option} ≤ {num_params} (the number of parameters analyzed), got {k}")


def _parameter_groups(names: list[str]) -> dict[str, list[str]]:
    """Parameters grouped by their owning module (``layer1.0.conv.weight`` → ``layer1.0.conv``)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.rsplit(".", 1)[0] if "." in name else name, []).append(name)
    return groups


class _Clock:
    """Accumulates seconds and matvecs per named measurement."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()
        self.say = say or (lambda _msg: None)

    def time(self, name: str, fn: Callable[[], Any], label: str | None = None) -> Any:
        """``fn()``, its seconds added to ``name``; with ``label``, one progress line when it is done (a
        pipeline that reads stderr sees each measure finish instead of minutes of silence)."""
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if label is not None:
            self.say(f"{label} done ({seconds:.1f} s)")
        return out


def _trace(op: Any, cfg: AnalysisConfig, seed: int, lanczos: Any = None, memory: int | None = None) -> Any:
    if cfg.trace_method == "hutch++":
        return hutchpp_trace(op, num_matvecs=cfg.trace_probes, seed=seed, memory=memory)
    if cfg.trace_method == "lanczos-deflated":  # extends the eigenvalue run's basis when there is one
        return deflated_trace(op, num_matvecs=cfg.trace_probes, seed=seed, lanczos=lanczos, memory=memory)
    return hutchinson_trace(op, num_probes=cfg.trace_probes, seed=seed, memory=memory)


def _memory_plan(cfg: AnalysisConfig, num_params: int, dtype: torch.dtype) -> MemoryPlan:
    """The budget split for this analysis (:mod:`sharpness.analysis.budget`), with every requested estimator's
    smallest form checked against it before any work."""
    plan = MemoryPlan.split(parse_memory(cfg.memory), num_params, torch.empty((), dtype=dtype).element_size())
    if cfg.top_k or cfg.bottom_k:
        plan.require(f"Lanczos for the top {cfg.top_k} / bottom {cfg.bottom_k} eigenvalues (three-term recurrence)",
                     lanczos_vectors(cfg.top_k, cfg.bottom_k))
    if cfg.trace:
        m = cfg.trace_probes
        need = {"hutchinson": (2, "Hutchinson trace (one probe and its product)"),
                "hutch++": (3 * (m // 3) + 2, f"the Hutch++ trace ({m} products: a sketch of {m // 3}; "
                                              "--trace-method hutchinson holds 2)"),
                "lanczos-deflated": (int(DEFLATION_SHARE * m) + 5, f"the Lanczos-deflated trace (a basis of "
                                                                    f"{int(DEFLATION_SHARE * m)}; "
                                                          "--trace-method hutchinson holds 2)")}[cfg.trace_method]
        plan.require(need[1], need[0])
    if cfg.density:
        plan.require("the spectral density (three-term recurrence, one run at a time)", 3)
    if cfg.epsilon:
        methods = ("ascent", "paper") if cfg.epsilon_method == "both" else (cfg.epsilon_method,)
        if "ascent" in methods:
            plan.require("ε-sharpness (ascent)", ASCENT_VECTORS)
        if "paper" in methods:
            plan.require("paper-mode ε-sharpness (scipy L-BFGS-B, float64)", 2, float64_vectors=LBFGS_FLOAT64_VECTORS)
        if cfg.subspace_dim:  # A whole when it fits (epsilon_sharpness decides), else its smallest tile
            p, vector = cfg.subspace_dim, num_params * plan.itemsize
            plan.require(f"ε-sharpness in a subspace of p = {p} (A regenerated tile by tile)",
                         SUBSPACE_VECTORS + tile_bytes(smallest_rows(num_params, p), p, plan.itemsize) / vector)
    if cfg.adaptive_rho or cfg.rho or cfg.average_adaptive_rho or cfg.average_rho:
        plan.require("worst-/average-case sharpness", ASCENT_VECTORS)
    return plan


def analyze(
    model: nn.Module,
    inputs: Any,
    targets: Tensor | None = None,
    *,
    data_spec: dict | None = None,
    progress: Callable[[str], None] | None = None,
    loss: str | Callable = "auto",
    forward: Callable | None = None,
    batch_size_fn: Callable[[Any], int] | None = None,
    **options: Any,
) -> Report:
    """Curvature and flatness of ``model`` at its current weights, over an analysis set.

    The analysis set is ``(inputs, targets)`` tensors (the split named in ``data_spec``; a seeded subset with
    ``samples=``), or the researcher's own pipeline: a ``Dataset`` (``samples=`` takes a seeded
    ``Subset``), a ``DataLoader`` or any re-iterable of batches that are tensors, tuples or dicts
    (:class:`~sharpness.objective.Objective`); one without ``len()`` needs ``samples=``, which takes a
    loader's first N samples in a fixed order (:mod:`sharpness.objective.streams`). ``loss`` is a name (``"cross-entropy"``, ``"mse"``, ``"bce"``,
    ``"auto"``) or a callable ``loss(outputs, batch) -> per-example losses | (losses, weights)``;
    ``forward(model, batch) -> outputs`` replaces the default model call; ``batch_size_fn(batch) -> B``
    counts samples in unusual batches.

    ``options`` are the fields of :class:`AnalysisConfig` (``top_k``, ``bottom_k``, ``trace``, ``density``,
    ``per_layer``, ``chunk_size``, ``params``, ``device``, ``dtype``, ``seed``, ``data_policy``,
    ``target_key``, ``ignore_index``, ``label_smoothing``, gate thresholds, ...).
    The model and the loader are not modified: all computation runs on a private copy through ``torch.func``,
    and each pass over a loader runs under a forked RNG.

    Example (a DataLoader of dict batches and a masked token loss)::

        report = sharpness.analyze(model, loader, loss=my_token_loss, forward=lambda m, b: m(b["input_ids"]),
                                   top_k=1, trace_probes=30)

    Returns a :class:`Report`; ``report.to_dict()`` is the ``sharpness.report/1`` JSON.

    The analysis runs with TF32 off unless ``allow_tf32=True`` (:func:`sharpness.numerics.precision.precision_policy`);
    the global flags are restored afterwards and the policy is recorded in ``environment["precision"]``.
    """
    with precision_policy(bool(options.get("allow_tf32", False))) as policy:
        return _analyze(model, inputs, targets, data_spec=data_spec, progress=progress, loss=loss, forward=forward,
                        batch_size_fn=batch_size_fn, precision=policy, **options)


def _analyze(model: nn.Module, inputs: Any, targets: Tensor | None, *, data_spec: dict | None,
             progress: Callable[[str], None] | None, loss: str | Callable, forward: Callable | None,
             batch_size_fn: Callable[[Any], int] | None, precision: dict, **options: Any) -> Report:
    if callable(loss):
        options["loss"] = f"callable:{callable_name(loss)}"
    else:
        options["loss"] = loss
    cfg = AnalysisConfig(**options)
    notice = mode_notice(model, cfg.bn_mode)
    if notice:
        log.warning(notice)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    # Under torchrun every rank holds a disjoint shard of the analysis set and all sums are all-reduced;
    # the estimators then take identical steps on every rank (same seeds, same reduced products).
    ctx = current_context()
    device = rank_device(cfg.device, ctx)
    if ctx is not None and (cfg.adaptive_rho or cfg.rho or cfg.average_adaptive_rho or cfg.average_rho):
        raise InputError("worst-/average-case sharpness (--adaptive-rho/--rho/--average-*) is single-process only "
                         "for now; run it without torchrun")
    clock = _Clock(progress)
    baseline = load_baseline(cfg.baseline) if cfg.baseline else None  # a bad baseline fails before the work
    objective_kw = dict(
        loss=loss, forward=forward, batch_size_fn=batch_size_fn, target_key=cfg.target_key,
        ignore_index=cfg.ignore_index, label_smoothing=cfg.label_smoothing, chunk_size=cfg.chunk_size,
        memory=graph_bytes(parse_memory(cfg.memory)),
        bn_mode=cfg.bn_mode, params=cfg.params, dtype=dtype, device=device,
        reduce=all_reduce_sum if ctx is not None else None,
    )
    if targets is None and isinstance(inputs, (tuple, list)) and len(inputs) == 2 and all(isinstance(t, Tensor) for t in inputs):
        inputs, targets = inputs

    if isinstance(inputs, Tensor):
        if not isinstance(targets, Tensor):
            raise InputError(f"expected targets as a tensor with tensor inputs, got {type(targets).__name__}")
        x, y, idx = select_analysis_set(inputs, targets, samples=cfg.samples, seed=cfg.seed, split=cfg.split)
        analysis_set = {
            "dataset": (data_spec or {}).get("name"),
            "split": cfg.split,
            "n_samples": int(x.shape[0]),
            "n_available": int(inputs.shape[0]),
            "input_dtype": str(inputs.dtype).removeprefix("torch."),  # as stored, before the analysis dtype
            "subset_seed": cfg.seed if idx is not None else None,
            "sha256": tensor_sha256(x, y),
            "sample_sha256": combine_digests(sample_digests((x, y), int(x.shape[0]))),
            "source": "tensors",
        }
        if baseline is not None:
            check_same_analysis_set(baseline, analysis_set["sha256"])
        xs, ys = shard_tensors(x, y, ctx=ctx)
        objective = Objective(model, xs, ys, **objective_kw)
    else:
        # The finite-set contract, the samples= cut and the first pass's progress lines (sharpness.objective.streams).
        data, idx, kind = analysis_stream(inputs, samples=cfg.samples, seed=cfg.seed, split=cfg.split,
                                          batch_size=cfg.chunk_size or DEFAULT_DATASET_BATCH,
                                          batch_size_fn=batch_size_fn, progress=progress)
        shard = (ctx.rank, ctx.world_size) if ctx is not None else None
        objective = Objective(model, data, **objective_kw, data_policy=cfg.data_policy, shard=shard, seed=cfg.seed)
        fp = objective.fingerprint()
        analysis_set = {
            "dataset": (data_spec or {}).get("name"),
            "split": cfg.split,
            "n_samples": fp["n_samples"],
            # a loader cut at samples= has not been read to its end: its size is unknown
            "n_available": len(inputs) if idx is not None else None if cfg.samples is not None else fp["n_samples"],
            "subset_seed": cfg.seed if idx is not None else None,
            "subset": "seeded" if idx is not None else "first" if cfg.samples is not None else None,
            "sha256": fp["sample_sha256"],
            "sample_sha256": fp["sample_sha256"],
            "source": kind,
            "data_policy": cfg.data_policy,
            "total_weight": objective.total_weight,
        }
        if baseline is not None:
            check_same_analysis_set(baseline, analysis_set["sha256"])
    cfg.check_counts(objective.numel)
    plan = _memory_plan(cfg, objective.numel, dtype)  # refuses what cannot fit, before the first product
    evaluation = clock.time("loss", objective.evaluate, f"loss on {analysis_set['n_samples']} samples")
    if not math.isfinite(evaluation.loss):
        raise InputError(f"expected a finite loss at the checkpoint, got {evaluation.loss}")
    H = HessianOperator(objective, weight_decay=cfg.weight_decay, mode=cfg.hvp_mode)
    hessian: dict[str, Any] = {"num_params": objective.numel, "mode": None}

    reuse = cfg.trace and cfg.trace_method == "lanczos-deflated"
    lanczos = None
    if cfg.top_k or cfg.bottom_k:
        before = H.num_matvecs
        top, bottom = clock.time("eigenvalues", lambda: extreme_eigenvalues(
            H, top_k=cfg.top_k, bottom_k=cfg.bottom_k, tol=cfg.tol, max_steps=cfg.max_steps, seed=cfg.seed,
            scale_floor=cfg.scale_floor, keep_lanczos=reuse, memory=plan.vectors,
        ), f"{'/'.join(n for n, k in (('λ_max', cfg.top_k), ('λ_min', cfg.bottom_k)) if k)} "
           f"(Lanczos, top {cfg.top_k}, bottom {cfg.bottom_k})")
        hessian["top"] = eigen_dict(top) if cfg.top_k else None
        hessian["bottom"] = eigen_dict(bottom) if cfg.bottom_k else None
        hessian["eigen_num_matvecs"] = H.num_matvecs - before
        lanczos = top.lanczos if reuse else None
        del top, bottom
    if cfg.trace:
        estimate = clock.time("trace", lambda: _trace(H, cfg, cfg.seed + 1, lanczos, plan.vectors),
                              f"trace ({cfg.trace_method}, {cfg.trace_probes} matvecs)")
        hessian["trace"] = {**jsonable(estimate), "method": cfg.trace_method,
                            **({"reused_eigen_steps": lanczos is not None} if reuse else {})}
        lanczos = None  # release the basis
    if cfg.density:
        dens = clock.time("density", lambda: spectral_density(
            H, num_steps=min(cfg.density_steps, objective.numel), num_runs=cfg.density_runs, seed=cfg.seed + 2,
            memory=plan.vectors,
        ), f"spectral density ({cfg.density_runs} runs × {cfg.density_steps} steps)")
        hessian["density"] = jsonable(dens)
    hessian["mode"] = H.mode
    hessian["mode_selection"] = H.selection  # fastest: candidates, seconds per product (per column), choice

    per_layer = None
    if cfg.per_layer:
        per_layer = []
        for group, names in _parameter_groups(objective.names).items():
            sub = HessianOperator(objective.restrict(names), weight_decay=cfg.weight_decay, mode=cfg.hvp_mode)
            entry: dict[str, Any] = {"name": group, "params": names, "num_params": sub.shape[0]}
            (top1, _) = clock.time("per_layer", lambda: extreme_eigenvalues(sub, top_k=1, bottom_k=0, tol=cfg.tol, seed=cfg.seed,
                                                                               scale_floor=cfg.scale_floor,
                                                                               memory=plan.vectors),
                                   f"per-layer λ_max of {group}")
            entry["lambda_max"] = float(top1.values[0])
            entry["lambda_max_residual"] = float(top1.residuals[0])
            if cfg.trace:
                entry["trace"] = jsonable(clock.time("per_layer", lambda: _trace(sub, cfg, cfg.seed + 1, None, plan.vectors),
                                                     f"per-layer trace of {group}"))
            entry["num_matvecs"] = sub.num_matvecs
            per_layer.append(entry)

    lambda_max = None
    if hessian.get("top"):
        # The Ritz value θ₁ is never above λ_max; θ₁ + ‖r₁‖ is, unless Lanczos missed an eigenvalue above θ₁
        # (residuals are relative: ‖r₁‖ = residual·|θ₁|). measures/epsilon.py, "What a value means".
        ritz, residual = hessian["top"]["values"][0], hessian["top"]["residuals"][0]
        lambda_max = float(ritz) + float(residual) * abs(float(ritz))
    measures = clock.time("flatness", lambda: _flatness(objective, cfg, _Clock(progress), lambda_max, plan.vectors))

    total_matvecs = (H.num_matvecs + sum(e["num_matvecs"] for e in per_layer or [])
                     + sum(e.num_hvps for e in measures.get("epsilon_sharpness", [])))
    cost = {
        "seconds": time.perf_counter() - clock.start,
        "num_matvecs": total_matvecs,
        "seconds_by_measure": clock.seconds,
        "memory": {"budget_bytes": plan.total, "graph_bytes": plan.graph, "vector_bytes": plan.vectors},
    }
    config = {**dataclasses.asdict(cfg), "objective": {**objective.config, "n_samples": analysis_set["n_samples"]}}
    report = Report(
        loss=evaluation.loss,
        accuracy=evaluation.accuracy,
        analysis_set=analysis_set,
        hessian=hessian,
        per_layer=per_layer,
        cost=cost,
        config=config,
        environment={**environment(device, dtype), "precision": precision,
                     "determinism": getattr(objective, "determinism", None),
                     "distributed": ctx.as_dict() if ctx else None},
        gate={"passed": True, "checks": []},
        measures=measures,
    )
    return with_gates(report, cfg, baseline=baseline)


def _flatness(objective: Objective, cfg: AnalysisConfig, clock: _Clock, lambda_max: float | None,
              memory: int | None = None) -> dict:
    """Keskar ε-sharpness and worst-/average-case (adaptive) sharpness on the same objective.

    ε-sharpness runs the default ascent and/or Keskar's paper protocol (``epsilon_method``). With the top
    eigenvalue measured, each entry carries the quadratic model's bound Σb|g| + ½λ‖b‖² with λ = θ₁ + ‖r₁‖ (the
    top Ritz value plus its residual norm, ≥ λ_max unless Lanczos missed an eigenvalue above θ₁) *at θ*: a
    bound only while the Hessian stays below λ across the box, which a value above it disproves. The entry's
    ``curvature`` is that λ."""
    out: dict[str, list] = {}
    if cfg.epsilon:
        spaces = [None] + ([cfg.subspace_dim] if cfg.subspace_dim else [])
        methods = ["ascent", "paper"] if cfg.epsilon_method == "both" else [cfg.epsilon_method]
        out["epsilon_sharpness"] = []
        for method in methods:
            for eps in cfg.epsilon:
                for dim in spaces:
                    label = f"ε-sharpness ({method}) ε={eps:g} {'full space' if dim is None else f'subspace p={dim}'}"
                    out["epsilon_sharpness"].append(clock.time("epsilon", lambda: epsilon_sharpness(
                        objective, eps, subspace_dim=dim, method=method, start=cfg.epsilon_start,
                        restarts=cfg.epsilon_restarts, max_iter=cfg.epsilon_max_iter, polish=cfg.epsilon_polish,
                        curvature=lambda_max, seed=cfg.seed, memory=memory,
                    ), label))
    # Average case first: at the same (ρ, scaling) its best draw joins the worst-case ascent's starts, so that
    # worst ≥ average holds by construction on the whole set (measures/adaptive.py).
    averages = {}
    for rho, adaptive in [(r, True) for r in cfg.average_adaptive_rho] + [(r, False) for r in cfg.average_rho]:
        label = f"{'adaptive' if adaptive else 'plain'} average-case sharpness ρ={rho:g} ({cfg.average_distribution})"
        averages[rho, adaptive] = clock.time("average", lambda: average_sharpness(
            objective, rho, adaptive=adaptive, distribution=cfg.average_distribution, num_draws=cfg.average_draws,
            seed=cfg.seed,
        ), label)
    if averages:
        out["average_sharpness"] = list(averages.values())
        for (rho, adaptive), a in averages.items():
            if a.rounding_share > ROUNDING_SHARE_NOTICE:
                log.warning(f"{'adaptive' if adaptive else 'plain'} average-case sharpness ρ={rho:g}: the loss's "
                            f"{str(objective.dtype).removeprefix('torch.')} rounding ({a.resolution:.2g}) is "
                            f"{a.rounding_share:.0%} of Δloss {a.value:.2g}; analyse in float64 (--dtype float64) to resolve it")
    worst = []
    for rho, adaptive in [(r, True) for r in cfg.adaptive_rho] + [(r, False) for r in cfg.rho]:
        average = averages.get((rho, adaptive)) if cfg.average_distribution == "sphere" else None
        worst.append(clock.time("worst", lambda: worst_case_sharpness(
            objective, rho, p=cfg.sharpness_p, adaptive=adaptive, steps=cfg.sharpness_steps,
            batch_size=cfg.sharpness_batch_size, seed=cfg.seed, average=average,
        ), f"{'adaptive' if adaptive else 'plain'} worst-case sharpness ρ={rho:g}"))
    if worst:
        out["adaptive_sharpness"] = worst
    return out


def with_gates(report: Report, cfg: AnalysisConfig, *, baseline: dict | None = None) -> Report:
    """``report`` with its ``gate`` filled from the thresholds in ``cfg`` (``baseline``: the loaded
    ``cfg.baseline``, when the caller has read it already)."""
    if baseline is None and cfg.baseline:
        baseline = load_baseline(cfg.baseline)
    checks = evaluate_gates(
        report.to_dict(),
        max_eigenvalue=cfg.max_eigenvalue,
        max_trace=cfg.max_trace,
        max_epsilon_sharpness=cfg.max_epsilon_sharpness,
        baseline=baseline,
        max_increase=parse_increase(cfg.max_increase),
    )
    gate = {"passed": all(c.passed for c in checks), "checks": jsonable(checks)}
    return dataclasses.replace(report, gate=gate)

