"""Keskar's ε-sharpness against closed forms, in float64."""

import dataclasses
import itertools

import pytest
import scipy.optimize
import torch

from conftest import assert_unchanged, make_classification, snapshot
from sharpness.errors import InputError
from sharpness.hessian import dense_hessian
from sharpness.measures.epsilon import METHODS, EpsilonSharpness, epsilon_sharpness, random_subspace, search_epsilon_box
from sharpness.objective import Objective
from test_hessian import Scalar


def quadratic_at_minimum(scales=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0), n=40, seed=0):
    """f(θ) = 1/N‖Xθ − y‖² at its least-squares minimum θ*, with XᵀX = diag(s²).

    Then f(θ* + z) = c + ½ zᵀDz exactly, with D = 2/N·diag(s²) and c = f(θ*). Returns (objective, D, θ*, c).
    """
    g = torch.Generator().manual_seed(seed)
    s = torch.tensor(scales, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(n, len(s), generator=g, dtype=torch.float64))
    x = q * s  # orthogonal columns of norms s
    y = torch.randn(n, generator=g, dtype=torch.float64)
    theta = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)
    model = Scalar(len(s)).double()  # x ↦ xᵀθ, no bias
    with torch.no_grad():
        model.lin.weight.copy_(theta)
    obj = Objective(model, x, y)
    return obj, 2 / n * s**2, theta, float(obj.value())


@pytest.fixture
def objective(mlp):
    x, y = make_classification()
    return Objective(mlp, x, y)


@pytest.mark.parametrize("method", METHODS)
def test_zero_epsilon_gives_zero(objective, method):
    for space in (None, 4):
        r = epsilon_sharpness(objective, 0.0, subspace_dim=space, method=method, start="random", restarts=1)
        assert r.value == 0.0 and r.values_per_start == (0.0, 0.0)


def test_non_decreasing_in_epsilon(objective):
    # Nested boxes, the same start at y = 0 and a non-stationary point: each larger box contains the previous
    # optimizer's whole path, and L-BFGS-B only accepts descent steps.
    values = [epsilon_sharpness(objective, eps, method="paper").value for eps in (0.0, 1e-4, 1e-3, 1e-2, 1e-1)]
    assert all(b >= a for a, b in zip(values, values[1:])), values
    assert values[-1] > 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eps", [1e-3, 0.1])
def test_quadratic_box_maximum_is_the_corner(eps, method):
    # max over |z_i| ≤ b_i of the convex ½zᵀDz (D diagonal ≥ 0) is ½ΣD_i b_i², attained at every corner; the
    # projected gradient pushes each coordinate outwards, so L-BFGS-B from a random start ends at a corner,
    # and the ascent's first sign step from anywhere is one.
    obj, D, theta, c = quadratic_at_minimum()
    search = search_epsilon_box(obj, eps, method=method, start="random", max_iter=50)
    b = eps * (theta.abs() + 1)
    expected = 100 * 0.5 * float((D * b**2).sum()) / (1 + c)
    # The value is a difference f(θ*+z) − f(θ*) of numbers ≈ c: cancellation leaves ~1e-16·c/Δf relative,
    # about 1e-10 at ε = 1e-3 here.
    assert search.result.value == pytest.approx(expected, rel=1e-8)
    torch.testing.assert_close(search.maximizer.abs(), b, rtol=1e-12, atol=0)
    torch.testing.assert_close(search.bounds, b, rtol=1e-15, atol=0)


def test_zero_start_at_an_exact_stationary_point_stays():
    # Documented: at y = 0 with ∇f = 0, L-BFGS-B cannot move, so the paper's start="zero" reports ≈ 0 at a
    # minimum; the default ascent starts at a corner and finds the exact maximum.
    obj, D, theta, c = quadratic_at_minimum()
    assert epsilon_sharpness(obj, 0.1, method="paper").value == pytest.approx(0.0, abs=1e-10)
    assert epsilon_sharpness(obj, 0.1, method="paper", start="random").value > 1e-2
    b = 0.1 * (theta.abs() + 1)
    default = epsilon_sharpness(obj, 0.1)
    assert default.value == pytest.approx(100 * 0.5 * float((D * b**2).sum()) / (1 + c), rel=1e-8)
    assert default.status[0] == "kkt" and not default.budget_exhausted  # a convex f: the corner is a KKT point


@pytest.mark.parametrize("method", METHODS)
def test_random_subspace_matches_corner_enumeration(method):
    # In a subspace, f(θ* + Ay) − c = ½yᵀ(AᵀDA)y is convex in y, so its box maximum is at one of the 2^p
    # corners; with p = 3 we enumerate all 8. L-BFGS-B ends at a local maximum (a corner), and enough random
    # restarts find the best one.
    obj, D, theta, c = quadratic_at_minimum()
    p, eps = 3, 0.2
    search = search_epsilon_box(obj, eps, subspace_dim=p, method=method, start="random", restarts=15, max_iter=50, seed=3)
    A = random_subspace(obj.numel, p, seed=3)
    torch.testing.assert_close(search.basis, A, rtol=0, atol=0)  # the documented seeding reproduces A
    b = eps * (torch.linalg.pinv(A) @ theta).abs() + eps  # pinv by SVD: independent of the QR route
    torch.testing.assert_close(search.bounds, b, rtol=1e-12, atol=0)
    M = A.T @ torch.diag(D) @ A
    corners = [torch.tensor(s, dtype=torch.float64) * b for s in itertools.product((-1, 1), repeat=p)]
    best = max(0.5 * float(y @ M @ y) for y in corners)
    assert search.result.value == pytest.approx(100 * best / (1 + c), rel=1e-8)
    assert max(search.result.values_per_start) <= 100 * best / (1 + c) * (1 + 1e-8)
    torch.testing.assert_close(search.perturbation, A @ search.maximizer)


@pytest.mark.parametrize("method", METHODS)
def test_first_order_regime_matches_gradient_formula(objective, method):
    # For small ε, max over the box of f(θ+z) − f(θ) = Σ|g_i| b_i + r with |r| ≤ ½‖H‖₂‖b‖² (+ third order).
    # L-BFGS-B's first step from 0 is the projected steepest ascent, which reaches the bound on every
    # coordinate with |g_i| ≥ b_i; those with |g_i| < b_i lose at most |g_i| b_i < b_i², i.e. ‖b‖² in all.
    eps = 1e-6
    f, g = objective.value_and_grad()
    b = eps * (objective.theta.abs() + 1)
    linear = float((g.abs() * b).sum())
    norm_h = float(torch.linalg.matrix_norm(dense_hessian(objective), ord=2))
    slack = 2 * (0.5 * norm_h + 1) * float(b @ b)  # ×2 for the Hessian's variation across the box
    r = epsilon_sharpness(objective, eps, method=method)
    scale = 100 / (1 + float(f))
    assert abs(r.value - scale * linear) <= scale * slack
    assert scale * slack < 1e-3 * r.value  # the check is sharp: the slack is tiny next to the value


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("subspace_dim", [None, 7])
def test_maximizer_stays_inside_the_box(objective, subspace_dim, method):
    search = search_epsilon_box(objective, 0.05, subspace_dim=subspace_dim, method=method, start="random",
                                restarts=2, max_iter=20)
    assert bool((search.maximizer.abs() <= search.bounds).all())
    assert search.maximizer.abs().max() > 0
    # The reported value is f at the maximizer, recomputed independently of the optimizer's bookkeeping.
    f0 = float(objective.value())
    f1 = float(objective.value(objective.theta + search.perturbation))
    assert search.result.value == pytest.approx(100 * (f1 - f0) / (1 + f0), rel=1e-12)
    assert len(search.result.values_per_start) == 3 == len(search.result.iterations) == len(search.result.status)
    assert all(it <= 20 for it in search.result.iterations)


def test_model_is_untouched_and_results_are_reproducible(mlp):
    x, y = make_classification()
    before = snapshot(mlp)
    obj = Objective(mlp, x, y)
    a = epsilon_sharpness(obj, 1e-2, subspace_dim=5, start="random", restarts=1, seed=4)
    b = epsilon_sharpness(obj, 1e-2, subspace_dim=5, start="random", restarts=1, seed=4)
    assert_unchanged(mlp, before)
    assert a.values_per_start == b.values_per_start
    fields = {f.name for f in dataclasses.fields(EpsilonSharpness)}
    assert {"epsilon", "space", "dim", "method", "start", "value", "values_per_start", "iterations", "status",
            "budget_exhausted", "upper_bound"} <= fields
    assert (a.space, a.dim, b.space) == ("random", 5, "random")
    assert epsilon_sharpness(obj, 1e-3).space == "full"


def test_the_cached_subspace_gives_exactly_what_a_fresh_draw_gives(mlp):
    from sharpness.measures.epsilon import _seeded_subspace

    x, y = make_classification()
    obj = Objective(mlp, x, y, dtype=torch.float64)
    runs = []
    for method in ("ascent", "paper", "ascent"):
        _seeded_subspace.cache_clear()  # a fresh draw of A and its QR, then the cached ones
        fresh = epsilon_sharpness(obj, 1e-2, subspace_dim=4, method=method, restarts=2, seed=7)
        cached = epsilon_sharpness(obj, 1e-2, subspace_dim=4, method=method, restarts=2, seed=7)
        assert cached.values_per_start == fresh.values_per_start and cached.value == fresh.value
        runs.append(cached)
    assert runs[0].values_per_start == runs[2].values_per_start  # a paper-mode run in between changes nothing
    basis, _, _, state = _seeded_subspace(obj.numel, 4, 7, torch.float64, torch.device("cpu"))
    assert torch.equal(basis, random_subspace(obj.numel, 4, seed=7))
    gen = torch.Generator().manual_seed(7)
    for _ in range(4):  # what drawing A consumes: one column of P normals at a time
        torch.randn(obj.numel, generator=gen, dtype=torch.float64)
    assert torch.equal(state, gen.get_state())  # so the starts continue from where they did without the cache
    other = epsilon_sharpness(obj, 1e-2, subspace_dim=4, restarts=2, seed=8)  # another seed: another A
    assert other.values_per_start != runs[0].values_per_start


@pytest.mark.parametrize(
    "kwargs",
    [{"epsilon": -1.0}, {"epsilon": float("nan")}, {"start": "middle"}, {"restarts": -1}, {"max_iter": 0},
     {"method": "newton"}, {"polish": -1}, {"curvature": float("inf")},
     {"subspace_dim": 0}, {"subspace_dim": 10**6}],
)
def test_bad_arguments_say_what_was_expected(objective, kwargs):
    kwargs = {"epsilon": 1e-3, **kwargs}
    with pytest.raises(InputError, match="got"):
        epsilon_sharpness(objective, **kwargs)


# --- brute force on tiny non-convex models at a well-trained minimum --------------------------------------------


class Neuron(torch.nn.Module):
    """x ↦ a·tanh(w·x + c): non-convex in (w, a[, c]); P = 2 without the bias, 3 with it."""

    def __init__(self, bias: bool):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        self.a = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        self.c = torch.nn.Parameter(torch.tensor(0.0, dtype=torch.float64)) if bias else None

    def forward(self, x):
        return self.a * torch.tanh(self.w * x + (0 if self.c is None else self.c))


def trained_neuron(bias: bool, seed: int, n: int = 30):
    """A Neuron fitted to noisy tanh data by BFGS and Newton steps: a minimum with a gradient at rounding level."""
    g = torch.Generator().manual_seed(seed)
    x = 1.5 * torch.randn(n, generator=g, dtype=torch.float64)
    t = 1.3 * torch.tanh(0.8 * x + 0.3 * bias) + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    model = Neuron(bias)
    obj = Objective(model, x, t)

    def fg(th):
        value, grad = obj.value_and_grad(torch.tensor(th))
        return float(value), grad.numpy()

    res = scipy.optimize.minimize(fg, obj.theta.numpy(), jac=True, method="BFGS", options={"gtol": 1e-13})
    # BFGS alone stalls near 1e-12 with some scipy/BLAS builds; Newton steps on the closed-form loss (quadratic
    # convergence from there) take the gradient to rounding level whatever the build.
    theta = torch.tensor(res.x)
    for _ in range(3):
        f = lambda th: neuron_losses(th[None, :], x, t)[0]  # noqa: E731
        grad = torch.func.grad(f)(theta)
        theta = theta - torch.linalg.solve(torch.func.hessian(f)(theta), grad)
    with torch.no_grad():
        for p, v in zip(model.parameters(), theta):
            p.fill_(float(v))
    return Objective(model, x, t), x, t


def neuron_losses(points, x, t):
    """f at each row of ``points`` ((M, P): w, a[, c]) in closed form, independently of the Objective."""
    w, a = points[:, 0:1], points[:, 1:2]
    c = points[:, 2:3] if points.shape[1] == 3 else 0.0
    return ((a * torch.tanh(w * x + c) - t) ** 2).mean(dim=1)


def brute_force_maximum(obj, x, t, bounds, basis=None):
    """max of f(θ + A y) over the box |y| ≤ b: a dense grid (edges and corners included), then L-BFGS-B polished
    from the 20 best grid points. The grid misses the maximum by at most its spacing; the polish closes it."""
    n = {1: 2001, 2: 201}.get(len(bounds), 41)  # 40k–70k points
    axes = [torch.linspace(-1, 1, n, dtype=torch.float64) * b for b in bounds]
    ys = torch.stack([g.reshape(-1) for g in torch.meshgrid(*axes, indexing="ij")], dim=1)
    lift = (lambda y: y) if basis is None else (lambda y: y @ basis.T)
    values = neuron_losses(obj.theta + lift(ys), x, t)
    best = float(values.max())
    b = bounds.numpy()

    def negative(y):
        yt = torch.tensor(y, requires_grad=True)
        v = neuron_losses((obj.theta + lift(yt.unsqueeze(0))), x, t)[0]
        (grad,) = torch.autograd.grad(v, yt)
        return -float(v.detach()), -grad.numpy()

    for k in values.topk(20).indices:
        res = scipy.optimize.minimize(negative, ys[k].numpy(), jac=True, method="L-BFGS-B",
                                      bounds=scipy.optimize.Bounds(-b, b))
        best = max(best, -float(res.fun))
    base = float(obj.value())
    return 100 * (best - base) / (1 + base), ys, values


def box_curvature_sup(obj, x, t, ys, basis=None, points=2000):
    """max over ~2000 grid points θ + A y of the box of λ_max(∇²f) in the full space (dense, by torch.func)."""
    lift = (lambda y: y) if basis is None else (lambda y: y @ basis.T)
    hess = torch.func.vmap(torch.func.hessian(lambda w: neuron_losses(w.unsqueeze(0), x, t)[0]))
    return float(torch.linalg.eigvalsh(hess(obj.theta + lift(ys[:: max(1, len(ys) // points)])))[:, -1].max())


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("eps", [0.01, 0.05, 0.1])
def test_default_reaches_the_brute_force_maximum_at_a_minimum(bias, seed, eps):
    # Boxes up to 10 % of every weight, where the loss increase reaches ≈ 10 % and the tanh is visibly
    # non-convex. (At ε ≥ 0.3 these 3-parameter models have corner maxima the default misses; the module
    # docstring gives the measurement.)
    obj, x, t = trained_neuron(bias, seed)
    f0, g0 = obj.value_and_grad()
    assert float(g0.abs().max()) < 1e-8  # a well-trained minimum: the regime where 10 L-BFGS-B steps fail
    bounds = eps * (obj.theta.abs() + 1)
    truth, ys, _ = brute_force_maximum(obj, x, t, bounds)
    lam = box_curvature_sup(obj, x, t, ys)
    search = search_epsilon_box(obj, eps, curvature=lam)
    r = search.result
    assert r.value >= 0.99 * truth  # the 1 %
    assert r.value <= truth * (1 + 1e-9)  # a lower bound: every evaluated point is in the box
    assert bool((search.maximizer.abs() <= search.bounds).all())
    assert r.upper_bound >= truth  # a valid bound when λ ≥ the Hessian's λ_max everywhere in the box
    assert not r.budget_exhausted and set(r.status) <= {"kkt", "step_floor", "stalled"}


@pytest.mark.parametrize("bias, seed", [(False, 0), (False, 2), (True, 0), (True, 3)])
def test_paper_protocol_collapses_at_a_minimum_with_a_tiny_gradient(bias, seed):
    # L-BFGS-B from y = 0: the first step is the (< 1e-12) gradient and −f has negative curvature, so its
    # steps do not grow: the paper's protocol reports ≈ 0 for a box whose maximum is several percent.
    # (With a gradient of 1e-10 it sometimes escapes on these tiny models: the case is built to show it.)
    obj, x, t = trained_neuron(bias, seed)
    assert float(obj.value_and_grad()[1].abs().max()) < 1e-12
    eps = 0.1
    truth, *_ = brute_force_maximum(obj, x, t, eps * (obj.theta.abs() + 1))
    paper = epsilon_sharpness(obj, eps, method="paper")
    assert truth > 1.0
    assert paper.value < 1e-3 * truth
    assert epsilon_sharpness(obj, eps).value >= 0.99 * truth


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("eps", [0.01, 0.1, 0.2])
def test_subspace_variant_reaches_the_brute_force_maximum(seed, eps):
    obj, x, t = trained_neuron(True, seed)
    p = 2
    search = search_epsilon_box(obj, eps, subspace_dim=p, seed=seed, curvature=None)
    A = random_subspace(obj.numel, p, seed=seed)
    truth, ys, _ = brute_force_maximum(obj, x, t, search.bounds, basis=A)
    lam = box_curvature_sup(obj, x, t, ys, basis=A)
    bounded = search_epsilon_box(obj, eps, subspace_dim=p, seed=seed, curvature=lam).result
    # λ is the full-space sup of λ_max(∇²f) over the lifted box; yᵀAᵀHAy ≤ λσ_max(A)²‖y‖² makes it a bound.
    assert search.result.value >= 0.99 * truth
    assert search.result.value <= truth * (1 + 1e-9)
    assert bounded.upper_bound >= truth


def test_budget_running_out_is_reported_and_logged(caplog):
    obj, D, theta, c = quadratic_at_minimum()
    with caplog.at_level("WARNING", logger="sharpness"):
        r = epsilon_sharpness(obj, 0.1, method="paper", start="random", max_iter=1)
    assert r.budget_exhausted and r.status == ("max_iter",)
    assert "BUDGET RAN OUT on 1 of 1" in r.summary
    assert len(caplog.records) == 1 and "lower bound" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="sharpness"):
        r = epsilon_sharpness(obj, 0.1)
    assert not r.budget_exhausted and not caplog.records and "BUDGET" not in r.summary


def test_upper_bound_is_exact_for_a_quadratic_at_its_minimum():
    # f = c + ½zᵀDz with ∇f(θ*) = 0: the bound ½λ_max‖b‖² and the maximum ½ΣD_i b_i² coincide when D = λI.
    obj, D, theta, c = quadratic_at_minimum(scales=(2.0, 2.0, 2.0))
    b = 0.1 * (theta.abs() + 1)
    r = epsilon_sharpness(obj, 0.1, curvature=float(D.max()))
    assert r.upper_bound == pytest.approx(r.value, rel=1e-8)
    assert r.value == pytest.approx(100 * 0.5 * float((D * b**2).sum()) / (1 + c), rel=1e-8)
