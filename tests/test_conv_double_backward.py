"""The first-convolution shortcut of second derivatives: exact, and it removes exactly the wasted product."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sharpness.hessian.conv_double_backward import rerouted_convolutions, has_convolutions
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
    with rerouted_convolutions() if patched else contextlib.nullcontext():
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
    with torch.enable_grad(), rerouted_convolutions():
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
    with torch.no_grad(), rerouted_convolutions():  # no graph, nothing to reroute
        assert model.first(x).grad_fn is None


@pytest.mark.parametrize("mode,chunk_size", [("retained-graph", None), ("reverse-over-reverse", 5)])
def test_the_hessian_operator_uses_the_shortcut_for_convnets_only(mode, chunk_size):
    assert has_convolutions(Net2d()) and has_convolutions(nn.Sequential(nn.LazyConv2d(2, 3)))
    assert not has_convolutions(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)))
    model, x, y = _problem("2d")
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=DT, generator=torch.Generator().manual_seed(2))
    counts = {}
    for shortcut in (True, False):
        op = HessianOperator(Objective(model, x, y, chunk_size=chunk_size), mode=mode,
                             convolutions="rerouted" if shortcut else "pytorch")  # the reference: PyTorch's own
        assert op.convolutions == ("rerouted" if shortcut else "pytorch")
        op @ v  # builds the retained graph (for the first mode)
        with _CountConvolutions() as c:
            op @ v
        counts[shortcut] = c.transposed
    chunks = 1 if chunk_size is None else -(-x.shape[0] // chunk_size)
    assert counts[False] - counts[True] == chunks  # one wasted transposed convolution per graph differentiated
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 3)).to(DT)
    assert HessianOperator(Objective(mlp, x, y), convolutions="first").convolutions == "pytorch"  # nothing to route
    with pytest.raises(ValueError, match="convolutions must be one of rerouted, first, pytorch, got 'inner'"):
        HessianOperator(Objective(model, x, y), convolutions="inner")


class InnerNets(nn.Module):
    """Plain inner convolutions (stride 1, dilation 1, one group) in 1, 2 and 3 dimensions, with outputs both
    larger than their kernels and no larger (the two weight-gradient formulas), with and without bias."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 4, 5, padding=2, bias=False)  # on a 3×3 map: output smaller than the kernel
        self.c3 = nn.Conv1d(4, 2, 2)
        self.c4 = nn.Conv3d(1, 2, 2, padding=(1, 0, 1))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        z = torch.tanh(self.c1(x))  # (N, 3, 6, 6), first convolution
        z = torch.tanh(self.c2(F.max_pool2d(z, 2)))  # (N, 4, 3, 3), inner, 5×5 kernel
        z1 = torch.tanh(self.c3(z.flatten(2)))  # (N, 2, 8), inner 1d
        z3 = torch.tanh(self.c4(z[:, :1, None]))  # inner 3d on a (1, 3, 3) volume: (N, 2, 2, 2, 3)
        return self.head(torch.cat([z1.mean(dim=2), z3.mean(dim=(2, 3, 4))], dim=1))


def _inner_problem():
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    x = torch.randn(10, 2, 6, 6, generator=g, dtype=DT)
    return InnerNets().double(), x, torch.randint(0, 3, (10,), generator=g)


@pytest.mark.parametrize("mode,chunk_size", [("retained-graph", None), ("reverse-over-reverse", 4)])
def test_inner_convolutions_give_the_dense_hessian(mode, chunk_size):
    model, x, y = _inner_problem()
    obj = Objective(model, x, y, chunk_size=chunk_size)
    H = dense_hessian(obj)  # forward-over-reverse: never enters the mode
    op = HessianOperator(obj, mode=mode)
    V = torch.randn(obj.numel, 2, dtype=DT, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(op @ V, H @ V, rtol=1e-10, atol=1e-12)


def test_inner_convolutions_are_rerouted_and_keep_gradient_and_product():
    model, x, y = _inner_problem()
    with torch.enable_grad(), rerouted_convolutions():
        z = torch.tanh(model.c1(x))
        inner = model.c2(F.max_pool2d(z, 2))
        strided = F.conv2d(z, model.c2.weight, stride=2, padding=2)  # not plain: left to PyTorch
        overpadded = F.conv2d(z, model.c2.weight[:, :, :2, :2].contiguous(), padding=2)  # p > k − 1
    assert type(inner.grad_fn).__name__ == "_InnerConvBackward"
    assert type(strided.grad_fn).__name__ == "ConvolutionBackward0"
    assert type(overpadded.grad_fn.next_functions[0][0]).__name__ != "_InnerConvBackward"
    with torch.enable_grad(), rerouted_convolutions(inner=False):
        assert type(model.c2(F.max_pool2d(torch.tanh(model.c1(x)), 2)).grad_fn).__name__ == "ConvolutionBackward0"
    v = [torch.randn_like(p) for p in model.parameters()]
    results = {}
    for patched in (False, True):
        g, params = _gradient_graph(model, x, y, patched)
        results[patched] = g + torch.autograd.grad(g, params, v)
    for a, b in zip(results[False], results[True]):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("d,size,kernel,padding", [(1, 3, 5, 2), (2, 4, 5, 2), (2, 7, 3, 1), (3, 2, 3, 1)])
def test_weight_and_input_gradients_as_forward_convolutions(d, size, kernel, padding):
    from sharpness.hessian.conv_double_backward import _input_grad, _weight_grad

    g = torch.Generator().manual_seed(d)
    x = torch.randn(6, 3, *[size] * d, generator=g, dtype=DT)
    w = torch.randn(4, 3, *[kernel] * d, generator=g, dtype=DT)
    out = size + 2 * padding - kernel + 1
    delta = torch.randn(6, 4, *[out] * d, generator=g, dtype=DT)
    ref_x, ref_w, _ = torch.ops.aten.convolution_backward(
        delta, x, w, None, [1] * d, [padding] * d, [1] * d, False, [0] * d, 1, [True, True, False])
    torch.testing.assert_close(_input_grad(delta, w, [padding] * d), ref_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_weight_grad(delta, x, w, [1] * d, [padding] * d, [1] * d, 1), ref_w,
                               rtol=1e-12, atol=1e-12)


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def test_the_forward_form_of_the_weight_gradient_is_for_cpus_only():
    # Its speed was measured against oneDNN; on any other device the same call must stay PyTorch's kernel
    # ("meta" tensors stand in for a GPU here: shapes only, the same dispatch).
    from sharpness.hessian.conv_double_backward import _weight_grad

    used = {}
    for device in ("cpu", "meta"):
        x = torch.randn(6, 3, 4, 4, device=device)
        w = torch.randn(4, 3, 5, 5, device=device)
        delta = torch.randn(6, 4, 4, 4, device=device)  # a 4×4 output under a 5×5 kernel: the small-map rule
        with _CountOps() as c:
            _weight_grad(delta, x, w, [1, 1], [2, 2], [1, 1], 1)
        used[device] = torch.ops.aten.convolution_backward.default in c.ops
    assert used == {"cpu": False, "meta": True}
