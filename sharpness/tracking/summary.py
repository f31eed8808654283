"""Reading a finished series: progressive sharpening up to the stability threshold and the plateau at the edge
of stability (Cohen et al. 2021)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError

@dataclass(frozen=True)
class SharpeningSummary:
    """How a λ_max series compares with the stability threshold (Cohen et al. 2021).

    Attributes:
        plateau: median λ_max over the last ``tail`` fraction of the measurements (the edge-of-stability value).
        plateau_low, plateau_high: the 25th and 75th percentiles over that window (its spread: λ_max
            oscillates at the edge of stability, so a single value would overstate the precision).
        threshold: the stability threshold compared against (2/η, or as given); ``ratio`` = plateau/threshold.
        initial: λ_max at the first measurement; ``peak``: the largest λ_max; ``peak_step``: where.
        first_crossing_step: the first step at which λ_max ≥ ``near`` × threshold (None if never).
        tail_rise: least-squares slope of λ_max over the plateau window × the window's span in steps, relative
            to ``plateau``: how much λ_max still changed across the window. Near 0 for a true plateau; a
            clearly positive value (say > 0.1) means the series is still sharpening and ``plateau`` is not one.
        num_measurements, num_plateau: measurements in all and in the plateau window.
    """

    plateau: float
    plateau_low: float
    plateau_high: float
    threshold: float
    ratio: float
    initial: float
    peak: float
    peak_step: int
    first_crossing_step: int | None
    tail_rise: float
    num_measurements: int
    num_plateau: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def progressive_sharpening_summary(
    records: Sequence[Mapping[str, Any]],
    lr: float,
    *,
    momentum: float = 0.0,
    threshold: float | None = None,
    tail: float = 1 / 3,
    near: float = 0.9,
) -> SharpeningSummary:
    """Plateau of λ_max vs the stability threshold, from a tracker's records (or any ``{"step", "lambda_max"}``).

    Args:
        records: measurements in step order (non-finite λ_max are skipped).
        lr: the step size η. The threshold is (2 + 2·momentum)/η (heavy ball; 2/η without momentum) unless
            ``threshold`` is given (e.g. a record's ``eos_threshold``).
        tail: fraction of the measurements (the last ones) that form the plateau window; at least one.
        near: the fraction of the threshold that counts as having reached it (``first_crossing_step``).
    """
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise InputError(f"expected lr > 0, got {lr!r}")
    if not 0 < tail <= 1:
        raise InputError(f"expected tail in (0, 1], got {tail!r}")
    pts = [(int(r["step"]), float(r["lambda_max"])) for r in records
           if r.get("lambda_max") is not None and math.isfinite(float(r["lambda_max"]))]
    if not pts:
        raise InputError(f"expected records with a finite lambda_max, got {len(records)} record(s) without one")
    thr = float(threshold) if threshold is not None else (2.0 + 2.0 * momentum) / lr
    steps = np.array([s for s, _ in pts])
    lam = np.array([v for _, v in pts])
    n_tail = max(1, int(math.ceil(tail * lam.size)))
    window, window_steps = lam[-n_tail:], steps[-n_tail:]
    plateau = float(np.median(window))
    low, high = (float(q) for q in np.percentile(window, [25, 75]))
    crossed = np.nonzero(lam >= near * thr)[0]
    span = float(window_steps[-1] - window_steps[0])
    slope = float(np.polyfit(window_steps.astype(float), window, 1)[0]) if span > 0 else 0.0
    return SharpeningSummary(
        plateau=plateau, plateau_low=low, plateau_high=high, threshold=thr, ratio=plateau / thr,
        initial=float(lam[0]), peak=float(lam.max()), peak_step=int(steps[int(lam.argmax())]),
        first_crossing_step=int(steps[crossed[0]]) if crossed.size else None, tail_rise=slope * span / plateau,
        num_measurements=int(lam.size), num_plateau=int(window.size),
    )
