"""The precision policy: TF32 off during analysis unless asked for, global flags restored, policy recorded."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cli_helpers import run_cli
from conftest import TinyMLP, make_classification
from sharpness.checkpoint import save_checkpoint
from sharpness.data import load_dataset
from sharpness.landscape import line, random_direction
from sharpness.models import build_from_spec, model_spec
from sharpness.objective import Objective
from sharpness.numerics.precision import precision_flags, precision_policy
from sharpness.analysis.report import analyze

# Not torch's defaults ("highest", cuDNN TF32 on, benchmark off), so a test that forgets to restore fails.
ODD = {"float32_matmul_precision": "medium", "cudnn_allow_tf32": False, "cudnn_benchmark": True}


@pytest.fixture
def odd_flags():
    before = precision_flags()
    torch.set_float32_matmul_precision(ODD["float32_matmul_precision"])
    torch.backends.cudnn.allow_tf32 = ODD["cudnn_allow_tf32"]
    torch.backends.cudnn.benchmark = ODD["cudnn_benchmark"]
    odd = precision_flags()
    assert odd["cuda_matmul_allow_tf32"] is True  # "medium" implies matmul TF32 (or lower) is allowed
    yield odd
    torch.set_float32_matmul_precision(before["float32_matmul_precision"])
    torch.backends.cudnn.allow_tf32 = before["cudnn_allow_tf32"]
    torch.backends.cudnn.benchmark = before["cudnn_benchmark"]


SEEN: list[dict] = []  # module level: analysis evaluates a private copy of the model


class Recorder(TinyMLP):
    """Records the global precision flags seen during each forward pass."""

    def forward(self, x):
        SEEN.append(precision_flags())
        return super().forward(x)


def _model():
    SEEN.clear()
    torch.manual_seed(0)
    return Recorder().double()


def test_context_manager_sets_and_restores_even_on_error(odd_flags):
    with precision_policy() as policy:
        assert precision_flags()["float32_matmul_precision"] == "highest"
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cudnn.benchmark
    assert policy["allow_tf32"] is False and policy["cudnn_allow_tf32"] is False
    assert precision_flags() == odd_flags
    with pytest.raises(ZeroDivisionError):
        with precision_policy(allow_tf32=True):
            assert torch.get_float32_matmul_precision() == "high"
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
            1 / 0
    assert precision_flags() == odd_flags
    with pytest.raises(ValueError, match="allow_tf32 must be a bool"):
        with precision_policy("yes"):  # type: ignore[arg-type]
            pass


def test_analyze_runs_without_tf32_restores_flags_and_records_policy(odd_flags):
    x, y = make_classification()
    model = _model()
    report = analyze(model, x, y, dtype="float64", top_k=1, bottom_k=0, trace=False)
    assert SEEN and all(s["float32_matmul_precision"] == "highest" and not s["cudnn_allow_tf32"]
                              and not s["cudnn_benchmark"] for s in SEEN)
    assert precision_flags() == odd_flags
    rec = report.to_dict()["environment"]["precision"]
    assert rec["allow_tf32"] is False
    assert rec["float32_matmul_precision"] == "highest" and rec["cuda_matmul_allow_tf32"] is False
    assert rec["cudnn_allow_tf32"] is False and rec["cudnn_benchmark"] is False
    assert report.to_dict()["config"]["allow_tf32"] is False

    SEEN.clear()
    report = analyze(model, x, y, dtype="float64", top_k=1, bottom_k=0, trace=False, allow_tf32=True)
    assert SEEN and all(s["float32_matmul_precision"] == "high" and s["cudnn_allow_tf32"] for s in SEEN)
    assert report.to_dict()["environment"]["precision"]["allow_tf32"] is True
    assert precision_flags() == odd_flags


def test_analyze_restores_flags_when_it_fails(odd_flags):
    x, y = make_classification()
    with pytest.raises(Exception):
        analyze(_model(), x, y[:3], dtype="float64", top_k=1, bottom_k=0, trace=False)  # mismatched targets
    assert precision_flags() == odd_flags


def test_landscape_grids_run_under_the_policy_and_record_it(odd_flags):
    x, y = make_classification()
    model = _model()
    obj = Objective(model, x, y, dtype=torch.float64)
    d = random_direction(obj, seed=0)
    SEEN.clear()
    res = line(obj, None, d, [-0.5, 0.0, 0.5], batch_size=1)
    assert SEEN and all(s["float32_matmul_precision"] == "highest" for s in SEEN)
    assert res.config["precision"]["allow_tf32"] is False
    assert precision_flags() == odd_flags
    res = line(obj, None, d, [-0.5, 0.0, 0.5], allow_tf32=True)
    assert res.config["precision"]["float32_matmul_precision"] == "high"
    assert precision_flags() == odd_flags


def test_cli_allow_tf32_flag(capsys, tmp_path, odd_flags):
    ds = load_dataset("blobs", n=40, n_test=10, dim=4, classes=3, seed=1)
    spec = model_spec("mlp", ds.spec["input_shape"], ds.spec["num_classes"], hidden=[5])
    path = tmp_path / "run.pt"
    save_checkpoint(path, model=spec, state_dict=build_from_spec(spec, seed=0).state_dict(), data=ds.spec, seed=0)
    for extra, expected in (((), False), (("--allow-tf32",), True)):
        code, out, err = run_cli(capsys, "analyze", path, "--no-trace", "--bottom-k", "0", "--json", "-", *extra)
        assert code == 0, err
        env = json.loads(out)["environment"]
        assert env["precision"]["allow_tf32"] is expected
        assert env["precision"]["cudnn_allow_tf32"] is expected
        assert precision_flags() == odd_flags


def test_tracking_measures_without_tf32_and_gives_training_its_flags_back(odd_flags):
    from sharpness.tracking import SharpnessTracker

    x, y = make_classification()
    model = _model()
    tracker = SharpnessTracker(x, y, top_k=1, tol=1e-6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    SEEN.clear()
    tracker.measure(model, 0, optimizer=opt)
    assert SEEN and all(s["float32_matmul_precision"] == "highest" and not s["cudnn_allow_tf32"] for s in SEEN)
    assert precision_flags() == odd_flags


def test_settings_made_through_the_per_backend_api_come_back():
    """torch's newer API (``backends.<x>.fp32_precision``) can leave backends disagreeing, where
    ``get_float32_matmul_precision`` raises: the policy still records, sets and restores them."""
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("this torch has no per-backend fp32_precision API")
    from sharpness.numerics.precision import _fp32_settings

    before = _fp32_settings()
    try:
        matmul.fp32_precision = "tf32"  # CUDA matmuls TF32, oneDNN's left alone: "mixed"
        odd = _fp32_settings()
        assert precision_flags()["float32_matmul_precision"] == "mixed"
        with precision_policy() as policy:
            assert torch.get_float32_matmul_precision() == "highest" and not matmul.allow_tf32
        assert policy["float32_matmul_precision"] == "highest"
        assert _fp32_settings() == odd
    finally:
        for path, value in before.items():
            obj = torch.backends
            for part in ([] if path == "global" else path.split(".")):
                obj = getattr(obj, part)
            obj.fp32_precision = value
    assert _fp32_settings() == before
