"""Second derivatives through convolutions without PyTorch's waste: the data's gradient, slow backward kernels.

A Hessian-vector product by double backward differentiates the gradient graph once more. For a convolution
z = conv(x, W) + b the gradient graph holds ∂f/∂W = convolution_backward(δ, x, W), δ = ∂f/∂z, and its derivative
along a tangent V of W is wanted with respect to δ only, conv(x, V) (δ depends on θ through the layers above).
PyTorch's ``_convolution_double_backward`` (torch 2.13, aten/src/ATen/native/Convolution.cpp) also computes
gI = convT(δ, V), the tangent's contribution to ∂f/∂x, whenever V is defined and x is not empty, whether or not
x requires a gradient: it does not consult the output mask for that output. At the first convolution of a
network x is the data, so gI is thrown away — and on a CPU a transposed convolution into one channel takes a
slow path. What that costs, and what the rerouting saves, is measured by ``benchmarks/conv_shortcut.py``
(benchmarks/README.md, "First-convolution shortcut" and "Inner convolutions").

:class:`rerouted_convolutions` is a :class:`~torch.overrides.TorchFunctionMode` that, while grad
mode is on, routes ``conv1d``/``conv2d``/``conv3d`` calls whose weight requires a gradient (numeric padding,
batched input) to exact autograd Functions:

* an input that needs no gradient (a first convolution), any stride, dilation and groups — :class:`_InputConv`:
  forward = the same convolution; backward returns no input gradient, ∂f/∂W = :class:`_WeightGrad` (δ) and
  ∂f/∂b = Σ δ over batch and space;
* an input that needs one (an inner convolution) on a CPU, when it is *plain* — stride 1, dilation 1, one
  group, padding p ≤ k − 1 — :class:`_InnerConv`: backward ∂f/∂x = :class:`_InputGrad` (δ, W),
  ∂f/∂W = :class:`_WeightGrad` (on a GPU cuDNN's kernels are kept: the gain was measured on oneDNN only);
* :class:`_WeightGrad`: δ ↦ ∂f/∂W; linear in δ, so its backward maps the incoming V to conv(x, V) for δ and,
  at an inner convolution, to convT(δ, V) for x — the products the double backward needs and nothing else;
* :class:`_InputGrad`: (δ, W) ↦ convT(δ, W), whose backward maps U to conv(U, W) and to the weight gradient of
  conv(U, W) at δ.

Why inner convolutions too: every product above is written as a *forward* convolution where that is exact and
not slower. A plain convolution's input gradient is convT(δ, W) = conv(δ, flip(W)ᵀ, padding k − 1 − p), and,
when the output is no larger than the kernel, its weight gradient is conv(xᵀ, δᵀ, padding p)ᵀ with batch and
channels swapped. oneDNN's backward kernels are slow on such small maps, while on large maps the forward form
of the weight gradient costs more than the backward kernel, hence the size rule (the kernel timings behind it and the
paired rounds of PyTorch's path, the first-convolution shortcut alone and both are in benchmarks/README.md,
"Inner convolutions").

The math is the textbook one; only the order of float sums differs from PyTorch's (the bias gradient is
``δ.sum``, and the forward forms sum in another order), so results agree to rounding (float64 tests:
tests/test_conv_double_backward.py, against the dense Hessian, against the unpatched path and against
convolution_backward). Everything else — strided, dilated or grouped inner convolutions, transposed
convolutions, string padding, models run under ``torch.func`` transforms — goes through unchanged.
:class:`~sharpness.hessian.HessianOperator` enters the mode (only for a model with convolution modules,
:func:`has_convolutions`) wherever it builds a graph to differentiate twice: the retained graph and the
reverse-over-reverse chunks. The memory probe (:mod:`sharpness.objective.memory`) measures PyTorch's own graph,
which saves the same tensors as the mode's (x, W and δ, by reference).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

#: Spatial dimensions of each functional convolution the mode intercepts.
_CONVS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_BY_DIM = {d: f for f, d in _CONVS.items()}
_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_DEFAULTS = (None, None, None, 1, 0, 1, 1)


def _expand(value: int | Sequence[int], d: int) -> list[int]:
    return [int(value)] * d if isinstance(value, int) else [int(v) for v in value]


def _bias_grad(grad_out: Tensor) -> Tensor:
    """∂f/∂b = Σ δ over the batch and every spatial position."""
    return grad_out.sum(dim=[0, *range(2, grad_out.dim())])


def _plain(stride: list[int], dilation: list[int], groups: int) -> bool:
    return groups == 1 and all(s == 1 for s in stride) and all(d == 1 for d in dilation)


def _input_grad(grad_out: Tensor, weight: Tensor, padding: list[int]) -> Tensor:
    """convT(δ, W) = ∂⟨δ, conv(x, W)⟩/∂x of a plain convolution (stride 1, dilation 1, one group, p ≤ k − 1) as
    the forward convolution conv(δ, flip(W)ᵀ, padding k − 1 − p)."""
    d = weight.dim() - 2
    flipped = weight.flip(list(range(2, 2 + d))).transpose(0, 1)
    return _BY_DIM[d](grad_out, flipped, None, 1, [weight.shape[2 + i] - 1 - padding[i] for i in range(d)], 1, 1)


def _weight_grad(grad_out: Tensor, x: Tensor, weight: Tensor, stride: list[int], padding: list[int],
                 dilation: list[int], groups: int) -> Tensor:
    """∂⟨δ, conv(x, W)⟩/∂W. On a CPU, for a plain convolution whose output is no larger than its kernel, as the
    forward convolution conv(xᵀ, δᵀ, padding p)ᵀ (batch and channels swapped: the sum over samples becomes the sum
    over input channels; faster than oneDNN's backward kernel there, module docstring); otherwise PyTorch's
    convolution_backward (on a GPU always: the forward form is unmeasured against cuDNN)."""
    d = weight.dim() - 2
    small = all(grad_out.shape[2 + i] <= weight.shape[2 + i] for i in range(d))
    if x.device.type == "cpu" and _plain(stride, dilation, groups) and small:
        return _BY_DIM[d](x.transpose(0, 1), grad_out.transpose(0, 1), None, 1, padding, 1, 1).transpose(0, 1)
    return torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, stride, padding, dilation, False, [0] * d, groups, [False, True, False]
    )[1]


class _WeightGrad(torch.autograd.Function):
    """δ ↦ ∂f/∂W of a convolution over input x (linear in δ); its backward: V ↦ conv(x, V) with respect to δ,
    and, for an inner convolution (x needs a gradient), V ↦ convT(δ, V) with respect to x."""

    @staticmethod
    def forward(ctx: Any, grad_out: Tensor, x: Tensor, weight: Tensor, stride: list[int], padding: list[int],
                dilation: list[int], groups: int) -> Tensor:
        d = weight.dim() - 2
        # δ is kept only where its backward needs it (an inner convolution's x-gradient)
        ctx.save_for_backward(x, grad_out) if ctx.needs_input_grad[1] else ctx.save_for_backward(x)
        ctx.conv = (stride, padding, dilation, groups, d)
        return _weight_grad(grad_out, x, weight, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, tangent: Tensor) -> tuple[Tensor | None, ...]:
        x, *delta = ctx.saved_tensors
        stride, padding, dilation, groups, d = ctx.conv
        grad_delta = _BY_DIM[d](x, tangent, None, stride, padding, dilation, groups)
        # only _InnerConv passes an x that needs a gradient, and only for a plain convolution
        grad_x = _input_grad(delta[0], tangent, padding) if delta else None
        return grad_delta, grad_x, None, None, None, None, None


class _InputConv(torch.autograd.Function):
    """A convolution of an input that needs no gradient: the same forward; a backward without ∂f/∂x."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int], padding: list[int],
                dilation: list[int], groups: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, groups)
        return _BY_DIM[weight.dim() - 2](x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        _, needs_w, needs_b = ctx.needs_input_grad[:3]
        grad_w = _WeightGrad.apply(grad_out, x, weight, stride, padding, dilation, groups) if needs_w else None
        grad_b = _bias_grad(grad_out) if needs_b else None
        return None, grad_w, grad_b, None, None, None, None


class _InputGrad(torch.autograd.Function):
    """(δ, W) ↦ convT(δ, W), the input gradient of a plain inner convolution; its backward maps U to conv(U, W)
    for δ and to the weight gradient of conv(U, W) at δ for W."""

    @staticmethod
    def forward(ctx: Any, grad_out: Tensor, weight: Tensor, padding: list[int]) -> Tensor:
        ctx.save_for_backward(grad_out, weight)
        ctx.padding = padding
        return _input_grad(grad_out, weight, padding)

    @staticmethod
    def backward(ctx: Any, tangent: Tensor) -> tuple[Tensor | None, ...]:
        grad_out, weight = ctx.saved_tensors
        d = weight.dim() - 2
        need_delta, need_w = ctx.needs_input_grad[:2]
        grad_delta = _BY_DIM[d](tangent, weight, None, 1, ctx.padding, 1, 1) if need_delta else None
        grad_w = _weight_grad(grad_out, tangent, weight, [1] * d, ctx.padding, [1] * d, 1) if need_w else None
        return grad_delta, grad_w, None


class _InnerConv(torch.autograd.Function):
    """A plain convolution (stride 1, dilation 1, one group, p ≤ k − 1) of an input that needs a gradient: the
    same forward; a backward made of :class:`_InputGrad` and :class:`_WeightGrad`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, padding: list[int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return _BY_DIM[weight.dim() - 2](x, weight, bias, 1, padding, 1, 1)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        d = weight.dim() - 2
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        grad_x = _InputGrad.apply(grad_out, weight, ctx.padding) if needs_x else None
        grad_w = _WeightGrad.apply(grad_out, x, weight, [1] * d, ctx.padding, [1] * d, 1) if needs_w else None
        grad_b = _bias_grad(grad_out) if needs_b else None
        return grad_x, grad_w, grad_b, None


class rerouted_convolutions(TorchFunctionMode):
    """Convolutions rerouted for second derivatives (module docstring): within the block, a convolution of an
    input that needs no gradient (a first convolution) skips PyTorch's wasted second-order input gradient, and,
    with ``inner=True`` (default), a plain inner convolution on a CPU runs its backward products as forward
    convolutions. Exact; a no-op for every other call. :class:`~sharpness.hessian.HessianOperator` chooses
    between the two with its ``convolutions`` argument.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
        >>> w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
        >>> v = torch.randn_like(w)
        >>> def hvp():
        ...     (g,) = torch.autograd.grad((F.conv2d(x, w) ** 3).sum(), w, create_graph=True)
        ...     return torch.autograd.grad(g, w, v)[0]
        >>> plain = hvp()
        >>> with rerouted_convolutions():
        ...     patched = hvp()
        >>> torch.allclose(plain, patched, rtol=1e-12, atol=1e-12)
        True
    """

    def __init__(self, inner: bool = True) -> None:
        super().__init__()
        self.inner = inner  # also reroute plain inner convolutions; False: first convolutions only

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        d = _CONVS.get(func)
        if d is not None and torch.is_grad_enabled():
            a = dict(zip(_ARGS, _DEFAULTS))
            a.update(zip(_ARGS, args))
            a.update(kwargs)
            x, w = a["input"], a["weight"]
            if (isinstance(x, Tensor) and isinstance(w, Tensor) and w.requires_grad and x.dim() == d + 2
                    and not isinstance(a["padding"], str)):
                stride, dilation = _expand(a["stride"], d), _expand(a["dilation"], d)
                padding = _expand(a["padding"], d)
                if not x.requires_grad:
                    return _InputConv.apply(x, w, a["bias"], stride, padding, dilation, int(a["groups"]))
                # measured on CPUs only (oneDNN's kernels, module docstring): GPUs keep cuDNN's backward kernels
                if (self.inner and x.device.type == "cpu" and _plain(stride, dilation, int(a["groups"]))
                        and all(0 <= p <= w.shape[2 + i] - 1 for i, p in enumerate(padding))):
                    return _InnerConv.apply(x, w, a["bias"], padding)
        return func(*args, **kwargs)


def has_convolutions(module: nn.Module) -> bool:
    """Whether ``module`` holds an ``nn.Conv1d``/``Conv2d``/``Conv3d`` (lazy ones included).

    Two rules depend on it: :class:`~sharpness.hessian.HessianOperator` enters the mode only for such models (it
    sends every torch call through a Python dispatch, which cost a streamed product of the conv-free benchmark
    MLP 6 %, median of 15 paired rounds, for nothing), and
    :func:`~sharpness.objective.points.default_batch_size` never vmaps their grid points. Functional
    convolutions without such a module are not detected and keep PyTorch's path (and the size rule)."""
    return any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in module.modules())

