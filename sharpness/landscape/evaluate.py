"""Evaluating an objective over a landscape: grids of coordinates, affine points, and sweeps of blocks of points
(:mod:`sharpness.objective.points` evaluates each block, under :func:`torch.func.vmap` where it pays), fetched to
the host once per run."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from ..objective import Objective
from ..objective.points import BATCH_POINTS, BATCH_WORK_LIMIT, _Evaluator, _stack, default_batch_size  # noqa: F401
from .results import _METRICS



def grid(lo: float = -1.0, hi: float = 1.0, n: int = 51) -> np.ndarray:
    """``n`` evenly spaced values from lo to hi (float64) in which 0 and 1, if inside, are exact grid values.

    Computed as (lo·(n − 1 − i) + hi·i)/(n − 1): the end points are exact, a range symmetric about 0 gives
    exactly mirrored values with an exact 0.0 in the middle for odd n, and integer-valued combinations such
    as Keskar's (−1, 2, 25) hit 0 and 1 exactly; any value within 1e-9 of a step from 0 or 1 is then snapped.
    """
    if n < 2:
        raise InputError(f"a grid needs at least 2 points, got {n}")
    if not hi > lo:
        raise InputError(f"a grid needs lo < hi, got lo={lo} and hi={hi}")
    i = np.arange(n, dtype=np.float64)
    values = (lo * (n - 1 - i) + hi * i) / (n - 1)
    step = (hi - lo) / (n - 1)
    for exact in (0.0, 1.0):
        values[np.abs(values - exact) < 1e-9 * step] = exact
    return values


def _coords(values: Any, default: np.ndarray, name: str) -> np.ndarray:
    a = default if values is None else np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or a.size < 1 or not np.all(np.isfinite(a)):
        raise InputError(f"{name} must be a non-empty 1-D array of finite numbers, got {np.asarray(values)!r}")
    return a


def _check_compatible(objective: Objective, other: Objective | None, what: str) -> None:
    if other is not None and (other.names != objective.names or list(other.shapes) != list(objective.shapes)):
        raise InputError(
            f"the {what} must vary the same parameters as the objective ({objective.numel} values in "
            f"{len(objective.names)} tensors), got {other.numel} values in {len(other.names)} tensors"
        )


def _affine_points(base: Tensor | None, vectors: Sequence[Tensor], coords: np.ndarray) -> Tensor:
    """``(B, P)`` points base + Σ_j coords[:, j]·vectors[j], computed elementwise in the vectors' dtype.

    Every point's bits depend only on its own coordinates (not on the block it is computed in), so batched,
    one-at-a-time and resumed grids build identical points; a zero coordinate adds an exact zero.
    """
    ref = vectors[0]
    c = torch.as_tensor(coords, dtype=ref.dtype, device=ref.device)
    out = None if base is None else base.unsqueeze(0)
    for j, v in enumerate(vectors):
        term = c[:, j : j + 1] * v.unsqueeze(0)
        out = term if out is None else out + term
    return out


class _Sweep:
    """Evaluates the train (and test) objective at blocks of points and collects the four metric arrays."""

    def __init__(self, objective: Objective, test_objective: Objective | None, batch_size: int) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size}")
        _check_compatible(objective, test_objective, "test objective")
        self.batch_size = batch_size
        self.evaluators = {"train": _Evaluator(objective, batch_size > 1)}
        if test_objective is not None:
            self.evaluators["test"] = _Evaluator(test_objective, batch_size > 1)
        self.num_evaluations = 0

    def run(self, make: Callable[[int, int], dict[str, Tensor]], n: int, exact: Sequence[int] = ()) -> dict[str, np.ndarray | None]:
        """Evaluate points 0..n−1, built block by block with ``make(start, stop)`` → stacked dict.

        Points listed in ``exact`` (the centre, the checkpoints themselves) are evaluated again unbatched,
        exactly as :meth:`Objective.value` does, so they reproduce the checkpoint's loss bit for bit; the
        fast path (batched products, the max-trick cross-entropy) may differ from it in the last bits.
        """
        out: dict[str, list[Tensor]] = {m: [] for m in _METRICS}
        for start in range(0, n, self.batch_size):
            stop = min(n, start + self.batch_size)
            stacked = make(start, stop)
            for split, ev in self.evaluators.items():
                loss, acc = ev(stacked, stop - start)
                for i in (i for i in exact if start <= i < stop):
                    single = {k: v[i - start : i - start + 1] for k, v in stacked.items()}
                    one_loss, one_acc = ev(single, 1, reference=True)
                    loss[i - start] = one_loss[0]
                    if acc is not None:
                        acc[i - start] = one_acc[0]
                out[f"{split}_loss"].append(loss)
                if acc is not None:
                    out[f"{split}_acc"].append(acc)
                self.num_evaluations += stop - start
        present = [m for m in _METRICS if out[m]]
        # One transfer to the host for the whole run (float64 on the device, so no rounding on the way).
        host = torch.stack([torch.cat(out[m]) for m in present]).cpu().numpy()
        return {m: (host[present.index(m)].copy() if m in present else None) for m in _METRICS}


def _float_buffers(objective: Objective) -> dict[str, Tensor]:
    """The floating-point buffers (BatchNorm running statistics) of the objective's model copy."""
    module: nn.Module = objective.module
    return {k: v for k, v in module.named_buffers() if v is not None and v.is_floating_point()}
