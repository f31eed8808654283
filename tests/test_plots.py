"""Figures: each function draws the expected artists, returns its Axes, and files appear only where asked."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402

from sharpness import plots  # noqa: E402
from sharpness.landscape import CurvatureFit, LineResult, PlaneResult, grid  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run every test in an empty working directory and check nothing was written there."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield
    plt.close("all")
    assert list(cwd.iterdir()) == []


def _line(kind="interpolation", test=True, acc=True):
    a = grid(-1, 2, 25) if kind == "interpolation" else grid(-1, 1, 21)
    loss = 0.1 + (a - 0.5) ** 2
    accuracy = np.clip(1 - 0.2 * (a - 0.5) ** 2, 0, 1)
    return LineResult(
        alphas=a,
        train_loss=loss,
        train_acc=accuracy if acc else None,
        test_loss=loss + 0.05 if test else None,
        test_acc=(accuracy - 0.02) if (test and acc) else None,
        kind=kind,
        direction_norm=2.0,
        config={"objective": {"loss": "cross-entropy" if acc else "mse"}},
    )


def _plane(n=11, finished=None):
    a = grid(-1, 1, n)
    A, B = np.meshgrid(a, a, indexing="ij")
    mask = np.ones((n, n), dtype=bool)
    if finished is not None:
        mask[finished:] = False
    loss = np.where(mask, 0.01 + A**2 + 2 * B**2, np.nan)
    return PlaneResult(alphas=a, betas=a, train_loss=loss, mask=mask, train_acc=np.where(mask, 1 - 0.1 * loss, np.nan))


def _twins(fig):
    return [ax for ax in fig.axes if ax.get_label() == "sharpness:twin"]


def test_parametric_plot_has_loss_and_a_twin_accuracy_axis():
    fig, ax = plt.subplots()
    res = _line()
    assert plots.parametric_plot(ax, res, endpoints=("SB", "LB")) is ax
    (twin,) = _twins(fig)
    assert [ln.get_linestyle() for ln in ax.get_lines()] == ["-", "--", ":", ":"]  # train, test, α=0, α=1
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), res.train_loss)
    np.testing.assert_allclose(twin.get_lines()[0].get_ydata(), 100 * res.train_acc)  # accuracy in percent
    assert [ln.get_linestyle() for ln in twin.get_lines()] == ["-", "--"]
    assert {t.get_text() for t in ax.texts} == {"SB", "LB"}
    assert len(twin.get_legend().get_texts()) == 4
    # a second pair overlays on the same two axes and joins the legend
    plots.parametric_plot(ax, _line(), label="seed 2", loss_color="C2", acc_color="C3", log_loss=True)
    assert len(fig.axes) == 2 and len(twin.get_lines()) == 4 and ax.get_yscale() == "log"
    assert len(twin.get_legend().get_texts()) == 8 and ax.get_legend() is None


def test_parametric_plot_of_a_regression_slice_has_no_twin():
    fig, ax = plt.subplots()
    plots.parametric_plot(ax, _line(kind="line", acc=False))
    assert _twins(fig) == [] and ax.get_ylabel() == "loss (MSE)" and len(ax.texts) == 0


def test_slices_1d_draws_one_colour_per_checkpoint():
    fig, ax = plt.subplots()
    assert plots.slices_1d(ax, [_line("line"), _line("line", test=False)], ["SB", "LB"]) is ax
    lines = ax.get_lines()
    assert len(lines) == 3 and lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SB", "LB", "train", "test"]
    fig, ax = plt.subplots()
    plots.slices_1d(ax, [_line("line")], ["SB"], metric="accuracy")
    assert ax.get_ylabel() == "accuracy (%)" and ax.get_lines()[0].get_ydata().max() > 1
    with pytest.raises(ValueError):
        plots.slices_1d(ax, [_line("line")], ["a", "b"])


def test_contour_2d_fills_draws_lines_marks_the_centre_and_adds_a_colorbar():
    fig, ax = plt.subplots()
    res = _plane()
    assert plots.contour_2d(ax, res) is ax
    assert len(fig.axes) == 2  # the colour bar
    contour_sets = [c for c in ax.collections if hasattr(c, "levels")]
    assert len(contour_sets) == 2 and contour_sets[0].filled and not contour_sets[1].filled
    levels = contour_sets[0].levels
    assert levels[0] <= np.nanmin(res.train_loss) and levels[-1] >= np.nanmax(res.train_loss)
    (star,) = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert list(star.get_xdata()) == [0.0] and list(star.get_ydata()) == [0.0]


def test_contour_2d_shares_levels_and_blanks_unfinished_points():
    fig, axes = plt.subplots(1, 2)
    levels = plots.contour_levels(0.01, 3.0, 10)
    assert levels[0] <= 0.01 and levels[-1] >= 3.0 and len(levels) <= 11
    for ax, res in zip(axes, (_plane(), _plane(finished=6))):
        plots.contour_2d(ax, res, levels=levels, colorbar=list(axes) if ax is axes[1] else False)
    assert len(fig.axes) == 3  # one colour bar for both
    for ax in axes:
        np.testing.assert_array_equal([c for c in ax.collections if hasattr(c, "levels")][0].levels, levels)
    assert axes[1].get_title() == "66/121 points finished"
    narrow = plots.contour_levels(2.25, 2.45, 20, log=True)  # less than a decade: still ~20 bands
    assert len(narrow) >= 10 and narrow[0] <= 2.25 and narrow[-1] >= 2.45
    logs = plots.contour_levels(1e-3, 10, 20, log=True)
    assert logs[0] == pytest.approx(1e-3) and logs[-1] == pytest.approx(10) and np.all(np.diff(np.log10(logs)) > 0)


def test_surface_3d_draws_a_surface():
    fig = plt.figure()
    ax = fig.add_subplot(projection="3d")
    assert plots.surface_3d(ax, _plane(), vmax=1.5) is ax
    assert any(isinstance(c, Poly3DCollection) for c in ax.collections)
    assert ax.get_zlim()[1] == pytest.approx(1.5)


def test_spectral_density_uses_a_log_axis_with_a_floor():
    fig, ax = plt.subplots()
    t = np.linspace(-1, 5, 200)
    phi = np.exp(-((t - 2) ** 2) * 20)  # falls to 1e-200 at the ends
    plots.spectral_density(ax, t, phi, floor=1e-6, label="SB")
    assert ax.get_yscale() == "log" and ax.get_ylim()[0] == pytest.approx(1e-6)
    plots.spectral_density(ax, t, 50 * phi, floor=1e-6, label="LB")
    assert ax.get_ylim()[1] >= 50  # a taller second curve still fits
    with pytest.raises(ValueError):
        plots.spectral_density(ax, t, phi[:-1])


def test_eigenvalue_bars_group_by_checkpoint():
    fig, ax = plt.subplots()
    plots.eigenvalue_bars(ax, {"SB": [3.0, 2.0, -0.5], "LB": [9.0, 4.0, -1.0]}, errors={"SB": [0.1] * 3, "LB": [0.2] * 3})
    bars = [p for p in ax.patches]
    assert len(bars) == 6 and sorted(b.get_height() for b in bars) == [-1.0, -0.5, 2.0, 3.0, 4.0, 9.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SB", "LB"]


def test_sharpness_vs_batch_uses_a_log2_axis_and_a_twin():
    fig, ax = plt.subplots()
    plots.sharpness_vs_batch(ax, [256, 16, 64, 1024], [4.0, 1.0, 2.0, 8.0], [0.90, 0.95, 0.94, 0.88], sharpness_err=[0.1] * 4)
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "64", "256", "1024"]
    (twin,) = _twins(fig)
    np.testing.assert_allclose(twin.get_lines()[0].get_ydata(), [95.0, 94.0, 90.0, 88.0])  # sorted by batch size
    assert len(twin.get_legend().get_texts()) == 2


def test_curvature_check_overlays_the_predicted_parabola():
    fig, ax = plt.subplots()
    res = _line("line")
    fit = CurvatureFit(curvature=0.5, slope=-0.5, value=0.35, rms_residual=0.0, num_points=5, half_width=0.2)
    plots.curvature_check(ax, res, lam=0.5, fit=fit)
    points, parabola, fitted = ax.get_lines()
    x = parabola.get_xdata()
    f0 = res.train_loss[np.argmin(np.abs(res.alphas))]
    np.testing.assert_allclose(parabola.get_ydata(), f0 + 0.5 * 0.5 * x**2 * 2.0**2)  # ½λα²‖d‖², ‖d‖ = 2
    assert len(ax.patches) == 1  # the fit window
    assert len(ax.get_legend().get_texts()) == 4


def test_save_figure_is_byte_reproducible_and_writes_only_where_told(tmp_path):
    def draw():
        with plots.use_style():
            fig, ax = plt.subplots(figsize=(2, 1.5))
            plots.slices_1d(ax, [_line("line")], ["SB"])
            return fig

    out = tmp_path / "figs" / "parametric"
    first = [p.read_bytes() for p in plots.save_figure(draw(), out, formats=("png", "pdf", "svg"))]
    second = [p.read_bytes() for p in plots.save_figure(draw(), out, formats=("png", "pdf", "svg"))]
    assert first == second
    assert sorted(p.name for p in out.parent.iterdir()) == ["parametric.pdf", "parametric.png", "parametric.svg"]
    pdf = first[1]
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType (Type-42) fonts embedded, no Type-3
    assert b"CreationDate" not in pdf and b"Software" not in first[0]
    with pytest.raises(ValueError):
        plots.save_figure(draw(), out, formats=("jpg",))


def test_use_style_applies_and_restores():
    before = dict(matplotlib.rcParams)
    with plots.use_style():
        assert matplotlib.rcParams["pdf.fonttype"] == 42
        assert matplotlib.rcParams["axes.spines.top"] is False
    assert matplotlib.rcParams["axes.spines.top"] == before["axes.spines.top"]
    assert plots.style_path().is_file()


def test_render_writes_the_standard_figure_of_each_result(tmp_path):
    for name, res in (("interp", _line()), ("slice", _line("line")), ("plane", _plane(finished=8))):
        paths = plots.render(res, tmp_path / name, formats=("png",), log=name == "plane")
        assert [p.name for p in paths] == [f"{name}.png"] and paths[0].stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "interp.png", "plane.png", "slice.png"]
    assert plt.get_fignums() == []  # figures are closed
