"""PyTorch's loss modules (``loss=nn.CrossEntropyLoss()``, as PyHessian and curvlinops users pass them).

The objective's contract is ``loss(outputs, batch) -> per-example losses`` (optionally with per-example weights,
constant in θ) and f = Σ w ℓ / Σ w over the whole analysis set. A standard loss module is turned into that
contract by :func:`module_loss`: a private clone with ``reduction="none"`` (the user's object is never touched)
is called as ``clone(outputs, target)``, with ``target`` the batch's target (last element of a tuple,
``batch[target_key]`` of a dict), and its settings (``weight``, ``ignore_index``, ``label_smoothing``,
``pos_weight``, ``beta``, ``delta``, ``margin``, ``log_target``, …) act exactly as in the module.

How ``reduction="mean"`` over the full set is reproduced (the module's own reduction, applied to all N at once):

* ``CrossEntropyLoss`` / ``NLLLoss`` with class-index targets y: the module's mean is Σ_i r_i / Σ_i c_i with r_i
  the ``reduction="none"`` loss (already multiplied by the class weight) and c_i = weight[y_i] (1 without
  ``weight=``) for entries whose label is not ``ignore_index``, 0 for ignored ones. Returned as losses
  ℓ_i = r_i / c_i with weights c_i (ℓ_i = r_i = 0 where c_i = 0), so Σ c ℓ / Σ c is that mean. With
  ``label_smoothing`` an entry of a class of weight 0 still adds to the numerator (its smoothing term), which
  no per-example weighting can express: that combination is refused.
* every other supported module (and ``CrossEntropyLoss`` with class-probability targets): the mean over the
  elements of the ``reduction="none"`` output, i.e. weight 1 per element (``BCELoss``' ``weight=`` rescales
  elements without entering the divisor, as in PyTorch). ``KLDivLoss(reduction="batchmean")``: the per-sample
  sums, averaged over samples.

Accuracy (reports, landscapes) is defined as for the built-in losses for an unweighted ``CrossEntropyLoss`` /
``NLLLoss`` / ``BCEWithLogitsLoss`` with ``reduction="mean"``: the fraction of non-ignored examples whose argmax
over the class dimension is the label (the most probable class of a probability target), or [z > 0] = [t > ½].
With class weights the mean's divisor is a weight, not a count, so no accuracy is reported.

``reduction="none"`` is taken as the contract's per-example losses (their plain mean: what a callable returning
``module(outputs, target)`` would give); ``reduction="sum"`` is refused (f is a mean; the sum's curvature is N
times it). ``MultiMarginLoss`` and ``MultiLabelMarginLoss`` are refused: their backward has no derivative in
PyTorch. Losses that take other arguments (``GaussianNLLLoss``' variance, ranking and triplet losses, CTC)
and subclasses of the modules (their ``forward`` may differ) are refused in one line that states the contract.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import batches as B
from ..errors import InputError

#: Class-index losses whose mean divides by the total weight of the non-ignored targets.
CLASS_WEIGHTED = (nn.CrossEntropyLoss, nn.NLLLoss)
#: Losses whose target has the output's shape, element by element (PyTorch only warns when it broadcasts).
SAME_SHAPE = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss,
              nn.SoftMarginLoss, nn.KLDivLoss, nn.PoissonNLLLoss, nn.HingeEmbeddingLoss, nn.MultiLabelSoftMarginLoss)
SUPPORTED = CLASS_WEIGHTED + SAME_SHAPE
#: Loss modules whose backward is one kernel without a derivative of its own: no Hessian-vector product.
NO_SECOND_DERIVATIVE = (nn.MultiMarginLoss, nn.MultiLabelMarginLoss)
CONTRACT = "loss(outputs, batch) -> per-example losses of shape (N, ...), optionally (losses, weights)"
_SETTINGS = ("ignore_index", "label_smoothing", "beta", "delta", "margin", "p", "log_target", "log_input", "full",
             "eps", "reduction")


def describe_loss_module(module: nn.Module) -> str:
    """How a loss module is recorded: ``torch.nn.CrossEntropyLoss(ignore_index=-100, …, weight=[…])``."""
    parts = [f"{k}={getattr(module, k)!r}" for k in _SETTINGS if hasattr(module, k)]
    for k in ("weight", "pos_weight"):
        t = getattr(module, k, None)
        if isinstance(t, Tensor):
            parts.append(f"{k}={[round(float(v), 6) for v in t.reshape(-1)[:8]]}{'…' if t.numel() > 8 else ''}")
    return f"torch.nn.{type(module).__name__}({', '.join(parts)})"


def module_loss(loss: Any, target_key: str = "labels") -> Callable | None:
    """A :class:`ModuleLoss` for a standard PyTorch loss module (also one loaded by ``--loss FILE.py:NAME``),
    None for anything that is not a ``torch.nn`` loss (an ordinary callable), and an :class:`InputError` for a
    loss module the contract cannot carry (see the module docstring)."""
    inner = getattr(loss, "fn", loss) if hasattr(loss, "sharpness_ref") else loss
    if not isinstance(inner, nn.modules.loss._Loss):
        return None
    name = type(inner).__name__
    if type(inner) in NO_SECOND_DERIVATIVE:
        raise InputError(f"loss={name}() has no second derivative in PyTorch (its backward is not differentiable); "
                         f"expected a loss module with one, a built-in loss name or a callable {CONTRACT} written "
                         "from differentiable ops")
    if type(inner) not in SUPPORTED:
        raise InputError(
            f"loss={name}() is not a supported loss module (supported: {', '.join(c.__name__ for c in SUPPORTED)}); "
            f"expected one of those, a built-in loss name or a callable {CONTRACT}")
    reduction = getattr(inner, "reduction", "mean")
    if reduction not in ("mean", "none", "batchmean"):
        raise InputError(f"loss={name}(reduction={reduction!r}): the analysis loss is a mean over the analysis set; "
                         "expected reduction='mean' (or 'none', 'batchmean') — a sum's Hessian is N times the mean's")
    weight = getattr(inner, "weight", None)
    if getattr(inner, "label_smoothing", 0.0) and isinstance(weight, Tensor) and bool((weight == 0).any()):
        raise InputError(f"loss={name}(label_smoothing=…, weight=…) with a class weight of 0: its mean cannot be "
                         "written as per-example losses and weights; expected positive class weights")
    return ModuleLoss(inner, target_key, ref=getattr(loss, "sharpness_ref", None))


class ModuleLoss:
    """``loss(outputs, batch) -> (losses, weights | None)`` from a loss module (see the module docstring)."""

    def __init__(self, module: nn.modules.loss._Loss, target_key: str = "labels", *, ref: str | None = None) -> None:
        self.reduction = getattr(module, "reduction", "mean")
        self.clone = copy.deepcopy(module)  # a private copy: its reduction and buffers' device may change
        self.clone.reduction = "none"
        self.target_key = target_key
        self.sharpness_ref = ref or describe_loss_module(module)
        self._placed: tuple | None = None
        #: Accuracy where it means what the built-in losses' does: a classification loss averaged by reduction
        #: "mean" without weights, so Σ w·hit / Σ w counts each non-ignored example once.
        unweighted = getattr(module, "weight", None) is None and getattr(module, "pos_weight", None) is None
        self.has_accuracy = (self.reduction == "mean" and unweighted
                             and isinstance(module, CLASS_WEIGHTED + (nn.BCEWithLogitsLoss,)))

    def hits(self, outputs: Tensor, batch: Any) -> Tensor:
        """[prediction right] per example, shaped like the losses: argmax over the class dimension (1) equals
        the label (or the most probable class of a probability target); for ``BCEWithLogitsLoss``, [z > 0] = [t > ½]."""
        target = B.batch_target(batch, self.target_key)
        if isinstance(self.clone, nn.BCEWithLogitsLoss):
            return ((outputs > 0) == (target > 0.5)).to(outputs.dtype)
        if target.is_floating_point():
            target = target.argmax(dim=1)
        return (outputs.argmax(dim=1) == target).to(outputs.dtype)

    def _place(self, outputs: Tensor) -> None:
        # Class weights must match the logits' dtype and device (PyTorch refuses float32 weights for float64).
        where = (outputs.device, outputs.dtype)
        if self._placed != where:
            self.clone.to(device=where[0], dtype=where[1])
            self._placed = where

    def __call__(self, outputs: Tensor, batch: Any) -> tuple[Tensor, Tensor | None]:
        target = B.batch_target(batch, self.target_key)
        self._place(outputs)
        m = self.clone
        name = type(m).__name__
        if isinstance(m, SAME_SHAPE) and tuple(target.shape) != tuple(outputs.shape):
            raise InputError(f"{name} expects targets of the outputs' shape {tuple(outputs.shape)}, got "
                             f"{tuple(target.shape)} (it would broadcast them)")
        r = m(outputs, target)
        if self.reduction == "batchmean":
            return r.reshape(r.shape[0], -1).sum(dim=1), None
        if self.reduction == "mean" and isinstance(m, CLASS_WEIGHTED) and not target.is_floating_point():
            c = (target != m.ignore_index).to(r.dtype)
            if m.weight is not None:
                c = c * m.weight[torch.where(c > 0, target, torch.zeros_like(target))]
            return torch.where(c > 0, r / torch.where(c > 0, c, torch.ones_like(c)), r), c
        return r, None
