"""What one measurement records: the schema tag, the record's fields in CSV order, and the numbers of a record
as scalars for loggers (TensorBoard, Lightning)."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

SCHEMA = "sharpness.tracking/1"

#: The keys of every record, in CSV column order (``top_eigenvalues`` is a list; CSV spreads it as lambda_1…).
RECORD_FIELDS = (
    "step", "epoch", "lr", "lambda_max", "lambda_max_error", "converged", "top_eigenvalues", "lambda_min",
    "trace", "trace_stderr", "loss", "accuracy", "held_out_loss", "held_out_accuracy", "two_over_lr",
    "eos_threshold", "eos_formula", "num_matvecs", "lanczos_matvecs", "seconds", "warm_started",
    "verified", "cold_lambda_max", "verify_disagreed", "verify_matvecs", "verify_note",
)

#: The record fields that are numbers worth plotting against the step (see :func:`record_scalars`).
SCALAR_FIELDS = (
    "lambda_max", "lambda_min", "trace", "trace_stderr", "loss", "accuracy", "held_out_loss", "held_out_accuracy",
    "lr", "eos_threshold", "num_matvecs", "seconds",
)


def record_scalars(record: Mapping[str, Any], *, prefix: str = "sharpness/") -> dict[str, float]:
    """The finite numbers of one record as ``{prefix + name: value}`` for loggers (TensorBoard, Lightning).

    :data:`SCALAR_FIELDS`, plus ``lambda_2 … lambda_k`` when top-k was measured and ``lambda_max_ratio``
    (λ_max / ``eos_threshold``: 1 is the edge of stability). ``None`` and non-finite values are left out.
    """
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(float(value)):
            out[prefix + name] = float(value)

    for name in SCALAR_FIELDS:
        put(name, record.get(name))
    for i, value in enumerate(list(record.get("top_eigenvalues") or [])[1:], start=2):
        put(f"lambda_{i}", value)
    lam, thr = record.get("lambda_max"), record.get("eos_threshold")
    if lam is not None and thr:
        put("lambda_max_ratio", lam / thr)
    return out
