"""The stability threshold on λ_max an optimizer implies (2/η for gradient descent; the momentum, Nesterov,
dampening and weight-decay cases and why Adam has none are derived in the :mod:`sharpness.tracking` docstring)."""

from __future__ import annotations

import math

import torch

def stability_threshold(optimizer: torch.optim.Optimizer | None = None, *, lr: float | None = None) -> tuple[float | None, str]:
    """The largest λ_max for which the optimizer is stable on a quadratic, and the formula used.

    Args:
        optimizer: the training optimizer (its first parameter group's ``lr``, ``momentum``, ``nesterov``,
            ``dampening``, ``weight_decay`` are read); ``None``: plain gradient descent with step ``lr``.
        lr: the step size η; default: the optimizer's (all parameter groups must share it).

    Returns:
        ``(threshold, formula)``: see the module docstring. ``threshold`` is ``None`` when no threshold on
        λ_max(H) applies (adaptive optimizers, parameter groups with different settings, unknown lr);
        ``formula`` then says why.

    Example:
        >>> stability_threshold(lr=0.05)
        (40.0, '2/lr')
    """
    if optimizer is None:
        if lr is None:
            return None, "none: no learning rate given"
        return _positive(lr, 2.0 / lr), "2/lr"
    groups = optimizer.param_groups
    keys = ("lr", "momentum", "nesterov", "dampening", "weight_decay")
    settings = {tuple(g.get(k) for k in keys) for g in groups}
    if len(settings) > 1:
        return None, "none: parameter groups with different settings (one threshold per group)"
    g = groups[0]
    lr = float(g["lr"]) if lr is None else float(lr)
    name = type(optimizer).__name__
    if not isinstance(optimizer, torch.optim.SGD):
        return None, (f"none: {name} is adaptive; its edge of stability concerns the preconditioned Hessian "
                      "(Cohen et al. 2022), not λ_max(H)")
    beta = float(g.get("momentum", 0.0) or 0.0)
    damp = float(g.get("dampening", 0.0) or 0.0)
    wd = float(g.get("weight_decay", 0.0) or 0.0)
    eta = lr * (1.0 - damp) if beta else lr  # torch applies dampening only with momentum
    if beta == 0.0:
        value, formula = 2.0 / eta, "2/lr"
    elif g.get("nesterov", False):
        value, formula = (2 + 2 * beta) / ((1 + 2 * beta) * eta), f"(2+2β)/((1+2β)·lr), β={beta:g}"
    else:
        value, formula = (2 + 2 * beta) / eta, f"(2+2β)/lr, β={beta:g}"
    if beta and damp:
        formula = formula.replace("lr", "lr·(1−d)") + f", d={damp:g}"
    if wd:
        value, formula = value - wd, f"{formula} − wd, wd={wd:g}"
    return _positive(lr, value), formula


def _positive(lr: float, value: float) -> float | None:
    return value if lr > 0 and math.isfinite(value) else None
