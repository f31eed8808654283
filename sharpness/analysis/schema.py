"""What an analysis returns: the frozen :class:`Report` and its versioned JSON contract (``sharpness.report/1``).

:meth:`Report.to_dict` is the contract pipelines read; :func:`jsonable` turns the estimators' dataclasses,
numpy and torch values into plain JSON types; :func:`environment` is the report's record of library
versions, device, dtype and threads; :func:`eigen_dict` is the JSON form of a Lanczos eigenvalue result.
:func:`sharpness.analysis.report.analyze` fills these; nothing here computes an estimate.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy
import torch
from torch import Tensor

from .. import __version__

SCHEMA = "sharpness.report/1"


@dataclass(frozen=True)
class Report:
    """The result of :func:`analyze`; :meth:`to_dict` gives the JSON contract."""

    loss: float
    accuracy: float | None
    analysis_set: dict
    hessian: dict
    per_layer: list | None
    cost: dict
    config: dict
    environment: dict
    gate: dict
    measures: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.gate["passed"])

    def to_dict(self) -> dict:
        out = {
            "schema": SCHEMA,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "analysis_set": self.analysis_set,
            "hessian": self.hessian,
            "per_layer": self.per_layer,
            **self.measures,
            "cost": self.cost,
            "config": self.config,
            "environment": self.environment,
            "gate": self.gate,
        }
        return jsonable(out)


def jsonable(obj: Any) -> Any:
    """Dataclasses, numpy and torch values → plain JSON types (eigenvectors are dropped: they are not data)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "vectors"}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    return {
        "sharpness": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "device": str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})",
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
    }


def eigen_dict(result: Any) -> dict:
    """An eigenvalue result (:func:`sharpness.linalg.extreme_eigenvalues`) as the report's JSON block."""
    return {
        "values": jsonable(result.values),
        "residuals": jsonable(result.residuals),
        "converged": jsonable(result.converged),
        "num_matvecs": int(result.num_matvecs),
        "num_steps": int(result.num_steps),
        # converged when the error estimate ≤ tol·max(|λ|, tolerance_scale), tolerance_scale = scale_floor·Λ
        "tolerance_scale": float(result.tolerance_scale),
        "scale_floor": float(result.scale_floor),
        # P(a cold start's random vector hid an eigenvalue that makes a value wrong by > tol) ≤ miss_bound;
        # null for a warm start or a restarted run (sharpness.linalg.eigen, "Miss certificate")
        "miss_bound": None if result.miss_bound is None else float(result.miss_bound),
        # "full": a stored, reorthogonalized basis; "local": the three-term recurrence (the basis did not fit)
        "reorthogonalization": result.reorthogonalization,
        "num_runs": int(result.num_runs),
    }
