"""Lanczos with full reorthogonalization, checked against dense eigendecompositions in float64."""

import numpy as np
import pytest
import torch

from sharpness.linalg import LanczosProcess, lanczos, tridiagonal_eigh

from linalg_helpers import CountingOperator, random_symmetric

DT = torch.float64




@pytest.mark.parametrize("P, seed", [(40, 0), (150, 1)])
def test_full_dimension_reproduces_eigvalsh(P, seed):
    A = random_symmetric(P, seed)
    res = lanczos(A, P, seed=seed + 10)
    theta, _, _ = res.ritz()
    exact = torch.linalg.eigvalsh(A).numpy()
    # Both are backward stable: eigenvalues agree to O(P·eps·‖A‖); 1e-10 relative to ‖A‖ leaves ~50x margin.
    scale = np.abs(exact).max()
    np.testing.assert_allclose(theta, exact, rtol=0, atol=1e-10 * scale)
    assert res.num_steps == P and res.num_matvecs == P
    assert not res.breakdown  # running to P exhausts the space; that is not an early stop
    assert abs(res.beta_last) < 1e-10 * scale


@pytest.mark.parametrize("m", [20, 100])
def test_basis_orthonormal_and_lanczos_relation(m):
    P = 100
    A = random_symmetric(P, 2)
    res = lanczos(A, m, seed=3, return_basis=True)
    Q = res.basis
    assert Q.shape == (P, m) and Q.dtype == DT
    # Full reorthogonalization (twice) keeps QᵀQ = I to a few eps, independent of convergence.
    assert (Q.T @ Q - torch.eye(m, dtype=DT)).abs().max().item() < 1e-12
    T = torch.diag(torch.as_tensor(res.alphas))
    T += torch.diag(torch.as_tensor(res.betas), 1) + torch.diag(torch.as_tensor(res.betas), -1)
    R = A @ Q - Q @ T  # = β_m q_{m+1} e_mᵀ: zero except the last column, whose norm is β_m
    scale = torch.linalg.matrix_norm(A, 2).item()
    assert R[:, :-1].abs().max().item() < 1e-11 * scale
    assert abs(torch.linalg.vector_norm(R[:, -1]).item() - res.beta_last) < 1e-11 * scale


def test_ritz_residuals_are_true_residuals():
    A = random_symmetric(80, 4)
    res = lanczos(A, 25, seed=5, return_basis=True)
    theta, S, r = res.ritz()
    Y = res.basis @ torch.as_tensor(S)
    true = torch.linalg.vector_norm(A @ Y - Y * torch.as_tensor(theta), dim=0).numpy()
    # |β_m S[m, i]| equals ‖A y − θ y‖ up to rounding of the matvec (≈ eps·‖A‖).
    np.testing.assert_allclose(r, true, rtol=0, atol=1e-11 * np.abs(theta).max())


def test_breakdown_on_invariant_subspace_stops_with_exact_ritz_values():
    # Diagonal matrix with three distinct eigenvalues: the Krylov space of any vector has dimension 3.
    d = torch.tensor([1.0, 2.0, 5.0] * 10, dtype=DT)
    A = CountingOperator(torch.diag(d))
    res = lanczos(A, 20, seed=0)
    assert res.breakdown and res.num_steps == 3 and res.num_matvecs == 3 == A.num_matvecs
    theta, _, r = res.ritz()
    # Exact arithmetic would give these exactly; rounding of three steps leaves a few eps.
    np.testing.assert_allclose(theta, [1.0, 2.0, 5.0], rtol=0, atol=1e-13)
    assert r.max() < 1e-12


def test_start_vector_that_is_an_eigenvector_breaks_down_after_one_step():
    A = random_symmetric(50, 6)
    w, V = torch.linalg.eigh(A)
    res = lanczos(A, 10, v0=V[:, 7] * 3.0)  # the scale is irrelevant: v0 is normalized
    assert res.breakdown and res.num_steps == 1
    assert abs(res.alphas[0] - w[7].item()) < 1e-12 * w.abs().max().item()


def test_seed_and_generator_reproducible():
    A = random_symmetric(30, 7)
    a = lanczos(A, 10, seed=123).alphas
    b = lanczos(A, 10, seed=torch.Generator().manual_seed(123)).alphas
    c = lanczos(A, 10, seed=124).alphas
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_global_rng_untouched():
    A = random_symmetric(30, 8)
    state = torch.random.get_rng_state()
    lanczos(A, 10, seed=None)
    lanczos(A, 10, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())


def test_single_run_uses_vector_products():
    A = CountingOperator(random_symmetric(30, 9))
    res = lanczos(A, 12, seed=0)
    assert A.calls == [(30,)] * 12 and res.num_matvecs == 12


def test_process_runs_blocks_in_lockstep_like_separate_runs():
    P, R, m = 60, 3, 15
    M = random_symmetric(P, 10)
    V = torch.randn(P, R, generator=torch.Generator().manual_seed(11), dtype=DT)
    A = CountingOperator(M)
    proc = LanczosProcess(A, V, max_steps=m)
    while any(proc.active(r) for r in range(R)):
        proc.step()
    # One block product with R columns per step, not R separate products.
    assert A.calls == [(P, R)] * m and proc.num_matvecs == R * m
    for r in range(R):
        single = lanczos(M, m, v0=V[:, r])
        # Same arithmetic in a different order (bmm vs mv): agreement to rounding.
        np.testing.assert_allclose(proc.alphas(r), single.alphas, rtol=0, atol=1e-12)
        np.testing.assert_allclose(proc.betas(r)[:-1], single.betas, rtol=0, atol=1e-12)


def test_float32_operator():
    A = random_symmetric(64, 12).float()
    res = lanczos(A, 64, seed=0, return_basis=True)
    theta, _, _ = res.ritz()
    exact = torch.linalg.eigvalsh(A.double()).numpy()
    # float32 rounding: eps32 ≈ 1.2e-7 times ‖A‖ times a modest growth factor.
    np.testing.assert_allclose(theta, exact, rtol=0, atol=1e-4 * np.abs(exact).max())
    assert res.basis.dtype == torch.float32


def test_tridiagonal_eigh_matches_dense():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=7), rng.normal(size=6)
    theta, S = tridiagonal_eigh(a, b)
    T = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
    np.testing.assert_allclose(theta, np.linalg.eigvalsh(T), atol=1e-13)
    np.testing.assert_allclose(T @ S, S * theta, atol=1e-12)
    assert tridiagonal_eigh(np.array([2.0]), np.zeros(0))[0].tolist() == [2.0]
    with pytest.raises(ValueError, match="betas must have shape"):
        tridiagonal_eigh(a, b[:-1])


def test_validation():
    A = random_symmetric(10, 0)
    with pytest.raises(ValueError, match=r"num_steps must be an int in \[1, 10\], got 11"):
        lanczos(A, 11)
    with pytest.raises(ValueError, match=r"num_steps must be an int in \[1, 10\], got 0"):
        lanczos(A, 0)
    with pytest.raises(ValueError, match=r"v0 must have shape \(10,\), got \(9,\)"):
        lanczos(A, 3, v0=torch.ones(9, dtype=DT))
    with pytest.raises(ValueError, match="v0 must be finite and nonzero"):
        lanczos(A, 3, v0=torch.zeros(10, dtype=DT))
    with pytest.raises(ValueError, match=r"square operator of shape \(P, P\), got shape \(10, 9\)"):
        lanczos(torch.ones(10, 9, dtype=DT), 3)
    with pytest.raises(ValueError, match="real floating-point"):
        lanczos(torch.ones(4, 4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="seed must be an int"):
        lanczos(A, 3, seed=1.5)
