"""The ε-sharpness ascent away from minima: float64 quadratics with large gradients and exact box maxima.

At a minimum the start corners alone reach the maximum (tests/test_measures_epsilon.py), so those tests cannot
tell an ascent from a no-op. Here f(θ + z) − f(θ) = gᵀz + ½zᵀMz exactly, with ‖g‖ of order one: the box maximum
is known exactly (corner enumeration for M ⪰ 0, KKT enumeration for an indefinite M), the start corners are
far from it, and only iterating the loop closes the gap.
"""

import itertools

import pytest
import torch

from sharpness.measures.epsilon import epsilon_sharpness, random_subspace, search_epsilon_box
from sharpness.objective import Objective


class Quadratic(torch.nn.Module):
    """Every sample's output is q(θ) = ½θᵀMθ + hᵀθ + c; with the identity as loss, f(θ) = q(θ) exactly."""

    def __init__(self, theta, M, h, c):
        super().__init__()
        self.theta = torch.nn.Parameter(theta.clone())
        self.register_buffer("M", M)
        self.register_buffer("h", h)
        self.c = c

    def forward(self, x):
        t = self.theta
        return (0.5 * t @ self.M @ t + self.h @ t + self.c).expand(x.shape[0])


def quadratic(M, theta, gradient):
    """An Objective at θ with f(θ) = 10, Hessian M and gradient ``gradient`` at θ (h = gradient − Mθ)."""
    h = gradient - M @ theta
    model = Quadratic(theta, M, h, 10.0 - float(0.5 * theta @ M @ theta + h @ theta))
    x, y = torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    return Objective(model, x, y, loss=lambda outputs, batch: outputs)


def coupled_convex(P, seed):
    """M = XᵀX/P with Gaussian X (dense, ⪰ 0), θ and g Gaussian: the box maximum is a corner, and which one
    is a Boolean quadratic program the gradient and the couplings pull different ways."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(P, P, generator=g, dtype=torch.float64)
    theta = torch.randn(P, generator=g, dtype=torch.float64)
    return X.T @ X / P, theta, torch.randn(P, generator=g, dtype=torch.float64)


def indefinite(P, seed, lowest=-3.0):
    """M = Q diag(linspace(lowest, 1)) Qᵀ, Q a random rotation: maxima with coordinates inside the box."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    M = Q @ torch.diag(torch.linspace(lowest, 1.0, P, dtype=torch.float64)) @ Q.T
    theta = torch.randn(P, generator=g, dtype=torch.float64)
    return M, theta, 0.3 * torch.randn(P, generator=g, dtype=torch.float64)


def increase(M, g, z):
    return float(g @ z + 0.5 * z @ M @ z)


def corner_maximum(M, g, b):
    """max of gᵀz + ½zᵀMz over |z| ≤ b for M ⪰ 0: a convex function peaks at a vertex; all 2^P are tried."""
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=len(b))), dtype=torch.float64)
    z = signs * b
    return float((z @ g + 0.5 * ((z @ M) * z).sum(1)).max())


def kkt_maximum(M, g, b):
    """max of gᵀz + ½zᵀMz over |z| ≤ b for any symmetric M: the maximum is a KKT point, i.e. each coordinate
    sits at −b_i, at +b_i, or is free with (g + Mz)_i = 0; all 3^P patterns are solved and the feasible kept."""
    best = -float("inf")
    for pattern in itertools.product((-1, 0, 1), repeat=len(b)):
        s = torch.tensor(pattern)
        free, fixed = s == 0, s != 0
        z = torch.where(fixed, s.double() * b, torch.zeros_like(b))
        if free.any():
            z[free] = torch.linalg.solve(M[free][:, free], -(g[free] + M[free][:, fixed] @ z[fixed]))
            if bool((z[free].abs() > b[free] * (1 + 1e-12)).any()):
                continue
        best = max(best, increase(M, g, z))
    return best


def percent(obj, delta):
    return 100 * delta / (1 + float(obj.value()))


@pytest.mark.parametrize("seed", range(6))
def test_the_ascent_climbs_from_zero_to_the_maximum_of_an_indefinite_quadratic(seed):
    # From y = 0 nothing is found without iterating (φ = 0), and the maximum has coordinates inside the box,
    # so the loop must take full steps to the gradient's corner and then halve its way to the interior.
    M, theta, g = indefinite(6, seed)
    obj = quadratic(M, theta, g)
    eps = 0.5
    b = eps * (theta.abs() + 1)
    truth = percent(obj, kkt_maximum(M, g, b))
    r = epsilon_sharpness(obj, eps, start="zero", restarts=0)
    # 1 %: the accuracy target; the sign ascent's resolution is 2^-10 of the box (module docstring).
    assert truth > 1 and r.value >= 0.99 * truth
    assert r.value <= truth * (1 + 1e-12)  # a lower bound: every point it evaluates is in the box
    assert r.iterations[0] > 5  # it got there by iterating


@pytest.mark.parametrize("seed", [0, 7, 13])
def test_the_default_ascent_improves_on_its_start_corners_with_a_large_gradient(seed):
    # P = 10, ‖g‖ ≈ 3: the default's corners (±b⊙sign(u), u the top eigenvector of diag(b)M diag(b), and
    # b⊙sign(g)) reach < 90 % of the best of the 1024 corners; the ascent from them reaches it.
    M, theta, g = coupled_convex(10, seed)
    obj = quadratic(M, theta, g)
    eps = 0.5
    b = eps * (theta.abs() + 1)
    truth = corner_maximum(M, g, b)
    u = torch.linalg.eigh(b[:, None] * M * b[None, :]).eigenvectors[:, -1]  # dense, independent of Lanczos
    su, sg = torch.where(u < 0, -1.0, 1.0), torch.where(g < 0, -1.0, 1.0)
    corners = [b * su, -b * su, b * sg]
    assert max(increase(M, g, z) for z in corners) < 0.9 * truth  # the starts alone are far off
    r = epsilon_sharpness(obj, eps, restarts=0)
    assert r.value >= 0.99 * percent(obj, truth)
    assert r.value <= percent(obj, truth) * (1 + 1e-12)


def test_upper_bound_gradient_term_is_exact_for_an_isotropic_quadratic_away_from_its_minimum():
    # M = λI: max over the box of gᵀz + ½λ‖z‖² is attained at z = b⊙sign(g) and equals Σ b_i|g_i| + ½λ‖b‖², the
    # bound itself. With ‖g‖ ≈ 3 the gradient term is most of it, so dropping or mis-scaling it is visible.
    P, lam = 5, 2.0
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(P, generator=gen, dtype=torch.float64)
    g = torch.tensor([3.0, -2.0, 0.5, -1.5, 1.0], dtype=torch.float64)
    obj = quadratic(lam * torch.eye(P, dtype=torch.float64), theta, g)
    eps = 0.05
    b = eps * (theta.abs() + 1)
    closed = percent(obj, float((b * g.abs()).sum()) + 0.5 * lam * float(b @ b))
    r = epsilon_sharpness(obj, eps, curvature=lam)
    assert float((b * g.abs()).sum()) > 10 * 0.5 * lam * float(b @ b)  # the gradient term dominates
    assert r.upper_bound == pytest.approx(closed, rel=1e-12)
    assert r.value == pytest.approx(closed, rel=1e-10)  # attained: the bound is tight here


def test_upper_bound_with_a_large_gradient_in_a_subspace_is_the_closed_form_and_holds():
    # Anisotropic convex M, full space and a random subspace A: the bound is Σ b_i|(Aᵀg)_i| + ½λσ_max(A)²‖b‖²
    # with λ = λ_max(M) ≥ the Hessian everywhere, and it is above the exact corner maximum.
    M, theta, g = coupled_convex(8, 3)
    g = 3 * g
    obj = quadratic(M, theta, g)
    lam = float(torch.linalg.eigvalsh(M)[-1])
    eps = 0.2
    for dim in (None, 3):
        search = search_epsilon_box(obj, eps, subspace_dim=dim, curvature=lam, seed=5)
        A = torch.eye(8, dtype=torch.float64) if dim is None else random_subspace(8, dim, seed=5)
        b, gy = search.bounds, A.T @ g
        sigma = float(torch.linalg.matrix_norm(A, ord=2))
        closed = percent(obj, float((b * gy.abs()).sum()) + 0.5 * lam * sigma**2 * float(b @ b))
        assert search.result.upper_bound == pytest.approx(closed, rel=1e-10)
        truth = percent(obj, corner_maximum(A.T @ M @ A, gy, b))
        assert truth <= search.result.upper_bound
        assert search.result.value == pytest.approx(truth, rel=1e-2)


# --- stopping statuses ----------------------------------------------------------------------------------------


def sign_step(M, g, b, y, step):
    """The ascent's candidate Π_C(y + 2·step·b ⊙ sign(∇F(y))) for F(y) = gᵀy + ½yᵀMy, in closed form."""
    return torch.clamp(y + 2 * step * b * torch.sign(g + M @ y), -b, b)


def test_a_kkt_stop_is_a_fixed_point_of_the_sign_step():
    # Convex and coupled: every start ends at a corner whose sign step returns the corner itself.
    M, theta, g = coupled_convex(8, 2)
    obj = quadratic(M, theta, g)
    search = search_epsilon_box(obj, 0.5, restarts=3, start="corner")
    r = search.result
    assert r.status == ("kkt",) * 4 and r.status_counts == {"kkt": 4}
    y, b = search.maximizer, search.bounds
    assert torch.equal(sign_step(M, g, b, y, 1.0), y)
    assert "4 kkt" in r.summary and "BUDGET" not in r.summary


def test_stalled_and_step_floor_stops_mean_what_they_say(monkeypatch):
    # An interior maximum: the step is halved at every overshoot. By default the start stops as "stalled" (five
    # evaluations without a 1e-4 relative gain) with the step still ≥ 2⁻⁵ of the box; with the stall rule off
    # it halves on to the floor, and there no sign step of 2⁻¹⁰ (or more) raises F: a local maximum along the
    # sign direction to that resolution, checked here in closed form.
    import sharpness.measures.box_ascent as box_ascent

    M, theta, g = indefinite(6, 0)
    obj = quadratic(M, theta, g)
    stalled = epsilon_sharpness(obj, 0.5, start="zero", restarts=0)
    assert stalled.status == ("stalled",) and stalled.messages[0].startswith("stalled")
    monkeypatch.setattr(box_ascent, "STALL_EVALS", 10**6)
    search = search_epsilon_box(obj, 0.5, start="zero", restarts=0)
    assert search.result.status == ("step_floor",)
    y, b = search.maximizer, search.bounds
    for k in range(11):
        z = sign_step(M, g, b, y, 2.0**-k)
        assert increase(M, g, z) <= increase(M, g, y) + 1e-15 * abs(increase(M, g, y))
    assert search.result.value >= stalled.value * (1 - 1e-12)  # more halvings never lose the best


def test_max_iter_is_counted_per_start_and_reported(caplog):
    M, theta, g = indefinite(6, 1)
    obj = quadratic(M, theta, g)
    with caplog.at_level("WARNING", logger="sharpness"):
        r = epsilon_sharpness(obj, 0.5, restarts=2, max_iter=2)
    assert r.budget_exhausted and r.status_counts.get("max_iter", 0) >= 1
    assert sum(r.status_counts.values()) == len(r.status) == 5
    assert all(n == r.status.count(s) for s, n in r.status_counts.items())
    assert f"BUDGET RAN OUT on {r.status_counts['max_iter']} of 5 starts" in r.summary
    assert len(caplog.records) == 1


# --- spread of the starts and the automatic restarts ---------------------------------------------------------


def spread(values):
    """(second best, starts within 1 % of the best, whether the second best is > 1 % below), recomputed."""
    ranked = sorted(values, reverse=True)
    near = [v for v in ranked if v >= 0.99 * ranked[0]]
    return ranked[1], len(near), ranked[1] < 0.99 * ranked[0]


@pytest.mark.parametrize("seed", range(6))
def test_the_spread_of_the_starts_is_reported(seed):
    M, theta, g = coupled_convex(8, seed)
    obj = quadratic(M, theta, 2 * g)
    r = epsilon_sharpness(obj, 0.5, restarts=4)
    second, within, disagree = spread(r.values_per_start)
    assert (r.second_best, r.starts_within_1pct, r.maxima_disagree) == (second, within, disagree)
    assert max(r.values_per_start) == r.value
    assert ("LOCAL MAXIMA DISAGREE" in r.spread) == disagree and f"{within} of 7 within 1 %" in r.spread


def test_disagreeing_maxima_are_flagged():
    # Measured: seed 0 (P = 8, ε = 0.5, 2g) has its best corner found by one start of 7, the others > 1 % lower.
    M, theta, g = coupled_convex(8, 0)
    obj = quadratic(M, theta, 2 * g)
    r = epsilon_sharpness(obj, 0.5, restarts=4)
    assert r.maxima_disagree and r.starts_within_1pct == 1 and r.second_best < 0.99 * r.value


@pytest.mark.parametrize("seed", range(8))
def test_the_default_adds_starts_until_the_best_stops_improving_and_is_confirmed(seed):
    # restarts=None: the 5 fixed starts first (the same as restarts=2, the same numbers), then random corners
    # while the last 3 starts raised the best by > 1 % or no second start is within 1 % of it, ≤ 12 starts.
    M, theta, g = coupled_convex(8, seed)
    obj = quadratic(M, theta, 2 * g)
    fixed = epsilon_sharpness(obj, 0.5, restarts=2)
    auto = epsilon_sharpness(obj, 0.5)
    n = len(auto.values_per_start)
    assert auto.values_per_start[:5] == fixed.values_per_start and auto.value >= fixed.value
    assert auto.max_starts == 12 and fixed.max_starts is None and auto.restarts == n - 3

    def go_on(k):  # the rule, recomputed from the first k starts
        best = [max([0.0, *auto.values_per_start[:j]]) for j in range(k + 1)]
        return best[k] - best[k - 3] > 0.01 * best[k] or spread(auto.values_per_start[:k])[2]

    assert all(go_on(k) for k in range(5, n))  # every start beyond the fifth had a reason
    assert n == 12 or not go_on(n)  # and it stopped because none was left
    assert epsilon_sharpness(obj, 0.5).values_per_start == auto.values_per_start  # deterministic for a seed


def test_the_automatic_restarts_run_more_starts_in_some_cases():
    # The rule must be able to add starts at all: over these 8 problems it added some in most
    # (measured: 5 of 8, up to 12 starts).
    added = 0
    for seed in range(8):
        M, theta, g = coupled_convex(8, seed)
        added += len(epsilon_sharpness(quadratic(M, theta, 2 * g), 0.5).status) > 5
    assert added >= 3


def trained_tanh_mlp():
    """A float64 5-16-3 tanh MLP trained by L-BFGS to a loss ≈ 3e-13 on 40 samples (P = 147)."""
    from conftest import make_classification

    x, y = make_classification(n=40)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=1000, tolerance_grad=1e-15, tolerance_change=1e-18,
                            history_size=50)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    for _ in range(20):
        if float(opt.step(closure).detach()) < 1e-5:
            break
    return Objective(model, x, y)


def test_on_a_trained_mlp_disagreeing_starts_are_flagged_and_more_starts_find_more():
    # Measured (seed 1, ε = 0.03): the 5 fixed starts end at 177.3 % with the best reached once (flagged); the
    # default keeps drawing and reaches 212.76 %, what 33 starts reach, confirmed by a second start.
    obj = trained_tanh_mlp()
    assert float(obj.value()) < 1e-5
    fixed = epsilon_sharpness(obj, 0.03, restarts=2, seed=1)
    auto = epsilon_sharpness(obj, 0.03, seed=1)
    many = epsilon_sharpness(obj, 0.03, restarts=30, seed=1)
    assert fixed.maxima_disagree and fixed.value < 0.9 * many.value and "LOCAL MAXIMA DISAGREE" in fixed.spread
    assert auto.value >= 0.99 * many.value and not auto.maxima_disagree and 5 < len(auto.status) <= 12


# --- the curvature `analyze` gives the upper bound ----------------------------------------------------------------


def test_analyze_inflates_the_ritz_value_by_its_residual_for_the_upper_bound(mlp):
    # The Lanczos Ritz value θ₁ is below λ_max (interlacing; here by 1.2e-8 at tol 1e-4), so on its own it is no
    # bound on the Hessian; θ₁ + ‖r₁‖ is (the converged case: no eigenvalue above θ₁ was missed).
    from conftest import make_classification
    from sharpness import analyze
    from sharpness.hessian import dense_hessian

    x, y = make_classification(n=40)
    lam = float(torch.linalg.eigvalsh(dense_hessian(Objective(mlp, x, y, dtype=torch.float64)))[-1])
    report = analyze(mlp, x, y, dtype="float64", top_k=1, bottom_k=0, trace=False, epsilon=(1e-2,)).to_dict()
    top, entry = report["hessian"]["top"], report["epsilon_sharpness"][0]
    ritz, residual = top["values"][0], top["residuals"][0]
    assert top["converged"][0] and ritz < lam
    assert entry["curvature"] == pytest.approx(ritz + residual * abs(ritz), rel=1e-15)
    assert entry["curvature"] >= lam
    assert f"λ = {entry['curvature']:.6g}" in entry["upper_bound_kind"]
    assert entry["value"] <= entry["upper_bound"]
    for key in ("second_best", "starts_within_1pct", "maxima_disagree", "status_counts", "max_starts"):
        assert key in entry
