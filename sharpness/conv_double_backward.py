"""Second derivatives through a convolution whose input needs no gradient, without the gradient PyTorch wastes there.

A Hessian-vector product by double backward differentiates the gradient graph once more. For a convolution
z = conv(x, W) + b the gradient graph holds ∂f/∂W = convolution_backward(δ, x, W), δ = ∂f/∂z, and its derivative
along a tangent V of W is wanted with respect to δ only, conv(x, V) (δ depends on θ through the layers above).
PyTorch's ``_convolution_double_backward`` (torch 2.13, aten/src/ATen/native/Convolution.cpp) also computes
gI = convT(δ, V), the tangent's contribution to ∂f/∂x, whenever V is defined and x is not empty, whether or not
x requires a gradient: it does not consult the output mask for that output. At the first convolution of a
network x is the data, so gI is thrown away — and on a CPU a transposed convolution into one channel took a
slow path (13 ms, against 1.5 ms for the layer's forward convolution, on the digits convnet below). Paired rounds with the shortcut on and off (``benchmarks/conv_shortcut.py``,
``benchmarks/results/conv-shortcut-2026-12-02.json``, one thread, float32, load 0.4–0.7), HVP ÷ gradient:

* 4-8-channel convnet on 8×8 digits (1,610 parameters, 1 797 samples): retained graph 1.84 → 1.10, four
  streamed chunks 2.48 → 2.14;
* 8-16-channel convnet on 28×28 Fashion-MNIST (1.02 M parameters), 8 000 samples in chunks of 6 117:
  3.47 → 2.83, and the graph's peak memory ~25 % lower (``results/scaling-2026-12-02-convs.json``).

:class:`convolutions_without_input_grad` is a :class:`~torch.overrides.TorchFunctionMode` that, while grad
mode is on, routes ``conv1d``/``conv2d``/``conv3d`` calls whose input does not require a gradient and whose
weight does (numeric padding, batched input) to an exact pair of autograd Functions:

* :class:`_InputConv`: forward = the same convolution; backward returns no input gradient,
  ∂f/∂W = :class:`_WeightGrad` (δ) and ∂f/∂b = Σ δ over batch and space;
* :class:`_WeightGrad`: δ ↦ convolution_backward(δ, x, W, mask = weight only); linear in δ, so its backward
  maps the incoming V to conv(x, V) — the one product the double backward needs — and nothing else.

The math is the textbook one; only the order of a few float sums differs from PyTorch's (the bias gradient is
``δ.sum`` rather than convolution_backward's own reduction), so results agree to rounding (float64 tests:
tests/test_conv_double_backward.py, against the dense Hessian and against the unpatched path). Everything else
— convolutions inside the network, transposed convolutions, string padding, models run under
``torch.func`` transforms — goes through unchanged. :class:`~sharpness.hessian.HessianOperator` enters the
mode (only for a model with convolution modules, :func:`has_convolutions`) wherever it builds a graph to
differentiate twice: the retained graph and the reverse-over-reverse chunks. The memory probe
(:mod:`sharpness.objective.memory`) measures PyTorch's own graph, which holds at least what the mode's does.
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


class _WeightGrad(torch.autograd.Function):
    """δ ↦ ∂f/∂W of a convolution over input x (linear in δ); its backward: V ↦ conv(x, V) with respect to δ."""

    @staticmethod
    def forward(ctx: Any, grad_out: Tensor, x: Tensor, weight: Tensor, stride: list[int], padding: list[int],
                dilation: list[int], groups: int) -> Tensor:
        d = weight.dim() - 2
        ctx.save_for_backward(x)
        ctx.conv = (stride, padding, dilation, groups, d)
        return torch.ops.aten.convolution_backward(
            grad_out, x, weight, None, stride, padding, dilation, False, [0] * d, groups, [False, True, False]
        )[1]

    @staticmethod
    def backward(ctx: Any, tangent: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        stride, padding, dilation, groups, d = ctx.conv
        return _BY_DIM[d](x, tangent, None, stride, padding, dilation, groups), None, None, None, None, None, None


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
        grad_b = grad_out.sum(dim=[0, *range(2, grad_out.dim())]) if needs_b else None
        return None, grad_w, grad_b, None, None, None, None


class convolutions_without_input_grad(TorchFunctionMode):
    """Within the block, convolutions of inputs that need no gradient skip PyTorch's wasted second-order input
    gradient (module docstring). Exact; a no-op for every other call.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
        >>> w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
        >>> v = torch.randn_like(w)
        >>> def hvp():
        ...     (g,) = torch.autograd.grad((F.conv2d(x, w) ** 3).sum(), w, create_graph=True)
        ...     return torch.autograd.grad(g, w, v)[0]
        >>> plain = hvp()
        >>> with convolutions_without_input_grad():
        ...     patched = hvp()
        >>> torch.allclose(plain, patched, rtol=1e-12, atol=1e-12)
        True
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        d = _CONVS.get(func)
        if d is not None and torch.is_grad_enabled():
            a = dict(zip(_ARGS, _DEFAULTS))
            a.update(zip(_ARGS, args))
            a.update(kwargs)
            x, w = a["input"], a["weight"]
            if (isinstance(x, Tensor) and isinstance(w, Tensor) and not x.requires_grad and w.requires_grad
                    and x.dim() == d + 2 and not isinstance(a["padding"], str)):
                return _InputConv.apply(x, w, a["bias"], _expand(a["stride"], d), _expand(a["padding"], d),
                                        _expand(a["dilation"], d), int(a["groups"]))
        return func(*args, **kwargs)


def has_convolutions(module: nn.Module) -> bool:
    """Whether ``module`` holds an ``nn.Conv1d``/``Conv2d``/``Conv3d`` (lazy ones included).

    Two rules depend on it: :class:`~sharpness.hessian.HessianOperator` enters the mode only for such models (it
    sends every torch call through a Python dispatch, which cost a streamed product of the conv-free benchmark
    MLP 6 %, median of 15 paired rounds, for nothing), and
    :func:`~sharpness.objective.points.default_batch_size` never vmaps their grid points. Functional
    convolutions without such a module are not detected and keep PyTorch's path (and the size rule)."""
    return any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in module.modules())

