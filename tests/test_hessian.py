"""Hessian-vector products against independent truth, in float64."""

import pytest
import torch
from torch import nn

from conftest import assert_unchanged, make_classification, snapshot
from sharpness.hessian import HessianOperator, dense_hessian
from sharpness.objective import Objective


class Scalar(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, 1, bias=False)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


class Offset(nn.Module):
    """A linear model plus 0·shift: the gradient in ``shift`` is a constant with no graph, its Hessian row is 0."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1, bias=False)
        self.shift = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.lin(x).squeeze(-1) + 0 * self.shift


def test_closed_form_linear_regression():
    # Mean squared error of a linear model: H = 2/N · XᵀX exactly, whatever the weights.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(31, 6, generator=g, dtype=torch.float64)
    y = torch.randn(31, generator=g, dtype=torch.float64)
    obj = Objective(Scalar(6).double(), x, y, chunk_size=4)
    expected = 2 / 31 * x.T @ x
    torch.testing.assert_close(dense_hessian(obj), expected, rtol=1e-12, atol=1e-14)
    H = HessianOperator(obj)
    V = torch.randn(6, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(H @ V, expected @ V, rtol=1e-12, atol=1e-14)
    assert H.num_matvecs == 3


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
@pytest.mark.parametrize("mode", ["retained-graph", "forward-over-reverse", "reverse-over-reverse"])
def test_hvp_equals_dense_hessian(request, model_name, mode):
    model = request.getfixturevalue(model_name)
    x, y = make_classification(d=8 if model_name == "cnn" else 5)
    obj = Objective(model, x, y, chunk_size=None if mode == "retained-graph" else 7)
    H = dense_hessian(obj)
    op = HessianOperator(obj, mode=mode)
    assert op.mode == mode
    v = torch.randn(obj.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op @ v, H @ v, rtol=1e-10, atol=1e-12)
    # A (P, K) block reuses each chunk's forward pass and gradient graph for its K columns: it must give the K
    # single products and H_dense @ V (the tolerance is summation-order rounding, as above); K = 1 too.
    V = torch.randn(obj.numel, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    block = op @ V
    assert op.num_matvecs == 6
    torch.testing.assert_close(block, torch.stack([op @ V[:, k] for k in range(5)], dim=1), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(block, H @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op @ V[:, :1], H @ V[:, :1], rtol=1e-10, atol=1e-12)


def test_dense_hessian_matches_finite_differences_of_gradient(cnn):
    # Independent of torch.func.hessian: central differences of autograd gradients, O(h²) ≈ 1e-10 error.
    x, y = make_classification(d=8)
    obj = Objective(cnn, x, y)
    v = torch.randn(obj.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    h = 1e-5
    fd = (obj.value_and_grad(obj.theta + h * v)[1] - obj.value_and_grad(obj.theta - h * v)[1]) / (2 * h)
    torch.testing.assert_close(HessianOperator(obj) @ v, fd, rtol=1e-7, atol=1e-9)


def test_symmetry(mlp):
    x, y = make_classification()
    op = HessianOperator(Objective(mlp, x, y))
    g = torch.Generator().manual_seed(4)
    u, v = (torch.randn(op.shape[0], dtype=torch.float64, generator=g) for _ in range(2))
    assert float(u @ (op @ v)) == pytest.approx(float(v @ (op @ u)), rel=1e-12)


def test_chunk_size_does_not_change_hvp(cnn):
    x, y = make_classification(d=8)
    v = torch.randn(sum(p.numel() for p in cnn.parameters()), dtype=torch.float64)
    outs = [HessianOperator(Objective(cnn, x, y, chunk_size=c)) @ v for c in (1, 7, 23)]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-11, atol=1e-13)


def test_auto_mode_picks_retained_graph_for_one_chunk(mlp):
    x, y = make_classification()
    assert HessianOperator(Objective(mlp, x, y)).mode == "retained-graph"
    op = HessianOperator(Objective(mlp, x, y, chunk_size=5))
    op @ torch.ones(op.shape[0], dtype=torch.float64)
    assert op.mode == "reverse-over-reverse"


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_auto_is_a_fixed_rule_so_reruns_are_bit_identical(mlp, chunk_size):
    # "auto" never consults the clock: the retained graph for one chunk, a fresh double backward when streamed,
    # for singles and blocks; two operators give the same bits (float32, where mode changes would show).
    x, y = make_classification()
    obj = Objective(mlp, x, y, chunk_size=chunk_size, dtype=torch.float32)
    expected = "retained-graph" if chunk_size is None else "reverse-over-reverse"
    g = torch.Generator().manual_seed(2)
    v, V = torch.randn(obj.numel, generator=g), torch.randn(obj.numel, 5, generator=g)
    a, b = HessianOperator(obj), HessianOperator(obj)
    assert torch.equal(a @ v, b @ v) and torch.equal(a @ V, b @ V)
    assert a.mode == a.block_mode == expected and a.selection is None


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_fastest_measures_every_candidate_and_records_the_choice(mlp, chunk_size):
    # "fastest" times each candidate mode once on the first products (their answers are the products asked
    # for), then keeps the fastest: every answer, measured or not, equals the dense Hessian's product to
    # float64 rounding, whichever mode the clock picked; the choice and the times are recorded.
    from sharpness.hessian.operator import BLOCK_CANDIDATES, SINGLE_CANDIDATES

    x, y = make_classification()
    obj = Objective(mlp, x, y, chunk_size=chunk_size)
    one_chunk = chunk_size is None
    dense = dense_hessian(obj)
    op = HessianOperator(obj, mode="fastest")
    g = torch.Generator().manual_seed(5)
    singles, blocks = SINGLE_CANDIDATES[one_chunk], BLOCK_CANDIDATES[one_chunk]
    assert op.selection["single"]["chosen"] is None and "not yet measured" in repr(op)
    # one chunk: the first retained product also gives the fresh double backward's time (graph build + that
    # product); streamed: each candidate computes one product
    products = 1 if one_chunk else len(singles)
    for i in range(products + 1):
        v = torch.randn(obj.numel, dtype=torch.float64, generator=g)
        torch.testing.assert_close(op @ v, dense @ v, rtol=1e-10, atol=1e-12)
        assert len(op.selection["single"]["seconds"]) == (2 if one_chunk else min(i + 1, len(singles)))
    # blocks: a 3-column block gives the candidates one column each (3 timings of the 4 needed), the next
    # block one more piece to the last candidate short of two timings, and the rest to the winner
    for K, timed in ((3, 3), (6, 4), (5, 4)):
        V = torch.randn(obj.numel, K, dtype=torch.float64, generator=g)
        torch.testing.assert_close(op @ V, dense @ V, rtol=1e-10, atol=1e-12)
        assert sum(map(len, op.selection["block"]["samples"].values())) == timed
    for kind, cands, chosen, rounds in (("single", singles, op.mode, 1), ("block", blocks, op.block_mode, 2)):
        sel = op.selection[kind]
        assert sel["candidates"] == list(cands) and set(sel["seconds"]) == set(cands)
        assert all(len(sel["samples"][m]) == rounds and sel["seconds"][m] == min(sel["samples"][m]) > 0 for m in cands)
        assert sel["chosen"] == chosen == min(cands, key=sel["seconds"].get)
        assert chosen in repr(op)
    assert op.num_matvecs == products + 1 + 3 + 6 + 5
    if one_chunk:
        sel = op.selection["single"]
        assert sel["seconds"]["reverse-over-reverse"] > sel["seconds"]["retained-graph"] and op.mode == "retained-graph"
    assert HessianOperator(obj, mode="reverse-over-reverse").selection is None


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_every_mode_gives_the_same_block_to_float64_rounding(mlp, chunk_size):
    # What "auto" may switch between must agree to rounding, singles and blocks (vmapped sub-blocks too).
    x, y = make_classification()
    obj = Objective(mlp, x, y, chunk_size=chunk_size)
    V = torch.randn(obj.numel, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    modes = ["forward-over-reverse", "reverse-over-reverse"] + (["retained-graph"] if chunk_size is None else [])
    outs = [HessianOperator(obj, mode=m, max_vmap_columns=3) @ V for m in modes]
    outs += [HessianOperator(obj, mode=m) @ V[:, 2] for m in modes]
    for o in outs[1 : len(modes)]:
        torch.testing.assert_close(o, outs[0], rtol=1e-12, atol=1e-13)
    for o in outs[len(modes):]:
        torch.testing.assert_close(o, outs[0][:, 2], rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="max_vmap_columns"):
        HessianOperator(obj, max_vmap_columns=0)


def test_retained_graph_with_gradient_independent_of_a_parameter():
    # `shift` enters only as 0·shift: its gradient is a constant with no graph, its Hessian row is zero,
    # and the retained-graph path must still answer (not raise on the graph-less entry).
    x = torch.randn(9, 3, dtype=torch.float64)
    obj = Objective(Offset().double(), x, torch.randn(9, dtype=torch.float64))
    v = torch.randn(obj.numel, dtype=torch.float64)
    torch.testing.assert_close(HessianOperator(obj) @ v, dense_hessian(obj) @ v)


@pytest.mark.parametrize("mode", ["retained-graph", "forward-over-reverse", "reverse-over-reverse"])
def test_matvec_into_writes_the_same_product_into_the_callers_buffer(mlp, mode):
    # matvec_into runs the product's own operations, only writing the sum into `out`: bit for bit H @ v, in
    # every mode (streamed chunks for the fresh modes) and with weight decay, whatever `out` held before.
    x, y = make_classification()
    obj = Objective(mlp, x, y, chunk_size=None if mode == "retained-graph" else 7)
    op = HessianOperator(obj, mode=mode, weight_decay=0.1)
    v = torch.randn(obj.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = torch.full((obj.numel,), float("nan"), dtype=torch.float64)
    got = op.matvec_into(v, out)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(got, op @ v)
    torch.testing.assert_close(out, dense_hessian(obj) @ v + 0.1 * v, rtol=1e-10, atol=1e-12)  # as test_hvp_equals_dense_hessian
    assert op.num_matvecs == 2
    for bad in (torch.empty(obj.numel + 1, dtype=torch.float64), torch.empty(obj.numel, dtype=torch.float32), v):
        with pytest.raises(ValueError, match="out"):
            op.matvec_into(v, bad)


def test_weight_decay_adds_identity(mlp):
    x, y = make_classification()
    obj = Objective(mlp, x, y)
    v = torch.randn(obj.numel, dtype=torch.float64)
    torch.testing.assert_close(HessianOperator(obj, weight_decay=0.3) @ v, HessianOperator(obj) @ v + 0.3 * v)


def test_subset_of_parameters_is_a_diagonal_block(mlp):
    x, y = make_classification()
    full = dense_hessian(Objective(mlp, x, y))
    sub = dense_hessian(Objective(mlp, x, y, params="fc2.*"))
    k = sub.shape[0]
    torch.testing.assert_close(sub, full[-k:, -k:], rtol=1e-12, atol=1e-14)


def test_model_untouched(cnn):
    x, y = make_classification(d=8)
    before = snapshot(cnn)
    op = HessianOperator(Objective(cnn, x, y))
    op @ torch.ones(op.shape[0], dtype=torch.float64)
    assert_unchanged(cnn, before)


def test_float32_operator_on_float64_model(mlp):
    x, y = make_classification()
    op = HessianOperator(Objective(mlp, x, y, dtype=torch.float32))
    assert op.dtype == torch.float32
    assert (op @ torch.ones(op.shape[0])).dtype == torch.float32


@pytest.mark.parametrize("block_size", [1, 5, 64])
def test_dense_hessian_in_column_blocks_equals_the_one_shot_hessian(mlp, block_size):
    # The blocks only bound memory: any block size (one that does not divide P = 57 too) gives the same matrix
    # as torch.func.hessian of the whole mean loss, chunked data and weight decay included.
    x, y = make_classification(n=23)
    obj = Objective(mlp, x, y, chunk_size=7)
    def mean_loss(theta):
        return sum(obj.chunk_loss_sum(obj.unflatten(theta), *c) for c in obj.chunks()) / obj.total_weight

    expected = torch.func.hessian(mean_loss)(obj.theta) + 0.3 * torch.eye(obj.numel, dtype=torch.float64)
    H = dense_hessian(obj, weight_decay=0.3, block_size=block_size)
    torch.testing.assert_close(H, expected, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-15)


def test_dense_hessian_through_layer_norm_equals_finite_differences():
    # Guard: torch.func.hessian (jacfwd over jacrev) goes wrong through LayerNorm on torch 2.13 (on this very model
    # it differs from the columns below by up to 0.056, entries ≤ 0.57), so dense_hessian must not rest on it.
    # Each column is checked against central differences of autograd gradients (an independent route, O(h²) ≈ 1e-10
    # at h = 1e-5 in float64), and the matrix is symmetric to rounding.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3)).double()
    with torch.no_grad():  # a non-trivial affine LayerNorm, so its own parameters have curvature too
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    x, y = make_classification(n=17, d=4)
    obj = Objective(model, x, y)
    H = dense_hessian(obj, block_size=8)
    h = 1e-5
    eye = torch.eye(obj.numel, dtype=torch.float64)
    fd = torch.stack([(obj.value_and_grad(obj.theta + h * e)[1] - obj.value_and_grad(obj.theta - h * e)[1]) / (2 * h)
                      for e in eye], dim=1)
    torch.testing.assert_close(H, fd, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-14)


def test_streamed_block_with_a_parameter_whose_hessian_row_is_zero():
    # `shift` enters only as 0·shift (as in the retained-graph test above): its Hessian row is zero, and the
    # block paths must agree with the dense Hessian there too, over several chunks.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(13, 3, generator=g, dtype=torch.float64)
    obj = Objective(Offset().double(), x, torch.randn(13, generator=g, dtype=torch.float64), chunk_size=5)
    V = torch.randn(obj.numel, 3, generator=g, dtype=torch.float64)
    for mode in ("reverse-over-reverse", "forward-over-reverse"):
        torch.testing.assert_close(HessianOperator(obj, mode=mode) @ V, dense_hessian(obj) @ V, rtol=1e-12, atol=1e-13)


def test_vmapped_block_width_stays_within_the_objectives_memory_budget(mlp):
    # The objective measured its graph (no chunk_size given, > 32 samples): K tangent copies of one chunk's
    # activations must fit beside that chunk's graph, so a budget of ~2.5 chunk graphs allows 1 column, a roomy
    # one the default 16; products agree either way.
    from sharpness.hessian.operator import MAX_VMAP_COLUMNS, vmap_columns_within_budget

    x, y = make_classification(n=80)
    roomy = Objective(mlp, x, y)
    per_sample = roomy.chunk_policy["graph_bytes_per_sample"]
    tight = Objective(mlp, x, y, memory=int(per_sample * 80 * 2.5))
    assert tight.chunk_size == 80 and vmap_columns_within_budget(tight) == 1
    assert HessianOperator(tight).max_vmap_columns == 1 and HessianOperator(roomy).max_vmap_columns == MAX_VMAP_COLUMNS
    assert vmap_columns_within_budget(Objective(mlp, x, y, chunk_size=80)) >= MAX_VMAP_COLUMNS
    V = torch.randn(roomy.numel, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(HessianOperator(tight, mode="forward-over-reverse") @ V,
                               HessianOperator(roomy, mode="retained-graph") @ V, rtol=1e-12, atol=1e-13)


class DrawsInForward(nn.Module):
    """A forward that draws a random number (0 × it): vmap refuses it, a plain backward does not."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 3)

    def forward(self, x):
        return self.lin(x) + 0 * torch.rand(())


def test_fastest_drops_a_candidate_that_cannot_run_on_the_model():
    torch.manual_seed(0)
    x, y = make_classification()
    obj = Objective(DrawsInForward().double(), x, y)
    op = HessianOperator(obj, mode="fastest")
    V = torch.randn(obj.numel, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    # dense_hessian vmaps too; the reference is a fresh double backward per column
    ref = torch.stack([HessianOperator(obj, mode="reverse-over-reverse") @ c for c in V.unbind(1)], dim=1)
    torch.testing.assert_close(op @ V, ref, rtol=1e-12, atol=1e-13)
    sel = op.selection["block"]
    assert sel["candidates"] == ["retained-graph"] and "forward-over-reverse" in sel["failed"]
    assert op.block_mode == sel["chosen"] == "retained-graph" and op.num_matvecs == 6
    with pytest.raises(RuntimeError, match="randomness"):  # by name, the error is the user's to see
        HessianOperator(obj, mode="forward-over-reverse") @ V
