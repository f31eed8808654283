"""The determinism probe: exact on the CPU, a rounding-sized tolerance under the CUDA rule, dropout refused."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TinyMLP, make_classification
from sharpness.errors import InputError
from sharpness.objective import Objective, determinism_tolerance
from sharpness.analysis.report import analyze


class Drifting:
    """A loss whose value drifts by a relative ``delta`` per call: Σℓ·(1 + δ·k) on the k-th call."""

    def __init__(self, delta: float) -> None:
        self.delta, self.calls = delta, 0

    def __call__(self, outputs, batch):
        self.calls += 1
        return F.cross_entropy(outputs, batch[1], reduction="none") * (1.0 + self.delta * self.calls)


def _objective(loss, check=False):
    torch.manual_seed(0)
    x, y = make_classification()
    return Objective(TinyMLP().double(), x, y, loss=loss, check_determinism=check)


def test_tolerance_formula():
    assert determinism_tolerance("cpu", torch.float32, 3.0, 256) == 0.0
    assert determinism_tolerance("mps", torch.float32, 3.0, 256) == 0.0
    eps32 = torch.finfo(torch.float32).eps
    assert determinism_tolerance("cuda", torch.float32, 3.0, 256) == pytest.approx(16 * 16 * eps32 * 3.0, rel=1e-12)
    assert determinism_tolerance("cuda", torch.float64, -2.0, 4) == pytest.approx(16 * 2 * 2.0 ** -52 * 2.0, rel=1e-12)


@pytest.mark.parametrize("factor, accepted", [(0.25, True), (4.0, False)])
def test_cuda_rule_accepts_rounding_sized_noise_and_refuses_more(factor, accepted):
    x, y = make_classification()
    obj = _objective(Drifting(0.0))
    s = float(obj.chunk_loss_sum(obj._point(None), (x, y), None))
    rel = determinism_tolerance("cuda", torch.float64, s, x.shape[0]) / s
    loss = Drifting(factor * rel / 1.5)  # calls 1, 2 → relative gap δ/(1 + δ) ≈ δ; /1.5 keeps it clear of the edge
    obj = _objective(loss)
    if accepted:
        obj._check_determinism(policy_device="cuda")
        assert obj.determinism["rule"] == "tolerance"
        assert 0.0 < obj.determinism["difference"] <= obj.determinism["tolerance"]
    else:
        with pytest.raises(InputError, match=r"not deterministic.*check: \|a - b\| <="):
            obj._check_determinism(policy_device="cuda")


def test_cpu_rule_is_exact():
    x, y = make_classification()
    obj = _objective(Drifting(0.0))
    s = float(obj.chunk_loss_sum(obj._point(None), (x, y), None))
    tiny = 0.25 * determinism_tolerance("cuda", torch.float64, s, x.shape[0]) / s / 1.5  # accepted under CUDA's rule
    with pytest.raises(InputError, match="not deterministic.*check: exact"):
        _objective(Drifting(tiny), check=True)
    ok = _objective(Drifting(0.0), check=True)
    assert ok.determinism == {"rule": "exact", "tolerance": 0.0, "difference": 0.0, "repeated": True}


class AlwaysDropout(nn.Module):
    """Dropout that ignores eval mode (``training=True``): a random function on every device."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(F.dropout(torch.tanh(self.fc1(x)), p=0.1, training=True))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_dropout_in_train_mode_refused_under_both_rules(device):
    torch.manual_seed(0)
    x, y = make_classification()
    obj = Objective(AlwaysDropout().double(), x, y, check_determinism=False)
    with pytest.raises(InputError, match="not deterministic"):
        obj._check_determinism(policy_device=device)


def test_report_records_the_rule():
    x, y = make_classification()
    torch.manual_seed(0)
    report = analyze(TinyMLP().double(), x, y, dtype="float64", top_k=1, bottom_k=0, trace=False)
    det = report.to_dict()["environment"]["determinism"]
    assert det["rule"] == "exact" and det["difference"] == 0.0 and math.isfinite(det["tolerance"])
