"""The miss certificate (sharpness.linalg.certificate): its three facts checked independently in float64 (the
Lanczos polynomial identity, the worst point of the half-line, the Gaussian density bound), then its use by the
eigensolver: no certificate below 1 % ever sits beside a wrong value, on spectra built to fool a single Krylov
space (a second eigenvalue far above the bulk, repeated and clustered tops, a 0.2 % gap)."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch

from sharpness.linalg import ConvergenceWarning, extreme_eigenvalues, top_eigenvalues
from sharpness.linalg.certificate import miss_probability, rounding_floor
from sharpness.linalg.eigen import COLD_START_MIN_STEPS, MISS_PROBABILITY
from sharpness.linalg.lanczos import LanczosProcess
from sharpness.analysis.schema import eigen_dict

from linalg_helpers import Diagonal


def _steps(A, start, m):
    proc = LanczosProcess(A, start, max_steps=m + 1)
    for _ in range(m):
        proc.step()
    return proc


def test_lanczos_vectors_are_the_polynomial_det_over_betas_of_the_start():
    # q_{m+1} = p_m(A) q₁ with p_m(λ) = det(λI − T_m) / (β₁⋯β_m); for a diagonal A, entrywise
    # q_{m+1}[i] = p_m(d_i) q₁[i]. det is taken densely here, not from the Ritz values as in the code.
    g = np.random.default_rng(3)
    d = np.r_[5.0, 3.0, g.uniform(0, 1, 298)]
    proc = _steps(Diagonal(d), torch.as_tensor(g.standard_normal(300)), 9)
    m = 8
    Q = proc.basis().numpy()
    a, b = proc.alphas()[:m], proc.betas()[:m]
    T = np.diag(a) + np.diag(b[:-1], 1) + np.diag(b[:-1], -1)
    p = np.array([np.linalg.det(lam * np.eye(m) - T) for lam in d]) / np.prod(b)
    np.testing.assert_allclose(Q[:, m], p * Q[:, 0], rtol=1e-6, atol=1e-9)


def test_bound_is_the_determinant_formula_at_the_threshold_and_the_worst_point_beyond_it():
    g = np.random.default_rng(4)
    d = np.r_[4.0, 2.5, g.uniform(-1, 1, 500)]
    proc = _steps(Diagonal(d), torch.as_tensor(g.standard_normal(d.size)), 7)
    theta, _, _ = proc.ritz()
    betas = proc.betas()
    a, P = theta.max() + 0.3, d.size
    T = np.diag(proc.alphas()) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
    p_a = np.linalg.det(a * np.eye(7) - T) / np.prod(betas)
    got = miss_probability(theta, betas, a, 1, P, 1e-16)
    np.testing.assert_allclose(got, math.sqrt(2 * P / math.pi) / abs(p_a), rtol=1e-9)
    # every λ ≥ a is covered by the value at a: 1/|p_m| only falls beyond it (a dense grid finds nothing worse)
    lam = np.linspace(a, a + 20, 20001)
    worst = np.max(np.prod(betas) / np.abs(np.prod(lam[:, None] - theta[None, :], axis=1)))
    assert worst <= 1 / abs(p_a) * (1 + 1e-12)
    # the bottom end is the mirror image
    b = theta.min() - 0.3
    p_b = np.linalg.det(b * np.eye(7) - T) / np.prod(betas)
    np.testing.assert_allclose(miss_probability(theta, betas, b, -1, P, 1e-16),
                               math.sqrt(2 * P / math.pi) / abs(p_b), rtol=1e-9)


def test_bound_refuses_a_threshold_inside_the_ritz_values_and_never_goes_below_rounding():
    theta, betas = np.array([0.0, 1.0, 2.0]), np.array([0.5, 0.5, 1e-3])
    assert miss_probability(theta, betas, 1.5, 1, 100, 1e-16) == math.inf   # λ = 1.5 is not beyond θ = 2
    assert miss_probability(theta, betas, 0.5, -1, 100, 1e-16) == math.inf
    # far beyond, the exact bound is astronomically small; what is reported is the rounding floor √(2d/π)·m·eps
    eps = float(torch.finfo(torch.float32).eps)
    assert miss_probability(theta, betas, 1e9, 1, 10**6, eps) == pytest.approx(rounding_floor(10**6, 3, eps))
    assert rounding_floor(10**6, 3, eps) == pytest.approx(math.sqrt(2e6 / math.pi) * 3 * eps)
    # an exactly invariant Krylov space (last β = 0) misses nothing but is still reported at the floor
    assert miss_probability(theta, np.array([0.5, 0.5, 0.0]), 3.0, 1, 100, eps) == rounding_floor(100, 3, eps)
    with pytest.raises(ValueError, match="side must be"):
        miss_probability(theta, betas, 3.0, 0, 100, eps)


@pytest.mark.parametrize("P", [2, 10, 1000, 10**6])
def test_gaussian_start_component_density_bound(P):
    # |z₁|/‖z‖ for z ~ N(0, I_P): its square is Beta(1/2, (P−1)/2), so P(|c| ≤ ε) = BetaCDF(ε²); the code uses
    # the bound ε·√(2P/π), which must hold everywhere and be tight for small ε and large P.
    eps = np.logspace(-8, -0.5, 40) / math.sqrt(P)
    exact = scipy.stats.beta(0.5, (P - 1) / 2).cdf(eps**2)
    bound = eps * math.sqrt(2 * P / math.pi)
    assert np.all(exact <= bound * (1 + 1e-12))
    # at ε → 0 the ratio is the density at 0 over √(2P/π) = Γ(P/2) / (Γ((P−1)/2)·√(P/2)), → 1 as P grows
    at_zero = math.exp(math.lgamma(P / 2) - math.lgamma((P - 1) / 2)) / math.sqrt(P / 2)
    np.testing.assert_allclose(exact[0] / bound[0], at_zero, rtol=1e-6)
    assert P < 1000 or at_zero > 0.999


def _family(seed, gap, sep, P):
    g = np.random.default_rng(seed)
    return np.r_[sep * (1 + gap), sep, g.uniform(0, 1, P - 2)]


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # an unconverged value is honest; a wrong one is not
        return fn(*args, **kwargs)


def test_early_stops_never_report_a_hidden_second_eigenvalue():
    # λ₂ well above the bulk converges within a few steps whatever λ₁ does: the failure the floor guards
    # against. Over top gaps from 0.2 % to 100 % and both dtypes, runs that stop before the floor must carry a
    # certificate ≤ 1 % and never be wrong.
    tol, early, wrong = 1e-3, 0, []
    for dtype in (torch.float32, torch.float64):
        for gap in (0.002, 0.03, 0.3, 1.0):
            for sep in (3.0, 10.0):
                for s in range(15):
                    d = _family(100 * s + 7, gap, sep, 400 + 97 * s)
                    res = _quiet(top_eigenvalues, Diagonal(d, dtype), 1, seed=s, tol=tol)
                    if res.num_matvecs < 1 + COLD_START_MIN_STEPS:
                        early += 1
                        assert res.miss_bound is not None and res.miss_bound <= MISS_PROBABILITY
                    if res.converged[0] and abs(res.values[0] - d[0]) > tol * d[0]:
                        wrong.append((dtype, gap, sep, s, float(res.values[0]), res.num_matvecs))
    assert not wrong, wrong
    assert early >= 150, early  # most of the 240 runs: the certificate is not vacuous


@pytest.mark.parametrize("head", [[10.0, 10.0, 5.0], [10.0, 10.0 * (1 - 1e-6), 5.0], [10.0, 9.999, 8.0]],
                         ids=["repeated", "gap-1e-6", "cluster-inside-tol"])
def test_top_two_of_a_repeated_or_clustered_top_are_both_found_and_certified(head):
    # A single Krylov space holds one vector of a repeated eigenspace: it reported [10, 5] for the first case
    # (truth [10, 10]), converged, with a certificate of 0.4 %. The verification run (a random start orthogonal
    # to the accepted Ritz vectors) must find the second copy, or the cluster's other member, in every seed.
    for s in range(30):
        g = np.random.default_rng(s)
        d = np.r_[head, g.uniform(0, 1, 2000)]
        res = top_eigenvalues(Diagonal(d), 2, tol=1e-3, seed=s)
        truth = np.sort(d)[::-1][:2]
        assert np.all(np.abs(res.values - truth) <= 1e-3 * truth), (s, res.values)
        assert res.converged.all() and res.miss_bound <= MISS_PROBABILITY and res.num_runs >= 2


def test_higher_multiplicities_at_both_ends_are_found_one_verification_at_a_time():
    g = np.random.default_rng(1)
    d = np.r_[7.0, 7.0, 7.0, 6.5, g.uniform(-1, 1, 3000), -4.0, -4.0]
    top, bottom = extreme_eigenvalues(Diagonal(d), top_k=4, bottom_k=2, tol=1e-4, seed=3)
    np.testing.assert_allclose(top.values, [7.0, 7.0, 7.0, 6.5], rtol=1e-4)
    np.testing.assert_allclose(bottom.values, [-4.0, -4.0], rtol=1e-4)
    # a missed copy costs a verification run (a long stored run may pick one up from rounding noise, so only
    # the minimum of one verification per end is certain)
    assert top.num_runs >= 2 and bottom.num_runs >= 2
    assert top.miss_bound <= MISS_PROBABILITY and bottom.miss_bound <= MISS_PROBABILITY


def test_no_certificate_below_one_percent_sits_beside_a_wrong_value():
    # The hardest single-vector case: λ₁/λ₂ = 1.002, λ₂ 1.5× the bulk's top, tol 1e-3 (reporting λ₂ is 2× the
    # tolerance off). The floor may report λ₂; the certificate must then say it could not certify.
    tol, wrong, certified_wrong = 1e-3, 0, []
    for s in range(100):
        g = np.random.default_rng(s)
        d = np.r_[1.5 * 1.002, 1.5, g.uniform(0, 1, 1000)]
        res = _quiet(top_eigenvalues, Diagonal(d), 1, tol=tol, seed=s)
        if abs(res.values[0] - d[0]) > tol * d[0]:
            wrong += 1
            if res.miss_bound <= MISS_PROBABILITY:
                certified_wrong.append((s, float(res.values[0]), res.miss_bound))
    assert not certified_wrong, certified_wrong
    assert wrong > 0  # the case is hard: the test would see a certificate that lies


def test_warm_starts_and_clusters_keep_the_floor():
    g = np.random.default_rng(0)
    # A 3.5 % gap at the top (an MLP's trained spectrum): δ stays above 1 % until after the floor.
    cluster = Diagonal(np.r_[2.9634, 2.8622, 2.4023, 2.0, 1.6, 1.3, g.uniform(-0.05, 0.52, 3000)])
    res = top_eigenvalues(cluster, 1, seed=0, tol=1e-3)
    assert res.num_matvecs >= 1 + COLD_START_MIN_STEPS and res.miss_bound > MISS_PROBABILITY
    # Two outliers far above the bulk: certified after 7 products instead of 11.
    far = Diagonal(np.r_[20.5, 14.9, g.uniform(0, 1.5, 1998)])
    res = top_eigenvalues(far, 1, seed=0, tol=1e-3)
    assert res.num_matvecs == 7 and res.miss_bound <= MISS_PROBABILITY
    assert abs(res.values[0] - 20.5) <= 1e-3 * 20.5
    assert eigen_dict(res)["miss_bound"] == res.miss_bound  # what the report's JSON states
    # A warm start's v0 is not random: no certificate, its own floor of k + 5.
    v0 = torch.zeros(2000, dtype=torch.float64)
    v0[0] = 1.0
    warm = top_eigenvalues(far, 1, v0=v0, seed=0, tol=1e-3)
    assert warm.miss_bound is None and warm.num_matvecs >= 6 and eigen_dict(warm)["miss_bound"] is None
    # ... but a warm-started top-2 is verified by a cold run, which certifies it
    warm2 = top_eigenvalues(far, 2, v0=v0, seed=0, tol=1e-3)
    assert warm2.miss_bound is not None and warm2.num_runs == 2


def test_each_end_states_its_own_bound_and_stops_on_its_share():
    # Outliers far above a bulk that piles up at 0: λ_max is certified at once, λ_min (inside the bulk's edge)
    # is not; one run, two bounds. With two certified ends each must reach half of the 1 %, so that the chance
    # that either is wrong while its bound reads this low stays within 1 % (a sum of 1 % would allow 2 %).
    g = np.random.default_rng(0)
    d = np.r_[10.0, 6.0, 3.0, g.exponential(0.02, 1500), -g.exponential(0.0005, 500)]
    top, bottom = extreme_eigenvalues(Diagonal(d), top_k=1, bottom_k=1, tol=1e-4, seed=0)
    assert top.miss_bound < 1e-6 < bottom.miss_bound
    only_top = top_eigenvalues(Diagonal(d), 1, tol=1e-4, seed=0)
    assert only_top.num_matvecs < top.num_matvecs  # alone, the top end stops as soon as it is certified
    early = [s for s in range(20) if (r := extreme_eigenvalues(Diagonal(np.r_[20.0, g.uniform(0, 1, 800), -9.0]),
                                                                 top_k=1, bottom_k=1, tol=1e-3, seed=s))[0].num_steps
             < 1 + COLD_START_MIN_STEPS]
    for s in early:
        top, bottom = extreme_eigenvalues(Diagonal(np.r_[20.0, g.uniform(0, 1, 800), -9.0]), top_k=1, bottom_k=1,
                                          tol=1e-3, seed=s)
        assert max(top.miss_bound, bottom.miss_bound) <= MISS_PROBABILITY / 2
