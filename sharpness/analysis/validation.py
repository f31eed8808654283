"""The checks an analysis's options get before any work, the same from the API and the CLI.

:class:`~sharpness.analysis.report.AnalysisConfig` calls :func:`check_numbers` on construction, and the CLI builds that
config before it loads anything, so a bad number (``--epsilon nan``, ``tol=inf``, ``rho=-1``) is refused in one
line before the first stage line on every path. Click's ``FloatRange`` lets NaN through (every comparison
with NaN is false), so finiteness is checked here, not left to the option types.

:func:`mode_notice` is the one line that says when the evaluation policy (eval mode, DESIGN §5) changes what the
user's model would compute as it stands (a model left in train mode with dropout or batch norm).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import nn

from ..errors import InputError

# field → (lower bound, lower bound included, upper bound, upper bound included); None: unbounded
FLOATS: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "tol": (0.0, False, None, False),
    "scale_floor": (0.0, True, 1.0, True),
    "weight_decay": (0.0, True, None, False),
    "label_smoothing": (0.0, True, 1.0, False),
    "max_eigenvalue": (None, False, None, False),
    "max_trace": (None, False, None, False),
    "max_epsilon_sharpness": (None, False, None, False),
}
#: repeatable options: every value is checked
FLOAT_TUPLES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "epsilon": (0.0, True, None, False),
    "adaptive_rho": (0.0, False, None, False),
    "rho": (0.0, False, None, False),
    "average_adaptive_rho": (0.0, False, None, False),
    "average_rho": (0.0, False, None, False),
}
# field → smallest value (None allowed for the optional ones)
INTS: dict[str, int] = {
    "samples": 1, "chunk_size": 1, "top_k": 0, "bottom_k": 0, "max_steps": 1, "trace_probes": 1,
    "density_steps": 2, "density_runs": 1, "subspace_dim": 1, "epsilon_restarts": 0, "epsilon_max_iter": 1,
    "epsilon_polish": 0, "sharpness_steps": 1, "sharpness_batch_size": 1, "average_draws": 2,
}
OPTIONAL = {"samples", "chunk_size", "max_steps", "subspace_dim", "epsilon_restarts", "epsilon_max_iter",
            "sharpness_batch_size", "max_eigenvalue", "max_trace", "max_epsilon_sharpness"}


def _option(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')})"


def _range(lo: float | None, lo_in: bool, hi: float | None, hi_in: bool) -> str:
    if lo is None and hi is None:
        return "a finite number"
    if hi is None:
        return f"a finite number {'≥' if lo_in else '>'} {lo:g}"
    return f"a number in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"


def _check_float(name: str, value: Any, bounds: tuple) -> float:
    lo, lo_in, hi, hi_in = bounds
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = (lo is None or v > lo or lo_in and v == lo) and (hi is None or v < hi or hi_in and v == hi)
    if not ok:
        raise InputError(f"expected {_option(name)} to be {_range(lo, lo_in, hi, hi_in)}, got {value!r}")
    return float(value)


def check_numbers(cfg: Any) -> None:
    """Refuse a non-finite or out-of-range number in ``cfg`` (an ``AnalysisConfig``) in one line."""
    for name, bounds in FLOATS.items():
        value = getattr(cfg, name)
        if not (value is None and name in OPTIONAL):
            _check_float(name, value, bounds)
    for name, bounds in FLOAT_TUPLES.items():
        values = getattr(cfg, name)
        for value in values if isinstance(values, (tuple, list)) else (values,):
            _check_float(name, value, bounds)
    for name, smallest in INTS.items():
        value = getattr(cfg, name)
        if value is None and name in OPTIONAL:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < smallest:
            raise InputError(f"expected {_option(name)} to be an integer ≥ {smallest}, got {value!r}")
    for name in ("seed", "ignore_index"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"expected {_option(name)} to be an integer, got {value!r}")


_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def mode_notice(model: nn.Module, bn_mode: str) -> str | None:
    """One line when ``model`` is in train mode and the analysis's eval policy changes what it computes:
    dropout with p > 0 is off, and batch norm uses its running statistics unless ``bn_mode="train"``;
    ``None`` when nothing changes."""
    if not model.training:
        return None
    dropout = sum(1 for m in model.modules() if isinstance(m, _DROPOUT) and m.training and m.p > 0)
    norms = 0 if bn_mode == "train" else sum(
        1 for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training)
    if not dropout and not norms:
        return None
    changes = ([f"{dropout} dropout layer{'s' if dropout > 1 else ''} off"] if dropout else []) + (
        [f"{norms} batch norm{'s' if norms > 1 else ''} on running statistics"] if norms else [])
    return (f"the model is in train mode; the analysis evaluates it in eval mode ({', '.join(changes)}), "
            "as documented: call model.eval() to make that explicit"
            + ("" if not norms else ", or bn_mode='train' (--bn-mode train) for batch statistics"))
