"""Stochastic Lanczos quadrature against exact spectra and exact Gauss-quadrature identities."""

import numpy as np
import pytest
import torch

from sharpness.linalg import SpectralDensity, gaussian_smoothed_density, spectral_density

from linalg_helpers import CountingOperator
from linalg_helpers import with_spectrum_and_vectors as with_spectrum

DT = torch.float64




def test_density_integrates_to_one_and_rules_are_probabilities():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(150, 150, generator=g, dtype=DT)
    A = CountingOperator((X + X.T) / 2)
    sd = spectral_density(A, num_steps=30, num_runs=4, seed=0)
    assert isinstance(sd, SpectralDensity)
    assert sd.nodes.shape == sd.weights.shape == (4, 30)
    np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, atol=1e-12)
    assert (sd.weights >= 0).all() and (np.diff(sd.nodes, axis=1) >= 0).all()
    # Grid spans ±6σ beyond the extreme nodes and resolves σ with ~100 points: trapezoid error ≪ 1e-3.
    assert abs(np.trapezoid(sd.density, sd.grid) - 1.0) < 1e-3
    assert sd.grid.shape == sd.density.shape == (1000,) and (sd.density >= 0).all()
    assert sd.num_matvecs == A.num_matvecs == 120
    # default σ is 1% of the node spread
    assert sd.sigma == pytest.approx(0.01 * (sd.nodes.max() - sd.nodes.min()))


def test_full_dimension_single_run_equals_exact_smoothed_density():
    ev = np.sort(np.r_[np.linspace(-1.0, 1.0, 37), 3.0, 4.0, -2.5])
    A, U = with_spectrum(ev, 1)
    v = torch.randn(40, generator=torch.Generator().manual_seed(2), dtype=DT)
    sd = spectral_density(A, num_steps=40, start_vectors=v, sigma=0.05)
    # With m = P the Gauss rule is the spectral measure of v itself: nodes = eigenvalues,
    # weights = (u_iᵀ v̂)². Rounding only (eigenvectors of well-separated eigenvalues).
    exact_w = ((U.T @ (v / v.norm())) ** 2).numpy()
    np.testing.assert_allclose(sd.nodes[0], ev, rtol=0, atol=1e-10)
    np.testing.assert_allclose(sd.weights[0], exact_w, rtol=0, atol=1e-10)
    exact = gaussian_smoothed_density(ev, exact_w, sd.grid, 0.05)
    assert np.abs(sd.density - exact).max() < 1e-8 * exact.max()


def test_many_runs_approach_the_uniform_spectral_density():
    ev = np.linspace(-2.0, 2.0, 40) ** 3
    A, _ = with_spectrum(ev, 3)
    sd = spectral_density(A, num_steps=40, num_runs=200, seed=4, sigma=0.2)
    exact = gaussian_smoothed_density(ev, None, sd.grid, 0.2)
    # Each averaged weight is 1/P with relative std √(2/R) = 0.1, so the L1 distance between the densities
    # is ≈ 0.8·0.1 = 0.08 in expectation (less: σ pools neighbours); 0.15 is loose yet fails for a bias.
    l1 = np.trapezoid(np.abs(sd.density - exact), sd.grid)
    assert l1 < 0.15, l1
    np.testing.assert_allclose(sd.weights.mean(axis=0), 1 / 40, rtol=0.5)


def test_gauss_quadrature_matches_moments_up_to_degree_2m_minus_1():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(60, 60, generator=g, dtype=DT)
    A = (X + X.T) / (2 * np.sqrt(60))
    v = torch.randn(60, generator=g, dtype=DT)
    v = v / v.norm()
    m = 5
    sd = spectral_density(A, num_steps=m, start_vectors=v)
    # Golub–Meurant: Σ τ_j θ_j^k = vᵀ A^k v exactly for k ≤ 2m − 1 (and not beyond, in general).
    x, moments = v.clone(), []
    for k in range(2 * m + 1):
        moments.append(float(v @ x))
        x = A @ x
    quad = [float(np.sum(sd.weights[0] * sd.nodes[0] ** k)) for k in range(2 * m + 1)]
    np.testing.assert_allclose(quad[: 2 * m], moments[: 2 * m], rtol=1e-10, atol=1e-12)
    assert abs(quad[2 * m] - moments[2 * m]) > 1e-6  # degree 2m is not integrated exactly


def test_breakdown_pads_with_zero_weights():
    d = torch.tensor([1.0, 2.0, 5.0] * 10, dtype=DT)
    A = CountingOperator(torch.diag(d))
    sd = spectral_density(A, num_steps=10, num_runs=3, seed=0)
    # The Krylov space of any start vector is 3-dimensional: each run stops after 3 steps, exactly.
    assert sd.num_matvecs == A.num_matvecs == 9
    np.testing.assert_allclose(sd.nodes[:, :3], [[1.0, 2.0, 5.0]] * 3, atol=1e-12)
    assert (sd.weights[:, 3:] == 0).all() and (sd.nodes[:, 3:] == 5.0).all()
    # Rademacher start on a diagonal: the weight of each eigenvalue is its multiplicity / P exactly.
    np.testing.assert_allclose(sd.weights[:, :3], 1 / 3, atol=1e-12)
    assert abs(np.trapezoid(sd.density, sd.grid) - 1.0) < 1e-3


def test_runs_share_block_products_and_blocking_does_not_change_the_result():
    g = torch.Generator().manual_seed(6)
    X = torch.randn(50, 50, generator=g, dtype=DT)
    A = CountingOperator((X + X.T) / 2)
    together = spectral_density(A, num_steps=12, num_runs=6, seed=1, block_size=6)
    assert A.calls == [(50, 6)] * 12
    A.calls.clear()
    split = spectral_density(A, num_steps=12, num_runs=6, seed=1, block_size=4)
    assert A.calls == [(50, 4)] * 12 + [(50, 2)] * 12
    # Same start vectors whichever way the runs are blocked; arithmetic differs only in rounding.
    np.testing.assert_allclose(together.nodes, split.nodes, atol=1e-12)
    np.testing.assert_allclose(together.weights, split.weights, atol=1e-12)


def test_explicit_grid_and_sigma():
    A, _ = with_spectrum(np.linspace(0.0, 1.0, 30), 7)
    grid = np.linspace(-1.0, 2.0, 3001)
    sd = spectral_density(A, num_steps=30, num_runs=2, seed=0, grid=grid, sigma=0.02)
    assert sd.sigma == 0.02 and np.array_equal(sd.grid, grid)
    assert abs(np.trapezoid(sd.density, sd.grid) - 1.0) < 1e-3


def test_coarse_grid_warns():
    A, _ = with_spectrum(np.linspace(0.0, 1.0, 30), 8)
    with pytest.warns(RuntimeWarning, match="under-resolved"):
        spectral_density(A, num_steps=5, num_runs=1, seed=0, grid=np.linspace(0.0, 1.0, 5), sigma=0.01)


def test_seed_reproducible_and_global_rng_untouched():
    A, _ = with_spectrum(np.linspace(0.0, 1.0, 30), 9)
    state = torch.random.get_rng_state()
    a = spectral_density(A, num_steps=8, num_runs=3, seed=11)
    b = spectral_density(A, num_steps=8, num_runs=3, seed=torch.Generator().manual_seed(11))
    spectral_density(A, num_steps=8, num_runs=3)
    assert torch.equal(state, torch.random.get_rng_state())
    np.testing.assert_array_equal(a.density, b.density)


def test_float32_operator():
    A, _ = with_spectrum(np.linspace(-1.0, 1.0, 64), 10)
    sd = spectral_density(A.float(), num_steps=20, num_runs=3, seed=0, distribution="gaussian")
    assert abs(np.trapezoid(sd.density, sd.grid) - 1.0) < 1e-3
    assert sd.nodes.min() > -1.0 - 1e-4 and sd.nodes.max() < 1.0 + 1e-4  # Ritz values lie in the spectrum


def test_gaussian_smoothed_density():
    lam = np.array([0.0, 1.0, 3.0])
    grid = np.linspace(-2.0, 5.0, 2001)
    rho = gaussian_smoothed_density(lam, None, grid, 0.1)
    assert abs(np.trapezoid(rho, grid) - 1.0) < 1e-6
    peak = 1 / (0.1 * np.sqrt(2 * np.pi))  # at an eigenvalue 10σ from the others: its own kernel only
    assert gaussian_smoothed_density(lam, None, np.array([3.0]), 0.1)[0] == pytest.approx(peak / 3, rel=1e-12)
    w = np.array([0.5, 0.5, 0.0])
    assert np.trapezoid(gaussian_smoothed_density(lam, w, grid, 0.1), grid) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="weights must have 3 entries like eigenvalues, got 2"):
        gaussian_smoothed_density(lam, w[:2], grid, 0.1)
    with pytest.raises(ValueError, match="sigma must be a finite float > 0, got 0"):
        gaussian_smoothed_density(lam, None, grid, 0)


def test_to_dict():
    A, _ = with_spectrum(np.linspace(0.0, 1.0, 10), 11)
    d = spectral_density(A, num_steps=3, num_runs=2, seed=0, grid_size=101, sigma=0.5).to_dict()
    assert len(d["grid"]) == 101 and len(d["nodes"]) == 2 and d["num_matvecs"] == 6


def test_validation():
    A = torch.eye(6, dtype=DT)
    with pytest.raises(ValueError, match="num_steps must be an int >= 1, got 0"):
        spectral_density(A, num_steps=0)
    with pytest.raises(ValueError, match="num_runs must be an int >= 1, got 0"):
        spectral_density(A, num_runs=0)
    with pytest.raises(ValueError, match="sigma must be a finite float > 0 or None, got -1"):
        spectral_density(A, sigma=-1)
    with pytest.raises(ValueError, match="grid_size must be an int >= 2, got 1"):
        spectral_density(A, grid_size=1)
    with pytest.raises(ValueError, match="grid must be 1-D, increasing"):
        spectral_density(A, grid=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"start_vectors must have shape \(6,\) or \(6, R\), got \(5, 2\)"):
        spectral_density(A, start_vectors=torch.ones(5, 2, dtype=DT))
    with pytest.raises(ValueError, match="distribution must be one of"):
        spectral_density(A, distribution="uniform")
    with pytest.raises(ValueError, match=r"square operator of shape \(P, P\), got shape \(6, 5\)"):
        spectral_density(torch.ones(6, 5, dtype=DT))
    # num_steps above P is capped at P (the quadrature is then exact)
    assert spectral_density(A, num_steps=100, num_runs=1, seed=0).nodes.shape == (1, 6)


def test_local_recurrence_keeps_the_quadrature_despite_ghost_nodes():
    """Without reorthogonalization the outliers' Ritz values come back as ghost copies, yet the Gauss rule still
    integrates vᵀ A^k v (Greenbaum 1989): the moments and the smoothed density agree with the stored-basis run
    to rounding. 80 steps on 502 dimensions: the outliers converge early, so ghosts must appear."""
    ev = np.r_[np.linspace(0.0, 1.0, 500), 15.0, 20.0]
    A, _ = with_spectrum(ev, 7)
    v = torch.randn(502, generator=torch.Generator().manual_seed(1), dtype=DT)
    v = v / v.norm()
    full = spectral_density(A, num_steps=80, start_vectors=v, reorthogonalize="full", sigma=0.05)
    local = spectral_density(A, num_steps=80, start_vectors=v, reorthogonalize="local", sigma=0.05)
    assert (full.reorthogonalization, local.reorthogonalization) == ("full", "local")
    assert np.sum(np.abs(full.nodes[0] - 20.0) < 1e-6) == 1
    assert np.sum(np.abs(local.nodes[0] - 20.0) < 1e-6) >= 2  # orthogonality was lost: ghosts
    B, x, moments = A / 20.0, v.clone(), []
    for _ in range(40):  # degrees up to 39 < 2m − 1, scaled so every moment is ≤ 1
        moments.append(float(v @ x))
        x = B @ x
    for sd in (full, local):
        quad = [float(np.sum(sd.weights[0] * (sd.nodes[0] / 20.0) ** k)) for k in range(40)]
        np.testing.assert_allclose(quad, moments, rtol=0, atol=1e-12)  # rounding of 40 products, ≈ 1e-15 seen
    exact = gaussian_smoothed_density(full.nodes, full.weights, local.grid, 0.05)
    assert np.abs(local.density - exact).max() < 1e-10 * exact.max()


def test_auto_reorthogonalization_follows_the_memory_budget():
    A = torch.diag(torch.linspace(0.0, 1.0, 300, dtype=DT))
    per_basis = (40 + 2) * 300 * 8
    assert spectral_density(A, num_steps=40, num_runs=2, memory=per_basis).reorthogonalization == "full"
    assert spectral_density(A, num_steps=40, num_runs=2, memory=per_basis - 1).reorthogonalization == "local"
    with pytest.raises(ValueError, match="memory"):
        spectral_density(A, num_steps=40, memory=0)
