"""Shared fixtures: tiny float64 models and data small enough to know the answer."""

import pytest
import torch
from torch import nn


class TinyMLP(nn.Module):
    def __init__(self, d_in=5, width=6, classes=3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, width)
        self.fc2 = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class TinyCNN(nn.Module):
    """Conv + BatchNorm (with non-trivial running statistics) + linear head."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, kernel_size=3)
        self.bn = nn.BatchNorm1d(2)
        self.head = nn.Linear(2 * 6, classes)

    def forward(self, x):
        h = torch.tanh(self.bn(self.conv(x.unsqueeze(1))))
        return self.head(h.flatten(1))


def make_classification(n=23, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return TinyMLP().double()


@pytest.fixture
def cnn():
    torch.manual_seed(1)
    model = TinyCNN().double()
    with torch.no_grad():  # running statistics that differ from any batch's, so eval mode matters
        model.bn.running_mean.copy_(torch.tensor([0.3, -0.2], dtype=torch.float64))
        model.bn.running_var.copy_(torch.tensor([1.7, 0.6], dtype=torch.float64))
    return model


def snapshot(model: nn.Module) -> dict:
    """Everything about a model that analysis must not change."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(before["grads"], after["grads"]))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny models, where torch's intra-op threads cost more than they give (5–10× slower on a
    busy 2-core machine); one thread makes the suite's run time predictable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
