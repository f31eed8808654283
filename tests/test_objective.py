"""The objective: exact weighted mean over the analysis set, any chunk size, never touching the model."""

import pytest
import torch
from torch import nn

from conftest import TinyCNN, assert_unchanged, make_classification, snapshot
from sharpness.errors import InputError
from sharpness.objective import Objective


def manual_loss(model, x, y):
    """An independent reference: the plain module in eval mode, nn.CrossEntropyLoss's mean."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = nn.functional.cross_entropy(model(x), y)
    model.train(was)
    return float(out)


@pytest.mark.parametrize("chunk", [1, 7, 23])
def test_value_matches_plain_mean_for_any_chunk(mlp, chunk):
    x, y = make_classification()
    obj = Objective(mlp, x, y, chunk_size=chunk)
    # 23 = 3·7 + 2: a short last chunk must not tilt the mean (float64 rounding only).
    assert float(obj.value()) == pytest.approx(manual_loss(mlp, x, y), rel=1e-13)


def test_gradient_identical_across_chunk_sizes(cnn):
    x, y = make_classification(d=8)
    grads = [Objective(cnn, x, y, chunk_size=c).value_and_grad()[1] for c in (1, 7, 23)]
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-12, atol=1e-14)


def test_gradient_matches_autograd_on_the_module(mlp):
    x, y = make_classification()
    obj = Objective(mlp, x, y, chunk_size=5)
    _, grad = obj.value_and_grad()
    loss = nn.functional.cross_entropy(mlp(x), y)
    ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(mlp.parameters()))])
    torch.testing.assert_close(grad, ref, rtol=1e-12, atol=1e-14)


def test_weights_give_weighted_mean(mlp):
    x, y = make_classification()
    w = torch.rand(23, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    obj = Objective(mlp, x, y, weights=w, chunk_size=4)
    per = nn.functional.cross_entropy(mlp(x), y, reduction="none").detach()
    assert float(obj.value()) == pytest.approx(float((per * w).sum() / w.sum()), rel=1e-13)


def test_eval_mode_uses_running_statistics_and_model_untouched(cnn):
    x, y = make_classification(d=8)
    cnn.train()  # the user's model is in train mode; analysis must use eval and leave it in train
    before = snapshot(cnn)
    obj = Objective(cnn, x, y)
    obj.value_and_grad()
    assert float(obj.value()) == pytest.approx(manual_loss(cnn, x, y), rel=1e-13)
    assert_unchanged(cnn, before)


def test_bn_train_mode_uses_chunk_statistics(cnn):
    x, y = make_classification(d=8)
    before = snapshot(cnn)
    obj = Objective(cnn, x, y, bn_mode="train")
    cnn_copy = TinyCNN().double()
    cnn_copy.load_state_dict(cnn.state_dict())
    cnn_copy.train()
    expected = float(nn.functional.cross_entropy(cnn_copy(x), y).detach())
    assert float(obj.value()) == pytest.approx(expected, rel=1e-12)
    assert_unchanged(cnn, before)


def test_param_glob_selects_subset(mlp):
    x, y = make_classification()
    obj = Objective(mlp, x, y, params="fc2.*")
    assert obj.names == ["fc2.weight", "fc2.bias"]
    assert obj.numel == 6 * 3 + 3
    with pytest.raises(InputError, match="matched no parameter"):
        Objective(mlp, x, y, params="nothing.*")


def test_accuracy(mlp):
    x, y = make_classification()
    acc = float((mlp(x).argmax(1) == y).double().mean())
    assert Objective(mlp, x, y, chunk_size=6).evaluate().accuracy == pytest.approx(acc)


def test_regression_has_no_accuracy():
    x = torch.randn(10, 3, dtype=torch.float64)
    model = nn.Linear(3, 2).double()
    ev = Objective(model, x, torch.randn(10, 2, dtype=torch.float64)).evaluate()
    assert ev.accuracy is None


def test_nondeterministic_model_refused():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) + torch.randn(x.shape[0], 2)

    with pytest.raises(InputError, match="not deterministic"):
        Objective(Noisy(), torch.randn(8, 4), torch.randint(0, 2, (8,)))


def test_bad_inputs():
    model = nn.Linear(4, 2)
    with pytest.raises(InputError, match="as many targets"):
        Objective(model, torch.randn(8, 4), torch.randint(0, 2, (7,)))
    with pytest.raises(InputError, match="integer class labels"):
        Objective(model, torch.randn(8, 4), torch.randn(8), loss="cross-entropy")
    with pytest.raises(InputError, match="evaluated on the analysis set"):
        Objective(model, torch.randn(8, 5), torch.randint(0, 2, (8,)))
    with pytest.raises(InputError, match=r"labels in \[0, 2\).*got labels in \[0, 3\]"):
        Objective(model, torch.randn(8, 4), torch.tensor([0, 1, 3, 0, 1, 0, 1, 0]))


def test_default_chunk_follows_the_memory_budget_and_keeps_the_results(mlp):
    # 200 samples > the 32-sample probe: the default chunk is all N under a roomy budget (a retained graph),
    # and the largest chunk within a small one; loss, gradient and Hessian products agree to rounding (float64).
    from sharpness.hessian import HessianOperator

    x, y = make_classification(n=200)
    roomy = Objective(mlp, x, y)
    assert roomy.chunk_size == 200 and roomy.chunk_policy["whole_set"]
    per_sample = roomy.chunk_policy["graph_bytes_per_sample"]
    assert per_sample > x[0].numel() * x.element_size()  # at least the input itself is saved
    tight = Objective(mlp, x, y, memory=int(30.5 * per_sample))
    assert tight.chunk_size == 30 and not tight.chunk_policy["whole_set"]
    assert tight.config["chunk_policy"]["memory_budget_bytes"] == int(30.5 * per_sample)
    assert tight.chunk_policy["graph_bytes_per_sample"] == pytest.approx(per_sample)
    torch.testing.assert_close(tight.value(), roomy.value(), rtol=1e-13, atol=0)
    torch.testing.assert_close(tight.value_and_grad()[1], roomy.value_and_grad()[1], rtol=1e-12, atol=1e-14)
    v = torch.randn(roomy.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    H_roomy, H_tight = HessianOperator(roomy), HessianOperator(tight)
    assert (H_roomy.mode, H_tight.mode) == ("retained-graph", "reverse-over-reverse")
    torch.testing.assert_close(H_tight @ v, H_roomy @ v, rtol=1e-11, atol=1e-13)
    # an explicit chunk_size is taken as given; BatchNorm in train mode keeps all N (its batch is the chunk)
    assert Objective(mlp, x, y, chunk_size=7, memory=1).chunk_policy is None
    assert Objective(mlp, x, y, memory=1, bn_mode="train").chunk_size == 200
    with pytest.raises(InputError, match="memory must be a positive number of bytes, got 0"):
        Objective(mlp, x, y, memory=0)


def test_memory_probe_that_cannot_build_a_second_order_graph_keeps_the_whole_set():
    # A model whose backward refuses to build a graph (a custom autograd.Function): loss and gradient must
    # still work, with all N in one chunk as before and the reason recorded.
    class Once(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.tanh()

        @staticmethod
        def backward(ctx, g):
            if torch.is_grad_enabled():  # a backward under create_graph=True
                raise RuntimeError("Once: no double backward")
            (x,) = ctx.saved_tensors
            return g * (1 - x.tanh() ** 2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 3)

        def forward(self, x):
            return Once.apply(self.lin(x))

    x, y = make_classification(n=100)
    obj = Objective(Net().double(), x, y)
    assert obj.chunk_size == 100 and obj.chunk_policy["whole_set"]
    assert obj.chunk_policy["probe_failed"] == "Once: no double backward"
    assert torch.isfinite(obj.value_and_grad()[1]).all()
