"""Directions and loss grids, checked against independent evaluations in float64."""

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TinyCNN, TinyMLP, assert_unchanged, make_classification, snapshot
from sharpness.errors import InputError
from sharpness.hessian import dense_hessian
from sharpness.landscape import (
    LineResult,
    PlaneResult,
    checkpoint_direction,
    eigen_directions,
    fit_curvature,
    grid,
    interpolate,
    landscape,
    line,
    load_result,
    orthogonalize,
    pca_directions,
    plane,
    project,
    random_direction,
)
from sharpness.objective import Objective


def _objective(model, d=5, n=23, **kw):
    x, y = make_classification(n=n, d=d)
    return Objective(model, x, y, **kw)


def _perturbed(model, scale=0.3, seed=5):
    """A second model of the same architecture: weights and BatchNorm statistics moved."""
    other = type(model)().double()
    other.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(other.parameters()) + [b for b in other.buffers() if b.is_floating_point()]:
            t.add_(scale * torch.rand(t.shape, generator=g, dtype=t.dtype))  # rand ≥ 0: variances stay positive
    return other


# --- directions -------------------------------------------------------------------------------------------
class Anonymous(nn.Module):
    """BatchNorm under a name that says nothing, so only detection by module type can find it."""

    def __init__(self):
        super().__init__()
        self.stack = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3, bias=False))

    def forward(self, x):
        return self.stack(x)


def test_filter_normalized_direction_has_the_weights_filter_norms_and_zero_bias_and_bn(cnn):
    obj = _objective(cnn, d=8)
    d = obj.unflatten(random_direction(obj, seed=3))
    w = obj.unflatten(obj.theta)
    for name in ("conv.weight", "head.weight"):
        dn = d[name].reshape(d[name].shape[0], -1).norm(dim=1)
        wn = w[name].reshape(w[name].shape[0], -1).norm(dim=1)
        torch.testing.assert_close(dn, wn, rtol=1e-13, atol=0)  # one float64 rescaling: rounding only
    for name in ("conv.bias", "bn.weight", "bn.bias", "head.bias"):
        assert torch.count_nonzero(d[name]) == 0, name


def test_bn_parameters_are_found_by_module_type_not_by_name():
    torch.manual_seed(0)
    obj = _objective(Anonymous().double().eval())
    d = obj.unflatten(random_direction(obj, ignore=("bn",), seed=0))
    assert torch.count_nonzero(d["stack.1.weight"]) == 0 and torch.count_nonzero(d["stack.1.bias"]) == 0
    assert torch.count_nonzero(d["stack.0.bias"]) == 4  # a Linear bias is not "bn"
    assert torch.count_nonzero(d["stack.0.weight"]) == 20


def test_layer_normalization_and_unignored_vectors(mlp):
    obj = _objective(mlp)
    w = obj.unflatten(obj.theta)
    d = obj.unflatten(random_direction(obj, normalization="layer", seed=1))
    for name in ("fc1.weight", "fc2.weight"):
        assert float(d[name].norm()) == pytest.approx(float(w[name].norm()), rel=1e-13)
    assert torch.count_nonzero(d["fc1.bias"]) == 0
    # with nothing ignored, a bias (a single "filter") is rescaled as a whole to the bias norm
    d = obj.unflatten(random_direction(obj, ignore=(), seed=1))
    assert float(d["fc1.bias"].norm()) == pytest.approx(float(w["fc1.bias"].norm()), rel=1e-13)
    raw = obj.unflatten(random_direction(obj, normalization="none", ignore=(), seed=1))
    assert not torch.allclose(raw["fc1.weight"].norm(dim=1), w["fc1.weight"].norm(dim=1))


@pytest.mark.parametrize("normalization", ["filter", "none"])
def test_directions_are_zero_mean_and_sign_balanced(normalization):
    torch.manual_seed(0)
    model = nn.Linear(200, 300).double()  # P = 60,300
    obj = Objective(model, torch.randn(4, 200, dtype=torch.float64), torch.randn(4, 300, dtype=torch.float64))
    d = random_direction(obj, normalization=normalization, seed=11)
    P = d.numel()
    # The sample mean of P independent zero-mean entries has standard error σ/√P: 5 of them is a 1-in-10⁶
    # false alarm, while an all-positive direction (the popular library's bug) sits at ~0.8σ, i.e. 200 of them.
    assert abs(float(d.mean())) < 5 * float(d.std()) / P**0.5
    frac_positive = float((d > 0).double().mean())
    assert abs(frac_positive - 0.5) < 5 * 0.5 / P**0.5


def test_directions_are_seeded_and_independent_of_dtype(mlp):
    obj = _objective(mlp)
    a, b = random_direction(obj, seed=4), random_direction(obj, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, random_direction(obj, seed=5))
    obj32 = _objective(mlp, dtype=torch.float32)
    assert torch.equal(random_direction(obj32, seed=4), a.float())


def test_bad_direction_options_are_input_errors(mlp):
    obj = _objective(mlp)
    with pytest.raises(InputError, match="normalization"):
        random_direction(obj, normalization="filterwise")
    with pytest.raises(InputError, match="matched no parameter"):
        random_direction(obj, ignore=("conv*",))


def test_checkpoint_direction_and_orthogonalize():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(10, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)
    assert torch.equal(checkpoint_direction(a, b), b - a)
    o = orthogonalize(b, a)
    assert abs(float(o @ a)) < 1e-14 * float(a.norm() * b.norm())
    torch.testing.assert_close(o + (b @ a) / (a @ a) * a, b)  # only the a-component was removed
    with pytest.raises(InputError):
        checkpoint_direction(a, b[:5])
    with pytest.raises(InputError):
        orthogonalize(b, torch.zeros(10, dtype=torch.float64))


def test_pca_directions_match_the_covariance_eigenvectors():
    g = torch.Generator().manual_seed(0)
    P, T = 30, 12
    center = torch.randn(P, generator=g, dtype=torch.float64)
    traj = center + torch.randn(T, 4, generator=g, dtype=torch.float64) * torch.tensor([5.0, 2.0, 0.5, 0.1], dtype=torch.float64) @ torch.randn(4, P, generator=g, dtype=torch.float64)
    dirs, ratios = pca_directions(list(traj), center, k=2)
    # independent reference: eigen-decomposition of the (T−1)-scaled covariance in numpy
    X = (traj - center).numpy()
    X = X - X.mean(axis=0)
    evals, evecs = np.linalg.eigh(X.T @ X)
    order = np.argsort(evals)[::-1]
    np.testing.assert_allclose(ratios, evals[order[:2]] / evals.sum(), rtol=1e-10)
    for d, v in zip(dirs, evecs[:, order[:2]].T):
        assert abs(float(d.norm()) - 1) < 1e-12
        assert abs(abs(float(d.numpy() @ v)) - 1) < 1e-10
        assert float(d[d.abs().argmax()]) > 0  # sign convention
    with pytest.raises(InputError, match="at most"):
        pca_directions(traj[:2], center, k=2)


def test_project_recovers_exact_coordinates_for_non_orthogonal_directions():
    g = torch.Generator().manual_seed(1)
    c = torch.randn(9, generator=g, dtype=torch.float64)
    d1, d2 = torch.randn(9, generator=g, dtype=torch.float64), torch.randn(9, generator=g, dtype=torch.float64)
    coords = torch.randn(5, 2, generator=g, dtype=torch.float64)
    points = c + coords[:, :1] * d1 + coords[:, 1:] * d2
    np.testing.assert_allclose(project(points, c, [d1, d2]), coords.numpy(), rtol=1e-10, atol=1e-12)


def test_eigen_directions_match_the_dense_hessian(mlp):
    obj = _objective(mlp)
    H = dense_hessian(obj)
    evals, evecs = torch.linalg.eigh(H)
    dirs, result = eigen_directions(obj, 2, tol=1e-10, seed=0)
    np.testing.assert_allclose(result.values, evals.flip(0)[:2].numpy(), rtol=1e-8)
    for d, v in zip(dirs, evecs.flip(1)[:, :2].unbind(1)):
        assert abs(abs(float(d @ v)) - 1) < 1e-6
    dirs, result = eigen_directions(obj, 1, which="bottom", tol=1e-10, seed=0)
    assert result.values[0] == pytest.approx(float(evals[0]), rel=1e-8)


# --- grids -------------------------------------------------------------------------------------------------
def test_default_grids_hold_exact_zero_and_one():
    a = grid(-1, 1, 51)
    assert a[25] == 0.0 and a[0] == -1.0 and a[-1] == 1.0 and np.array_equal(a, -a[::-1])
    k = grid(-1, 2, 25)
    assert 0.0 in k and 1.0 in k and len(k) == 25
    odd = grid(-0.3, 0.7, 11)  # 0.0 would be -0.3 + 3·0.1 with rounding; it must still be exact
    assert 0.0 in odd
    with pytest.raises(InputError):
        grid(1, -1, 5)


@pytest.mark.parametrize("batch_size", [1, 16])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_centre_is_exactly_the_checkpoint(cnn, batch_size, dtype):
    obj = _objective(cnn, d=8, dtype=dtype, chunk_size=7)
    d1, d2 = random_direction(obj, seed=1), random_direction(obj, seed=2)
    ref = float(obj.value())
    lin = line(obj, None, d1, batch_size=batch_size)
    assert lin.alphas[25] == 0.0 and lin.train_loss[25] == ref
    pl = plane(obj, None, d1, d2, grid(-1, 1, 5), grid(-1, 1, 3), batch_size=batch_size)
    assert pl.train_loss[2, 1] == ref and pl.train_acc[2, 1] == obj.evaluate().accuracy


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_grid_values_equal_independent_evaluations(cnn, batch_size, weighted):
    x, y = make_classification(d=8)
    w = torch.linspace(0.1, 2.0, len(y), dtype=torch.float64) if weighted else None
    obj = Objective(cnn, x, y, chunk_size=5, weights=w)
    d = random_direction(obj, seed=1)
    res = line(obj, None, d, grid(-1, 1, 7), batch_size=batch_size)
    for a, loss, acc in zip(res.alphas, res.train_loss, res.train_acc):
        ev = obj.evaluate(obj.theta + a * d)  # the reference cross-entropy kernel and argmax
        assert loss == pytest.approx(ev.loss, rel=1e-13)  # float64: summation order and log-sum-exp rounding
        assert acc == ev.accuracy
    assert res.num_evaluations == 7 and res.direction_norm == pytest.approx(float(d.norm()))


@pytest.mark.parametrize("make", [TinyMLP, TinyCNN])
def test_batched_evaluation_equals_one_at_a_time(make):
    torch.manual_seed(3)
    model = make().double().eval()
    obj = _objective(model, d=8 if make is TinyCNN else 5, chunk_size=9)
    test = _objective(model, d=8 if make is TinyCNN else 5, n=11)
    d1, d2 = random_direction(obj, seed=1), random_direction(obj, seed=2)
    a, b = grid(-1, 1, 5), grid(-1, 1, 7)
    one = plane(obj, None, d1, d2, a, b, test_objective=test, batch_size=1)
    many = plane(obj, None, d1, d2, a, b, test_objective=test, batch_size=4)  # 7 = 4 + 3: a short block too
    for m in ("train_loss", "test_loss"):
        # batched matrix products may round differently: float64 rounding of O(1) losses
        np.testing.assert_allclose(getattr(many, m), getattr(one, m), rtol=1e-13, atol=0)
    for m in ("train_acc", "test_acc"):
        np.testing.assert_array_equal(getattr(many, m), getattr(one, m))


def test_default_batch_size_batches_only_small_problems_without_convolutions(mlp, cnn):
    from types import SimpleNamespace

    from sharpness.landscape import BATCH_WORK_LIMIT, default_batch_size

    assert default_batch_size(_objective(mlp)) > 1
    assert default_batch_size(SimpleNamespace(numel=int(BATCH_WORK_LIMIT), n_samples=2)) == 1
    # a vmapped convolution is a grouped one: the loop won at every size measured (benchmarks/grid_batching.py)
    assert default_batch_size(_objective(cnn, d=8)) == 1
    res = line(_objective(mlp), None, random_direction(_objective(mlp)), grid(-1, 1, 3))
    assert res.config["batch_size"] == default_batch_size(_objective(mlp))  # the resolved value is recorded


class ItemInForward(nn.Module):
    """Calls .item() in forward: vmap cannot batch it, so evaluation must fall back to a loop."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        scale = 1.0 + 0.0 * self.fc.weight.sum().item()
        return self.fc(x) * scale


def test_models_vmap_cannot_batch_fall_back_with_a_warning():
    torch.manual_seed(0)
    obj = _objective(ItemInForward().double())
    d = random_direction(obj, seed=0)
    with pytest.warns(UserWarning, match="one at a time"):
        batched = line(obj, None, d, grid(-1, 1, 5), batch_size=4)
    exact = line(obj, None, d, grid(-1, 1, 5), batch_size=1)
    np.testing.assert_array_equal(batched.train_loss, exact.train_loss)


def test_interpolation_endpoints_reproduce_each_checkpoint(cnn):
    other = _perturbed(cnn)
    x, y = make_classification(d=8)
    obj_a, obj_b = Objective(cnn, x, y, chunk_size=6), Objective(other, x, y, chunk_size=6)
    res = interpolate(obj_a, obj_a.theta, obj_b.theta, obj_b=obj_b, batch_size=1)
    i0, i1 = list(res.alphas).index(0.0), list(res.alphas).index(1.0)
    assert res.train_loss[i0] == float(obj_a.value())
    assert res.train_loss[i1] == float(obj_b.value())
    assert res.config["interpolated_buffers"] == ["bn.running_mean", "bn.running_var"]
    # independent check in between: a real model whose parameters AND running statistics are the midpoint
    mid = TinyCNN().double()
    mid.load_state_dict({k: (0.5 * v + 0.5 * other.state_dict()[k]) if v.is_floating_point() else v for k, v in cnn.state_dict().items()})
    half = interpolate(obj_a, obj_a.theta, obj_b.theta, [0.5], obj_b=obj_b)
    assert half.train_loss[0] == pytest.approx(float(Objective(mid, x, y).value()), rel=1e-13)


def test_interpolation_without_obj_b_keeps_a_s_statistics(cnn):
    other = _perturbed(cnn)
    x, y = make_classification(d=8)
    obj_a, obj_b = Objective(cnn, x, y), Objective(other, x, y)
    res = interpolate(obj_a, obj_a.theta, obj_b.theta, [0.0, 1.0])
    assert res.train_loss[0] == float(obj_a.value())
    assert res.train_loss[1] != pytest.approx(float(obj_b.value()), rel=1e-6)  # b's weights with a's BN statistics


def test_grids_never_touch_the_model(cnn):
    before = snapshot(cnn)
    obj = _objective(cnn, d=8)
    d1, d2 = random_direction(obj, seed=1), random_direction(obj, seed=2)
    line(obj, None, d1, grid(-1, 1, 3))
    plane(obj, None, d1, d2, grid(-1, 1, 3), grid(-1, 1, 3))
    interpolate(obj, obj.theta, obj.theta + d1, [0.0, 0.5, 1.0])
    eigen_directions(obj, 1, seed=0)
    assert_unchanged(cnn, before)


def test_a_test_objective_over_other_parameters_is_refused(mlp, cnn):
    obj = _objective(mlp)
    with pytest.raises(InputError, match="same parameters"):
        line(obj, None, random_direction(obj), test_objective=_objective(cnn, d=8))
    with pytest.raises(InputError, match="shape"):
        line(obj, None, torch.zeros(3, dtype=torch.float64))


# --- resumable planes ------------------------------------------------------------------------------------
def test_an_interrupted_plane_resumes_to_the_identical_array(cnn, tmp_path):
    obj = _objective(cnn, d=8)
    test = _objective(cnn, d=8, n=9)
    d1, d2 = random_direction(obj, seed=1), random_direction(obj, seed=2)
    a, b = grid(-1, 1, 7), grid(-1, 1, 5)
    full = plane(obj, None, d1, d2, a, b, test_objective=test, batch_size=3)

    def interrupt_after_3_rows(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        plane(obj, None, d1, d2, a, b, test_objective=test, batch_size=3, rundir=tmp_path, progress=interrupt_after_3_rows)
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["row-00000", "row-00001", "row-00002"]
    resumed = plane(obj, None, d1, d2, a, b, test_objective=test, batch_size=3, rundir=tmp_path)
    assert resumed.num_evaluations == (7 - 3) * 5 * 2  # only the missing rows were computed (train + test)
    assert resumed.complete
    for m in ("train_loss", "train_acc", "test_loss", "test_acc"):
        np.testing.assert_array_equal(getattr(resumed, m), getattr(full, m))
    again = plane(obj, None, d1, d2, a, b, test_objective=test, batch_size=3, rundir=tmp_path)
    assert again.num_evaluations == 0 and np.array_equal(again.train_loss, full.train_loss)


def test_a_rundir_of_another_plane_is_refused(mlp, tmp_path):
    obj = _objective(mlp)
    d1, d2 = random_direction(obj, seed=1), random_direction(obj, seed=2)
    plane(obj, None, d1, d2, grid(-1, 1, 3), grid(-1, 1, 3), rundir=tmp_path, max_rows=1)
    with pytest.raises(InputError, match="d2"):
        plane(obj, None, d1, random_direction(obj, seed=3), grid(-1, 1, 3), grid(-1, 1, 3), rundir=tmp_path)
    with pytest.raises(InputError, match="alphas"):
        plane(obj, None, d1, d2, grid(-1, 1, 5), grid(-1, 1, 3), rundir=tmp_path)


def test_a_partial_plane_is_masked_not_filled_with_a_sentinel(mlp):
    obj = _objective(mlp)
    d1, d2 = random_direction(obj, seed=1), random_direction(obj, seed=2)
    part = plane(obj, None, d1, d2, grid(-1, 1, 5), grid(-1, 1, 3), max_rows=2)
    assert part.mask.tolist() == [[True] * 3] * 2 + [[False] * 3] * 3
    assert not part.complete and np.isfinite(part.train_loss[:2]).all()


# --- saving -----------------------------------------------------------------------------------------------
def test_results_round_trip_through_npz_and_write_a_tidy_csv(mlp, tmp_path):
    obj = _objective(mlp)
    d1, d2 = random_direction(obj, seed=1), random_direction(obj, seed=2)
    lin = line(obj, None, d1, grid(-1, 1, 5), test_objective=_objective(mlp, n=7))
    npz, csv = lin.save(tmp_path / "slice.npz")
    back = LineResult.load(npz)
    for m in ("alphas", "train_loss", "train_acc", "test_loss", "test_acc"):
        np.testing.assert_array_equal(getattr(back, m), getattr(lin, m))
    assert back.kind == "line" and back.direction_norm == lin.direction_norm and back.config == lin.config
    rows = csv.read_text().splitlines()
    assert rows[0] == "alpha,train_loss,train_acc,test_loss,test_acc" and len(rows) == 6
    assert float(rows[3].split(",")[1]) == lin.train_loss[2]  # repr keeps every bit

    part = plane(obj, None, d1, d2, grid(-1, 1, 3), grid(-1, 1, 2), max_rows=1)
    npz, csv = part.save(tmp_path / "plane")
    back = PlaneResult.load(npz)
    assert np.array_equal(back.mask, part.mask) and back.test_loss is None
    assert np.array_equal(back.train_loss[part.mask], part.train_loss[part.mask])
    assert back.direction_norms == part.direction_norms
    rows = csv.read_text().splitlines()
    assert rows[0] == "alpha,beta,train_loss,train_acc" and len(rows) == 1 + 6
    assert rows[-1].endswith(",,")  # an unfinished point: empty cells, no sentinel value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plane.csv", "plane.npz", "slice.csv", "slice.npz"]


# --- curvature from a slice --------------------------------------------------------------------------------
def _quadratic_objective():
    """Mean squared error of a linear model: exactly quadratic in θ, H = 2/N·[X 1]ᵀ[X 1]."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randn(30, 1, generator=g, dtype=torch.float64)
    return Objective(model, x, y)


def test_fitted_curvature_on_a_quadratic_equals_dHd():
    obj = _quadratic_objective()
    H = dense_hessian(obj)
    g = torch.Generator().manual_seed(2)
    d = torch.randn(obj.numel, generator=g, dtype=torch.float64) * 0.7
    res = line(obj, None, d, grid(-1, 1, 51))
    fit = fit_curvature(res, d, num_points=7)
    # The loss is exactly quadratic, so the fit is exact but for rounding: O(1) losses with ε ≈ 1e-16 over
    # a window of half-width 0.12 amplify to ~1e-14 in c₂; 1e-10 leaves a wide margin and still fails for
    # any wrong factor (½, ‖d‖ vs ‖d‖²) by orders of magnitude.
    assert fit.curvature == pytest.approx(float(d @ H @ d / (d @ d)), rel=1e-10)
    _, grad = obj.value_and_grad()
    assert fit.slope == pytest.approx(float(grad @ d / d.norm()), rel=1e-10)
    assert fit.rms_residual < 1e-13
    # along the unit top eigenvector the fitted curvature is λ_max
    evals, evecs = torch.linalg.eigh(H)
    top = fit_curvature(line(obj, None, evecs[:, -1], grid(-1, 1, 21)))
    assert top.curvature == pytest.approx(float(evals[-1]), rel=1e-10)


def test_fit_curvature_rejects_unusable_input(mlp):
    obj = _objective(mlp)
    res = line(obj, None, random_direction(obj), grid(-1, 1, 5))
    with pytest.raises(InputError, match="num_points"):
        fit_curvature(res, num_points=2)
    with pytest.raises(InputError, match="norm"):
        fit_curvature(res, 0.0)


# --- one call per command ----------------------------------------------------------------------------------
def test_landscape_is_one_call_for_each_kind_of_direction(mlp, tmp_path):
    obj = _objective(mlp)
    one = landscape(obj, dims=1, seed=3, alphas=grid(-1, 1, 5))
    ref = line(obj, None, random_direction(obj, seed=3), grid(-1, 1, 5))
    np.testing.assert_array_equal(one.train_loss, ref.train_loss)
    assert one.config["directions"]["kind"] == "random" and one.config["directions"]["seeds"] == [3]

    two = landscape(obj, directions="eigen", alphas=grid(-1, 1, 3), betas=grid(-1, 1, 3), rundir=tmp_path / "run")
    assert isinstance(two, PlaneResult) and two.train_loss[1, 1] == float(obj.value())
    lam = torch.linalg.eigvalsh(dense_hessian(obj)).flip(0)[:2].numpy()
    np.testing.assert_allclose(two.config["directions"]["eigenvalues"], lam, rtol=1e-3)  # tol=1e-4 Lanczos
    two.save(tmp_path / "plane.npz")
    back = load_result(tmp_path / "plane.npz")
    assert isinstance(back, PlaneResult) and back.config["directions"]["kind"] == "eigen"
    one.save(tmp_path / "slice.npz")
    assert isinstance(load_result(tmp_path / "slice.npz"), LineResult)

    traj = [obj.theta + 0.1 * k * random_direction(obj, seed=k) for k in range(5)]
    pca = landscape(obj, directions="pca", trajectory=traj, alphas=grid(-1, 1, 3), betas=grid(-1, 1, 3))
    assert sum(pca.config["directions"]["explained_variance_ratio"]) <= 1 + 1e-12
    with pytest.raises(InputError, match="trajectory"):
        landscape(obj, directions="pca")
    with pytest.raises(InputError, match="dims"):
        landscape(obj, dims=3)
