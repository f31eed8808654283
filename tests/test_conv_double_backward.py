"""The first-convolution shortcut of second derivatives: exact, and it removes exactly the wasted product."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sharpness.conv_double_backward import convolutions_without_input_grad, has_convolutions
from sharpness.hessian import HessianOperator, dense_hessian
from sharpness.objective import Objective

DT = torch.float64


class Net2d(nn.Module):
    """Every case the shortcut handles in one model: a first conv with stride, dilation, reflect padding and
    groups (the data's two channels), and an inner conv whose input needs a gradient (left alone)."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1, groups=2, padding_mode="reflect")
        self.second = nn.Conv2d(4, 3, 2, dilation=2)
        self.head = nn.Linear(3, 3)

    def forward(self, x):
        z = torch.tanh(self.second(torch.tanh(self.first(x))))
        return self.head(z.mean(dim=(2, 3)))


class Net1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3, padding=2, dilation=2, bias=False)
        self.head = nn.Linear(3, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).mean(dim=2))


class Net3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 2, stride=(1, 2, 1))
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3, 4)))


def _problem(kind: str):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model, shape = {"2d": (Net2d(), (2, 7, 7)), "1d": (Net1d(), (1, 9)), "3d": (Net3d(), (1, 3, 4, 3))}[kind]
    x = torch.randn(12, *shape, generator=g, dtype=DT)
    y = torch.randint(0, 3, (12,), generator=g)
    return model.double(), x, y


@pytest.mark.parametrize("kind", ["2d", "1d", "3d"])
@pytest.mark.parametrize("mode,chunk_size", [("retained-graph", None), ("reverse-over-reverse", 5)])
def test_products_equal_the_dense_hessian(kind, mode, chunk_size):
    # dense_hessian is forward-over-reverse, which never enters the shortcut: an independent reference.
    model, x, y = _problem(kind)
    obj = Objective(model, x, y, chunk_size=chunk_size)
    H = dense_hessian(obj)
    op = HessianOperator(obj, mode=mode)
    V = torch.randn(obj.numel, 3, dtype=DT, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op @ V, H @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op @ V[:, 0], H @ V[:, 0], rtol=1e-10, atol=1e-12)


def _gradient_graph(model, x, y, patched: bool):
    """(∇f with its graph, the parameters), built with or without the shortcut."""
    params = list(model.parameters())
    with convolutions_without_input_grad() if patched else contextlib.nullcontext():
        g = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), params, create_graph=True)
    return g, params


class _CountConvolutions(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.transposed = 0
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.total += 1
            self.transposed += bool(args[6])
        return func(*args, **(kwargs or {}))


def test_the_wasted_transposed_convolution_is_gone_and_nothing_else_changes():
    # PyTorch's double backward of the first conv computes convT(δ, V) for the data's gradient; the patched
    # graph must skip exactly that one product and give the same gradient and the same Hessian-vector product.
    model, x, y = _problem("2d")
    v = [torch.randn_like(p) for p in model.parameters()]
    counts, results = {}, {}
    for patched in (False, True):
        g, params = _gradient_graph(model, x, y, patched)
        with _CountConvolutions() as c:
            hv = torch.autograd.grad(g, params, v)
        counts[patched], results[patched] = c, (g, hv)
    assert counts[False].total - counts[True].total == 1
    assert counts[False].transposed - counts[True].transposed == 1
    for a, b in zip(results[False][0] + results[False][1], results[True][0] + results[True][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_only_convolutions_of_inputs_without_gradient_are_rerouted():
    model, x, y = _problem("2d")
    with torch.enable_grad(), convolutions_without_input_grad():
        first = model.first(x)
        inner = model.second(first)
        # string padding, an unbatched input, a weight without gradient: all left to PyTorch
        same = F.conv2d(x, model.first.weight, None, padding="same", groups=2)
        unbatched = F.conv2d(x[0], model.first.weight, groups=2)
        frozen = F.conv2d(x, model.first.weight.detach(), groups=2)
    assert type(first.grad_fn).__name__ == "_InputConvBackward"
    assert type(inner.grad_fn).__name__ == "ConvolutionBackward0"
    assert type(same.grad_fn).__name__ == "ConvolutionBackward0"
    assert type(unbatched.grad_fn.next_functions[0][0]).__name__ == "ConvolutionBackward0"  # under a squeeze
    assert frozen.grad_fn is None
    with torch.no_grad(), convolutions_without_input_grad():  # no graph, nothing to reroute
        assert model.first(x).grad_fn is None


@pytest.mark.parametrize("mode,chunk_size", [("retained-graph", None), ("reverse-over-reverse", 5)])
def test_the_hessian_operator_uses_the_shortcut_for_convnets_only(mode, chunk_size):
    assert has_convolutions(Net2d()) and has_convolutions(nn.Sequential(nn.LazyConv2d(2, 3)))
    assert not has_convolutions(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)))
    model, x, y = _problem("2d")
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=DT, generator=torch.Generator().manual_seed(2))
    counts = {}
    for shortcut in (True, False):
        op = HessianOperator(Objective(model, x, y, chunk_size=chunk_size), mode=mode)
        op._convolutions = shortcut  # the rule's outcome, forced off for the reference
        op @ v  # builds the retained graph (for the first mode)
        with _CountConvolutions() as c:
            op @ v
        counts[shortcut] = c.transposed
    chunks = 1 if chunk_size is None else -(-x.shape[0] // chunk_size)
    assert counts[False] - counts[True] == chunks  # one wasted transposed convolution per graph differentiated
