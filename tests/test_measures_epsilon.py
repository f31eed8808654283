"""Keskar's ε-sharpness against closed forms, in float64."""

import dataclasses
import itertools

import pytest
import torch

from conftest import assert_unchanged, make_classification, snapshot
from sharpness.errors import InputError
from sharpness.hessian import dense_hessian
from sharpness.measures.epsilon import EpsilonSharpness, epsilon_sharpness, random_subspace, search_epsilon_box
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


def test_zero_epsilon_gives_zero(objective):
    for space in (None, 4):
        r = epsilon_sharpness(objective, 0.0, subspace_dim=space, start="random")
        assert r.value == 0.0 and r.values_per_start == (0.0,)


def test_non_decreasing_in_epsilon(objective):
    # Nested boxes, the same start at y = 0 and a non-stationary point: each larger box contains the previous
    # optimizer's whole path, and L-BFGS-B only accepts descent steps.
    values = [epsilon_sharpness(objective, eps).value for eps in (0.0, 1e-4, 1e-3, 1e-2, 1e-1)]
    assert all(b >= a for a, b in zip(values, values[1:])), values
    assert values[-1] > 0


@pytest.mark.parametrize("eps", [1e-3, 0.1])
def test_quadratic_box_maximum_is_the_corner(eps):
    # max over |z_i| ≤ b_i of the convex ½zᵀDz (D diagonal ≥ 0) is ½ΣD_i b_i², attained at every corner; the
    # projected gradient pushes each coordinate outwards, so L-BFGS-B from a random start ends at a corner.
    obj, D, theta, c = quadratic_at_minimum()
    search = search_epsilon_box(obj, eps, start="random", max_iter=50)
    b = eps * (theta.abs() + 1)
    expected = 100 * 0.5 * float((D * b**2).sum()) / (1 + c)
    # The value is a difference f(θ*+z) − f(θ*) of numbers ≈ c: cancellation leaves ~1e-16·c/Δf relative,
    # about 1e-10 at ε = 1e-3 here.
    assert search.result.value == pytest.approx(expected, rel=1e-8)
    torch.testing.assert_close(search.maximizer.abs(), b, rtol=1e-12, atol=0)
    torch.testing.assert_close(search.bounds, b, rtol=1e-15, atol=0)


def test_zero_start_at_an_exact_stationary_point_stays():
    # Documented: at y = 0 with ∇f = 0, L-BFGS-B cannot move, so start="zero" reports ≈ 0 at a minimum.
    obj, *_ = quadratic_at_minimum()
    assert epsilon_sharpness(obj, 0.1).value == pytest.approx(0.0, abs=1e-10)
    assert epsilon_sharpness(obj, 0.1, start="random").value > 1e-2


def test_random_subspace_matches_corner_enumeration():
    # In a subspace, f(θ* + Ay) − c = ½yᵀ(AᵀDA)y is convex in y, so its box maximum is at one of the 2^p
    # corners; with p = 3 we enumerate all 8. L-BFGS-B ends at a local maximum (a corner), and enough random
    # restarts find the best one.
    obj, D, theta, c = quadratic_at_minimum()
    p, eps = 3, 0.2
    search = search_epsilon_box(obj, eps, subspace_dim=p, start="random", restarts=15, max_iter=50, seed=3)
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


def test_first_order_regime_matches_gradient_formula(objective):
    # For small ε, max over the box of f(θ+z) − f(θ) = Σ|g_i| b_i + r with |r| ≤ ½‖H‖₂‖b‖² (+ third order).
    # L-BFGS-B's first step from 0 is the projected steepest ascent, which reaches the bound on every
    # coordinate with |g_i| ≥ b_i; those with |g_i| < b_i lose at most |g_i| b_i < b_i², i.e. ‖b‖² in all.
    eps = 1e-6
    f, g = objective.value_and_grad()
    b = eps * (objective.theta.abs() + 1)
    linear = float((g.abs() * b).sum())
    norm_h = float(torch.linalg.matrix_norm(dense_hessian(objective), ord=2))
    slack = 2 * (0.5 * norm_h + 1) * float(b @ b)  # ×2 for the Hessian's variation across the box
    r = epsilon_sharpness(objective, eps)
    scale = 100 / (1 + float(f))
    assert abs(r.value - scale * linear) <= scale * slack
    assert scale * slack < 1e-3 * r.value  # the check is sharp: the slack is tiny next to the value


@pytest.mark.parametrize("subspace_dim", [None, 7])
def test_maximizer_stays_inside_the_box(objective, subspace_dim):
    search = search_epsilon_box(objective, 0.05, subspace_dim=subspace_dim, start="random", restarts=2, max_iter=20)
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
    assert {"epsilon", "space", "dim", "start", "value", "values_per_start", "iterations", "status"} <= fields
    assert (a.space, a.dim, b.space) == ("random", 5, "random")
    assert epsilon_sharpness(obj, 1e-3).space == "full"


@pytest.mark.parametrize(
    "kwargs",
    [{"epsilon": -1.0}, {"epsilon": float("nan")}, {"start": "middle"}, {"restarts": -1}, {"max_iter": 0},
     {"subspace_dim": 0}, {"subspace_dim": 10**6}],
)
def test_bad_arguments_say_what_was_expected(objective, kwargs):
    kwargs = {"epsilon": 1e-3, **kwargs}
    with pytest.raises(InputError, match="got"):
        epsilon_sharpness(objective, **kwargs)
