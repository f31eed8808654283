"""Lanczos with full reorthogonalization and with the local three-term recurrence, checked against dense
eigendecompositions in float64."""

import numpy as np
import pytest
import torch

from sharpness.linalg import LanczosProcess, lanczos, tridiagonal_eigh

from linalg_helpers import CountingOperator, Diagonal, random_symmetric, with_spectrum_and_vectors

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


class _Recording(CountingOperator):
    """Also keeps every vector it is applied to: for a Lanczos run, exactly its vectors q₁ … q_m."""

    def __init__(self, M):
        super().__init__(M)
        self.inputs = []

    def __matmul__(self, v):
        self.inputs.append(v.clone())
        return super().__matmul__(v)


def test_local_run_follows_the_full_one_until_convergence_and_keeps_its_ritz_values_true():
    # Before any Ritz value converges, the three-term recurrence and the fully reorthogonalized one compute
    # the same T up to rounding; later the local run's vectors lose orthogonality, but every Ritz value with a
    # small residual still lies that close to an eigenvalue (Paige): checked against the exact spectrum.
    M = random_symmetric(300, 3)
    exact = torch.linalg.eigvalsh(M).numpy()
    start = torch.randn(300, generator=torch.Generator().manual_seed(0), dtype=DT)
    runs = {}
    for mode in ("full", "local"):
        proc = LanczosProcess(M, start, max_steps=120, reorthogonalize=mode)
        while proc.active():
            proc.step()
        runs[mode] = proc
    np.testing.assert_allclose(runs["local"].alphas()[:10], runs["full"].alphas()[:10], rtol=1e-10)
    theta, _, res = runs["local"].ritz()
    small = res < 1e-6 * np.abs(exact).max()
    assert small.sum() >= 4  # some Ritz values converged (the extreme ones, and their ghost copies)
    nearest = np.abs(theta[small, None] - exact[None, :]).min(axis=1)
    assert np.all(nearest <= res[small] + 1e-9 * np.abs(exact).max())
    assert not runs["local"].stores_basis and runs["full"].stores_basis
    with pytest.raises(RuntimeError, match="stores no basis"):
        runs["local"].basis()


def test_local_ritz_vectors_replay_the_run_exactly():
    # The replay applies A again from the stored start with the recorded α, β: on a CPU it regenerates the
    # very vectors the first pass applied A to, so Y = Q S is exact, without Q ever being stored.
    A = _Recording(random_symmetric(80, 5))
    proc = LanczosProcess(A, torch.randn(80, generator=torch.Generator().manual_seed(1), dtype=DT), max_steps=15,
                          reorthogonalize="local")
    for _ in range(15):
        proc.step()
    Q = torch.stack(A.inputs, dim=1)  # what the first pass multiplied: q₁ … q₁₅
    before = proc.num_matvecs
    S = np.random.default_rng(2).standard_normal((15, 3))
    Y = proc.ritz_vectors(S)
    torch.testing.assert_close(Y, Q @ torch.as_tensor(S), rtol=0, atol=1e-13)
    assert torch.equal(torch.stack(A.inputs[15:], dim=1), Q[:, :14])  # bit-identical replayed vectors
    assert proc.num_matvecs - before == 14


class _IntoBuffers(_Recording):
    """Offers matvec_into and records every buffer a product was written into."""

    def __init__(self, M):
        super().__init__(M)
        self.buffers = []

    def matvec_into(self, v, out):
        self.buffers.append(out.data_ptr())
        self.inputs.append(v.clone())
        self.calls.append(tuple(v.shape))
        return torch.mv(self.M, v, out=out)


@pytest.mark.parametrize("locked", [False, True])
def test_a_local_run_recycles_three_buffers_as_the_products_outputs_and_computes_the_same_run(locked):
    # An operator with matvec_into gets the spare vector as each product's output: after the second step no
    # P-vector is allocated, and the run (α, β, the replayed Ritz vectors) is bit for bit the one of A @ v.
    M, U = with_spectrum_and_vectors(np.r_[5.0, 4.0, np.linspace(-1, 1, 58)], 8)
    start = torch.randn(60, generator=torch.Generator().manual_seed(3), dtype=DT)
    kwargs = dict(max_steps=25, reorthogonalize="local", locked=U[:, :2] if locked else None)
    plain, into = _Recording(M), _IntoBuffers(M)
    runs = [LanczosProcess(A, start, **kwargs) for A in (plain, into)]
    for proc in runs:
        for _ in range(25):
            proc.step()
    np.testing.assert_array_equal(runs[0].alphas(), runs[1].alphas())
    np.testing.assert_array_equal(runs[0].betas(), runs[1].betas())
    # three buffers in all: the first two products' outputs and, from the third step, q₁'s own (q₁ ← q₂ ← …)
    assert len(into.buffers) == 25 and len(set(into.buffers)) == 3
    assert all(into.buffers[j] == into.buffers[j - 3] for j in range(3, 25))  # a fixed rotation
    S = np.random.default_rng(4).standard_normal((25, 2))
    assert torch.equal(runs[0].ritz_vectors(S), runs[1].ritz_vectors(S))
    assert torch.equal(torch.stack(into.inputs[25:], dim=1), torch.stack(into.inputs[:24], dim=1))  # the replay
    assert len(set(into.buffers[25:])) == 3  # the replay's own three rotating buffers


def test_locked_vectors_deflate_the_run_to_their_complement():
    # With the top three eigenvectors locked, a run to the remaining dimension finds the other 57 eigenvalues
    # exactly and never the locked ones.
    ev = np.r_[10.0, 9.0, 8.0, np.linspace(-1.0, 1.0, 57)]
    M, U = with_spectrum_and_vectors(ev, 4)
    proc = LanczosProcess(M, torch.ones(60, dtype=DT), max_steps=60, locked=U[:, :3])
    assert proc.dim == 57 and proc.max_steps == 57
    while proc.active():
        proc.step()
    theta, _, _ = proc.ritz()
    np.testing.assert_allclose(theta, np.sort(ev[3:]), atol=1e-10)
    Q = proc.basis()
    assert (U[:, :3].T @ Q).abs().max().item() < 1e-12


def test_a_local_run_holds_four_vectors_of_a_fifty_million_parameter_operator():
    # Memory follows the method, not P × steps: a diagonal float32 operator of P = 5·10⁷ (200 MB a vector), 30
    # local steps. Peak RSS is sampled in a fresh process: the run may add its vectors (q_{j−1}, q_j, the new one
    # and the operator's transient output: 4, and the start kept for the replay unless keep_start=False; 3 when
    # the operator writes into the run's spare vector) and 100 MB of allocator slack; a stored basis of 30
    # steps would be 6 GB.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import resource, torch
        from sharpness.linalg import LanczosProcess
        torch.set_num_threads(1)
        P = 50_000_000

        class Diag:
            def __init__(self, d):
                self.d, self.shape, self.dtype, self.device = d, (P, P), d.dtype, d.device
            def __matmul__(self, v):
                return self.d * v

        class DiagInto(Diag):
            def matvec_into(self, v, out):
                return torch.mul(self.d, v, out=out)

        g = torch.Generator().manual_seed(0)
        d = torch.rand(P, generator=g)
        start = torch.randn(P, generator=g)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        proc = LanczosProcess(OPERATOR(d), start, max_steps=30, reorthogonalize="local", keep_start=KEEP)
        for _ in range(30):
            proc.step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(peak - before)
    """)
    vector = 50_000_000 * 4
    # an operator that writes into a given buffer (matvec_into) gets the spare vector instead: three in all
    for operator, keep, vectors in (("Diag", False, 4), ("Diag", True, 5), ("DiagInto", False, 3)):
        script = code.replace("KEEP", str(keep)).replace("OPERATOR", operator)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True)
        grown = int(out.stdout.split()[-1])
        assert grown <= vectors * vector + 100 * 2**20, (operator, keep, grown / 2**20)
