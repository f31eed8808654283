"""Evaluating an objective at many points: grids of coordinates, affine points, and blocks of points under
:func:`torch.func.vmap` (falling back to a loop for models vmap cannot batch), fetched to the host once per run."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from ..objective import Objective, cross_entropy_and_argmax
from .results import _METRICS

#: Points per vmapped block when batching pays (see :func:`default_batch_size`).
BATCH_POINTS = 16
#: Batching pays while one point costs little: numel × samples up to this (a proxy for a forward's FLOPs).
BATCH_WORK_LIMIT = 2e7


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


def _chunk_sums(
    objective: Objective, params: dict[str, Tensor], batch: Any, w: Tensor | None, fast: bool = False
) -> tuple[Tensor, Tensor]:
    """(Σ w_i ℓ_i, Σ w_i·[argmax = y_i]) over one chunk from a single forward pass.

    ``fast=False`` computes the loss sum exactly as :meth:`Objective.chunk_loss_sum` does, so a point
    evaluated this way reproduces ``objective.value()`` bit for bit. ``fast=True`` (cross-entropy on
    ``(N, C)`` logits of in-memory tensors) gets the loss and the prediction from the one max-reduction that
    :func:`~sharpness.objective.cross_entropy_and_argmax` needs anyway (the same exact formula, so values near
    zero loss keep their digits), instead of a second argmax over classes.
    """
    if not fast:
        return objective.chunk_sums(params, batch, w)
    x, y = batch
    out = objective.forward(params, x)
    if out.ndim != 2:  # sequences: the objective's own per-sample token means
        loss, hit, _ = objective.output_sums(out, batch, w, hits=True)
        return loss, hit
    losses, pred = cross_entropy_and_argmax(out, y)
    loss = losses.sum() if w is None else (losses * w).sum()
    hits = (pred == y).to(loss.dtype)
    return loss, hits.sum() if w is None else (hits * w).sum()


class _Evaluator:
    """Loss and accuracy of an objective at a block of points given as stacked parameter dicts ``(B, ...)``.

    ``batched=True`` evaluates the block under :func:`torch.func.vmap` (one batched forward per chunk); it
    falls back to the loop, with a warning, for models whose ops have no batching rule. ``reference=True``
    evaluates one point at a time exactly as :meth:`Objective.value` does (for the centre and checkpoints).
    """

    def __init__(self, objective: Objective, batched: bool) -> None:
        self.objective = objective
        self.batched = batched
        # class labels in range (no ignore_index) allow the fast cross-entropy
        self.fast = (objective.loss_kind == "cross-entropy" and objective.inputs is not None
                     and objective.per_sample_path and bool((objective.targets >= 0).all()))
        self._vmapped = torch.func.vmap(lambda p, batch, w: _chunk_sums(objective, p, batch, w, self.fast), in_dims=(0, None, None))

    def __call__(self, stacked: dict[str, Tensor], count: int, *, reference: bool = False) -> tuple[Tensor, Tensor | None]:
        obj = self.objective
        stacked = {k: v.to(obj.device, obj.dtype if v.is_floating_point() else None) for k, v in stacked.items()}
        with torch.no_grad():
            if self.batched and count > 1 and not reference:
                try:
                    sums = [self._vmapped(stacked, *chunk) for chunk in obj.chunks()]
                    loss = sum(s[0] for s in sums) / obj.total_weight
                    correct = sum(s[1] for s in sums)
                except (RuntimeError, NotImplementedError) as err:
                    warnings.warn(
                        f"batched evaluation unavailable for this model ({str(err).splitlines()[0][:120]}); "
                        "evaluating grid points one at a time",
                        stacklevel=4,
                    )
                    self.batched = False
                    return self(stacked, count)
            else:
                fast = self.fast and not reference
                losses, corrects = [], []
                for i in range(count):
                    params = {k: v[i] for k, v in stacked.items()}
                    sums = [_chunk_sums(obj, params, *chunk, fast) for chunk in obj.chunks()]
                    losses.append(sum(s[0] for s in sums) / obj.total_weight)  # as Objective.value computes it
                    corrects.append(sum(s[1] for s in sums))
                loss, correct = torch.stack(losses), torch.stack(corrects)
        # Still on the device: the sweep fetches a whole run of points at once (no host round trip per block).
        loss = loss.to(torch.float64)
        if not obj.has_accuracy:
            return loss, None
        return loss, correct.to(torch.float64) / obj.total_weight


def _stack(objective: Objective, thetas: Tensor, buffers: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """``(B, P)`` points → ``{name: (B, *shape)}`` (plus per-point buffers, which override the objective's)."""
    B = thetas.shape[0]
    out = {k: t.reshape(B, *s) for k, t, s in zip(objective.names, thetas.split(objective.sizes, dim=1), objective.shapes)}
    return {**out, **(buffers or {})}


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


def default_batch_size(objective: Objective) -> int:
    """Grid points per vmapped block: :data:`BATCH_POINTS` for small models, 1 (a plain loop) otherwise.

    Measured on 2 CPU cores with ReLU MLPs on 1000 samples (21×21 plane, CPU time relative to 441 plain
    forward passes): P = 3.5k: 3.5× unbatched, 2.1–2.3× in blocks of 8–32 (per-point dispatch overhead is
    amortized); P = 26k: 1.8× either way; P = 301k: 1.2–1.3× unbatched but 1.5–1.8× batched (batched
    matrix products run slower than separate ones and thrash the cache). Hence batching while
    numel × n_samples ≤ :data:`BATCH_WORK_LIMIT`. The rule depends only on the problem's size, so a resumed
    grid makes the same choice.
    """
    return BATCH_POINTS if objective.numel * objective.n_samples <= BATCH_WORK_LIMIT else 1


def _float_buffers(objective: Objective) -> dict[str, Tensor]:
    """The floating-point buffers (BatchNorm running statistics) of the objective's model copy."""
    module: nn.Module = objective.module
    return {k: v for k, v in module.named_buffers() if v is not None and v.is_floating_point()}
