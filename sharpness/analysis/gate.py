"""Pass/fail checks on a report, for using ``sharpness analyze`` as a gate in a research pipeline.

A check compares one metric of the report (a dotted path into its JSON, e.g. ``hessian.top.values.0``) with an
absolute threshold, or with the same metric of a baseline report computed on the *same* analysis set (same
SHA-256), allowing a relative increase. The report is always written; a failed check makes the CLI exit 3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

# The metrics a baseline comparison covers: (name, dotted path into the report).
BASELINE_METRICS = (
    ("lambda_max", "hessian.top.values.0"),
    ("trace", "hessian.trace.value"),
    ("epsilon_sharpness", "epsilon_sharpness.0.value"),
)


@dataclass(frozen=True)
class Check:
    name: str
    metric: str
    value: float | None
    threshold: float
    passed: bool
    detail: str


def lookup(report: dict, path: str) -> Any:
    """The value at a dotted ``path`` of a report dict (list indices as integers), or None if absent."""
    node: Any = report
    for part in path.split("."):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return None
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def parse_increase(text: str | float | None) -> float | None:
    """``"25%"`` or ``0.25`` → 0.25."""
    if text is None or isinstance(text, float):
        return text
    raw = text.strip()
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise InputError(f"--max-increase expects a percentage like 25% or a fraction like 0.25, got {text!r}") from None


def load_baseline(path: str) -> dict:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise InputError(f"--baseline {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--baseline {path}: expected a sharpness report JSON, got unparsable text ({exc})") from None
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("sharpness.report/"):
        raise InputError(f"--baseline {path}: expected a sharpness report (schema sharpness.report/1), got another JSON")
    return data


def check_same_analysis_set(baseline: dict, sha256: str | None) -> None:
    """Refuse a baseline computed on other data: its numbers are not comparable with ours. ``analyze`` calls
    this as soon as it knows its analysis set, before any measure runs."""
    theirs = lookup(baseline, "analysis_set.sha256")
    if theirs != sha256:
        raise InputError(
            f"--baseline was computed on another analysis set (sha256 {str(theirs)[:12]}…, ours {str(sha256)[:12]}…); "
            "compare reports on the same data"
        )


def _relation(passed: bool) -> str:
    """The comparison as it holds: ``1.04 > 0.1`` for a failed check reads true, ``1.04 ≤ 0.1`` would not."""
    return "≤" if passed else ">"


def evaluate_gates(
    report: dict,
    *,
    max_eigenvalue: float | None = None,
    max_trace: float | None = None,
    max_epsilon_sharpness: float | None = None,
    baseline: dict | None = None,
    max_increase: float | None = None,
) -> list[Check]:
    """Every requested check on ``report`` (a report dict); an empty list when none was requested."""
    checks: list[Check] = []
    absolute = (
        ("max_eigenvalue", "hessian.top.values.0", max_eigenvalue),
        ("max_trace", "hessian.trace.value", max_trace),
        ("max_epsilon_sharpness", "epsilon_sharpness.0.value", max_epsilon_sharpness),
    )
    for name, path, threshold in absolute:
        if threshold is None:
            continue
        value = lookup(report, path)
        if value is None:
            raise InputError(f"--{name.replace('_', '-')} needs {path} in the report, but it was not computed")
        passed = float(value) <= threshold
        checks.append(Check(name, path, float(value), float(threshold), passed,
                            f"{value:.6g} {_relation(passed)} {threshold:.6g}"))
    if baseline is not None:
        if max_increase is None:
            raise InputError("--baseline needs --max-increase (e.g. 25%)")
        check_same_analysis_set(baseline, lookup(report, "analysis_set.sha256"))
        compared = 0
        for name, path in BASELINE_METRICS:
            value, base = lookup(report, path), lookup(baseline, path)
            if value is None or base is None:
                continue
            compared += 1
            limit = float(base) + abs(float(base)) * max_increase
            passed = float(value) <= limit
            checks.append(Check(
                f"{name}_increase", path, float(value), limit, passed,
                f"{value:.6g} {_relation(passed)} {base:.6g} + {100 * max_increase:.4g}%",
            ))
        if compared == 0:
            raise InputError("--baseline shares no metric with this report (compute the same measures)")
    return checks
