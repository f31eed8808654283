"""What a grid returns and saves: :class:`LineResult`, :class:`PlaneResult` (``.npz`` + ``.csv``, written
atomically, loadable without pickle), :func:`load_result`, and the parabola :func:`fit_curvature` fits to a slice."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..files.rundir import atomic_write

_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


class _Saveable:
    """``.save(path)`` → ``path`` (.npz, arrays + a JSON ``meta`` string) and ``path.with_suffix(".csv")``."""

    _axes: tuple[str, ...] = ()

    def _arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), np.ndarray)}

    def _meta(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not isinstance(getattr(self, f.name), np.ndarray) and getattr(self, f.name) is not None}

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``path`` (``.npz``, loadable without pickle) and a tidy ``.csv`` beside it, each atomically."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        arrays = {**self._arrays(), "meta": np.array(json.dumps(self._meta(), sort_keys=True))}
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        csv_path = path.with_suffix(".csv")
        text = self.to_csv()
        atomic_write(csv_path, lambda fh: fh.write(text.encode()))
        return path, csv_path

    @classmethod
    def load(cls, path: str | Path):
        """Read a result written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "meta"}
            meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in {**arrays, **meta}.items() if k in names}
        for k in ("direction_norms",):
            if k in kwargs:
                kwargs[k] = tuple(kwargs[k])
        return cls(**kwargs)

    def _csv_rows(self) -> Iterable[tuple[list[float], int]]:
        raise NotImplementedError

    def to_csv(self) -> str:
        """One row per grid point; an unfinished point has empty metric cells."""
        metrics = [m for m in _METRICS if getattr(self, m) is not None]
        lines = [",".join([*self._axes, *metrics])]
        for coords, index, finished in self._csv_rows():
            cells = [repr(float(c)) for c in coords]
            cells += [repr(float(getattr(self, m)[index])) if finished else "" for m in metrics]
            lines.append(",".join(cells))
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, eq=False)
class LineResult(_Saveable):
    """Loss and accuracy along a line (an interpolation or a 1D slice). Arrays have shape ``(A,)``.

    Attributes:
        alphas: the coordinates α.
        train_loss, train_acc: the objective's mean loss and accuracy at each point (acc None for regression).
        test_loss, test_acc: the same for the test objective, or None.
        kind: ``"interpolation"`` (point (1 − α)θ_a + αθ_b) or ``"line"`` (point θ + α·d).
        direction_norm: ‖θ_b − θ_a‖ or ‖d‖ (the α-axis in parameter-space length units).
        seconds, num_evaluations: cost (points × objectives evaluated).
        config: the objective's evaluation policy and the grid options.
    """

    alphas: np.ndarray
    train_loss: np.ndarray
    train_acc: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    test_acc: np.ndarray | None = None
    kind: str = "line"
    direction_norm: float | None = None
    seconds: float = 0.0
    num_evaluations: int = 0
    config: dict = field(default_factory=dict)

    _axes = ("alpha",)

    def _csv_rows(self):
        for i, a in enumerate(self.alphas):
            yield (a,), i, True


@dataclass(frozen=True, eq=False)
class PlaneResult(_Saveable):
    """Loss and accuracy on a plane θ + α·d₁ + β·d₂. Metric arrays have shape ``(len(alphas), len(betas))``.

    Attributes:
        alphas, betas: the coordinates along d₁ (rows) and d₂ (columns).
        train_loss, train_acc, test_loss, test_acc: as in :class:`LineResult`.
        mask: bool, True where the point was evaluated. Values where it is False are meaningless (NaN); a
            genuinely diverged point (loss inf or NaN) is still True.
        direction_norms: (‖d₁‖, ‖d₂‖).
        seconds, num_evaluations, config: cost and configuration of the evaluations in this call.
    """

    alphas: np.ndarray
    betas: np.ndarray
    train_loss: np.ndarray
    mask: np.ndarray
    train_acc: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    test_acc: np.ndarray | None = None
    direction_norms: tuple[float, float] | None = None
    seconds: float = 0.0
    num_evaluations: int = 0
    config: dict = field(default_factory=dict)

    _axes = ("alpha", "beta")

    @property
    def complete(self) -> bool:
        return bool(self.mask.all())

    def _csv_rows(self):
        for i, a in enumerate(self.alphas):
            for j, b in enumerate(self.betas):
                yield (a, b), (i, j), bool(self.mask[i, j])


@dataclass(frozen=True)
class CurvatureFit:
    """A parabola f(α) ≈ c₀ + c₁α + c₂α² fitted to the centre of a slice along d.

    Attributes:
        curvature: 2c₂/‖d‖² — the second directional derivative per unit length, dᵀHd/‖d‖² on a quadratic.
        slope: c₁/‖d‖ — the directional derivative per unit length (≈ 0 at a minimum).
        value: c₀, the fitted loss at the centre.
        rms_residual: root-mean-square misfit of the parabola over the points used (0 on a quadratic, up to
            rounding; large when the window is too wide for a quadratic model).
        num_points: points used; half_width: max |α| among them.
    """

    curvature: float
    slope: float
    value: float
    rms_residual: float
    num_points: int
    half_width: float




def load_result(path: str | Path) -> LineResult | PlaneResult:
    """Read a saved :class:`LineResult` or :class:`PlaneResult` (told apart by the ``betas`` array)."""
    with np.load(Path(path), allow_pickle=False) as data:
        is_plane = "betas" in data.files
    return PlaneResult.load(path) if is_plane else LineResult.load(path)



def fit_curvature(result: LineResult, d: Tensor | float | None = None, *, num_points: int = 5) -> CurvatureFit:
    """Fit f(α) ≈ c₀ + c₁α + c₂α² by least squares to the ``num_points`` slice points nearest α = 0.

    The curvature along d is f''(0)/‖d‖² = 2c₂/‖d‖²: dᵀHd/‖d‖² exactly on a quadratic objective, and λ_max
    along a unit top eigenvector (up to the quartic term, O(α²) — keep the window small). ``d`` is the
    direction (or its norm; default: the result's ``direction_norm``). Uses the train loss.
    """
    if d is None:
        norm = result.direction_norm
    elif isinstance(d, Tensor):
        norm = float(d.detach().to(torch.float64).norm())
    else:
        norm = float(d)
    if norm is None or not norm > 0:
        raise InputError(f"fit_curvature needs the direction's positive norm, got {norm}")
    if not 3 <= num_points <= len(result.alphas):
        raise InputError(f"num_points must be in [3, {len(result.alphas)}] to fit a parabola, got {num_points}")
    idx = np.argsort(np.abs(result.alphas), kind="stable")[:num_points]
    x = result.alphas[idx]
    y = np.asarray(result.train_loss, dtype=np.float64)[idx]
    if not np.all(np.isfinite(y)):
        raise InputError("fit_curvature needs finite losses near the centre of the slice, got inf or NaN")
    V = np.stack([np.ones_like(x), x, x * x], axis=1)
    coef, *_ = np.linalg.lstsq(V, y, rcond=None)
    resid = y - V @ coef
    return CurvatureFit(
        curvature=float(2.0 * coef[2] / norm**2),
        slope=float(coef[1] / norm),
        value=float(coef[0]),
        rms_residual=float(np.sqrt(np.mean(resid**2))),
        num_points=int(num_points),
        half_width=float(np.max(np.abs(x))),
    )
