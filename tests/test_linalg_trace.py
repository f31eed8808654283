"""Hutchinson and Hutch++ trace estimators: exactness where theory says exact, and statistical budgets."""

import numpy as np
import pytest
import torch

from sharpness.linalg import TraceEstimate, deflated_trace, hutchinson_trace, hutchpp_trace

from linalg_helpers import CountingOperator, random_symmetric, with_spectrum

DT = torch.float64




@pytest.mark.parametrize("num_probes", [2, 7, 50])
def test_rademacher_is_exact_on_a_diagonal(num_probes):
    d = torch.linspace(-3.0, 5.0, 40, dtype=DT)
    est = hutchinson_trace(torch.diag(d), num_probes, seed=0)
    # zᵀ D z = Σ d_i z_i² = tr(D) for z_i = ±1: exact up to summation rounding.
    assert est.value == pytest.approx(d.sum().item(), abs=1e-12)
    assert est.stderr < 1e-12
    assert isinstance(est, TraceEstimate) and est.num_probes == est.num_matvecs == num_probes
    assert est.method == "hutchinson-rademacher"


def test_gaussian_probes_are_not_exact_on_a_diagonal():
    d = torch.linspace(1.0, 5.0, 40, dtype=DT)
    est = hutchinson_trace(torch.diag(d), 50, seed=0, distribution="gaussian")
    assert est.stderr > 0.1 and est.method == "hutchinson-gaussian"
    # a 5-sigma band around the truth
    assert abs(est.value - d.sum().item()) < 5 * est.stderr


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_error_shrinks_like_one_over_sqrt_m_and_stderr_is_honest(distribution):
    A = random_symmetric(100, 1)
    truth = torch.trace(A).item()
    reps = 200
    runs = {m: [hutchinson_trace(A, m, seed=1000 * m + s, distribution=distribution) for s in range(reps)] for m in (100, 400)}
    err = {m: np.array([r.value - truth for r in runs[m]]) for m in runs}
    rms = {m: np.sqrt(np.mean(err[m] ** 2)) for m in runs}
    # Unbiased: the mean error over reps is within 4 standard errors of 0.
    for m in runs:
        assert abs(err[m].mean()) < 4 * err[m].std(ddof=1) / np.sqrt(reps)
    # RMS error ∝ 1/√m, so rms(400)/rms(100) = 0.5. An RMS from 200 reps has relative std ≈ 1/√400 = 5%,
    # so the ratio is 0.5 ± 0.035: [0.35, 0.7] is more than 4 sigma wide each side.
    ratio = rms[400] / rms[100]
    assert 0.35 <= ratio <= 0.7, ratio
    # The reported stderr (per run) matches the observed spread of the estimates across runs: the mean of
    # 200 stderrs is tight (each has ~7% relative spread at m = 100), the observed std has ~5%.
    for m in runs:
        reported = np.mean([r.stderr for r in runs[m]])
        observed = np.std([r.value for r in runs[m]], ddof=1)
        assert 0.8 <= reported / observed <= 1.25, (m, reported, observed)


@pytest.mark.parametrize("estimator, num_matvecs",
                         [(hutchpp_trace, 30), (hutchpp_trace, 102), (hutchinson_trace, 30), (deflated_trace, 30)])
def test_95_percent_interval_covers_the_exact_trace_at_the_nominal_rate(estimator, num_matvecs):
    """Calibration: over n seeds the interval covers tr(A) a fraction ĉ ≈ 0.95 of the time, with binomial
    standard error √(0.95·0.05/n) ≈ 0.0056 for n = 1500; ĉ must lie within 3.5 of them (a false alarm 1 in 2000)."""
    # A PSD spectrum with an exponential tail, Hessian-like: Hutch++'s sketch removes the top, the probes the rest.
    A = with_spectrum(np.random.default_rng(1).exponential(1.0, 200), 2)
    truth = torch.trace(A).item()
    n = 1500
    runs = [estimator(A, num_matvecs, seed=s) for s in range(n)]
    covered = np.mean([lo <= truth <= hi for lo, hi in (r.interval(0.95) for r in runs)])
    se = np.sqrt(0.95 * 0.05 / n)
    assert abs(covered - 0.95) <= 3.5 * se, (covered, runs[0].num_probes)
    if runs[0].num_probes <= 10:
        # the normal quantile is too narrow at 10 probes (measured ≈ 0.92), which is why interval() uses t
        normal = np.mean([abs(r.value - truth) <= 1.96 * r.stderr for r in runs])
        assert normal < 0.95 - 3 * se, normal


def test_interval_width_and_validation():
    est = TraceEstimate(10.0, 1.0, 10, 10, "hutchinson-rademacher")
    lo, hi = est.interval(0.95)
    assert (lo + hi) / 2 == pytest.approx(10.0) and (hi - lo) / 2 == pytest.approx(2.2621571627, rel=1e-9)  # t₉
    assert TraceEstimate(4.0, 0.0, 2, 2, "hutchinson-rademacher").interval() == (4.0, 4.0)  # exact: no width
    with pytest.raises(ValueError, match="level must be in \\(0, 1\\), got 1.5"):
        est.interval(1.5)


def test_probes_are_applied_in_blocks():
    A = CountingOperator(random_symmetric(50, 2))
    est = hutchinson_trace(A, 40, seed=0, block_size=16)
    assert A.calls == [(50, 16), (50, 16), (50, 8)]
    assert est.num_matvecs == A.num_matvecs == 40
    # The estimate does not depend on how probes are blocked (same probe stream, same order).
    same = hutchinson_trace(A.M, 40, seed=0, block_size=40)
    assert same.value == pytest.approx(est.value, rel=1e-12)


def test_hutchpp_is_exact_for_low_rank():
    # rank 10 ≤ m/3 = 10: Q = orth(A S) spans range(A), the remainder is zero.
    g = torch.Generator().manual_seed(3)
    L = torch.randn(120, 10, generator=g, dtype=DT)
    A = CountingOperator(L @ L.T)
    est = hutchpp_trace(A, 30, seed=0)
    truth = torch.trace(A.M).item()
    assert est.value == pytest.approx(truth, rel=1e-10)  # rounding only
    assert est.stderr < 1e-8 * truth
    assert est.num_matvecs == A.num_matvecs == 30 and est.num_probes == 10
    assert all(len(s) == 2 for s in A.calls)  # sketch, basis and probes are all block products


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum():
    # λ_i = i^{-2}: most of the trace sits in a few directions that Hutch++ removes exactly.
    A = with_spectrum(1.0 / np.arange(1, 301) ** 2, 4)
    truth = torch.trace(A).item()
    m, reps = 60, 30
    e_h = [hutchinson_trace(A, m, seed=s).value - truth for s in range(reps)]
    e_pp = [hutchpp_trace(A, m, seed=s).value - truth for s in range(reps)]
    rms_h, rms_pp = np.sqrt(np.mean(np.square(e_h))), np.sqrt(np.mean(np.square(e_pp)))
    # Theory predicts a gap of an order of magnitude here; a factor 3 leaves room for sampling noise.
    assert rms_pp < rms_h / 3, (rms_pp, rms_h)


def test_hutchpp_sketch_larger_than_P_is_exact_and_honest():
    A = CountingOperator(random_symmetric(12, 5))
    est = hutchpp_trace(A, 60, seed=0)  # k = 20 > P = 12: Q spans R^P
    assert est.value == pytest.approx(torch.trace(A.M).item(), abs=1e-10)
    assert est.num_matvecs == A.num_matvecs == 20 + 12 + 20


def test_seed_reproducible_and_global_rng_untouched():
    A = random_symmetric(30, 6)
    state = torch.random.get_rng_state()
    a = hutchinson_trace(A, 10, seed=3)
    b = hutchinson_trace(A, 10, seed=torch.Generator().manual_seed(3))
    c = hutchpp_trace(A, 12, seed=3)
    hutchinson_trace(A, 10)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a == b and c == hutchpp_trace(A, 12, seed=3)


def test_float32_operator():
    A = random_symmetric(64, 7).float()
    est = hutchinson_trace(A, 200, seed=0)
    assert abs(est.value - torch.trace(A.double()).item()) < 5 * est.stderr


def test_to_dict():
    d = hutchinson_trace(torch.eye(4, dtype=DT), 2, seed=0).to_dict()
    assert d == {"value": 4.0, "stderr": 0.0, "num_probes": 2, "num_matvecs": 2, "method": "hutchinson-rademacher"}


def test_validation():
    A = torch.eye(5, dtype=DT)
    with pytest.raises(ValueError, match="num_probes must be an int >= 2 .* got 1"):
        hutchinson_trace(A, 1)
    with pytest.raises(ValueError, match="distribution must be one of rademacher, gaussian, got 'uniform'"):
        hutchinson_trace(A, 4, distribution="uniform")
    with pytest.raises(ValueError, match="block_size must be an int >= 1 or None, got 0"):
        hutchinson_trace(A, 4, block_size=0)
    with pytest.raises(ValueError, match="num_matvecs must be an int >= 6 .* got 5"):
        hutchpp_trace(A, 5)
    with pytest.raises(ValueError, match=r"square operator of shape \(P, P\), got shape \(5, 4\)"):
        hutchinson_trace(torch.ones(5, 4, dtype=DT), 4)


def test_deflated_trace_is_exact_for_low_rank_and_when_the_basis_spans_the_space():
    # rank 10 < s = 20: the Krylov space becomes invariant after ≤ 11 steps, restarts fill the rest of Q, and
    # tr(QᵀAQ) = Σα holds the whole trace; the residual probes see (I − QQᵀ)A(I − QQᵀ) = 0 up to rounding.
    g = torch.Generator().manual_seed(3)
    L = torch.randn(120, 10, generator=g, dtype=DT)
    A = CountingOperator(L @ L.T)
    truth = torch.trace(A.M).item()
    est = deflated_trace(A, 30, seed=0)
    assert est.value == pytest.approx(truth, rel=1e-10)
    assert est.stderr < 1e-8 * truth
    assert est.num_matvecs == A.num_matvecs == 30 and est.num_probes == 10
    assert est.method == "lanczos-deflated-rademacher"
    # s ≥ P: Q spans R^P, T is similar to A, the estimate is exact with no probes
    M = random_symmetric(12, 5)
    full = deflated_trace(M, 20, deflation_steps=50, seed=1)
    assert full.value == pytest.approx(torch.trace(M).item(), abs=1e-10) and full.stderr == 0.0


def test_deflated_trace_beats_hutchpp_at_the_same_budget_on_a_decaying_spectrum():
    # λ_i = i^{-1.5} (slower decay than above, closer to a Hessian's bulk): a Krylov space of dimension 40
    # holds more of the top than Hutch++'s 20-column sketch for the same 60 products.
    A = with_spectrum(1.0 / np.arange(1, 301) ** 1.5, 6)
    truth = torch.trace(A).item()
    reps = 30
    e_pp = [hutchpp_trace(A, 60, seed=s).value - truth for s in range(reps)]
    e_d = [deflated_trace(A, 60, seed=s).value - truth for s in range(reps)]
    rms_pp, rms_d = np.sqrt(np.mean(np.square(e_pp))), np.sqrt(np.mean(np.square(e_d)))
    assert rms_d < rms_pp / 2, (rms_d, rms_pp)
    # unbiased: the mean error is within 4 standard errors of 0
    assert abs(np.mean(e_d)) <= 4 * np.std(e_d, ddof=1) / np.sqrt(reps)


def test_deflated_trace_validation():
    A = random_symmetric(20, 0)
    with pytest.raises(ValueError, match="num_matvecs must be an int >= 3, got 2"):
        deflated_trace(A, 2)
    with pytest.raises(ValueError, match="deflation_steps must be an int >= 1, got 0"):
        deflated_trace(A, 10, deflation_steps=0)
    with pytest.raises(ValueError, match="must be >= 2 residual probes"):
        deflated_trace(A, 10, deflation_steps=9)


def test_deflated_trace_extends_the_eigenvalue_run_it_is_given():
    # The eigenvalue run's basis is continued, not rebuilt: with the top-5 run's L steps reused, only s − L
    # new Lanczos products and the m − s probes are paid. Exact once Q spans R^P; unbiased otherwise.
    from sharpness.linalg import extreme_eigenvalues

    A = CountingOperator(with_spectrum(1.0 / np.arange(1, 101) ** 1.5, 7))
    truth = torch.trace(A.M).item()
    top, _ = extreme_eigenvalues(A, top_k=5, tol=1e-6, seed=0, keep_lanczos=True)
    L = top.lanczos.length()  # the search run's steps (top-5 is then verified by a run of its own)
    assert top.lanczos is not None and L < top.num_steps
    assert extreme_eigenvalues(A, top_k=1, seed=0)[0].lanczos is None  # not kept unless asked
    before = A.num_matvecs
    est = deflated_trace(A, 60, seed=11, lanczos=top.lanczos)
    assert L < 40 and est.num_matvecs == A.num_matvecs - before == (40 - L) + 20 and est.num_probes == 20
    Q = top.lanczos.basis()
    torch.testing.assert_close(Q.T @ Q, torch.eye(40, dtype=DT), atol=1e-12, rtol=0)
    # ... and the estimate is as good as a fresh run's, unbiased over seeds (each seed its own eigen run)
    errs, fresh = [], []
    for s in range(40):
        t, _ = extreme_eigenvalues(A.M, top_k=1, tol=1e-3, seed=100 + s, keep_lanczos=True)
        errs.append(deflated_trace(A.M, 60, seed=s, lanczos=t.lanczos).value - truth)
        fresh.append(deflated_trace(A.M, 60, seed=s).value - truth)
    assert abs(np.mean(errs)) <= 4 * np.std(errs, ddof=1) / np.sqrt(len(errs))
    rms, rms_fresh = np.sqrt(np.mean(np.square(errs))), np.sqrt(np.mean(np.square(fresh)))
    assert 0.6 < rms / rms_fresh < 1.6, (rms, rms_fresh)
    # s ≥ P: exact
    M = random_symmetric(12, 5)
    t, _ = extreme_eigenvalues(M, top_k=1, seed=0, keep_lanczos=True)
    full = deflated_trace(M, 20, deflation_steps=50, seed=1, lanczos=t.lanczos)
    assert full.value == pytest.approx(torch.trace(M).item(), abs=1e-10) and full.stderr == 0.0
    with pytest.raises(ValueError, match="same operator"):
        deflated_trace(A, 60, seed=1, lanczos=extreme_eigenvalues(A.M, seed=0, keep_lanczos=True)[0].lanczos)
