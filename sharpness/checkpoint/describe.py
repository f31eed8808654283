"""What ``sharpness info`` prints: a checkpoint summarized as plain values (shapes, not tensors)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from ..models import build_from_spec, model_names
from .format import _BUFFER_SUFFIXES, Checkpoint


def _summary(value: Any) -> Any:
    """JSON-able view: tensors become ``"Tensor(shape=[...], dtype=...)"`` strings."""
    if isinstance(value, Tensor):
        if value.numel() == 1:
            return value.item()
        return f"Tensor(shape={list(value.shape)}, dtype={str(value.dtype).replace('torch.', '')})"
    if isinstance(value, Mapping):
        return {str(k): _summary(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_summary(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return repr(value)


def describe(ckpt: Checkpoint) -> dict:
    """A JSON-able summary of a checkpoint (what ``sharpness info`` prints). Runs no user code.

    Keys: ``path, kind, model, num_parameters, num_parameters_exact, num_tensors, num_elements, bytes,
    dtypes, tensors`` (``[{"name", "shape", "dtype"}]`` in file order), ``nonfinite_tensors, data,
    train_config, metrics, history_length, last_history, seed, versions, extra``.
    ``num_parameters`` is exact for built-in models and pickled modules; otherwise it counts floating
    tensors other than BatchNorm running statistics (``num_parameters_exact: false``).
    """
    sd = ckpt.state_dict
    num_params, exact = None, False
    if ckpt.kind == "module" and ckpt.module is not None:
        num_params, exact = sum(p.numel() for p in ckpt.module.parameters()), True
    elif ckpt.model and ckpt.model.get("name") in model_names():
        try:
            net = build_from_spec(ckpt.model, seed=0)
            num_params, exact = sum(p.numel() for p in net.parameters()), True
        except InputError:
            pass
    if num_params is None:
        num_params = sum(t.numel() for k, t in sd.items() if t.is_floating_point() and not k.endswith(_BUFFER_SUFFIXES))
    dtypes: dict[str, int] = {}
    for t in sd.values():
        key = str(t.dtype).replace("torch.", "")
        dtypes[key] = dtypes.get(key, 0) + 1
    nonfinite = [k for k, t in sd.items() if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())]
    return {
        "path": ckpt.path,
        "kind": ckpt.kind,
        "model": _summary(ckpt.model),
        "num_parameters": int(num_params),
        "num_parameters_exact": exact,
        "num_tensors": len(sd),
        "num_elements": int(sum(t.numel() for t in sd.values())),
        "bytes": int(sum(t.numel() * t.element_size() for t in sd.values())),
        "dtypes": dtypes,
        "tensors": [{"name": k, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")} for k, t in sd.items()],
        "nonfinite_tensors": nonfinite,
        "data": _summary(ckpt.data),
        "train_config": _summary(ckpt.train_config),
        "metrics": _summary(ckpt.metrics),
        "history_length": len(ckpt.history),
        "last_history": _summary(ckpt.history[-1]) if ckpt.history else None,
        "seed": ckpt.seed,
        "versions": _summary(ckpt.versions),
        "extra": _summary(ckpt.extra),
    }
