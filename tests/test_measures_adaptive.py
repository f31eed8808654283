"""Worst- and average-case (adaptive) sharpness against closed forms, in float64."""

import dataclasses
import math

import pytest
import torch

from conftest import assert_unchanged, make_classification, snapshot
from sharpness.errors import InputError
from sharpness.hessian import dense_hessian
from sharpness.measures.adaptive import (
    AverageSharpness,
    WorstCaseSharpness,
    ascend,
    average_sharpness,
    batches,
    worst_case_sharpness,
)
from sharpness.objective import Objective
from test_measures_epsilon import quadratic_at_minimum


@pytest.fixture
def objective(mlp):
    x, y = make_classification(n=24)
    return Objective(mlp, x, y)


def test_plain_l2_worst_case_on_a_quadratic_is_half_rho2_lambda_max():
    # At a minimum of f = c + ½zᵀHz the ball maximum is exactly ½ρ²λ_max (no Taylor remainder). Every
    # evaluated point is feasible, so the ascent can only fall short: ≤ the truth up to rounding. With D ∝ s²
    # (λ₂/λ₁ = 25/36) the normalized-gradient step acts like a power iteration on I + ηH/‖Hu‖, whose error in
    # the value contracts by ≈ ((1 + 2·25/36)/3)² ≈ 0.8 per step at η = 2ρ even without momentum: 20 steps
    # leave < 0.8²⁰ ≈ 1e-2; we measured ~1e-5 and allow 1e-3.
    obj, *_ = quadratic_at_minimum()
    lam = float(torch.linalg.eigvalsh(dense_hessian(obj))[-1])
    for rho in (1e-2, 0.5):
        r = worst_case_sharpness(obj, rho, p=2, adaptive=False, steps=20)
        truth = 0.5 * rho**2 * lam
        assert truth * (1 - 1e-3) <= r.value <= truth * (1 + 1e-9)


@pytest.mark.parametrize("adaptive", [False, True])
def test_linf_worst_case_on_a_quadratic_is_a_corner(adaptive):
    # max over |u_i| ≤ ρ of ½(c⊙u)ᵀD(c⊙u), D diagonal ≥ 0, is ½ρ²Σ D_i c_i² at any corner; sign ascent from
    # the random start moves every coordinate to the bound of its own sign in one step.
    obj, D, theta, _ = quadratic_at_minimum()
    c = theta.abs() if adaptive else torch.ones_like(theta)
    rho = 0.3
    r = worst_case_sharpness(obj, rho, p="inf", adaptive=adaptive, steps=5)
    assert r.value == pytest.approx(0.5 * rho**2 * float((D * c**2).sum()), rel=1e-10)


@pytest.mark.parametrize("p", [2, "inf"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_ascent_stays_feasible_and_reports_the_loss_it_found(objective, p, adaptive):
    rho = 0.2
    a = ascend(objective, rho, p=p, adaptive=adaptive, steps=8, seed=1)
    norm = a.u.abs().max() if p == "inf" else a.u.norm()
    assert float(norm) <= rho * (1 + 1e-12)
    c = objective.theta.abs() if adaptive else torch.ones_like(objective.theta)
    torch.testing.assert_close(a.delta, c * a.u, rtol=0, atol=0)
    # Recomputed through the Objective's own value(), independent of the batch code path.
    f0, f1 = float(objective.value()), float(objective.value(objective.theta + a.delta))
    assert a.value == pytest.approx(f1 - f0, rel=1e-12, abs=1e-15)
    assert a.value > 0 and a.num_grads == 9


def test_more_steps_never_lower_the_worst_case(objective):
    values = [worst_case_sharpness(objective, 0.1, steps=k).value for k in (0, 2, 5, 10)]
    assert all(b >= a for a, b in zip(values, values[1:])), values


def test_zero_radius_gives_zero(objective):
    assert worst_case_sharpness(objective, 0.0).value == 0.0
    assert average_sharpness(objective, 0.0, num_draws=3).value == 0.0


@pytest.mark.parametrize(
    "adaptive, distribution, expected",
    [
        # E[½uᵀHu] for u ~ N(0, ρ²I): ½ρ² tr(H); for adaptive δ = |θ|⊙u: ½ρ² Σ H_ii θ_i².
        (False, "gaussian", lambda D, th, rho: 0.5 * rho**2 * D.sum()),
        (True, "gaussian", lambda D, th, rho: 0.5 * rho**2 * (D * th**2).sum()),
        # u uniform on the sphere of radius ρ: E[u uᵀ] = ρ²/P · I, so ½ρ² tr(H)/P.
        (False, "sphere", lambda D, th, rho: 0.5 * rho**2 * D.sum() / len(D)),
    ],
)
def test_average_case_on_a_quadratic_matches_its_expectation(adaptive, distribution, expected):
    obj, D, theta, _ = quadratic_at_minimum()
    rho = 0.3
    r = average_sharpness(obj, rho, adaptive=adaptive, distribution=distribution, num_draws=400, seed=2)
    # 4 standard errors: a false alarm about once in 16 000 seeds, and the seed is fixed.
    assert abs(r.value - float(expected(D, theta, rho))) <= 4 * r.stderr
    assert r.stderr < 0.2 * r.value  # the test has teeth: the expectation is resolved to < 20 %


def test_average_case_stderr_shrinks_like_one_over_sqrt_draws(objective):
    # Expected ratio √(100/400) = 0.5. A sample standard deviation over n draws has relative spread
    # ≈ √((κ − 1)/(4n)) (κ the kurtosis), ~5 % at n = 100 for κ ≈ 3; [0.35, 0.7] leaves room for heavier tails.
    small = average_sharpness(objective, 0.05, num_draws=100, antithetic=False, seed=0)
    large = average_sharpness(objective, 0.05, num_draws=400, antithetic=False, seed=1)
    assert 0.35 <= large.stderr / small.stderr <= 0.7


def test_antithetic_draws_estimate_the_same_mean_with_less_noise(objective):
    # ±u have the same law, so both estimators are unbiased for E[L(w + c⊙u)] − L(w); away from a minimum
    # the antithetic one drops the first-order term gᵀδ, the bulk of the plain estimator's spread.
    pair = average_sharpness(objective, 0.02, num_draws=100, seed=3)
    plain = average_sharpness(objective, 0.02, num_draws=100, antithetic=False, seed=3)
    assert abs(pair.value - plain.value) <= 4 * math.hypot(pair.stderr, plain.stderr)
    assert pair.stderr < 0.5 * plain.stderr
    assert (pair.num_evals, plain.num_evals) == (201, 101)


@pytest.mark.parametrize("adaptive", [False, True])
def test_worst_case_dominates_average_case_on_the_same_set(objective, adaptive):
    # The sphere ‖u‖₂ = ρ lies inside the ball ‖u‖₂ ≤ ρ, so E over the sphere ≤ max over the ball; the ascent
    # is a lower bound of that max, and it must still beat the average.
    rho = 0.1
    avg = average_sharpness(objective, rho, adaptive=adaptive, distribution="sphere", num_draws=50)
    worst = worst_case_sharpness(objective, rho, p=2, adaptive=adaptive)
    assert worst.value >= avg.value + 2 * avg.stderr


def test_m_sharpness_is_the_mean_of_per_batch_maxima(mlp):
    x, y = make_classification(n=23)
    obj = Objective(mlp, x, y, chunk_size=4)  # chunks smaller than batches: the batch loss must not care
    r = worst_case_sharpness(obj, 0.1, p="inf", batch_size=5, steps=3, seed=7)
    assert r.num_batches == 4 and r.num_grads == 4 * 4  # ⌊23/5⌋ batches, the short remainder dropped
    parts = batches(obj, 5, seed=7)
    for i, (bx, by, _) in enumerate(parts):
        # Each batch's value equals the whole-set ascent on an Objective built from that batch alone.
        alone = Objective(mlp, bx, by)
        assert r.values_per_batch[i] == pytest.approx(ascend(alone, 0.1, p="inf", steps=3, seed=7 + i).value, rel=1e-10)
    assert r.value == pytest.approx(sum(r.values_per_batch) / 4, rel=1e-14)
    v = torch.tensor(r.values_per_batch, dtype=torch.float64)
    assert r.stderr == pytest.approx(float(v.std() / 2), rel=1e-12)
    covered = torch.cat([b[0] for b in parts])
    assert len({tuple(row.tolist()) for row in covered}) == 20  # disjoint batches
    assert worst_case_sharpness(obj, 0.1, steps=1).stderr is None


def test_model_untouched_reproducible_and_keys(mlp):
    x, y = make_classification()
    before = snapshot(mlp)
    obj = Objective(mlp, x, y)
    a = worst_case_sharpness(obj, 0.1, batch_size=8, steps=3, seed=5)
    b = worst_case_sharpness(obj, 0.1, batch_size=8, steps=3, seed=5)
    c = average_sharpness(obj, 0.1, num_draws=5, seed=5)
    d = average_sharpness(obj, 0.1, num_draws=5, seed=5)
    assert_unchanged(mlp, before)
    assert a == dataclasses.replace(b, seconds=a.seconds) and c == dataclasses.replace(d, seconds=c.seconds)
    for cls in (WorstCaseSharpness, AverageSharpness):
        assert {"rho", "adaptive", "value", "stderr"} <= {f.name for f in dataclasses.fields(cls)}
    assert a.p == "2" and worst_case_sharpness(obj, 0.1, p=math.inf, steps=1).p == "inf"


@pytest.mark.parametrize(
    "call",
    [
        lambda o: worst_case_sharpness(o, -0.1),
        lambda o: worst_case_sharpness(o, 0.1, p=1),
        lambda o: worst_case_sharpness(o, 0.1, batch_size=0),
        lambda o: worst_case_sharpness(o, 0.1, batch_size=10**6),
        lambda o: worst_case_sharpness(o, 0.1, steps=-1),
        lambda o: worst_case_sharpness(o, 0.1, eta=-1.0),
        lambda o: average_sharpness(o, 0.1, num_draws=1),
        lambda o: average_sharpness(o, 0.1, distribution="laplace"),
    ],
)
def test_bad_arguments_say_what_was_expected(objective, call):
    with pytest.raises(InputError, match="got"):
        call(objective)
