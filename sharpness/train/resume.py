"""Where a run keeps its files besides the checkpoint, and the ``.resume`` state that lets an interrupted run
continue bit-identically: model, optimizer, RNG and data-order states, position, history, callbacks' states.

The state is checked against the configuration (all fields but ``resume``) and the data's hash before it is
loaded, so a ``.resume`` file from another run is refused instead of silently continued.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from ..errors import InputError
from .config import TrainConfig

log = logging.getLogger("sharpness.train")

RESUME_FORMAT = "sharpness.train-resume/1"


def resume_path(out: str | os.PathLike) -> str:
    """Where an interrupted run keeps its state: ``out + ".resume"``."""
    return f"{os.fspath(out)}.resume"


def snapshot_path(out: str | os.PathLike, epoch: int) -> str:
    """``out_stem.epoch{k}.pt`` for ``out = out_stem.pt``."""
    path = os.fspath(out)
    stem = path[:-3] if path.endswith(".pt") else path
    return f"{stem}.epoch{epoch}.pt"


def resume_payload(run: Any) -> dict:
    """The resumable state of a run (a :class:`sharpness.train.loop._Run`): tensors and plain values only."""
    cbs = {str(i): cb.state_dict() for i, cb in enumerate(run.callbacks)
           if callable(getattr(cb, "state_dict", None)) and callable(getattr(cb, "load_state_dict", None))}
    return {
        "format": RESUME_FORMAT,
        "config": _comparable(run.config),
        "data_sha256": run.spec.get("sha256"),
        "model_state": {k: v.detach().cpu().clone() for k, v in run.net.state_dict().items()},
        "optimizer_state": run.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        "generator": run.generator.get_state(),
        "perm": None if run.perm is None else run.perm.cpu(),
        "step": run.step, "epoch": run.epoch, "position": run.position, "stopped_by": run.stopped_by,
        "history": run.history, "theta0": run.theta0.cpu(), "good": run.good,
        "train_seconds": run.train_seconds, "eval_seconds": run.eval_seconds,
        "elapsed": run._elapsed(), "init_sha256": run.init_sha, "init_source": run.init_source,
        "callbacks": cbs,
    }


def restore(run: Any, path: str) -> None:
    """Load the state at ``path`` into ``run``, after checking that the same configuration and data wrote it."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"expected a resumable training state in {path!r}, got an unreadable file ({type(e).__name__})") from None
    if not isinstance(saved, dict) or saved.get("format") != RESUME_FORMAT:
        raise InputError(f"expected a {RESUME_FORMAT} file at {path!r}, got something else; delete it to start over")
    want = _comparable(run.config)
    diff = sorted(k for k in set(want) | set(saved["config"]) if want.get(k) != saved["config"].get(k))
    if diff or saved["data_sha256"] != run.spec.get("sha256"):
        what = ", ".join(f"{k}={saved['config'].get(k)!r} there vs {want.get(k)!r} now" for k in diff[:3]) or "different data"
        raise InputError(f"expected {path!r} to come from the same configuration, got {what}; "
                         "rerun with the original arguments or delete the .resume file")
    run.net.load_state_dict(saved["model_state"])
    run.optimizer.load_state_dict(saved["optimizer_state"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and run.device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda_rng"], run.device)
    run.generator.set_state(saved["generator"])
    run.perm = None if saved["perm"] is None else saved["perm"].to(run.device)
    run.step, run.epoch, run.position = saved["step"], saved["epoch"], saved["position"]
    run.stopped_by = saved["stopped_by"]
    run.history[:] = saved["history"]
    run.theta0 = saved["theta0"].to(run.device, run.dtype)
    run.good = saved["good"]
    run.train_seconds, run.eval_seconds = saved["train_seconds"], saved["eval_seconds"]
    run.elapsed_before = saved["elapsed"]
    run.init_sha, run.init_source = saved["init_sha256"], saved["init_source"]
    for i, cb in enumerate(run.callbacks):
        if str(i) in saved["callbacks"]:
            cb.load_state_dict(saved["callbacks"][str(i)])
    run.last_lr = run.schedule(max(run.step - 1, 0))
    run.resumed = True
    log.info("resumed from %s at step %d (epoch %d)", path, run.step, run.epoch)


def _comparable(config: TrainConfig) -> dict:
    """The fields a resumed run must share with the one that wrote the state (all but ``resume``)."""
    d = config.to_dict()
    d.pop("resume")
    return d
