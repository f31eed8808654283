"""Dinh et al.'s rescaling: raw sharpness changes, adaptive sharpness does not (float64)."""

import pytest
import torch
from torch import nn

from conftest import assert_unchanged, make_classification, snapshot
from sharpness.errors import InputError
from sharpness.hessian import dense_hessian
from sharpness.measures import average_sharpness, epsilon_sharpness, rescale_relu_layers, worst_case_sharpness
from sharpness.objective import Objective


class ReluMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture
def relu_mlp():
    torch.manual_seed(0)
    return ReluMLP().double()


@pytest.fixture
def data():
    return make_classification(n=40)


def objectives(model, data, alpha):
    return Objective(model, *data), Objective(rescale_relu_layers(model, alpha), *data)


def scaling(objective, alpha):
    """d with w' = d ⊙ w: α on fc1.weight (30) and fc1.bias (6), 1/α on fc2.weight (18), 1 on fc2.bias (3)."""
    assert objective.names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    d = torch.ones(objective.numel, dtype=torch.float64)
    d[:36], d[36:54] = alpha, 1 / alpha
    return d


@pytest.mark.parametrize("alpha", [10.0, 0.1])
def test_same_function_new_model_input_untouched(relu_mlp, data, alpha):
    before = snapshot(relu_mlp)
    new = rescale_relu_layers(relu_mlp, alpha)
    assert_unchanged(relu_mlp, before)
    assert new is not relu_mlp and new.fc1.weight.data_ptr() != relu_mlp.fc1.weight.data_ptr()
    x, _ = data
    with torch.no_grad():
        # ReLU(αz) = αReLU(z) holds exactly; only the rounding of α·z and W/α differs: ~1e-16 relative.
        torch.testing.assert_close(new(x), relu_mlp(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new.fc1.weight, alpha * relu_mlp.fc1.weight)
    torch.testing.assert_close(new.fc2.bias, relu_mlp.fc2.bias, rtol=0, atol=0)
    a, b = objectives(relu_mlp, data, alpha)
    assert float(b.value()) == pytest.approx(float(a.value()), rel=1e-12)


def test_hessian_transforms_and_raw_sharpness_explodes(relu_mlp, data):
    # f'(w') = f(D⁻¹w') with D = α on layer 1 (W₁, b₁), 1/α on W₂, 1 on b₂  ⇒  H' = D⁻¹HD⁻¹ exactly.
    # The W₂ block is multiplied by α², so by the Rayleigh quotient on vectors supported there
    # λ'_max ≥ α² λ_max(H_W₂W₂); here λ_max(H_W₂W₂)/λ_max(H) ≈ 0.6, so α = 10 gives a ratio > 10.
    alpha = 10.0
    a, b = objectives(relu_mlp, data, alpha)
    H, H2 = dense_hessian(a), dense_hessian(b)
    d = scaling(a, alpha)
    torch.testing.assert_close(H2, H / d[:, None] / d[None, :], rtol=1e-9, atol=1e-12)
    w2 = slice(36, 54)  # fc2.weight in the flat order
    lam, lam2 = float(torch.linalg.eigvalsh(H)[-1]), float(torch.linalg.eigvalsh(H2)[-1])
    lam_block = float(torch.linalg.eigvalsh(H[w2, w2])[-1])
    assert lam2 >= alpha**2 * lam_block * (1 - 1e-12)
    assert lam2 / lam > 10
    assert float(H2.trace()) / float(H.trace()) > 10


@pytest.mark.parametrize("alpha", [100.0, 0.01])
def test_epsilon_sharpness_is_not_invariant(relu_mlp, data, alpha):
    # In the rescaled coordinates the box |z_i| ≤ ε(|w'_i| + 1) is, mapped back, ε(|w_i| + 1/d_i): the "+1"
    # does not scale, so the layer that shrinks gets a box up to 1/d = α (or 1/α) times wider. For small ε,
    # φ ≈ 100 Σ|g_i| b_i / (1 + f) (tested in test_measures_epsilon), so the ratio is
    # Σ|g_i|(|w_i| + 1/d_i) / Σ|g_i|(|w_i| + 1) — 18.6 for α = 100 and 38 for α = 0.01 here.
    eps = 1e-5
    a, b = objectives(relu_mlp, data, alpha)
    ratio = epsilon_sharpness(b, eps).value / epsilon_sharpness(a, eps).value
    g = a.value_and_grad()[1]
    d = scaling(a, alpha)
    predicted = float((g.abs() * (a.theta.abs() + 1 / d)).sum() / (g.abs() * (a.theta.abs() + 1)).sum())
    assert ratio == pytest.approx(predicted, rel=1e-2)  # second-order terms are O(ε·α) ≈ 1e-3 relative
    assert ratio > 10


@pytest.mark.parametrize("alpha, p", [(10.0, 2), (0.1, "inf")])
def test_adaptive_worst_case_is_invariant_plain_is_not(relu_mlp, data, alpha, p):
    # |D w| = D|w|, so u ↦ L(w' + |w'|⊙u) is the same function as u ↦ L(w + |w|⊙u); the ascent runs in u-space
    # from the same seeded start, so it follows the same path up to rounding (~1e-16 per step; 1e-9 is loose).
    a, b = objectives(relu_mlp, data, alpha)
    kw = dict(p=p, steps=8, batch_size=20, seed=3)
    ra, rb = worst_case_sharpness(a, 0.1, **kw), worst_case_sharpness(b, 0.1, **kw)
    assert rb.values_per_batch == pytest.approx(ra.values_per_batch, rel=1e-9)
    assert ra.num_batches == 2 and ra.value > 0
    # The same measure without the |w| scaling changes by a large factor (3–5× measured): the check can fail.
    pa, pb = (worst_case_sharpness(o, 0.1, adaptive=False, **kw).value for o in (a, b))
    assert pb / pa > 2


@pytest.mark.parametrize("distribution", ["sphere", "gaussian", "gaussian-paper"])
def test_adaptive_average_case_is_invariant(relu_mlp, data, distribution):
    a, b = objectives(relu_mlp, data, 10.0)
    # The worst-case tests' ρ: with the sphere (‖u‖₂ = ρ) both measures perturb by the same radius.
    rho = 0.1 if distribution != "gaussian-paper" else 0.1 / 57**0.5  # the paper's ‖u‖ ≈ ρ√P, P = 57
    ra, rb = (average_sharpness(o, rho, distribution=distribution, num_draws=20, seed=1) for o in (a, b))
    # Same draws of u; each value is a difference of losses ≈ 1, so absolute rounding ~1e-16 (measured
    # ~1e-17 on values ≈ 2e-5), far below the 1e-15 allowed.
    assert ra.value > 1e-6
    assert rb.value == pytest.approx(ra.value, rel=1e-9, abs=1e-15)
    assert rb.stderr == pytest.approx(ra.stderr, rel=1e-9, abs=1e-15)
    assert (rb.max_value, rb.max_draw, rb.max_sign) == (pytest.approx(ra.max_value, rel=1e-9), ra.max_draw, ra.max_sign)
    # Plain: E ≈ ½(ρ²/P) tr(H) if the loss were quadratic, and tr(H')/tr(H) ≈ 19 at α = 10 (the Hessian test);
    # the steps also cross ReLU kinks, whose curvature H misses, and we measured ratios of 6–9.4 (sphere) over
    # seeds 0–4. The statistical claim: the two means differ by more than 4 standard errors (5.3–6.6 measured).
    pa, pb = (average_sharpness(o, rho, adaptive=False, distribution=distribution, num_draws=20, seed=1) for o in (a, b))
    assert pb.value - pa.value > 4 * (pa.stderr + pb.stderr)


def test_sequential_and_explicit_layers():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    x = torch.randn(7, 4, dtype=torch.float64)
    new = rescale_relu_layers(model, 3.0, layers=("2", "4"))
    torch.testing.assert_close(new(x), model(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new[0].weight, model[0].weight, rtol=0, atol=0)
    torch.testing.assert_close(new[4].weight, model[4].weight / 3)


@pytest.mark.parametrize(
    "model, kwargs",
    [
        (ReluMLP(), {"alpha": 0.0}),
        (ReluMLP(), {"alpha": -2.0}),
        (ReluMLP(), {"alpha": float("inf")}),
        (ReluMLP(), {"alpha": 2.0, "layers": ("fc1", "nope")}),
        (ReluMLP(), {"alpha": 2.0, "layers": ("fc2", "fc1")}),  # widths 3 → 5 do not chain
        (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), {"alpha": 2.0}),
        (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)), {"alpha": 2.0}),
        (nn.Sequential(nn.Linear(3, 4)), {"alpha": 2.0}),
    ],
)
def test_refuses_what_cannot_be_rescaled(model, kwargs):
    with pytest.raises(InputError, match="got|expected"):
        rescale_relu_layers(model, **kwargs)
