"""Norm-based measures that are not sharpness: the Fisher-Rao norm (the parameter norms are one line in study).

Fisher-Rao norm (Liang, Poggio, Rakhlin & Stokes, AISTATS 2019, "Fisher-Rao Metric, Geometry, and Complexity of
Neural Networks", Def. 1 and Lemma 2.1; used as "fisher-rao" by Jiang et al., ICLR 2020):

    ‖θ‖²_fr = (1/n) Σ_i ⟨θ, ∇_θ ℓ(f_θ(x_i), y_i)⟩²,

each inner product the derivative of the sample's loss along θ itself, d/dt ℓ_i((1 + t)θ) at t = 0: one
forward-mode product (``torch.func.jvp``) per chunk, no per-sample gradients. For a bias-free ReLU network of
L + 1 weight layers f is (L + 1)-homogeneous in θ, so ⟨θ, ∇_θ ℓ_i⟩ = (L + 1)·⟨∂ℓ/∂f, f(x_i)⟩ and the
definition equals Liang et al.'s (L + 1)²·E⟨∂ℓ/∂f, f⟩²; with biases it is the directional form above.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from ..objective.losses import per_sample_loss

__all__ = ["fisher_rao_norm"]


def fisher_rao_norm(model: nn.Module, x: Tensor, y: Tensor, kind: str = "cross-entropy", *,
                    chunk_size: int = 4096) -> float:
    """‖θ‖_fr (the square root of the module docstring's mean) of ``model`` at its weights on ``(x, y)``.

    ``kind``: a loss of :func:`sharpness.objective.losses.per_sample_loss`. The model is called through
    ``functional_call`` on detached copies of its parameters, in ``x``'s dtype and device: it is not modified (put it in eval mode first
    if it has dropout or BatchNorm)."""
    def like_x(v: Tensor) -> Tensor:  # the computation runs in the inputs' dtype and on their device
        return v.detach().to(x.device, x.dtype) if v.is_floating_point() else v.detach().to(x.device)

    params = {k: like_x(v) for k, v in model.named_parameters()}
    buffers = {k: like_x(v) for k, v in model.named_buffers()}
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, x.shape[0], chunk_size):
        xc, yc = x[start:start + chunk_size], y[start:start + chunk_size]

        def losses(p: dict[str, Tensor]) -> Tensor:
            return per_sample_loss(kind, functional_call(model, {**p, **buffers}, (xc,)), yc)

        _, along = jvp(losses, (params,), (params,))
        total += (along.detach().double() ** 2).sum().cpu()
    return float(torch.sqrt(total / x.shape[0]))
