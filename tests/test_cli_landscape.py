"""interpolate / landscape / plot through the command line, on a tiny toolkit checkpoint pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cli_helpers import assert_input_error, run_cli
from sharpness.checkpoint import save_checkpoint
from sharpness.data import load_dataset
from sharpness.landscape import LineResult, PlaneResult
from sharpness.models import build_from_spec, model_spec
from sharpness.objective import Objective


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two solutions from the same start: few large steps (A) and many small ones (B)."""
    d = tmp_path_factory.mktemp("pair")
    ds = load_dataset("blobs", n=90, n_test=30, dim=4, classes=3, seed=2)
    spec = model_spec("mlp", ds.spec["input_shape"], ds.spec["num_classes"], hidden=[6])
    paths = []
    for name, (lr, steps) in {"a": (0.5, 10), "b": (0.05, 40)}.items():
        model = build_from_spec(spec, seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(ds.x_train), ds.y_train).backward()
            opt.step()
        path = d / f"{name}.pt"
        save_checkpoint(path, model=spec, state_dict=model.state_dict(), data=ds.spec, seed=0)
        paths.append((path, model))
    return ds, paths


def test_interpolate_endpoints_reproduce_each_checkpoint(capsys, pair, tmp_path):
    ds, [(a, model_a), (b, model_b)] = pair
    code, out, err = run_cli(capsys, "interpolate", a, b, "--out", tmp_path, "--dtype", "float64", "--points", "7",
                             "--range", "-1,2")
    assert code == 0, err
    result = LineResult.load(tmp_path / "interpolation.npz")
    np.testing.assert_array_equal(result.alphas, [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0])
    for alpha, model in ((0.0, model_a), (1.0, model_b)):
        i = int(np.flatnonzero(result.alphas == alpha)[0])
        expected = Objective(model, ds.x_train, ds.y_train, dtype=torch.float64).value()
        assert result.train_loss[i] == pytest.approx(float(expected), rel=1e-12)
        expected_test = Objective(model, ds.x_test, ds.y_test, dtype=torch.float64).value()
        assert result.test_loss[i] == pytest.approx(float(expected_test), rel=1e-12)
    for suffix in ("csv", "png", "pdf"):
        assert (tmp_path / f"interpolation.{suffix}").stat().st_size > 0


def test_landscape_2d_centre_resume_and_replot(capsys, pair, tmp_path):
    ds, [(a, model_a), _] = pair
    args = ("landscape", a, "--dims", "2", "--points", "5", "--out", tmp_path, "--dtype", "float64")
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    first = PlaneResult.load(tmp_path / "landscape_2d.npz")
    assert first.complete and first.train_loss.shape == (5, 5)
    centre = float(Objective(model_a, ds.x_train, ds.y_train, dtype=torch.float64).value())
    assert first.train_loss[2, 2] == pytest.approx(centre, rel=1e-12)  # the centre is exactly a grid point
    # Rerunning the same command finds every row done and reproduces the identical array.
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    again = PlaneResult.load(tmp_path / "landscape_2d.npz")
    np.testing.assert_array_equal(again.train_loss, first.train_loss)
    assert again.num_evaluations == 0
    # A different command on the same directory is refused rather than mixed in.
    assert_input_error(run_cli(capsys, "landscape", a, "--dims", "2", "--points", "5", "--out", tmp_path,
                               "--dtype", "float64", "--seed", "1"), "manifest")
    code, out, _ = run_cli(capsys, "plot", tmp_path / "landscape_2d.npz", "--out", tmp_path / "redrawn")
    assert code == 0 and (tmp_path / "redrawn.png").exists()


def test_landscape_1d_along_top_eigenvector_matches_lambda_max(capsys, pair, tmp_path):
    _, [(a, _), _] = pair
    code, out, err = run_cli(capsys, "landscape", a, "--dims", "1", "--direction", "eigen", "--points", "41",
                             "--range", "-0.02,0.02", "--out", tmp_path, "--dtype", "float64")
    assert code == 0, err
    fitted, lanczos = (float(v) for v in out.split("fitted ")[1].split(" (Lanczos λ_max ")[0:1] +
                       out.split("(Lanczos λ_max ")[1].split(")")[0:1])
    # A parabola over ±0.002 around the centre: the cubic term contributes O(h²) ≈ 1e-5 relative.
    assert fitted == pytest.approx(lanczos, rel=1e-3)


def test_bad_grid_input(capsys, pair, tmp_path):
    _, [(a, _), (b, _)] = pair
    assert_input_error(run_cli(capsys, "landscape", a, "--range", "1,-1", "--out", tmp_path), "LO < HI")
    assert_input_error(run_cli(capsys, "landscape", a, "--direction", "checkpoint", "--dims", "1", "--out", tmp_path),
                       "--other")
    assert_input_error(run_cli(capsys, "plot", a), "--track-every")
    (tmp_path / "notes.txt").write_text("not a result")
    assert_input_error(run_cli(capsys, "plot", tmp_path / "notes.txt"), "expected a saved result")


def test_sweep_summary_figure_draws_each_seed_and_their_mean(capsys, tmp_path, monkeypatch):
    """Two seeds at three batch sizes used to be one polyline through all six points, zigzagging at every
    batch size. Now: each seed's own line (increasing x, no vertical jumps) and the mean ± std over seeds."""
    import json

    from sharpness import plots

    rows = [{"run": f"bs{b}_seed{s}", "batch_size": b, "seed": s, "lr": 0.1, "status": "ok",
             "lambda_max": lam, "test_acc": acc}
            for (b, s, lam, acc) in [(16, 0, 4.0, 0.8), (16, 1, 3.0, 0.9), (64, 0, 2.0, 0.6), (64, 1, 1.0, 0.5),
                                     (256, 0, 0.8, 0.3), (256, 1, 0.6, 0.2)]]
    rows.append({"run": "bs1024_seed0", "batch_size": 1024, "seed": 0, "lr": 0.1, "status": "pending"})
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"rows": rows}))
    figures = []
    save = plots.save_figure
    monkeypatch.setattr(plots.saved, "save_figure", lambda fig, stem: figures.append(fig) or save(fig, stem))
    code, out, err = run_cli(capsys, "plot", path)
    assert code == 0, err
    assert (tmp_path / "summary.png").stat().st_size > 0
    (fig,) = figures
    ax = fig.axes[0]
    assert ax.get_title() == "sweep summary (mean ± std over 2 seeds, thin lines: each seed)"
    lines = [line for a in fig.axes for line in a.get_lines() if len(line.get_xdata()) > 1]
    for line in lines:
        assert np.all(np.diff(line.get_xdata()) > 0), line.get_xdata()  # one point per batch size: no zigzag
    sharp = sorted(tuple(line.get_ydata()) for line in ax.get_lines() if line.get_linestyle() != "None")
    assert sharp == sorted([(4.0, 2.0, 0.8), (3.0, 1.0, 0.6), (3.5, 1.5, 0.7)])  # seed 0, seed 1, their mean
    # A single seed says so instead of claiming a spread.
    path.write_text(json.dumps({"rows": [r for r in rows if r["seed"] == 0]}))
    figures.clear()
    assert run_cli(capsys, "plot", path)[0] == 0
    assert figures[0].axes[0].get_title() == "sweep summary (one seed)"
    path.write_text(json.dumps({"rows": [rows[-1]]}))
    assert_input_error(run_cli(capsys, "plot", path), "finished runs", "pending")
