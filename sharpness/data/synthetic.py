"""Generated data: Gaussian blobs (classification) and a random teacher's outputs plus noise (regression)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import InputError
from .dataset import _check_float, _check_int, _Raw


def _load_blobs(
    *, data_dir, seed, n: int = 600, n_test: int = 200, dim: int = 2, classes: int = 3,
    std: float = 1.0, center_scale: float = 3.0,
) -> _Raw:
    """Gaussian blobs: class centres ~ N(0, center_scale² I); samples = centre + N(0, std² I).

    Labels cycle ``0..classes-1`` (balanced) and are shuffled; train and test come from one generator.
    """
    label = "dataset 'blobs'"
    # checked in argument order, so the first bad one is the one reported
    n, n_test, dim, classes = (_check_int(k, v, minimum=m, label=label)
                               for k, v, m in (("n", n, 1), ("n_test", n_test, 0), ("dim", dim, 1), ("classes", classes, 2)))
    std, center_scale = (_check_float(k, v, minimum=0.0, label=label) for k, v in (("std", std), ("center_scale", center_scale)))
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g, dtype=torch.float64) * center_scale

    def draw(m: int) -> tuple[Tensor, Tensor]:
        y = (torch.arange(m) % classes)[torch.randperm(m, generator=g)]
        x = centers[y] + std * torch.randn(m, dim, generator=g, dtype=torch.float64)
        return x.float(), y

    x, y = draw(n)
    xt, yt = draw(n_test) if n_test else (None, None)
    args = {"n": n, "n_test": n_test, "dim": dim, "classes": classes, "std": std, "center_scale": center_scale}
    return _Raw(x, y, xt, yt, "classification", classes, args)


def _load_teacher_student(
    *, data_dir, seed, n: int = 1000, n_test: int = 250, dim: int = 10, out_dim: int = 1,
    teacher: str = "linear", hidden: int = 32, noise: float = 0.1,
) -> _Raw:
    """Regression on a random teacher: x ~ N(0, I_dim), y = f(x) + noise·N(0, I_out_dim), y of shape (N, out_dim).

    ``teacher="linear"``: f(x) = W x with W_ij ~ N(0, 1/dim).
    ``teacher="mlp"``: f(x) = V tanh(W x) with W_ij ~ N(0, 1/dim), V_ij ~ N(0, 1/hidden).
    """
    label = "dataset 'teacher-student'"
    n, n_test, dim, out_dim, hidden = (
        _check_int(k, v, minimum=m, label=label)
        for k, v, m in (("n", n, 1), ("n_test", n_test, 0), ("dim", dim, 1), ("out_dim", out_dim, 1), ("hidden", hidden, 1))
    )
    noise = _check_float("noise", noise, minimum=0.0, label=label)
    if teacher not in ("linear", "mlp"):
        raise InputError(f"expected teacher 'linear' or 'mlp' for {label}, got {teacher!r}")
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    if teacher == "linear":
        w = torch.randn(out_dim, dim, generator=g, dtype=f64) / math.sqrt(dim)

        def f(x):
            return x @ w.T
    else:
        w1 = torch.randn(hidden, dim, generator=g, dtype=f64) / math.sqrt(dim)
        w2 = torch.randn(out_dim, hidden, generator=g, dtype=f64) / math.sqrt(hidden)

        def f(x):
            return torch.tanh(x @ w1.T) @ w2.T

    def draw(m: int) -> tuple[Tensor, Tensor]:
        x = torch.randn(m, dim, generator=g, dtype=f64)
        y = f(x) + noise * torch.randn(m, out_dim, generator=g, dtype=f64)
        return x.float(), y.float()

    x, y = draw(n)
    xt, yt = draw(n_test) if n_test else (None, None)
    args = {"n": n, "n_test": n_test, "dim": dim, "out_dim": out_dim, "teacher": teacher, "hidden": hidden, "noise": noise}
    return _Raw(x, y, xt, yt, "regression", None, args)
