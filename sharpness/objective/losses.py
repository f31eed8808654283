"""Losses by name, per example: the one home of ℓ for training, the objective, the landscape and tracking.

Two interfaces, one meaning (the objective's f is Σ w ℓ / Σ w over every *example*, where an example is a
sample, or a token of a sequence):

* :func:`per_sample_loss` — ``(N, ...)`` outputs and targets of an in-memory tensor set → ``(N,)``. For
  sequence outputs ``(N, T, V)`` with labels ``(N, T)`` a sample's loss is the mean over its T tokens, which
  weights every token equally because every sample has the same T (the text windows of :mod:`sharpness.data`).
* :func:`example_losses` — the general form used for the researcher's own batches: ``(losses, weights, hits)``
  with one entry per example, so sequences of any length, ``ignore_index`` and masks weight every *token*
  exactly (weight 0 for an ignored token, 1 otherwise).

Names (:data:`LOSSES`): ``"cross-entropy"`` (integer labels, optional label smoothing and ``ignore_index``),
``"mse"`` (per-sample mean of squared errors over the output dimensions, so a scalar-output linear model has
the textbook Hessian H = 2/N·XᵀX), ``"bce"`` (binary cross-entropy on logits, float targets in [0, 1],
per-sample mean over the output dimensions), ``"causal-lm"`` (cross-entropy of the logits at position t
against the label at t + 1, for models such as Hugging Face's ``*ForCausalLM`` that take unshifted ``labels``;
with ``ignore_index``, exactly the loss those models compute themselves).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

LOSSES = ("cross-entropy", "mse", "bce", "causal-lm")
#: The label that marks an example to leave out (PyTorch's and Hugging Face's convention).
IGNORE_INDEX = -100


def cross_entropy_and_argmax(output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(ℓ_i, k_i) for ``(..., C)`` logits: the loss of :func:`per_sample_loss` and an index of the largest logit.

    The index comes free with the max the stable formula needs, so a caller that also counts hits (the loss
    landscape's grid) needs neither a second reduction nor a formula of its own. It is the first maximal index
    of d = z − z_y, and ``k_i == y_i`` exactly when ``torch.argmax(z_i) == y_i`` (d_j = 0 iff z_j = z_y, since a
    difference of distinct floats never rounds to zero; d preserves the order of z up to rounding ties that
    never involve y). Works on any leading shape: ``(N, C)`` with ``(N,)``, ``(N, T, V)`` with ``(N, T)``.
    """
    d = output - output.gather(-1, target.unsqueeze(-1))
    m, k = d.detach().max(dim=-1, keepdim=True)  # m ≥ 0 because d_y = 0; a constant, see per_sample_loss
    # The y term leaves the sum by masking (exp(−inf) = 0, with zero derivatives), never by subtracting 1.
    rest = torch.exp((d - m).scatter(-1, target.unsqueeze(-1), -math.inf)).sum(dim=-1, keepdim=True)
    losses = m + torch.log1p(rest + torch.expm1(-m))
    return losses.squeeze(-1), k.squeeze(-1)


def per_sample_loss(kind: str, output: Tensor, target: Tensor) -> Tensor:
    """ℓ_i for each sample: ``"cross-entropy"`` −log softmax(z_i)[y_i], ``"mse"`` mean_j (z_ij − t_ij)², or
    ``"bce"`` mean_j [softplus(z_ij) − z_ij t_ij].

    Cross-entropy of logits z ∈ R^C and label y, with d = z − z_y (so d_y = 0) and any constant m:

        ℓ = logsumexp(z) − z_y = logsumexp(d) = m + log1p(Σ_{j≠y} exp(d_j − m) + expm1(−m)),

    an identity in d for every m; m = max_j d_j ≥ 0 at the point, then held constant (detached), so every
    exponent is ≤ 0 (no overflow, no inf in any value or derivative) and the derivatives of the formula are the
    exact derivatives of ℓ. Why it keeps its digits in float32:

    * correctly classified (m = 0): expm1(0) = 0 exactly and ℓ = log1p(S), S = Σ_{j≠y} exp(d_j), keeps all
      its digits however small ℓ is. The textbook logsumexp(z) − z_y computes log(1 + S) and cancels: in
      float32 it loses the whole loss below S ≈ 6e-8 (−24 % at a mean loss of 1e-6, measured;
      F.cross_entropy in float32 is off by a median 9 % per sample there);
    * misclassified (m > 0): ℓ ≥ m + log(1 + e^{−m}) > log 2 and both terms are ≥ 0: nothing cancels;
    * the gradient: ∂ℓ/∂d_j = p_j for j ≠ y, and ∂ℓ/∂z_y = −Σ_{j≠y} p_j is a sum of the small p_j rather than
      1 − p_y, which would round to 0 (the pitfall of a max-based form whose ∂/∂z_y is (1 − …) − 1).

    Shapes: ``output`` ``(N, C)``, ``target`` ``(N,)`` long → ``(N,)``; sequences ``(N, T, V)`` with ``(N, T)``
    → ``(N,)``, the mean over the T tokens. No ``torch.where`` over branches: one formula, so no discarded
    branch can feed inf·0 = NaN into a gradient. The formula costs somewhat more than the cancelling one for
    the loss alone, little through a whole model (benchmarks/README.md); every value, gradient and grid point of
    the toolkit goes through here.
    """
    check_loss_shapes(kind, output, target)
    if kind == "cross-entropy":
        losses = cross_entropy_and_argmax(output, target)[0]
        return losses if losses.ndim == 1 else losses.reshape(losses.shape[0], -1).mean(dim=1)
    if kind == "bce":
        z = output.reshape(output.shape[0], -1)
        return F.binary_cross_entropy_with_logits(z, target.reshape(target.shape[0], -1), reduction="none").mean(dim=1)
    diff = output.reshape(output.shape[0], -1) - target.reshape(target.shape[0], -1)
    return diff.pow(2).mean(dim=1)


def check_loss_shapes(kind: str, output: Tensor, target: Tensor) -> None:
    """Refuse outputs and targets that do not pair up sample by sample, whatever the loss.

    Broadcasting would otherwise turn a mistake into a number: ``(N, 10)`` logits minus ``(N,)`` float labels
    is an ``(N, 10)`` difference, and its mean squared error is reported as if it meant something."""
    n = output.shape[0] if output.ndim else None
    if kind == "cross-entropy":
        if output.ndim < 2 or target.shape != output.shape[:-1] or target.is_floating_point():
            raise InputError(
                f"cross-entropy expects outputs of shape (N, classes) or (N, T, vocab) with (N,) or (N, T) integer "
                f"labels, got outputs of shape {tuple(output.shape)} and "
                f"{'float' if target.is_floating_point() else 'integer'} targets of shape {tuple(target.shape)}")
        return
    if target.ndim == 0 or n != target.shape[0] or output[0].numel() != target[0].numel():
        hint = " (class labels? store them as integers for cross-entropy)" if target.ndim == 1 and output.ndim == 2 else ""
        raise InputError(
            f"{kind} expects targets with the model's output shape {tuple(output.shape[1:])} per sample, got targets "
            f"of shape {tuple(target.shape[1:])} per sample{hint}")


def per_sample_hits(kind: str, output: Tensor, target: Tensor) -> Tensor | None:
    """The fraction of each sample's predictions that are right, ``(N,)``; None where accuracy is undefined.

    Classification: [argmax z_i = y_i] (for a sequence, the fraction of its tokens); ``"bce"``: the fraction
    of outputs with [z > 0] = [t > ½]; ``"mse"``: None.
    """
    if kind == "cross-entropy":
        hits = output.argmax(dim=-1) == target
        return hits if hits.ndim == 1 else hits.reshape(hits.shape[0], -1).to(output.dtype).mean(dim=1)
    if kind == "bce":
        hits = (output.reshape(output.shape[0], -1) > 0) == (target.reshape(target.shape[0], -1) > 0.5)
        return hits.to(output.dtype).mean(dim=1)
    return None


def example_losses(
    kind: str,
    output: Tensor,
    target: Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(losses, weights, hits)`` with one entry per example, for batches of any shape.

    ``"cross-entropy"``: ``output`` ``(..., C)`` logits and ``target`` ``(...)`` labels (``(B,)`` classes,
    ``(B, T)`` tokens). A label equal to ``ignore_index`` gets weight 0 (and a harmless stand-in label), every
    other one weight 1, so Σ w ℓ / Σ w is the mean over the tokens that count, whatever the batch holds.
    With label smoothing α the target is (1 − α)·onehot(y) + α/C, whose loss is

        ℓ_α = (1 − α)(lse(z) − z_y) + α(lse(z) − mean_j z_j) = ℓ + α (z_y − mean_j z_j),

    (``F.cross_entropy(..., label_smoothing=α)``), built on the stable ℓ of :func:`per_sample_loss`.
    ``weights`` is None when every example counts fully; ``hits`` is [argmax z = y] per example.
    ``"mse"`` / ``"bce"``: one example per sample, as :func:`per_sample_loss`; no weights.
    """
    if kind == "causal-lm":  # position t predicts label t + 1
        output, target, kind = output[:, :-1], target[:, 1:], "cross-entropy"
    if kind == "cross-entropy":
        if target.is_floating_point():
            raise InputError(f"cross-entropy expects integer class labels, got {str(target.dtype).removeprefix('torch.')} targets")
        if output.shape[:-1] != target.shape:
            raise InputError(
                f"cross-entropy expects logits of shape (*labels shape, classes), got logits {tuple(output.shape)} "
                f"for labels {tuple(target.shape)}"
            )
        valid = target != ignore_index
        ignored = not bool(valid.all())
        safe = torch.where(valid, target, torch.zeros_like(target)) if ignored else target
        losses, k = cross_entropy_and_argmax(output, safe)
        if label_smoothing:
            z_y = output.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
            losses = losses + label_smoothing * (z_y - output.mean(dim=-1))
        hits = (k == safe).to(output.dtype)
        weights = valid.to(output.dtype) if ignored else None
        return losses, weights, hits
    if kind not in LOSSES:
        raise InputError(f"loss must be one of {', '.join(LOSSES)} or a callable, got {kind!r}")
    if target.shape[0] != output.shape[0] or not target.is_floating_point():
        raise InputError(
            f"{kind} expects floating-point targets with one row per output row, got {str(target.dtype).removeprefix('torch.')} "
            f"targets {tuple(target.shape)} for outputs {tuple(output.shape)}"
        )
    return per_sample_loss(kind, output, target), None, per_sample_hits(kind, output, target)
