"""The cold start's miss certificate (sharpness.linalg.eigen, "Miss certificate"): its three facts checked
independently in float64 (the Lanczos polynomial identity, the endpoint minimum, the Gaussian density bound),
then its use: runs stop early only where no start reports a wrong value."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch

from sharpness.linalg import ConvergenceWarning, top_eigenvalues
from sharpness.linalg.eigen import COLD_START_MIN_STEPS, MISS_PROBABILITY, _miss_bound
from sharpness.linalg.lanczos import LanczosProcess
from sharpness.report_schema import eigen_dict


class _Diagonal:
    """A diagonal operator: eigenvalue d[i] has eigenvector e_i."""

    def __init__(self, d, dtype=torch.float64):
        self.d = torch.as_tensor(d, dtype=dtype)
        self.shape = (self.d.numel(),) * 2
        self.dtype, self.device = self.d.dtype, self.d.device

    def __matmul__(self, v):
        return self.d * v if v.ndim == 1 else self.d[:, None] * v


def test_lanczos_vectors_are_the_polynomial_det_over_betas_of_the_start():
    # q_{m+1} = p_m(A) q₁ with p_m(λ) = det(λI − T_m) / (β₁⋯β_m); for a diagonal A, entrywise
    # q_{m+1}[i] = p_m(d_i) q₁[i]. det is taken densely here, not from the Ritz values as in the code.
    g = np.random.default_rng(3)
    d = np.r_[5.0, 3.0, g.uniform(0, 1, 298)]
    A = _Diagonal(d)
    start = torch.as_tensor(g.standard_normal(300))
    proc = LanczosProcess(A, start, max_steps=12)
    m = 8
    for _ in range(m + 1):
        proc.step()
    Q = proc.basis().numpy()
    a, b = proc.alphas()[:m], proc.betas()[:m]
    T = np.diag(a) + np.diag(b[:-1], 1) + np.diag(b[:-1], -1)
    p = np.array([np.linalg.det(lam * np.eye(m) - T) for lam in d]) / np.prod(b)
    np.testing.assert_allclose(Q[:, m], p * Q[:, 0], rtol=1e-6, atol=1e-9)


def _grid_min_log_abs_det(theta, order, t, side):
    """(min, argmin) over a dense grid of the failure region R of log|det(λ − T)| = Σ log|λ − θ_j| (brute force)."""
    edge = side * theta[order[-1]] + t[order[-1]]
    mu = np.linspace(edge, side * theta[order[0]] + t[order[0]] + 5.0, 400_001)
    holes = [(side * theta[i] - t[i], side * theta[i] + t[i]) for i in order[:-1]]
    inside = np.ones(mu.size, dtype=bool)
    for lo, hi in holes:
        inside &= ~((mu > lo) & (mu < hi))
    lam = side * mu[inside]
    values = np.log(np.abs(lam[:, None] - theta[None, :])).sum(axis=1)
    return float(values.min()), float(lam[values.argmin()])


def _spread(k):
    g = np.random.default_rng(k)
    theta = np.sort(np.r_[g.uniform(0, 1, 6), 1.4, 1.47, 1.9, 2.3, -0.6, -0.5, -0.9])
    return theta, 0.02 * np.maximum(np.abs(theta), 0.1)


def _cluster_above():
    # three Ritz values 0.007 apart high above a fourth and the bulk: the worst point of the region is the
    # lower end of a tolerance hole in the cluster, not the region's edge above θ₄ (asserted below)
    theta = np.sort(np.r_[np.linspace(0, 0.5, 8), 1.0, 3.0, 3.007, 3.014])
    return theta, np.full(theta.size, 0.003)


@pytest.mark.parametrize("k,side,spectrum", [(1, 1, "spread"), (3, 1, "spread"), (4, -1, "spread"), (4, 1, "cluster")])
def test_bound_is_its_worst_point_over_the_failure_region(k, side, spectrum):
    # The code evaluates 1/|p_m| at the region's endpoints only (concavity of log|p_m| between roots); a dense
    # grid over the whole region must find no worse point, and the endpoint value must be attained.
    theta, t = _spread(k) if spectrum == "spread" else _cluster_above()
    betas = np.full(theta.size, 0.05)  # small enough that the bound is not capped at 1
    P = 5000
    order = np.argsort(theta)[::-1][:k] if side == 1 else np.argsort(theta)[:k]
    empty = np.zeros(0, dtype=int)
    top, bottom = (order, empty) if side == 1 else (empty, order)
    got = _miss_bound(theta, betas, top, bottom, t, P)
    worst, where = _grid_min_log_abs_det(theta, order, t, side)
    expected = k * math.sqrt(2 * P / math.pi) * math.exp(np.log(betas).sum() - worst)
    assert 0 < got < 1
    # no grid point is worse than the endpoints; the grid misses the worst endpoint by at most its spacing h,
    # which changes |p_m| by a factor of at most ~(1 + h/t) next to a root at distance t
    h = (side * theta[order[0]] + t[order[0]] + 5.0 - (side * theta[order[-1]] + t[order[-1]])) / 400_000
    assert expected <= got * (1 + 1e-9)
    assert got <= expected * (1 + 2 * h / t.min())
    if spectrum == "cluster":  # the case the lower ends of the holes are there for
        assert np.min(np.abs(where - (np.array([3.0, 3.007, 3.014]) - 0.003))) < 2 * h


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


def test_early_stops_never_report_a_hidden_second_eigenvalue():
    # λ₂ well above the bulk converges within a few steps whatever λ₁ does: the failure the floor guards
    # against. Over top gaps from 0.2 % to 100 % and both dtypes, runs that stop before the floor must carry a
    # certificate ≤ 1 % and never be wrong (in 2 × 36 × 300 starts of this family: 0 wrong early stops).
    tol, early, wrong = 1e-3, 0, []
    for dtype in (torch.float32, torch.float64):
        for gap in (0.002, 0.03, 0.3, 1.0):
            for sep in (3.0, 10.0):
                for s in range(15):
                    d = _family(100 * s + 7, gap, sep, 400 + 97 * s)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        res = top_eigenvalues(_Diagonal(d, dtype), 1, seed=s, tol=tol)
                    if res.num_matvecs < 1 + COLD_START_MIN_STEPS:
                        early += 1
                        assert res.miss_bound is not None and res.miss_bound <= MISS_PROBABILITY
                    if res.converged[0] and abs(res.values[0] - d[0]) > tol * d[0]:
                        wrong.append((dtype, gap, sep, s, float(res.values[0]), res.num_matvecs))
    assert not wrong, wrong
    assert early >= 150, early  # most of the 240 runs: the certificate is not vacuous


def test_top_k_early_stops_are_right():
    # Top-3 of four outliers over a bulk: the region holds the tolerance holes around θ₁, θ₂.
    tol, wrong, early = 1e-3, [], 0
    for s in range(40):
        g = np.random.default_rng(s)
        d = np.r_[12.0, 9.0, 7.5, 6.0, g.uniform(0, 1, 1500)]
        res = top_eigenvalues(_Diagonal(d), 3, seed=s, tol=tol)
        early += res.num_matvecs < 3 + COLD_START_MIN_STEPS
        if np.any(np.abs(res.values - d[:3]) > tol * d[:3]):
            wrong.append((s, res.values.tolist()))
    assert not wrong, wrong
    assert early == 40, early


def test_warm_starts_and_clusters_keep_the_floor():
    g = np.random.default_rng(0)
    # The floor's regression spectrum (a 3.5 % gap at the top): δ stays above 1 % until after the floor.
    cluster = _Diagonal(np.r_[2.9634, 2.8622, 2.4023, 2.0, 1.6, 1.3, g.uniform(-0.05, 0.52, 3000)])
    res = top_eigenvalues(cluster, 1, seed=0, tol=1e-3)
    assert res.num_matvecs >= 1 + COLD_START_MIN_STEPS and res.miss_bound > MISS_PROBABILITY
    # Two outliers far above the bulk: certified after 7 products instead of 11.
    far = _Diagonal(np.r_[20.5, 14.9, g.uniform(0, 1.5, 1998)])
    res = top_eigenvalues(far, 1, seed=0, tol=1e-3)
    assert res.num_matvecs == 7 and res.miss_bound <= MISS_PROBABILITY
    assert abs(res.values[0] - 20.5) <= 1e-3 * 20.5
    assert eigen_dict(res)["miss_bound"] == res.miss_bound  # what the report's JSON states
    # A warm start's v0 is not random: no certificate, its own floor of k + 5.
    v0 = torch.zeros(2000, dtype=torch.float64)
    v0[0] = 1.0
    warm = top_eigenvalues(far, 1, v0=v0, seed=0, tol=1e-3)
    assert warm.miss_bound is None and warm.num_matvecs >= 6 and eigen_dict(warm)["miss_bound"] is None


def test_each_end_states_its_own_bound():
    # Outliers far above a bulk that piles up at 0: λ_max is certified at once, λ_min (inside the bulk's edge)
    # is not; one run, two bounds, and the top's is not diluted by the bottom's.
    from sharpness.linalg import extreme_eigenvalues

    g = np.random.default_rng(0)
    d = np.r_[10.0, 6.0, 3.0, g.exponential(0.02, 1500), -g.exponential(0.0005, 500)]
    top, bottom = extreme_eigenvalues(_Diagonal(d), top_k=1, bottom_k=1, tol=1e-4, seed=0)
    assert top.miss_bound < 1e-6 < bottom.miss_bound
    only_top = top_eigenvalues(_Diagonal(d), 1, tol=1e-4, seed=0)
    assert only_top.num_matvecs < top.num_matvecs  # alone, the top end stops as soon as it is certified
