"""Tests for sharpness.tracking: exact λ on a quadratic, warm vs cold Lanczos, bit-identical training, resume."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from sharpness.data import load_dataset
from sharpness.errors import InputError
from sharpness.hessian import HessianOperator, dense_hessian
from sharpness.linalg import EigenResult, extreme_eigenvalues
from sharpness.objective import Objective
from sharpness.analysis.report import select_analysis_set
from sharpness.tracking import (
    _VERIFY_STREAM,
    RECORD_FIELDS,
    SharpnessTracker,
    preserved_rng,
    progressive_sharpening_summary,
    _reconcile,
    _seed_for,
    record_scalars,
    stability_threshold,
)
from sharpness.train import TrainConfig, TrainingInterrupted, train

from conftest import assert_unchanged, snapshot
from test_train import InterruptAt, states_equal


@pytest.fixture(scope="module")
def blobs():
    return load_dataset("blobs", n=120, n_test=40, dim=4, classes=3, seed=3)


class DenseReference:
    """A callback that records the exact Hessian spectrum (dense autograd Hessian, float64) at given steps."""

    def __init__(self, x, y, steps):
        self.x, self.y, self.steps = x, y, set(steps)
        self.eigenvalues: dict[int, np.ndarray] = {}

    def on_step_end(self, state):
        if state.step in self.steps:
            objective = Objective(state.model, self.x, self.y, dtype=torch.float64)
            self.eigenvalues[state.step] = torch.linalg.eigvalsh(dense_hessian(objective)).numpy()


# --- the edge-of-stability threshold ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {},                                          # plain GD: 2/η
    {"momentum": 0.9},                           # heavy ball: (2 + 2β)/η
    {"momentum": 0.5, "nesterov": True},         # Nesterov: (2 + 2β)/((1 + 2β)η)
    {"momentum": 0.8, "dampening": 0.3},         # dampening: η → η(1 − d)
    {"momentum": 0.9, "weight_decay": 0.7},      # L2 adds wd·I to the Hessian
])
def test_stability_threshold_is_where_torch_sgd_turns_unstable_on_a_quadratic(kwargs):
    """Independent truth: run torch.optim.SGD itself on f(θ) = λθ²/2 just below and just above the threshold."""
    lr = 0.1
    theta = nn.Parameter(torch.ones(1, dtype=torch.float64))
    threshold, formula = stability_threshold(torch.optim.SGD([theta], lr=lr, **kwargs))
    assert threshold is not None and formula

    def final_size(curvature: float) -> float:
        p = nn.Parameter(torch.ones(1, dtype=torch.float64))
        opt = torch.optim.SGD([p], lr=lr, **kwargs)
        for _ in range(300):
            p.grad = curvature * p.detach().clone()  # ∇(λθ²/2), set directly: no autograd needed
            opt.step()
        return float(p.detach().abs())

    # ±3 %: for plain GD the error factor per step is |1 − 2·0.97| = 0.94 or 1.06, so 300 steps give ~1e-8
    # and ~4e7; the momentum variants separate faster (measured: 1e-27 vs 1e25 and beyond after 1000 steps).
    assert final_size(0.97 * threshold) < 1e-3
    assert final_size(1.03 * threshold) > 1e3


def test_stability_threshold_for_plain_lr_adam_and_mixed_groups():
    assert stability_threshold(lr=0.05) == (40.0, "2/lr")
    assert stability_threshold() == (None, "none: no learning rate given")
    p = nn.Parameter(torch.zeros(2))
    value, formula = stability_threshold(torch.optim.Adam([p], lr=1e-3))
    assert value is None and "preconditioned" in formula
    q = nn.Parameter(torch.zeros(2))
    mixed = torch.optim.SGD([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1)
    assert stability_threshold(mixed)[0] is None


# --- side effects ----------------------------------------------------------------------------------------------


class NoisyForward(nn.Module):
    """BatchNorm + dropout, and a forward that draws from every global RNG without using the draws."""

    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.drop, self.fc2 = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.3), nn.Linear(6, 3)
        self.noisy = True

    def forward(self, x):
        if self.noisy:
            torch.rand(1), np.random.rand(), random.random()
        return self.fc2(self.drop(torch.tanh(self.bn(self.fc1(x)))))


def rng_states() -> tuple:
    """Comparable snapshots of the torch, NumPy (key array *and* position) and Python global RNG states."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return torch.get_rng_state(), (keys.tobytes(), pos, has_gauss, cached), random.getstate()


def same_rng(a: tuple, b: tuple) -> list[bool]:
    return [torch.equal(a[0], b[0]), a[1] == b[1], a[2] == b[2]]


def test_measure_leaves_model_optimizer_and_every_global_rng_untouched():
    torch.manual_seed(0)
    model = NoisyForward().double().train()
    x = torch.randn(30, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(x).sum().backward()  # .grad present, as mid-training
    opt.step()
    momentum = [s["momentum_buffer"].clone() for s in opt.state.values()]
    before_model, before_rng = snapshot(model), rng_states()

    # the model's forward does consume all three global RNGs, so the check below can fail
    with preserved_rng():
        copy.deepcopy(model)(x)
        consumed = rng_states()
    assert same_rng(consumed, before_rng) == [False, False, False]

    tracker = SharpnessTracker(x, y, lambda_min=True, trace=True, top_k=2, trace_matvecs=9, tol=1e-6)
    record = tracker.measure(model, 5, optimizer=opt)
    assert_unchanged(model, before_model)
    assert same_rng(rng_states(), before_rng) == [True, True, True]
    assert all(torch.equal(a, s["momentum_buffer"]) for a, s in zip(momentum, opt.state.values()))
    # and the values are right: the exact spectrum of the eval-mode Hessian (dense, float64)
    quiet = copy.deepcopy(model)
    quiet.noisy = False  # torch.func.hessian (vmap) refuses random ops; the function is the same
    exact = torch.linalg.eigvalsh(dense_hessian(Objective(quiet, x, y))).numpy()
    assert record["lambda_max"] == pytest.approx(exact[-1], rel=1e-5)  # tol 1e-6 (estimate) with margin
    assert record["top_eigenvalues"][1] == pytest.approx(exact[-2], rel=1e-5)
    assert record["lambda_min"] == pytest.approx(exact[0], rel=1e-5, abs=1e-8)
    assert record["eos_threshold"] == pytest.approx(3.8 / 0.1) and record["eos_formula"].startswith("(2+2β)/lr")


def test_tracked_training_is_bit_identical_to_untracked(blobs):
    """BatchNorm (running statistics), dropout (the global RNG inside training) and momentum (optimizer state)."""
    config = TrainConfig(data="blobs", model="mlp", model_kwargs={"hidden": [12], "batchnorm": True, "dropout": 0.2},
                         batch_size=16, epochs=3, lr=0.05, momentum=0.9)
    plain = train(config, dataset=blobs)
    tracker = SharpnessTracker(every=4, every_epochs=1, analysis_samples=64, top_k=2, lambda_min=True, trace=True,
                               trace_matvecs=12, held_out_samples=20, verify_every=3)
    tracked = train(config, dataset=blobs, callbacks=[tracker])
    assert states_equal(plain.model.state_dict(), tracked.model.state_dict())
    assert [h["train_loss"] for h in plain.history] == [h["train_loss"] for h in tracked.history]
    # 7 steps per epoch, 21 in all: start, every 4th step, epoch ends (7, 14) and the last step (21)
    assert [r["step"] for r in tracker.records] == [0, 4, 7, 8, 12, 14, 16, 20, 21]
    assert [r["epoch"] for r in tracker.records] == [0, 0, 1, 1, 1, 2, 2, 2, 3]
    for r in tracker.records:
        assert list(r) == list(RECORD_FIELDS)
        assert r["lambda_min"] <= r["lambda_max"] and r["top_eigenvalues"][0] >= r["top_eigenvalues"][1]
        assert r["trace"] is not None and r["trace_stderr"] >= 0 and r["held_out_loss"] > 0
        assert r["num_matvecs"] == r["lanczos_matvecs"] + 12 and r["converged"]
    assert [r["verified"] for r in tracker.records] == [i in (3, 6) for i in range(9)]  # the cold checks ran too


# --- warm start ------------------------------------------------------------------------------------------------


def test_warm_started_values_match_cold_ones_and_the_dense_truth_with_fewer_hvps(blobs):
    tol = 1e-6
    config = TrainConfig(data="blobs", model="mlp", model_kwargs={"hidden": [16], "activation": "tanh"},
                         batch_size=30, steps=40, lr=0.1, dtype="float64")
    options = dict(every=5, analysis_samples=60, held_out=False, tol=tol, lambda_min=True, seed=1)
    warm = SharpnessTracker(**options)
    cold = SharpnessTracker(warm_start=False, **options)
    x, y, _ = select_analysis_set(*blobs.split("train"), samples=60, seed=1)  # the tracker's draw rule
    dense = DenseReference(x, y, steps=range(5, 41, 5))
    train(config, dataset=blobs, callbacks=[warm, cold, dense])

    assert [r["step"] for r in warm.records] == [r["step"] for r in cold.records] == list(range(0, 41, 5))
    assert not warm.records[0]["warm_started"] and all(r["warm_started"] for r in warm.records[1:])
    for w, c in zip(warm.records[1:], cold.records[1:]):
        exact = dense.eigenvalues[w["step"]]
        # tol is Lanczos' relative error target (an estimate, not a bound): allow 10× on the exact value,
        # and both runs within 2·10·tol of each other.
        for r in (w, c):
            assert r["lambda_max"] == pytest.approx(exact[-1], rel=10 * tol)
            assert r["lambda_min"] == pytest.approx(exact[0], rel=10 * tol, abs=1e-9)
        assert abs(w["lambda_max"] - c["lambda_max"]) <= 20 * tol * abs(c["lambda_max"])
    warm_cost = sum(r["lanczos_matvecs"] for r in warm.records[1:])
    cold_cost = sum(r["lanczos_matvecs"] for r in cold.records[1:])
    assert warm_cost < cold_cost, (warm_cost, cold_cost)


# --- a quadratic with a known, constant Hessian -------------------------------------------------------------------


@pytest.fixture(scope="module")
def regression():
    return load_dataset("teacher-student", n=120, n_test=20, dim=40, seed=5)


@pytest.mark.parametrize("factor, diverges", [(1.1, True), (0.9, False)])
def test_gd_on_a_quadratic_diverges_above_two_over_lambda_and_tracker_sees_exact_lambda(regression, factor, diverges):
    """Linear model + MSE: H = 2/N·X̃ᵀX̃ (X̃ = [X, 1]) for every θ. GD with η = factor·2/λ_max multiplies the
    error along the top eigenvector by |1 − ηλ_max| = |1 − 2·factor| each step: 1.2 (grows) or 0.8 (shrinks)."""
    x, _ = regression.split("train")
    xt = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
    exact = torch.linalg.eigvalsh(2.0 / x.shape[0] * xt.T @ xt).numpy()
    lam = float(exact[-1])
    lr = factor * 2.0 / lam
    tol = 1e-7
    tracker = SharpnessTracker(every=10, analysis_samples=None, held_out=False, tol=tol, lambda_min=True)
    config = TrainConfig(data="teacher-student", model="linear", batch_size="full", steps=60, lr=lr, dtype="float64")
    result = train(config, dataset=regression, callbacks=[tracker])

    assert [r["step"] for r in tracker.records] == list(range(0, 61, 10))
    for r in tracker.records:
        # tol is an estimate of the relative error: 10× margin
        assert r["lambda_max"] == pytest.approx(lam, rel=10 * tol)
        assert r["lambda_min"] == pytest.approx(float(exact[0]), rel=10 * tol)
        assert r["eos_threshold"] == pytest.approx(2.0 / lr) and r["two_over_lr"] == pytest.approx(2.0 / lr)
        assert (r["lambda_max"] > r["eos_threshold"]) == diverges
    # H never changes, so each warm start is (nearly) the answer: fewer HVPs than the cold first measurement
    assert all(r["lanczos_matvecs"] < tracker.records[0]["lanczos_matvecs"] for r in tracker.records[1:])

    losses = [h["train_loss"] for h in result.history]  # one record per step (full batch: a step is an epoch)
    if diverges:
        assert losses[-1] > 1e3 * losses[0]
        assert all(b > a for a, b in zip(losses[-20:], losses[-19:]))  # the top direction dominates: growth
    else:
        assert all(b < a for a, b in zip(losses, losses[1:]))  # every |1 − ηλ_i| < 1: monotone descent
        assert tracker.records[-1]["loss"] < 0.5 * tracker.records[0]["loss"]


# --- records, files, resume, summary -----------------------------------------------------------------------------


def test_plain_loop_usage_series_csv_and_scalars(blobs, tmp_path):
    x, y = blobs.split("train")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    seen = []
    tracker = SharpnessTracker(x, y, every=3, top_k=2, analysis_samples=50, held_out=(x[:20], y[:20]),
                               listeners=[seen.append])
    tracker.measure(model, 0, optimizer=opt)
    for step in range(1, 7):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if tracker.due(step):
            tracker.measure(model, step, optimizer=opt)
    assert not tracker.due(6)  # measured there already
    assert [r["step"] for r in tracker.records] == [0, 3, 6] and seen == tracker.records
    series = tracker.series
    assert series["step"] == [0, 3, 6] and len(series["lambda_max"]) == 3 and series["epoch"] == [None] * 3
    assert tracker.analysis_set["n_samples"] == 50 and tracker.held_out_set["n_samples"] == 20

    path = tmp_path / "series.csv"
    tracker.to_csv(path)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 3 and float(rows[1]["lambda_1"]) == series["lambda_max"][1]
    assert float(rows[2]["lambda_2"]) == series["top_eigenvalues"][2][1] and rows[0]["lambda_min"] == ""

    scalars = record_scalars(tracker.records[1])
    assert scalars["sharpness/lambda_max"] == tracker.records[1]["lambda_max"]
    assert scalars["sharpness/lambda_2"] == tracker.records[1]["top_eigenvalues"][1]
    assert scalars["sharpness/lambda_max_ratio"] == pytest.approx(tracker.records[1]["lambda_max"] * 0.2 / 2)
    assert "sharpness/lambda_min" not in scalars  # None values are left out


def test_resumed_run_continues_the_same_series(blobs, tmp_path):
    config = TrainConfig(data="blobs", model="mlp", model_kwargs={"hidden": [8]}, batch_size=20, epochs=2, lr=0.1)
    options = dict(every=2, analysis_samples=40, held_out=False, verify_every=2)  # the check schedule resumes too
    reference = SharpnessTracker(**options)
    train(config, dataset=blobs, callbacks=[reference])

    out = tmp_path / "run.pt"
    first = SharpnessTracker(**options)
    with pytest.raises(TrainingInterrupted):
        train(config, dataset=blobs, callbacks=[first, InterruptAt(7)], out=out)
    second = SharpnessTracker(**options)
    train(dataclasses.replace(config, resume=True), dataset=blobs, callbacks=[second], out=out)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert strip(second.records) == strip(reference.records)
    assert sum(r["verified"] for r in reference.records) >= 2


def test_progressive_sharpening_summary_on_a_known_series():
    lams = [2.0, 8.0, 20.0, 30.0, 38.0, 41.0, 39.0, 40.0, 42.0, 38.0, 40.0, 41.0]
    records = [{"step": 10 * i, "lambda_max": v} for i, v in enumerate(lams)]
    s = progressive_sharpening_summary(records, lr=0.05)
    # the last third is [42, 38, 40, 41]: median (40 + 41)/2; quartiles by linear interpolation on the sorted
    # [38, 40, 41, 42] at positions 0.75 and 2.25
    assert s.threshold == 40.0 and s.num_plateau == 4 and s.plateau == 40.5
    assert s.ratio == pytest.approx(40.5 / 40.0) and (s.plateau_low, s.plateau_high) == (39.5, 41.25)
    assert (s.initial, s.peak, s.peak_step) == (2.0, 42.0, 80) and s.first_crossing_step == 40  # 38 ≥ 0.9·40
    assert abs(s.tail_rise) < 0.1  # a plateau, not a climb
    rising = progressive_sharpening_summary([{"step": i, "lambda_max": 1.0 + i} for i in range(30)], lr=0.05)
    assert rising.tail_rise > 0.3 and rising.first_crossing_step is None
    assert progressive_sharpening_summary(records, lr=0.05, momentum=0.9).threshold == pytest.approx(76.0)


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(InputError, match="every"):
        SharpnessTracker(every=0)
    with pytest.raises(InputError, match="both inputs and targets"):
        SharpnessTracker(torch.zeros(3, 2))
    with pytest.raises(InputError, match="analysis data"):
        SharpnessTracker().measure(nn.Linear(2, 1), 0)
    with pytest.raises(InputError, match="finite lambda_max"):
        progressive_sharpening_summary([{"step": 0, "lambda_max": math.nan}], lr=0.1)


# --- cold-start verification ------------------------------------------------------------------------------------


def quadratic_with_spectrum(eigenvalues, n: int = 600, seed: int = 0):
    """A bias-free linear model with MSE whose Hessian H = 2/N·XᵀX is U diag(λ) Uᵀ for any θ: X = √(N/2)·Q diag(√λ) Uᵀ
    with Q (N × P) orthonormal. Returns the model, the data and U (eigenvectors in the order of ``eigenvalues``)."""
    lam = torch.as_tensor(np.asarray(eigenvalues, dtype=np.float64))
    P = lam.numel()
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, P, generator=g, dtype=torch.float64))
    U, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    x = math.sqrt(n / 2) * (Q * lam.sqrt()) @ U.T
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(P, 1, bias=False).double()
    return model, x, y, U


def crossing_tracker(verify_every: int):
    """A tracker whose next warm start is the issue's crossing case: λ₁ = 12, λ₂ = 10, a bulk in [0, 2], and
    v₀ = u₂ + 1e-3·u₁ + 1e-3·(bulk): yesterday's top eigenvector, now the second."""
    g = np.random.default_rng(1)
    model, x, y, U = quadratic_with_spectrum(np.r_[12.0, 10.0, g.uniform(0.0, 2.0, 298)])
    exact = torch.linalg.eigvalsh(dense_hessian(Objective(model, x, y))).numpy()
    assert exact[-1] == pytest.approx(12.0, rel=1e-10) and exact[-2] == pytest.approx(10.0, rel=1e-10)
    tracker = SharpnessTracker(x, y, analysis_samples=None, held_out=False, tol=1e-4, verify_every=verify_every)
    first = tracker.measure(model, 0)  # a cold start: finds λ₁ and keeps u₁ as the next warm start
    assert first["lambda_max"] == pytest.approx(12.0, rel=1e-3) and not first["warm_started"]
    bulk = U[:, 2:] @ torch.as_tensor(g.standard_normal(298))
    state = tracker.state_dict()
    state["vectors"] = (U[:, 1] + 1e-3 * U[:, 0] + 1e-3 * bulk / bulk.norm())[:, None]
    tracker.load_state_dict(state)
    return tracker, model


def test_verification_catches_a_warm_start_that_stopped_at_the_second_eigenvalue(monkeypatch, caplog):
    # The warm-start rule before the fix (no random component, no minimum step count) stops at 10.000003,
    # "converged"; the tracker's cold check must see it, keep the larger value, and say so.
    import sharpness.linalg.eigen as eigen

    monkeypatch.setattr(eigen, "WARM_START_MIN_STEPS", 0)
    monkeypatch.setattr(eigen, "WARM_START_RANDOM_WEIGHT", 0.0)
    unverified, model = crossing_tracker(verify_every=0)
    lied = unverified.measure(model, 1)
    assert lied["warm_started"] and lied["converged"] and lied["lambda_max"] == pytest.approx(10.0, rel=1e-5)
    assert not lied["verified"] and lied["cold_lambda_max"] is None and lied["verify_disagreed"] is None

    tracker, model = crossing_tracker(verify_every=1)
    with caplog.at_level("WARNING", logger="sharpness"):
        record = tracker.measure(model, 1)
    assert record["warm_started"] and record["verified"] and record["verify_disagreed"]
    assert record["lambda_max"] == pytest.approx(12.0, rel=1e-3) == record["cold_lambda_max"]
    assert record["converged"] and record["lambda_max_error"] <= 1e-4
    assert "warm 10" in record["verify_note"] and "cold 12" in record["verify_note"]
    assert len(caplog.records) == 1 and "step 1" in caplog.records[0].getMessage()
    assert record["lanczos_matvecs"] == lied["lanczos_matvecs"] + record["verify_matvecs"]
    # both directions seed the next warm start, which then finds λ₁ by itself (even under the old rule)
    assert tracker.measure(model, 2)["lambda_max"] == pytest.approx(12.0, rel=1e-3)
    # records stay plain values: JSON and CSV
    json.dumps(tracker.to_dict())
    assert all(type(v) in (int, float, bool, str, list, type(None)) for v in record.values())


def test_fixed_warm_start_finds_the_top_of_the_crossing_and_the_check_agrees(caplog):
    tracker, model = crossing_tracker(verify_every=1)
    with caplog.at_level("WARNING", logger="sharpness"):
        record = tracker.measure(model, 1)
    assert record["warm_started"] and record["verified"] and record["verify_disagreed"] is False
    assert record["lambda_max"] == pytest.approx(12.0, rel=1e-4)
    assert record["cold_lambda_max"] == pytest.approx(12.0, rel=1e-4) and record["verify_note"] is None
    assert not caplog.records


def test_verification_schedule_and_cost():
    # H is the same at every step (a quadratic): every warm start agrees with its check, so a tracker that
    # verifies every 3rd warm measurement spends exactly one cold start more on those, and nothing else.
    g = np.random.default_rng(2)
    model, x, y, _ = quadratic_with_spectrum(np.r_[5.0, 4.0, g.uniform(0.0, 1.0, 98)], n=300)
    options = dict(analysis_samples=None, held_out=False, tol=1e-6, top_k=2, lambda_min=True, seed=4)
    checked, plain = SharpnessTracker(x, y, verify_every=3, **options), SharpnessTracker(x, y, verify_every=0, **options)
    for step in range(10):
        checked.measure(model, step)
        plain.measure(model, step)
    assert [r["verified"] for r in checked.records] == [i > 0 and i % 3 == 0 for i in range(10)]
    assert not any(r["verified"] for r in plain.records) and checked.config["verify_every"] == 3
    objective = Objective(model, x, y)
    for c, p in zip(checked.records, plain.records):
        assert c["lanczos_matvecs"] - c["verify_matvecs"] == p["lanczos_matvecs"]  # the same warm runs
        if c["verified"]:
            # the check is one cold start at the same tolerance from the verification stream's seed
            cold, _ = extreme_eigenvalues(HessianOperator(objective), top_k=2, bottom_k=1, tol=1e-6,
                                          seed=_seed_for(4, c["step"], _VERIFY_STREAM))
            assert c["verify_matvecs"] == cold.num_matvecs and c["cold_lambda_max"] == float(cold.values[0])
            assert c["verify_disagreed"] is False and c["lambda_max"] == pytest.approx(5.0, rel=1e-5)
        else:
            assert c["verify_matvecs"] == 0 and c["cold_lambda_max"] is None and c["verify_disagreed"] is None
    total = sum(r["lanczos_matvecs"] for r in checked.records)
    assert total == sum(r["lanczos_matvecs"] for r in plain.records) + sum(r["verify_matvecs"] for r in checked.records)
    # each check costs what the cold first measurement cost, give or take its random start; warm runs less
    first = checked.records[0]["lanczos_matvecs"]
    checks = [r["verify_matvecs"] for r in checked.records if r["verified"]]
    warm = [r["lanczos_matvecs"] - r["verify_matvecs"] for r in checked.records[1:]]
    assert all(abs(c - first) <= 0.25 * first for c in checks), (checks, first)
    assert max(warm) < first, (warm, first)


def _eigen(values, errors, converged=True):
    n = len(values)
    return EigenResult(values=np.asarray(values, dtype=float), residuals=np.asarray(errors, dtype=float),
                       converged=np.full(n, converged), num_matvecs=0, vectors=None, num_steps=n,
                       error_bounds=np.asarray(errors, dtype=float))


def test_reconcile_keeps_the_more_extreme_value_and_flags_only_real_disagreement():
    tol = 1e-4
    empty = _eigen([], [])
    # within both error estimates: agreement, but still the larger (a Ritz value is a lower bound of λ_max)
    kept = _reconcile([(_eigen([2.0, 1.0], [1e-5, 1e-5]), empty), (_eigen([2.0002, 1.0], [1e-5, 1e-5]), empty)], tol, False)
    assert not kept.disagreed and kept.record["lambda_max"] == 2.0002 and kept.record["verify_disagreed"] is False
    # the cold start stopped at λ₂: the warm value is kept, and the note says what happened
    kept = _reconcile([(_eigen([2.0, 1.0], [1e-6, 1e-6]), empty), (_eigen([1.0, 0.5], [1e-6, 1e-6]), empty)], tol, False)
    assert kept.disagreed and kept.record["top_eigenvalues"] == [2.0, 1.0]
    assert "λ_1 warm 2 vs cold 1" in kept.record["verify_note"] and "λ_2" in kept.record["verify_note"]
    # an unconverged cold value with a wide error estimate does not count as a disagreement
    loose = _eigen([1.5], [0.5], converged=False)
    kept = _reconcile([(_eigen([2.0], [1e-6]), empty), (loose, empty)], tol, False)
    assert not kept.disagreed and kept.record["converged"]
    # the bottom end keeps the smaller value, with its run's converged flag
    kept = _reconcile([(_eigen([2.0], [1e-6]), _eigen([-1.0], [1e-6])),
                       (_eigen([2.0], [1e-6]), _eigen([-3.0], [1e-6], converged=False))], tol, True)
    assert kept.disagreed and kept.record["lambda_min"] == -3.0 and not kept.record["converged"]
    assert "λ_min warm -1 vs cold -3" in kept.record["verify_note"]
