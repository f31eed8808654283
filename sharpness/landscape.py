"""Directions in parameter space and the loss evaluated along them: 1D interpolations, 1D slices, 2D planes.

Directions are flat ``(P,)`` tensors in the parameter order of an :class:`~sharpness.objective.Objective`
(:attr:`~sharpness.objective.Objective.names`), on its device and in its dtype:

* :func:`random_direction` — a seeded zero-mean Gaussian direction, filter-normalized as in Li et al.
  (NeurIPS 2018, "Visualizing the Loss Landscape of Neural Nets", §4): each filter d_{i,j} is rescaled to
  ‖d_{i,j}‖ = ‖θ_{i,j}‖, so a step α along d moves every filter by the same *relative* amount and slices of
  networks with different weight scales become comparable;
* :func:`eigen_directions` — Hessian eigenvectors (Lanczos, :func:`sharpness.linalg.extreme_eigenvalues`);
* :func:`checkpoint_direction` — θ_b − θ_a between two solutions;
* :func:`pca_directions` — principal components of an optimization trajectory (Li et al. §7);
* :func:`orthogonalize` — Gram–Schmidt of one direction against another.

Grids evaluate the objective (and optionally a test objective) at points on a line or a plane:

* :func:`interpolate`: f((1 − α)·θ_a + α·θ_b), Keskar et al. (ICLR 2017) Fig. 3 (α ∈ [−1, 2], 25 points);
* :func:`line`: f(θ + α·d), Li et al. Fig. 2 and 5 (α ∈ [−1, 1], 51 points);
* :func:`plane`: f(θ + α·d₁ + β·d₂), Li et al. Fig. 1 and 6 (51 × 51), resumable through a
  :class:`~sharpness.rundir.RunDir`.

The centre of a default grid is exactly a grid point (α = 0.0, β = 0.0, not 1e-17), and there the point is
θ itself bit for bit; interpolation endpoints are θ_a and θ_b exactly. Several points are evaluated at once
with :func:`torch.func.vmap` (``batch_size``), which equals one-at-a-time evaluation up to the rounding of a
batched matrix product (last bits); these reference points (centre, endpoints) are always evaluated
unbatched, as :meth:`Objective.value` does, so they equal ``objective.value()`` exactly. BatchNorm follows the
objective's policy (eval mode: the checkpoint's running statistics at every point); running statistics are
not recalibrated per point.

:func:`fit_curvature` fits a parabola to the centre of a slice: f''(0)/‖d‖², which equals dᵀHd/‖d‖² on a
quadratic and λ_max along a top eigenvector — a cross-check of the Hessian estimators by plain evaluation.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .errors import InputError
from .objective import Objective, cross_entropy_and_argmax
from .precision import with_precision_policy
from .rundir import RunDir, array_digest, atomic_write

NORMALIZATIONS = ("filter", "layer", "none")
#: Module types whose parameters the ``"bn"`` entry of ``ignore`` selects.
NORM_LAYERS: tuple[type, ...] = tuple(
    t
    for t in (
        nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*, their lazy versions
        nn.LayerNorm,
        nn.GroupNorm,
        getattr(nn, "RMSNorm", None),
    )
    if t is not None
)
#: Points per vmapped block when batching pays (see :func:`default_batch_size`).
BATCH_POINTS = 16
#: Batching pays while one point costs little: numel × samples up to this (a proxy for a forward's FLOPs).
BATCH_WORK_LIMIT = 2e7
PLANE_SCHEMA = "sharpness.plane/1"


# ==========================================================================================================
# Directions
# ==========================================================================================================
def _norm_layer_parameters(objective: Objective) -> set[str]:
    """Names of parameters owned by normalization modules (identified by type, not by name)."""
    module: nn.Module = objective._module  # the objective's private copy; read only
    found = set()
    for prefix, m in module.named_modules():
        if isinstance(m, NORM_LAYERS):
            for pname, _ in m.named_parameters(recurse=False):
                found.add(f"{prefix}.{pname}" if prefix else pname)
    return found


def ignored_parameters(objective: Objective, ignore: str | Sequence[str] = ("bias", "bn")) -> set[str]:
    """The varying parameters a direction leaves at zero.

    Entries of ``ignore`` (a sequence, or one comma-separated string):

    * ``"bn"`` — every parameter of a normalization module (BatchNorm, InstanceNorm, LayerNorm, GroupNorm,
      RMSNorm), found by module type;
    * ``"bias"`` — every parameter whose own name (after the last dot) is ``bias``;
    * anything else — a glob over full parameter names (``"fc3.*"``); a glob that matches nothing is an error.
    """
    if isinstance(ignore, str):
        ignore = [s.strip() for s in ignore.split(",") if s.strip()]
    names = objective.names
    out: set[str] = set()
    for entry in ignore:
        if entry == "bn":
            out |= _norm_layer_parameters(objective) & set(names)
        elif entry == "bias":
            out |= {n for n in names if n.rsplit(".", 1)[-1] == "bias"}
        else:
            hits = {n for n in names if fnmatch.fnmatchcase(n, entry)}
            if not hits:
                raise InputError(f"ignore pattern {entry!r} matched no parameter; expected a glob over names such as {', '.join(names[:4])}")
            out |= hits
    return out


def random_direction(
    objective: Objective,
    *,
    normalization: str = "filter",
    ignore: str | Sequence[str] = ("bias", "bn"),
    seed: int = 0,
) -> Tensor:
    """A random direction d ∈ R^P, normalized as in Li et al. (NeurIPS 2018).

    d is drawn i.i.d. N(0, 1) (zero mean: no sign bias) from ``torch.Generator().manual_seed(seed)`` in float64
    on the CPU, so the same seed gives the same direction on every device and dtype; then, per parameter
    tensor θ_i with the matching piece d_i:

    * ignored tensors (see :func:`ignored_parameters`; default biases and normalization-layer parameters,
      Li et al.'s choice) are set to 0;
    * ``"filter"``: for tensors with ndim ≥ 2, each filter — the slice ``[j]`` along dim 0, i.e. an output
      unit of a Linear layer or an output channel of a Conv layer — is rescaled, d_{i,j} ← d_{i,j}·‖θ_{i,j}‖/‖d_{i,j}‖;
      tensors with ndim ≤ 1 that are not ignored are rescaled as a whole (one "filter");
    * ``"layer"``: each tensor as a whole, d_i ← d_i·‖θ_i‖/‖d_i‖;
    * ``"none"``: d_i unchanged.

    A filter whose weights are all zero gets a zero direction. Returns a ``(P,)`` tensor on the objective's
    device and dtype.
    """
    if normalization not in NORMALIZATIONS:
        raise InputError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    skip = ignored_parameters(objective, ignore)
    g = torch.Generator().manual_seed(int(seed))
    raw = torch.randn(objective.numel, generator=g, dtype=torch.float64)
    weights = objective.theta.detach().to("cpu", torch.float64)
    parts = []
    for name, shape, d, w in zip(objective.names, objective.shapes, raw.split(objective.sizes), weights.split(objective.sizes)):
        if name in skip:
            d = torch.zeros_like(d)
        elif normalization == "filter" and len(shape) >= 2:
            d, w = d.view(shape[0], -1), w.view(shape[0], -1)
            d = (d * (w.norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True))).reshape(-1)
        elif normalization != "none":
            d = d * (w.norm() / d.norm())
        parts.append(d)
    return torch.cat(parts).to(objective.device, objective.dtype)


def eigen_directions(
    objective: Objective,
    k: int = 2,
    *,
    which: str = "top",
    seed: int | None = 0,
    tol: float = 1e-4,
    max_steps: int | None = None,
    weight_decay: float = 0.0,
) -> tuple[list[Tensor], Any]:
    """The unit Hessian eigenvectors of the ``k`` largest (``which="top"``) or smallest (``"bottom"``) eigenvalues.

    Lanczos with full reorthogonalization (:func:`sharpness.linalg.extreme_eigenvalues`) on
    :class:`~sharpness.hessian.HessianOperator` (of f + weight_decay/2·‖θ‖²). Each vector's sign is fixed so
    its largest entry is positive, which makes the directions (and the plots along them) reproducible.

    Returns:
        ``(directions, eigen)``: k unit ``(P,)`` tensors, and the :class:`~sharpness.linalg.EigenResult` with
        the eigenvalues (top: descending; bottom: ascending), residuals and matvec count.
    """
    from .hessian import HessianOperator
    from .linalg import extreme_eigenvalues

    if which not in ("top", "bottom"):
        raise InputError(f"which must be top or bottom, got {which!r}")
    if not 1 <= k <= objective.numel:
        raise InputError(f"k must be in [1, {objective.numel}], got {k}")
    H = HessianOperator(objective, weight_decay=weight_decay)
    top, bottom = extreme_eigenvalues(
        H,
        top_k=k if which == "top" else 0,
        bottom_k=k if which == "bottom" else 0,
        tol=tol,
        max_steps=max_steps,
        seed=seed,
        return_vectors=True,
    )
    result = top if which == "top" else bottom
    return [v.contiguous() for v in result.vectors.unbind(dim=1)], result


def _as_vector(x: Tensor, name: str, numel: int | None = None) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 1 or (numel is not None and x.shape[0] != numel):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"{name} must be a flat tensor of shape ({numel if numel is not None else 'P'},), got {shape}")
    return x


def checkpoint_direction(theta_a: Tensor, theta_b: Tensor) -> Tensor:
    """θ_b − θ_a: the direction from one solution to another (flat ``(P,)`` tensors)."""
    _as_vector(theta_a, "theta_a")
    _as_vector(theta_b, "theta_b", theta_a.shape[0])
    return theta_b - theta_a


def orthogonalize(d2: Tensor, d1: Tensor) -> Tensor:
    """d₂ − (⟨d₂, d₁⟩/⟨d₁, d₁⟩)·d₁: the part of d₂ orthogonal to d₁ (its norm is not restored)."""
    _as_vector(d1, "d1")
    _as_vector(d2, "d2", d1.shape[0])
    dd = torch.dot(d1, d1)
    if dd == 0:
        raise InputError("cannot orthogonalize against a zero direction d1")
    return d2 - (torch.dot(d2, d1) / dd) * d1


def _fix_sign(v: Tensor) -> Tensor:
    """±v with its largest-magnitude entry positive (eigen- and singular vectors are defined up to sign)."""
    return v if v[v.abs().argmax()] >= 0 else -v


def pca_directions(
    trajectory: Sequence[Tensor] | Tensor, center: Tensor | None = None, k: int = 2
) -> tuple[list[Tensor], np.ndarray]:
    """Principal directions of an optimization trajectory around ``center`` (Li et al. 2018, §7).

    With θ_1..θ_T the trajectory (``(T, P)`` or a list of ``(P,)``) and c the centre (default: the last point),
    M = [θ_t − c]_t is centred column-wise (PCA proper, as Li et al.'s scikit-learn PCA does) and its SVD
    M = U S Vᵀ gives the directions (rows of Vᵀ, unit norm, sign fixed so the largest entry is positive) and
    the explained variance ratios S_i² / Σ_j S_j².

    Returns:
        ``(directions, ratios)``: k unit ``(P,)`` tensors and the ``(k,)`` explained variance ratios.
    """
    M = torch.stack(list(trajectory)) if not isinstance(trajectory, Tensor) else trajectory
    if M.ndim != 2:
        raise InputError(f"expected a trajectory of shape (T, P) or a list of (P,) tensors, got shape {tuple(M.shape)}")
    if center is None:
        center = M[-1]
    _as_vector(center, "center", M.shape[1])
    if not 1 <= k <= M.shape[0] - 1:
        raise InputError(f"PCA of {M.shape[0]} trajectory points gives at most {M.shape[0] - 1} directions, asked for k={k}")
    X = M.to(torch.float64) - center.to(M.device, torch.float64)
    X = X - X.mean(dim=0, keepdim=True)
    _, S, Vh = torch.linalg.svd(X, full_matrices=False)
    var = S.pow(2)
    total = float(var.sum())
    if total == 0:
        raise InputError("the trajectory does not move: every point equals the centre, so it has no principal direction")
    dirs = [_fix_sign(Vh[i]).to(M.dtype) for i in range(k)]
    return dirs, (var[:k] / total).cpu().numpy()


def project(points: Sequence[Tensor] | Tensor, center: Tensor, directions: Sequence[Tensor]) -> np.ndarray:
    """Least-squares coordinates c of each point in the affine plane θ ≈ center + Σ_j c_j d_j: ``(T, k)``.

    Solves the normal equations (DᵀD) c = Dᵀ(θ − center) in float64; for orthonormal directions (PCA) these
    are plain dot products. Used to draw a trajectory over a :func:`plane` of the same directions.
    """
    X = torch.stack(list(points)) if not isinstance(points, Tensor) else points
    D = torch.stack([d.to(torch.float64) for d in directions], dim=1)  # (P, k)
    R = (X.to(torch.float64) - center.to(torch.float64)).T  # (P, T)
    coords = torch.linalg.solve(D.T @ D, D.T @ R)
    return coords.T.cpu().numpy()


# ==========================================================================================================
# Results
# ==========================================================================================================
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


# ==========================================================================================================
# Evaluation of many points
# ==========================================================================================================
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
        loss, hit, _ = objective._sums(out, batch, w, hits=True)
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
                     and getattr(objective, "_plain", True) and bool((objective.targets >= 0).all()))
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
    module: nn.Module = objective._module
    return {k: v for k, v in module.named_buffers() if v is not None and v.is_floating_point()}


@with_precision_policy
def interpolate(
    objective: Objective,
    theta_a: Tensor,
    theta_b: Tensor,
    alphas: Sequence[float] | np.ndarray | None = None,
    *,
    test_objective: Objective | None = None,
    obj_b: Objective | None = None,
    batch_size: int | None = None,
) -> LineResult:
    """Loss and accuracy along the line through two solutions (Keskar et al. 2017, Fig. 3).

        f((1 − α)·θ_a + α·θ_b),   α ∈ ``alphas`` (default: 25 points on [−1, 2], Keskar's range)

    α = 0 is θ_a and α = 1 is θ_b exactly (``grid`` makes 0 and 1 exact values). Keskar et al. write
    f(α·x_LB + (1 − α)·x_SB): pass θ_a = small-batch and θ_b = large-batch solution for their orientation.

    Buffers: the objective's model supplies BatchNorm running statistics. If the two checkpoints have
    different ones, pass ``obj_b`` (an objective built from model b) and the floating-point buffers are
    interpolated with the same weights, so both endpoints reproduce their own checkpoint's loss.
    """
    batch_size = default_batch_size(objective) if batch_size is None else batch_size
    theta_a = _as_vector(theta_a, "theta_a", objective.numel).to(objective.device, objective.dtype)
    theta_b = _as_vector(theta_b, "theta_b", objective.numel).to(objective.device, objective.dtype)
    a = _coords(alphas, grid(-1.0, 2.0, 25), "alphas")
    coords = np.stack([1.0 - a, a], axis=1)
    buffers: dict[str, tuple[Tensor, Tensor]] = {}
    if obj_b is not None:
        _check_compatible(objective, obj_b, "objective of model b")
        bufs_a, bufs_b = _float_buffers(objective), _float_buffers(obj_b)
        buffers = {k: (bufs_a[k], bufs_b[k].to(bufs_a[k])) for k in bufs_a if k in bufs_b and not torch.equal(bufs_a[k], bufs_b[k].to(bufs_a[k]))}

    def make(start: int, stop: int) -> dict[str, Tensor]:
        c = coords[start:stop]
        extra = {k: _affine_points(None, [ba.reshape(-1), bb.reshape(-1)], c).reshape(stop - start, *ba.shape) for k, (ba, bb) in buffers.items()}
        return _stack(objective, _affine_points(None, [theta_a, theta_b], c), extra)

    t0 = time.perf_counter()
    sweep = _Sweep(objective, test_objective, batch_size)
    metrics = sweep.run(make, len(a), exact=np.flatnonzero((a == 0.0) | (a == 1.0)))
    return LineResult(
        alphas=a,
        **metrics,
        kind="interpolation",
        direction_norm=float((theta_b - theta_a).norm()),
        seconds=time.perf_counter() - t0,
        num_evaluations=sweep.num_evaluations,
        config=_grid_config(objective, test_objective, batch_size, interpolated_buffers=sorted(buffers)),
    )


def _grid_config(objective: Objective, test_objective: Objective | None, batch_size: int, **extra: Any) -> dict:
    return {
        "objective": objective.config,
        "test_objective": None if test_objective is None else test_objective.config,
        "batch_size": batch_size,
        **extra,
    }


@with_precision_policy
def line(
    objective: Objective,
    center: Tensor | None,
    d: Tensor,
    alphas: Sequence[float] | np.ndarray | None = None,
    *,
    test_objective: Objective | None = None,
    batch_size: int | None = None,
) -> LineResult:
    """Loss and accuracy on the 1D slice f(θ + α·d) (Li et al. 2018, Fig. 2/5).

    Args:
        center: θ (default: the objective's point); d: the direction ``(P,)``.
        alphas: default ``grid(-1, 1, 51)``, whose middle value is exactly 0, so that point is θ itself.
    """
    batch_size = default_batch_size(objective) if batch_size is None else batch_size
    center = objective.theta if center is None else _as_vector(center, "center", objective.numel)
    center = center.to(objective.device, objective.dtype)
    d = _as_vector(d, "d", objective.numel).to(objective.device, objective.dtype)
    a = _coords(alphas, grid(-1.0, 1.0, 51), "alphas")
    coords = a[:, None]
    t0 = time.perf_counter()
    sweep = _Sweep(objective, test_objective, batch_size)
    metrics = sweep.run(lambda s, e: _stack(objective, _affine_points(center, [d], coords[s:e])), len(a), exact=np.flatnonzero(a == 0.0))
    return LineResult(
        alphas=a,
        **metrics,
        kind="line",
        direction_norm=float(d.norm()),
        seconds=time.perf_counter() - t0,
        num_evaluations=sweep.num_evaluations,
        config=_grid_config(objective, test_objective, batch_size),
    )


def plane_manifest(
    objective: Objective,
    center: Tensor,
    d1: Tensor,
    d2: Tensor,
    alphas: np.ndarray,
    betas: np.ndarray,
    *,
    test_objective: Objective | None = None,
    batch_size: int | None = None,
) -> dict:
    """What a resumable :func:`plane` run is: configuration, grid and SHA-256 digests of every input."""
    batch_size = default_batch_size(objective) if batch_size is None else batch_size

    def data_digest(obj: Objective | None) -> str | None:
        if obj is None:
            return None
        if obj.inputs is None:  # a streamed set: its order-independent content hash stands for the data
            content = np.frombuffer(bytes.fromhex(obj.fingerprint()["sample_sha256"]), dtype=np.uint8)
            return array_digest(content, *_float_buffers(obj).values())
        extras = [] if obj.weights is None else [obj.weights]
        return array_digest(obj.inputs, obj.targets, *extras, *_float_buffers(obj).values())

    return {
        "schema": PLANE_SCHEMA,
        **_grid_config(objective, test_objective, batch_size),
        "names": list(objective.names),
        "center": array_digest(center),
        "d1": array_digest(d1),
        "d2": array_digest(d2),
        "alphas": [float(x) for x in alphas],
        "betas": [float(x) for x in betas],
        "data": data_digest(objective),
        "test_data": data_digest(test_objective),
    }


@with_precision_policy
def plane(
    objective: Objective,
    center: Tensor | None,
    d1: Tensor,
    d2: Tensor,
    alphas: Sequence[float] | np.ndarray | None = None,
    betas: Sequence[float] | np.ndarray | None = None,
    *,
    test_objective: Objective | None = None,
    rundir: RunDir | str | Path | None = None,
    batch_size: int | None = None,
    max_rows: int | None = None,
    row_indices: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PlaneResult:
    """Loss and accuracy on the plane f(θ + α·d₁ + β·d₂) (Li et al. 2018, Fig. 1/6), row by row.

    Args:
        center: θ (default: the objective's point); d1, d2: the directions ``(P,)``.
        alphas, betas: coordinates along d1 (rows of the result) and d2 (columns); default ``grid(-1, 1, 51)``
            each, so (0, 0) is exactly θ.
        rundir: a :class:`~sharpness.rundir.RunDir` or a directory path. Each finished row is written
            atomically (``row-IIIII.npz`` + a done marker) and a rerun with the same arguments continues with
            the missing rows; the final arrays are identical to an uninterrupted run. A directory holding a
            different run (see :func:`plane_manifest`) raises :class:`InputError`.
        batch_size: points per vmapped evaluation (default :func:`default_batch_size`); blocks never span
            rows, so results do not depend on where a run was interrupted.
        max_rows: compute at most this many new rows in this call (the rest stay unmasked).
        row_indices: compute only these rows (others are loaded from ``rundir`` if done, else masked): how
            ranks under torchrun split a grid, each writing its rows into a shared ``rundir``.
        progress: called as ``progress(rows_done, rows_total)`` after each row (it may raise to stop the run;
            rows already recorded in ``rundir`` are kept).
    """
    batch_size = default_batch_size(objective) if batch_size is None else batch_size
    center = objective.theta if center is None else _as_vector(center, "center", objective.numel)
    center = center.to(objective.device, objective.dtype)
    d1 = _as_vector(d1, "d1", objective.numel).to(objective.device, objective.dtype)
    d2 = _as_vector(d2, "d2", objective.numel).to(objective.device, objective.dtype)
    a = _coords(alphas, grid(-1.0, 1.0, 51), "alphas")
    b = _coords(betas, grid(-1.0, 1.0, 51), "betas")
    if rundir is not None and not isinstance(rundir, RunDir):
        rundir = RunDir(rundir, plane_manifest(objective, center, d1, d2, a, b, test_objective=test_objective, batch_size=batch_size))

    only = None if row_indices is None else {int(i) for i in row_indices}
    t0 = time.perf_counter()
    sweep = _Sweep(objective, test_objective, batch_size)
    rows: dict[int, dict[str, np.ndarray | None]] = {}
    computed = 0
    for i, alpha in enumerate(a):
        key = f"row-{i:05d}"
        if rundir is not None and rundir.done(key):
            saved = rundir.load_npz(key)
            rows[i] = {m: saved.get(m) for m in _METRICS}
        elif (max_rows is None or computed < max_rows) and (only is None or i in only):
            coords = np.stack([np.full_like(b, alpha), b], axis=1)
            exact = np.flatnonzero(b == 0.0) if alpha == 0.0 else ()
            rows[i] = sweep.run(lambda s, e: _stack(objective, _affine_points(center, [d1, d2], coords[s:e])), len(b), exact)
            computed += 1
            if rundir is not None:
                rundir.save_npz(key, **{m: v for m, v in rows[i].items() if v is not None})
                rundir.mark_done(key)
        if progress is not None and i in rows:
            progress(len(rows), len(a))

    mask = np.zeros((len(a), len(b)), dtype=bool)
    for i in rows:
        mask[i] = True
    present = {m for row in rows.values() for m, v in row.items() if v is not None}
    if not rows:  # nothing computed yet: report which metrics the run will have
        present = {"train_loss", "test_loss"} if test_objective is not None else {"train_loss"}
        if objective.has_accuracy:
            present |= {m.replace("loss", "acc") for m in present}
    metrics: dict[str, np.ndarray | None] = {}
    for m in _METRICS:
        if m not in present:
            metrics[m] = None
            continue
        arr = np.full((len(a), len(b)), np.nan)
        for i, row in rows.items():
            arr[i] = row[m]
        metrics[m] = arr
    return PlaneResult(
        alphas=a,
        betas=b,
        mask=mask,
        **metrics,
        direction_norms=(float(d1.norm()), float(d2.norm())),
        seconds=time.perf_counter() - t0,
        num_evaluations=sweep.num_evaluations,
        config=_grid_config(objective, test_objective, batch_size, rundir=None if rundir is None else str(rundir.path)),
    )


def load_result(path: str | Path) -> LineResult | PlaneResult:
    """Read a saved :class:`LineResult` or :class:`PlaneResult` (told apart by the ``betas`` array)."""
    with np.load(Path(path), allow_pickle=False) as data:
        is_plane = "betas" in data.files
    return PlaneResult.load(path) if is_plane else LineResult.load(path)


DIRECTIONS = ("random", "eigen", "pca")


@with_precision_policy
def landscape(
    objective: Objective,
    *,
    dims: int = 2,
    directions: str = "random",
    normalization: str = "filter",
    ignore: str | Sequence[str] = ("bias", "bn"),
    seed: int = 0,
    trajectory: Sequence[Tensor] | Tensor | None = None,
    alphas: Sequence[float] | np.ndarray | None = None,
    betas: Sequence[float] | np.ndarray | None = None,
    test_objective: Objective | None = None,
    rundir: RunDir | str | Path | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    tol: float = 1e-4,
) -> LineResult | PlaneResult:
    """One call from a checkpoint's objective to a 1D slice (``dims=1``) or a 2D plane (``dims=2``) around it.

    Directions: ``"random"`` — :func:`random_direction` with seeds ``seed`` and ``seed + 1`` (Li et al. 2018;
    in high dimension two Gaussian directions are nearly orthogonal); ``"eigen"`` — the top ``dims`` Hessian
    eigenvectors (:func:`eigen_directions`, unit norm, so choose ``alphas`` on the scale 1/√λ); ``"pca"`` —
    the principal directions of ``trajectory`` around the checkpoint (:func:`pca_directions`).
    The result's ``config["directions"]`` records the choice (and the eigenvalues or explained variances).
    ``rundir`` and ``progress`` apply to planes only.
    """
    if dims not in (1, 2):
        raise InputError(f"dims must be 1 or 2, got {dims}")
    if directions == "random":
        dirs = [random_direction(objective, normalization=normalization, ignore=ignore, seed=seed + i) for i in range(dims)]
        info: dict[str, Any] = {"kind": "random", "normalization": normalization, "ignore": ignore if isinstance(ignore, str) else list(ignore), "seeds": [seed + i for i in range(dims)]}
    elif directions == "eigen":
        dirs, eig = eigen_directions(objective, dims, seed=seed, tol=tol)
        info = {"kind": "eigen", "eigenvalues": [float(v) for v in eig.values], "num_matvecs": int(eig.num_matvecs)}
    elif directions == "pca":
        if trajectory is None:
            raise InputError("directions='pca' needs a trajectory (a list of flat parameter vectors), got none")
        dirs, ratios = pca_directions(trajectory, objective.theta, k=dims)
        info = {"kind": "pca", "explained_variance_ratio": [float(r) for r in ratios]}
    else:
        raise InputError(f"directions must be one of {', '.join(DIRECTIONS)}, got {directions!r}")
    if dims == 1:
        result: LineResult | PlaneResult = line(objective, None, dirs[0], alphas, test_objective=test_objective, batch_size=batch_size)
    else:
        result = plane(objective, None, dirs[0], dirs[1], alphas, betas, test_objective=test_objective, rundir=rundir, batch_size=batch_size, progress=progress)
    return dataclasses.replace(result, config={**result.config, "directions": info})


# ==========================================================================================================
# Curvature from a slice
# ==========================================================================================================
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


__all__ = [
    "random_direction",
    "ignored_parameters",
    "eigen_directions",
    "checkpoint_direction",
    "pca_directions",
    "project",
    "orthogonalize",
    "grid",
    "interpolate",
    "line",
    "plane",
    "plane_manifest",
    "landscape",
    "load_result",
    "fit_curvature",
    "LineResult",
    "PlaneResult",
    "CurvatureFit",
    "default_batch_size",
    "NORM_LAYERS",
]
