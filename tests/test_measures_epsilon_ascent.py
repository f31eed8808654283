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
    corners = [b * torch.where(u < 0, -1.0, 1.0), -b * torch.where(u < 0, -1.0, 1.0), b * torch.where(g < 0, -1.0, 1.0)]
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
