"""Worst- and average-case (adaptive) sharpness against closed forms, in float64."""

import dataclasses
import math

import pytest
import torch

from conftest import TinyCNN, TinyMLP, assert_unchanged, make_classification, snapshot
from sharpness.errors import InputError
from sharpness.hessian import dense_hessian
from sharpness.measures.adaptive import (
    AverageSharpness,
    WorstCaseSharpness,
    ascend,
    average_sharpness,
    batches,
    ROUNDING_SHARE_NOTICE,
    perturbation_draws,
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
        # E[u uᵀ] = ρ²/P · I both for u uniform on the sphere of radius ρ and for u ~ N(0, (ρ²/P) I), so
        # E[½(c⊙u)ᵀH(c⊙u)] = ½ρ²/P Σ H_ii c_i² (c = 1 plain, c = |θ| adaptive).
        (False, "sphere", lambda D, th, rho: 0.5 * rho**2 * D.sum() / len(D)),
        (True, "sphere", lambda D, th, rho: 0.5 * rho**2 * (D * th**2).sum() / len(D)),
        (False, "gaussian", lambda D, th, rho: 0.5 * rho**2 * D.sum() / len(D)),
        (True, "gaussian", lambda D, th, rho: 0.5 * rho**2 * (D * th**2).sum() / len(D)),
        # The paper's u ~ N(0, ρ²I): P times larger, ½ρ² Σ H_ii c_i².
        (False, "gaussian-paper", lambda D, th, rho: 0.5 * rho**2 * D.sum()),
        (True, "gaussian-paper", lambda D, th, rho: 0.5 * rho**2 * (D * th**2).sum()),
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


def test_draws_have_the_stated_radius():
    # sphere: ‖u‖₂ = ρ exactly; gaussian: ‖u‖₂²/ρ² ~ χ²_P/P, mean 1 and sd √(2/P) = 0.045 per draw at P = 1000,
    # so the mean of 200 draws is 1 ± 0.0032: 0.02 is six standard deviations; gaussian-paper: P times that.
    P, rho, K = 1000, 0.3, 200
    draws = {d: torch.stack(list(perturbation_draws(P, rho, d, num_draws=K, seed=4))) for d in ("sphere", "gaussian", "gaussian-paper")}
    torch.testing.assert_close(draws["sphere"].norm(dim=1), torch.full((K,), rho, dtype=torch.float64), rtol=1e-12, atol=0)
    assert float((draws["gaussian"].pow(2).sum(1) / rho**2).mean()) == pytest.approx(1.0, abs=0.02)
    assert float((draws["gaussian-paper"].pow(2).sum(1) / (rho**2 * P)).mean()) == pytest.approx(1.0, abs=0.02)
    # One stream of directions: the same seed points the same way under every law.
    unit = {d: u / u.norm(dim=1, keepdim=True) for d, u in draws.items()}
    torch.testing.assert_close(unit["gaussian"], unit["sphere"], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(unit["gaussian-paper"], unit["sphere"], rtol=1e-12, atol=1e-15)
    assert average_sharpness.__kwdefaults__["distribution"] == "sphere"


@pytest.mark.parametrize("antithetic", [True, False])
def test_average_case_uses_those_draws_and_records_its_best_point(objective, antithetic):
    # Recomputed independently: the loss at θ ± c⊙u_k through Objective.value, for the draws of the same seed.
    rho = 0.2
    r = average_sharpness(objective, rho, num_draws=6, antithetic=antithetic, seed=9)
    c = objective.theta.abs()
    f0 = float(objective.value())
    signs = (1, -1) if antithetic else (1,)
    points = {
        (k, s): float(objective.value(objective.theta + s * c * u)) - f0
        for k, u in enumerate(perturbation_draws(objective.numel, rho, "sphere", num_draws=6, seed=9))
        for s in signs
    }
    per_draw = [sum(points[k, s] for s in signs) / len(signs) for k in range(6)]
    assert r.value == pytest.approx(sum(per_draw) / 6, rel=1e-12)
    assert r.max_value == pytest.approx(max(points.values()), rel=1e-12)
    assert points[r.max_draw, r.max_sign] == pytest.approx(r.max_value, rel=1e-12)
    assert r.distribution == "sphere" and r.value <= r.max_value


@pytest.mark.parametrize("antithetic", [True, False])
def test_average_case_in_vmapped_blocks_equals_one_point_at_a_time(objective, antithetic):
    # batch_size=1 evaluates each point exactly as Objective.value (same bits); blocks of any size, one that does
    # not divide the 2 × 7 points too, agree with it to float64 rounding of O(1) losses (batched matrix products
    # sum in another order: ~1e-16 relative; 1e-13 leaves room for the difference of two such losses).
    one = average_sharpness(objective, 0.2, num_draws=7, antithetic=antithetic, seed=3, batch_size=1)
    c, f0 = objective.theta.abs(), objective.value()
    exact = [float(objective.value(objective.theta + s * c * u) - f0)
             for u in perturbation_draws(objective.numel, 0.2, "sphere", num_draws=7, seed=3)
             for s in ((1, -1) if antithetic else (1,))]
    assert one.max_value == max(exact)
    for block in (5, 16, None):
        r = average_sharpness(objective, 0.2, num_draws=7, antithetic=antithetic, seed=3, batch_size=block)
        assert r.value == pytest.approx(one.value, rel=1e-13, abs=1e-15)
        assert r.stderr == pytest.approx(one.stderr, rel=1e-10)
        assert (r.max_draw, r.max_sign) == (one.max_draw, one.max_sign)


def test_objective_losses_at_many_points(cnn):
    # The batched evaluator behind grids and average-case draws, against Objective.value at each point (float64,
    # BatchNorm with running statistics): bit for bit one at a time, to rounding in blocks.
    x, y = make_classification(n=23, d=8)
    obj = Objective(cnn, x, y, chunk_size=7)
    g = torch.Generator().manual_seed(0)
    thetas = obj.theta + 0.1 * torch.randn(9, obj.numel, generator=g, dtype=torch.float64)
    expected = torch.stack([obj.value(t) for t in thetas]).double()
    assert torch.equal(obj.losses_at(thetas, batch_size=1), expected)
    torch.testing.assert_close(obj.losses_at(thetas, batch_size=4), expected, rtol=1e-13, atol=0)
    with pytest.raises(ValueError, match=r"expected points of shape \(B, "):
        obj.losses_at(thetas[:, :-1])


def random_small_models():
    """Four tiny models at random points with random data (float64): (name, objective)."""
    out = []
    for seed in range(3):
        torch.manual_seed(seed)
        x, y = make_classification(n=30, seed=seed)
        out.append((f"mlp{seed}", Objective(TinyMLP().double(), x, y)))
    torch.manual_seed(3)
    x, y = make_classification(n=20, d=8, seed=3)
    out.append(("cnn", Objective(TinyCNN().double(), x, y)))
    return out


@pytest.mark.parametrize("p", [2, "inf"])
@pytest.mark.parametrize("adaptive", [True, False])
def test_average_never_exceeds_the_reported_worst_case_at_equal_rho(p, adaptive):
    # Every sphere draw lies in the ball ‖u‖_p ≤ ρ (p = 2, ∞), so avg ≤ max over its points ≤ worst, by
    # construction once the worst case starts from the average's best point — even with no ascent at all
    # (steps = 0). Slack 1e-14: the two sides sum the same loss along two code paths (rounding ~1e-16).
    below_without = 0
    for name, obj in random_small_models():
        for rho in (0.05, 0.3):
            avg = average_sharpness(obj, rho, adaptive=adaptive, num_draws=20, seed=1)
            for steps in (0, 5):
                worst = worst_case_sharpness(obj, rho, p=p, adaptive=adaptive, steps=steps, seed=2, average=avg)
                assert worst.value >= avg.max_value - 1e-14 >= avg.value - 1e-14, (name, rho, steps)
                assert worst.start == "random+average" and worst.average_floor == avg.max_value
                assert worst.num_grads == steps + 2
            for seed in range(4):
                alone = worst_case_sharpness(obj, rho, p=p, adaptive=adaptive, steps=0, seed=seed)
                below_without += alone.value < avg.value
    if p == 2:
        # The coupling is what makes it hold: at these random (non-minimal) points one random point of the
        # sphere alone falls below the average about half the time, its first-order term gᵀδ being negative.
        assert below_without > 0


def test_the_average_start_works_in_float32(mlp):
    # The draws are float64; cast to a float32 objective they are projected back into the ball, and the
    # ordering holds to float32 rounding of the loss (ε₃₂ ≈ 6e-8 on losses ≈ 1, so 1e-6 absolute).
    x, y = make_classification(n=24)
    obj = Objective(mlp.float(), x.float(), y)
    for p in (2, "inf"):
        avg = average_sharpness(obj, 0.3, num_draws=10, seed=3)
        worst = worst_case_sharpness(obj, 0.3, p=p, steps=0, average=avg)
        assert worst.value >= avg.max_value - 1e-6 and avg.max_value >= avg.value


def test_the_papers_gaussian_is_not_comparable_with_the_worst_case():
    # At a minimum of f = c + ½zᵀDz (D = diag(0.05, …, 1.8), P = 6) the paper's u ~ N(0, ρ²I) averages
    # ½ρ² Σ D_i = ½ρ²·4.55, above the whole ball's maximum ½ρ² max D_i = ½ρ²·1.8: the inconsistency the radius
    # convention removes. The per-draw values ½uᵀDu have a relative spread √(2ΣD²)/ΣD ≈ 0.63, so the mean of
    # 100 is resolved to 6 %: the gap (×2.5) is ~10 standard errors. The sphere's mean, ½ρ²ΣD/P, stays below.
    obj, D, *_ = quadratic_at_minimum()
    rho = 0.3
    truth_max = 0.5 * rho**2 * float(D.max())
    worst = worst_case_sharpness(obj, rho, adaptive=False, steps=20)
    paper = average_sharpness(obj, rho, adaptive=False, distribution="gaussian-paper", num_draws=100, seed=1)
    sphere = average_sharpness(obj, rho, adaptive=False, num_draws=100, seed=1)
    assert paper.value > truth_max >= worst.value
    assert sphere.value <= worst.value
    with pytest.raises(InputError, match="distribution"):
        worst_case_sharpness(obj, rho, adaptive=False, average=paper)


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
        lambda o: worst_case_sharpness(o, 0.2, average=average_sharpness(o, 0.1, num_draws=2)),
        lambda o: worst_case_sharpness(o, 0.1, adaptive=False, average=average_sharpness(o, 0.1, num_draws=2)),
        lambda o: worst_case_sharpness(o, 0.1, average=average_sharpness(o, 0.1, distribution="gaussian", num_draws=2)),
        lambda o: ascend(o, 0.1, starts=(torch.ones(o.numel, dtype=torch.float64),)),
    ],
)
def test_bad_arguments_say_what_was_expected(objective, call):
    with pytest.raises(InputError, match="got"):
        call(objective)


def test_an_average_below_the_losss_float32_rounding_is_flagged_and_float64_resolves_it(mlp, caplog):
    # At ρ = 1e-5 the adaptive average-case increase is ~½ρ²/P Σ H_ii θ_i² ≈ 9e-14, six orders below a
    # float32 loss's own rounding (eps·|L| ≈ 1e-7·L): float32 cannot resolve it and must say so; float64
    # resolves it and matches the second-order expectation (closed form from the dense Hessian).
    import sharpness

    x, y = make_classification(n=24)
    rho = 1e-5
    obj64 = Objective(mlp, x, y)
    r64 = average_sharpness(obj64, rho, num_draws=200, seed=4)
    H, theta = dense_hessian(obj64), obj64.theta
    expected = 0.5 * rho**2 * float((torch.diagonal(H) * theta**2).sum()) / theta.numel()
    assert r64.rounding_share < ROUNDING_SHARE_NOTICE and abs(r64.value - expected) <= 4 * r64.stderr and r64.stderr < 0.2 * expected
    model32 = TinyMLP().float()
    model32.load_state_dict(mlp.state_dict())
    obj32 = Objective(model32, x.float(), y)
    r32 = average_sharpness(obj32, rho, num_draws=200, seed=4)
    assert r32.resolution == torch.finfo(torch.float32).eps * abs(float(obj32.value()))
    assert r32.rounding_share > 1 and expected < 1e-3 * r32.resolution  # float32 returns rounding: flagged
    with caplog.at_level("WARNING", logger="sharpness.analysis"):
        report = sharpness.analyze(model32, x.float(), y, top_k=0, bottom_k=0, trace=False,
                                   average_adaptive_rho=(rho,), average_draws=20)
    assert any("the loss's float32 rounding" in r.getMessage() for r in caplog.records)
    from sharpness.cli.analyze import render_table

    assert report.to_dict()["average_sharpness"][0]["resolution"] == r32.resolution
    assert "LOSS ROUNDING" in render_table(report.to_dict(), "m.pt")
