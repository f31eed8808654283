"""``sharpness analyze CKPT``: curvature and flatness at a checkpoint, as a table or JSON, optionally a gate."""

from __future__ import annotations

import os

import click

from ..objective import distributed
from ..numerics.dtypes import DTYPES
from ..errors import GateFailed, InputError
from ..hessian.operator import MODES as HVP_MODES
from ..integrations.pretrained import default_loss, describe, is_pretrained_dir, load_pretrained
from ..files.loading import Loaded, is_code_ref, load_model_and_data, load_user_callable, load_user_data
from ..objective.losses import LOSSES
from ..measures.adaptive import ROUNDING_SHARE_NOTICE, rounding_share
from ..measures.epsilon import budget_outcome, spread_outcome
from ..analysis.report import AnalysisConfig, Report, analyze as run_analysis
from . import cli
from .options import (apply_threads, check_outputs, common_options, parse_json_option, resolve_device, setup_logging,
                      tf32_option, threads_option, write_json)

EXIT_CODES = """\b
Exit codes: 0 success · 2 bad usage or input · 3 a gate failed (the report is still written)."""


def _fmt(x: float | None, spec: str = ".6g") -> str:
    return "—" if x is None else format(x, spec)


def epsilon_line(entry: dict) -> str:
    """One ε-sharpness entry for people: value in %, the bracket when known, method and budget outcome, and on
    a second line the spread of the starts (best, second best, how many within 1 %, whether they disagree)."""
    space = entry["space"] if entry["space"] == "full" else f"{entry['space']} p={entry['dim']}"
    upper = ""
    if entry.get("upper_bound") is not None:
        # From `analyze` the bound uses λ = θ₁ + ‖r₁‖ at θ: a bound only while the Hessian stays below it across
        # the box (and Lanczos missed no eigenvalue above θ₁).
        exceeded = ", exceeded: not quadratic over the box" if entry["value"] > entry["upper_bound"] else ""
        upper = f"; quadratic model at θ ≤ {_fmt(entry['upper_bound'], '.4g')} %{exceeded}"
    outcome = budget_outcome(entry["method"], entry["status"], entry["max_iter"])
    return (f"  ε-sharpness ε={entry['epsilon']:g} {space}   {_fmt(entry['value'], '.4g')} %   [{outcome}{upper}]\n"
            f"      {spread_outcome(entry['values_per_start'])}")


def render_table(report: dict, source: str) -> str:
    """The human summary of a report dict."""
    a, h = report["analysis_set"], report["hessian"]
    env = report["environment"]
    lines = [
        f"{source}: {a['dataset'] or 'data'} {a['split']} split, {a['n_samples']} samples, "
        f"{h['num_params']} parameters, {env['dtype']} on {env['device']}",
        f"  loss        {_fmt(report['loss'])}" + (
            f"   accuracy {100 * report['accuracy']:.2f} %" if report["accuracy"] is not None else ""),
    ]
    for key, label in (("top", "λ top"), ("bottom", "λ bottom")):
        block = h.get(key)
        if block:
            values = ", ".join(_fmt(v) for v in block["values"])
            flag = "" if all(block["converged"]) else "  NOT CONVERGED"
            lines.append(f"  {label:<11} {values}   (max rel. residual {max(block['residuals']):.1e}){flag}")
    if h.get("trace"):
        t = h["trace"]
        lines.append(f"  trace       {_fmt(t['value'])} ± {_fmt(t['stderr'], '.2g')}   ({t['method']}, {t['num_matvecs']} matvecs)")
    if h.get("density"):
        lines.append(f"  density     {len(h['density']['grid'])} grid points (see --json)")
    for entry in report.get("epsilon_sharpness") or []:
        lines.append(epsilon_line(entry))
    for key, label in (("adaptive_sharpness", "worst-case"), ("average_sharpness", "average")):
        for entry in report.get(key) or []:
            kind = "adaptive" if entry.get("adaptive") else "plain"
            p = f" p={entry['p']}" if "p" in entry else f" {entry['distribution']}"
            err = f" ± {_fmt(entry['stderr'], '.2g')}" if entry.get("stderr") is not None else ""
            # An absolute loss increase (not a percentage like ε-sharpness): say which.
            share = rounding_share(entry["value"], entry.get("resolution") or 0.0)
            flag = (f"  LOSS ROUNDING {_fmt(entry['resolution'], '.2g')} = {share:.0%} OF IT"
                    if share > ROUNDING_SHARE_NOTICE else "")
            lines.append(f"  {label:<11} ρ={entry['rho']:g}{p} {kind}   Δloss {_fmt(entry['value'])}{err}{flag}")
    for entry in report.get("per_layer") or []:
        trace = f"   trace {_fmt(entry['trace']['value'])}" if entry.get("trace") else ""
        lines.append(f"  layer {entry['name']:<20} λ_max {_fmt(entry['lambda_max'])}{trace}")
    cost = report["cost"]
    lines.append(f"  cost        {cost['seconds']:.2f} s, {cost['num_matvecs']} Hessian-vector products")
    gate = report["gate"]
    if gate["checks"]:
        lines.append(f"  gate        {'passed' if gate['passed'] else 'FAILED'}")
        for c in gate["checks"]:
            lines.append(f"    {'ok  ' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}")
    return "\n".join(lines)


def _user_code(loss_ref: str, forward_ref: str | None) -> dict:
    """``loss=`` and ``forward=`` for the library call: names as they are, code references loaded (and so run)."""
    out: dict = {}
    if is_code_ref(loss_ref):
        out["loss"] = load_user_callable(loss_ref, "loss")
    elif loss_ref in ("auto", *LOSSES):
        out["loss"] = loss_ref
    else:
        raise InputError(f"--loss expects one of auto, {', '.join(LOSSES)} or FILE.py:FN / pkg.mod:FN, got {loss_ref!r}")
    if forward_ref is not None:
        if not is_code_ref(forward_ref):
            raise InputError(f"--forward expects FILE.py:FN or pkg.mod:FN, got {forward_ref!r}")
        out["forward"] = load_user_callable(forward_ref, "forward function")
    return out


def _load_pretrained(path: str, *, model_ref: str | None, data: str | None, split: str) -> tuple[Loaded, dict]:
    """A save_pretrained directory and the analysis set ``--data FILE.py:FN`` returns; the report's
    ``checkpoint`` block (architecture, config hash)."""
    if not is_pretrained_dir(path):
        raise InputError(f"expected a checkpoint file or a save_pretrained directory (config.json + "
                         f"model.safetensors), got a directory without config.json: {path!r}")
    if model_ref is not None:
        raise InputError(f"expected no --model for a save_pretrained directory (its config.json names the "
                         f"architecture), got --model {model_ref!r}")
    if not is_code_ref(data):
        raise InputError(f"expected --data FILE.py:FN (a Dataset, DataLoader or batches of tokenized dicts) for "
                         f"the save_pretrained directory {path!r}, got {'no --data' if data is None else repr(data)}")
    model, info = load_pretrained(path)
    return Loaded(model, None, None, load_user_data(data, split=split)), info


@cli.command(epilog=EXIT_CODES)
@click.argument("checkpoint", type=click.Path())
@click.option("--model", "model_ref", metavar="NAME|FILE.py:FN|pkg.mod:FN",
              help="Architecture for a foreign state_dict (a toolkit checkpoint records its own).")
@click.option("--model-kwargs", metavar="JSON", help="Keyword arguments for --model, as a JSON object.")
@click.option("--data", metavar="NAME|FILE.npz|FILE.py:FN",
              help="Dataset (default: the one the checkpoint records), or FILE.py:FN / pkg.mod:FN returning a Dataset, "
                   "a DataLoader or (x, y) tensors (FN gets split= if it takes it). Naming code here RUNS it.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where dataset files live.")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="Which split forms the analysis set.")
@click.option("--samples", type=click.IntRange(min=1), help="Analyze a seeded random subset of this many samples (at most the split's size).")
@click.option("--chunk-size", type=click.IntRange(min=1),
              help="Samples per forward pass (memory only; results change by float rounding at most). Default: from "
                   "--memory.")
@click.option("--memory", metavar="SIZE",
              help="Memory the analysis may allocate beyond the model, e.g. 8GiB, 512MiB, or a number of bytes "
                   "(as analyze(memory=)) [default: 8GiB]. A quarter bounds one chunk's Hessian-vector-product graph (the whole set stays "
                   "one chunk if its graph fits); the rest holds θ, the products and the estimators' vectors "
                   "(Lanczos stores its basis only when it fits). A request that cannot fit is refused before the "
                   "work, with the smallest budget that would.")
@click.option("--params", metavar="GLOB[,GLOB]", help="Only these parameters vary (e.g. 'fc2.*').")
@click.option("--loss", "loss_ref", metavar="auto|cross-entropy|mse|bce|causal-lm|FILE.py:FN", default="auto", show_default=True,
              help="A built-in loss, or FN(outputs, batch) -> per-example losses [, weights] (naming code RUNS it). "
                   "auto on a save_pretrained *ForCausalLM / *LMHeadModel directory is causal-lm.")
@click.option("--forward", "forward_ref", metavar="FILE.py:FN|pkg.mod:FN",
              help="FN(model, batch) -> outputs instead of model(x) / model(**batch) (naming code RUNS it).")
@click.option("--target-key", default="labels", show_default=True, help="Key of the targets in dict batches.")
@click.option("--ignore-index", type=int, default=-100, show_default=True,
              help="Label of tokens that do not count (built-in cross-entropy).")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True)
@click.option("--data-policy", type=click.Choice(["verify", "cache", "trust"]), default="verify", show_default=True,
              help="Streamed data: verify two passes hold the same samples (refuse augmentation), cache one pass in "
                   "memory, or trust it.")
@click.option("--bn-mode", type=click.Choice(["eval", "train"]), default="eval", show_default=True,
              help="BatchNorm with running statistics (eval) or per-chunk batch statistics (train).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Analyze H + λI (the Hessian of the loss plus λ/2‖θ‖²).")
@click.option("--top-k", type=click.IntRange(min=0), default=1, show_default=True, help="Largest algebraic eigenvalues.")
@click.option("--bottom-k", type=click.IntRange(min=0), default=1, show_default=True, help="Smallest algebraic eigenvalues.")
@click.option("--tol", type=float, default=1e-4, show_default=True,
              help="Lanczos: an eigenvalue is converged when its error estimate min(r, r²/gap) ≤ tol·s and its residual "
                   "norm r ≤ √tol·s, s = max(|λ|, c·Λ) with Λ the largest |Ritz value| and c = --scale-floor (an "
                   "eigenvalue-error target, not a residual tolerance; the report keeps the rigorous residual).")
@click.option("--scale-floor", type=click.FloatRange(min=0, max=1), default=1e-2, show_default=True,
              help="c above: eigenvalues smaller than c·Λ (e.g. a λ_min near 0) are held to tol·c·Λ, not to tol·|λ|; "
                   "the report states c and c·Λ (tolerance_scale). 0 = purely relative.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Lanczos step cap (default: automatic).")
@click.option("--trace/--no-trace", default=True, show_default=True, help="Estimate the Hessian trace.")
@click.option("--trace-probes", type=click.IntRange(min=3), default=99, show_default=True,
              help="Hessian-vector products spent on the trace.")
@click.option("--hvp-mode", type=click.Choice(HVP_MODES), default="auto", show_default=True,
              help="How Hessian-vector products are computed. auto: a fixed rule (retained graph for one chunk, a "
                   "fresh double backward per streamed chunk), bit-identical reruns; fastest: time the modes on the "
                   "first products and keep the fastest (reruns then agree only to float rounding).")
@click.option("--trace-method", type=click.Choice(["hutch++", "hutchinson", "lanczos-deflated"]), default="hutch++",
              show_default=True, help="lanczos-deflated: ⅔ of the products build a Lanczos basis Q whose tr(QᵀHQ) is "
                                      "exact, the rest probe the remainder (lower variance than Hutch++ at equal cost).")
@click.option("--density", is_flag=True, help="Spectral density by stochastic Lanczos quadrature.")
@click.option("--density-steps", type=click.IntRange(min=2), default=80, show_default=True)
@click.option("--density-runs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--per-layer", is_flag=True, help="λ_max and trace per parameter group.")
@click.option("--epsilon", type=click.FloatRange(min=0), multiple=True,
              help="Keskar ε-sharpness at this ε (repeatable; the paper uses 1e-3 and 5e-4).")
@click.option("--subspace-dim", type=click.IntRange(min=1),
              help="Also report ε-sharpness in a seeded random subspace of this dimension (the paper: 100).")
@click.option("--epsilon-method", type=click.Choice(["ascent", "paper", "both"]), default="ascent", show_default=True,
              help="ascent: projected sign ascent from box corners (reaches the maximum at a minimum); paper: "
                   "Keskar's L-BFGS-B, 10 iterations from θ (biased low at well-trained minima); both: report both.")
@click.option("--epsilon-start", type=click.Choice(["spectral", "corner", "zero", "random"]),
              help="First start in the box (default: spectral corners for the ascent, zero for the paper).")
@click.option("--epsilon-restarts", type=click.IntRange(min=0),
              help="Extra random starts (default for the ascent: 2 random corners, then more while the last 3 "
                   "starts raise the best by > 1 % or no second start is within 1 % of it, at most 12 starts in "
                   "all; 0 for the paper).")
@click.option("--epsilon-max-iter", type=click.IntRange(min=1),
              help="Budget per start (default: 100 evaluations for the ascent, 10 L-BFGS-B iterations for the paper).")
@click.option("--epsilon-polish", type=click.IntRange(min=0), default=0, show_default=True,
              help="L-BFGS-B iterations from the ascent's best point.")
@click.option("--adaptive-rho", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="Adaptive worst-case sharpness at radius ρ (repeatable; Andriushchenko et al. 2023).")
@click.option("--rho", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="Plain (non-adaptive) worst-case sharpness at radius ρ (repeatable).")
@click.option("--average-adaptive-rho", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="Adaptive average-case sharpness at radius ρ (repeatable; the same ρ as --adaptive-rho is the same ball).")
@click.option("--average-rho", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="Plain average-case sharpness at radius ρ (repeatable).")
@click.option("--average-distribution", type=click.Choice(["sphere", "gaussian", "gaussian-paper"]), default="sphere",
              show_default=True,
              help="Average-case draws: uniform on the sphere of radius ρ (inside the worst-case ball), "
                   "Gaussian with E‖u‖² = ρ², or the paper's N(0, ρ²I) (‖u‖ ≈ ρ√P: not comparable with the worst case).")
@click.option("--sharpness-p", type=click.Choice(["2", "inf"]), default="2", show_default=True,
              help="Norm of the worst-case perturbation ball.")
@click.option("--sharpness-steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="Projected gradient ascent steps.")
@click.option("--sharpness-batch-size", type=click.IntRange(min=1),
              help="m of m-sharpness: the mean over batches of this size (default: the whole set).")
@click.option("--average-draws", type=click.IntRange(min=2), default=100, show_default=True,
              help="Random perturbations for average-case sharpness.")
@click.option("--max-eigenvalue", type=float, help="Gate: fail (exit 3) if λ_max exceeds this.")
@click.option("--max-trace", type=float, help="Gate: fail (exit 3) if the trace exceeds this.")
@click.option("--max-epsilon-sharpness", type=float, help="Gate: fail (exit 3) if the first ε-sharpness exceeds this.")
@click.option("--baseline", type=click.Path(dir_okay=False), help="Gate: a report JSON on the same analysis set.")
@click.option("--max-increase", metavar="PCT", help="Gate with --baseline: allowed increase, e.g. 25%.")
@click.option("--json", "json_path", metavar="PATH|-", help="Write the report as JSON ('-' prints only JSON on stdout).")
@click.option("--trust-checkpoint", is_flag=True,
              help="Unpickle arbitrary objects from a torch.save file (a bare pickle.dump file is refused all the same). This RUNS CODE from the checkpoint: only for files you trust.")
@click.option("--backend", type=click.Choice(["auto", "gloo", "nccl"]), default="auto", show_default=True,
              help="torch.distributed backend under torchrun (ignored in a single process).")
@tf32_option
@threads_option
@common_options
def analyze(checkpoint: str, model_ref, model_kwargs, data, data_dir, loss_ref, forward_ref, json_path, trust_checkpoint,
            backend, device, dtype, seed, verbose, quiet, **options) -> None:
    """Curvature of the loss at CHECKPOINT: top/bottom Hessian eigenvalues (Lanczos), trace (Hutch++),
    spectral density, per-layer breakdown, and flatness measures; a table on stdout, or JSON.

    A checkpoint written by `sharpness train` needs no other flag. A foreign state_dict needs
    --model FILE.py:FACTORY and --data FILE.npz, or your own pipeline: --data FILE.py:FN (a Dataset or
    DataLoader), with --loss FILE.py:FN and --forward FILE.py:FN where the defaults do not fit.

    CHECKPOINT may also be a Hugging Face save_pretrained directory (config.json + model.safetensors): it is
    loaded with transformers from its local files only (never a download), and needs --data FILE.py:FN.
    """
    level = setup_logging(verbose, quiet)
    apply_threads(options.pop("threads"))
    AnalysisConfig(dtype=dtype, seed=seed, **options)  # every option checked before anything is loaded or run
    check_outputs(json_path=json_path)
    dev = resolve_device(device)
    # Under `torchrun -m sharpness analyze`, every rank computes on its shard; only rank 0 prints and writes.
    with distributed.session(backend, device=dev) as ctx:
        dev = distributed.rank_device(dev, ctx)
        if os.path.isdir(checkpoint):
            loaded, source = _load_pretrained(checkpoint, model_ref=model_ref, data=data, split=options["split"])
            if loss_ref == "auto":
                loss_ref = default_loss(source["architecture"]) or loss_ref
        else:
            loaded = load_model_and_data(
                checkpoint, model=model_ref, model_kwargs=parse_json_option(model_kwargs, "--model-kwargs"),
                data=data, data_dir=data_dir, trust_checkpoint=trust_checkpoint, split=options["split"],
                dtype=DTYPES[dtype],
            )
            source = {"kind": loaded.checkpoint.kind}
        user = _user_code(loss_ref, forward_ref)
        if loaded.dataset is None:
            x, y, spec = loaded.user_data, None, {"name": data}
        else:
            (x, y), spec = loaded.dataset.split(options["split"]), loaded.dataset.spec
        rank0 = distributed.is_rank0()
        # One line per finished measure, terminal or not: a pipeline must not sit through minutes of silence.
        chatty = rank0 and level >= 0
        say = (lambda msg: click.echo(f"sharpness: {msg}", err=True)) if chatty else None
        report: Report = run_analysis(
            loaded.model, x, y, data_spec=spec, progress=say,
            device=str(dev), dtype=dtype, seed=seed, **user, **options,
        )
        result = report.to_dict()
        result["checkpoint"] = {"path": checkpoint, **source}
        if rank0:
            if json_path:
                write_json(result, json_path)
            if json_path != "-":
                click.echo(render_table(result, f"{checkpoint} [{describe(source)}]" if "architecture" in source
                                        else checkpoint))
    if not report.passed:
        failed = [c["name"] for c in result["gate"]["checks"] if not c["passed"]]
        raise GateFailed(", ".join(failed))
