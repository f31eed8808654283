"""Directions in parameter space: filter-normalized random (Li et al. 2018), Hessian eigenvectors, the line
between two solutions, principal components of a trajectory; and the one choice among them that
:func:`sharpness.landscape.landscape` and ``sharpness landscape`` make (:func:`choose_directions`).

Every direction is a flat ``(P,)`` tensor in the parameter order of an :class:`~sharpness.objective.Objective`
(:attr:`~sharpness.objective.Objective.names`), on its device and in its dtype.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from ..objective import Objective

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
DIRECTIONS = ("random", "eigen", "pca", "checkpoint")


def _norm_layer_parameters(objective: Objective) -> set[str]:
    """Names of parameters owned by normalization modules (identified by type, not by name)."""
    module: nn.Module = objective.module
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
    from ..hessian.operator import HessianOperator
    from ..linalg import extreme_eigenvalues

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


def choose_directions(
    objective: Objective,
    kind: str,
    dims: int,
    *,
    normalization: str = "filter",
    ignore: str | Sequence[str] = ("bias", "bn"),
    seed: int = 0,
    trajectory: Sequence[Tensor] | Tensor | None = None,
    targets: Sequence[Tensor] | None = None,
    tol: float = 1e-4,
) -> tuple[list[Tensor], dict[str, Any]]:
    """The ``dims`` directions of a slice around the objective's point, and a record of the choice.

    ``kind``: ``"random"`` — :func:`random_direction` with seeds ``seed, seed + 1, …``; ``"eigen"`` — the top
    ``dims`` Hessian eigenvectors (:func:`eigen_directions`, tolerance ``tol``); ``"pca"`` — the principal
    directions of ``trajectory`` around the objective's point (:func:`pca_directions`); ``"checkpoint"`` —
    θ_t − θ towards each of the ``dims`` flat parameter vectors ``targets`` (:func:`checkpoint_direction`).

    Returns ``(directions, info)``; ``info["kind"]`` is ``kind``, with the seeds, the eigenvalues (descending)
    and matvecs, or the explained variance ratios.
    """
    if dims not in (1, 2):
        raise InputError(f"dims must be 1 or 2, got {dims}")
    info: dict[str, Any] = {"kind": kind}
    if kind == "random":
        dirs = [random_direction(objective, normalization=normalization, ignore=ignore, seed=seed + i) for i in range(dims)]
        info.update(normalization=normalization, ignore=ignore if isinstance(ignore, str) else list(ignore),
                    seeds=[seed + i for i in range(dims)])
    elif kind == "eigen":
        dirs, eig = eigen_directions(objective, dims, seed=seed, tol=tol)
        info.update(eigenvalues=[float(v) for v in eig.values], num_matvecs=int(eig.num_matvecs))
    elif kind == "pca":
        if trajectory is None:
            raise InputError("directions='pca' needs a trajectory (a list of flat parameter vectors), got none")
        dirs, ratios = pca_directions(trajectory, objective.theta, k=dims)
        info.update(explained_variance_ratio=[float(r) for r in ratios])
    elif kind == "checkpoint":
        if targets is None or len(targets) != dims:
            raise InputError(f"directions='checkpoint' needs {dims} target parameter vector(s), got "
                             f"{0 if targets is None else len(targets)}")
        dirs = [checkpoint_direction(objective.theta, t.to(objective.device, objective.dtype)) for t in targets]
    else:
        raise InputError(f"directions must be one of {', '.join(DIRECTIONS)}, got {kind!r}")
    return dirs, info
