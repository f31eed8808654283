"""Tests for sharpness.correlate: τ and Ψ on hand-counted tables, the PAC-Bayes σ on a quadratic, a sweep end to end."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from sharpness.correlate import bootstrap_tau, fisher_rao_norm, granulated_psi, kendall_tau, pac_bayes_sigma

from cli_helpers import assert_input_error, run_cli


# τ_b = (n_c − n_d) / √((n₀ − n₁)(n₀ − n₂)), counted by hand:
#   [1,2,3,4] vs [1,3,2,4]: 5 concordant, 1 discordant of 6 pairs              → 4/6
#   [1,1,2,3] vs [1,2,2,3]: n_c = 4, n_d = 0, one pair tied in x, one in y     → 4/√(5·5) = 0.8
#   [1,2,2,3] vs [3,1,2,0]: pairs (12)D (13)D (14)D (23)tie-x (24)D (34)D; n₁=1 → −5/√(5·6)
#   [3,2,1] vs [1,2,3]: all discordant                                          → −1
HAND = [([1, 2, 3, 4], [1, 3, 2, 4], 4 / 6), ([1, 1, 2, 3], [1, 2, 2, 3], 0.8),
        ([1, 2, 2, 3], [3, 1, 2, 0], -5 / math.sqrt(30)), ([3, 2, 1], [1, 2, 3], -1.0)]


@pytest.mark.parametrize("x, y, tau", HAND)
def test_kendall_tau_matches_hand_counted_pairs_including_ties(x, y, tau):
    assert kendall_tau(x, y) == pytest.approx(tau, abs=1e-12)  # exact rationals: only float rounding
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_kendall_tau_of_a_constant_column_or_one_model_is_undefined():
    assert math.isnan(kendall_tau([2, 2, 2], [1, 2, 3])) and math.isnan(kendall_tau([1], [1]))


def psi_table(seeds=(0,)):
    """bs ∈ {8, 16, 32} × lr ∈ {0.1, 0.2}. Only bs varies (lr fixed): lr=0.1 measure 1,2,3 vs gap 1,2,3 → τ = +1;
    lr=0.2 measure 11,12,13 vs gap 2,1,3 → one discordant pair of 3 → τ = 1/3; Ψ_bs = 2/3 over 6 pairs.
    Only lr varies (bs fixed): bs=8 (1→11, gap 1→2) +1, bs=16 (2→12, gap 2→1) −1, bs=32 (gap 3→3, tied)
    undefined; Ψ_lr = 0 over 2 pairs. Ψ = 1/3."""
    gaps = {0.1: [1, 2, 3], 0.2: [2, 1, 3]}
    return [{"batch_size": b, "lr": lr, "seed": s, "m": i + 1 + (10 if lr == 0.2 else 0), "gap": gaps[lr][i]}
            for s in seeds for lr in (0.1, 0.2) for i, b in enumerate((8, 16, 32))]


def test_granulated_psi_averages_tau_over_groups_where_one_axis_varies():
    out = granulated_psi(psi_table(), "m", "gap", ("batch_size", "lr"))
    bs, lr = out["axes"]["batch_size"], out["axes"]["lr"]
    assert bs["psi"] == pytest.approx(2 / 3) and bs["pairs"] == 6 and bs["groups"] == bs["groups_used"] == 2
    assert lr["psi"] == pytest.approx(0.0) and lr["pairs"] == 2 and (lr["groups"], lr["groups_used"]) == (3, 2)
    assert out["psi"] == pytest.approx(1 / 3)


def test_granulated_psi_keeps_seeds_apart():
    # Two seeds of the same table: every group is still one seed's, so Ψ is unchanged and the pairs double.
    # Pooling the seeds into one group would put tied models in it and change the values.
    out = granulated_psi(psi_table(seeds=(0, 1)), "m", "gap", ("batch_size", "lr"))
    assert out["axes"]["batch_size"]["psi"] == pytest.approx(2 / 3) and out["axes"]["batch_size"]["pairs"] == 12
    assert out["axes"]["lr"]["pairs"] == 4 and out["psi"] == pytest.approx(1 / 3)


def test_bootstrap_interval_is_seeded_and_brackets_tau():
    rng = np.random.default_rng(3)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    a, b = bootstrap_tau(x, y, resamples=300, seed=1), bootstrap_tau(x, y, resamples=300, seed=1)
    assert a == b and a["low"] < kendall_tau(x, y) < a["high"] and a["high"] - a["low"] > 0.05
    assert bootstrap_tau([1, 2, 3, 4], [2, 4, 6, 8], resamples=200)["low"] == 1.0


def quadratic(h: torch.Tensor, centre: torch.Tensor):
    return lambda thetas: 0.7 + 0.5 * (((thetas - centre) ** 2) * h).sum(dim=1)  # L(θ*) = 0.7, not 0


@pytest.mark.parametrize("start", [1e-3, 30.0])  # σ* ≈ 0.057: bracketed from below (doubling) and above (halving)
def test_pac_bayes_sigma_on_a_quadratic_matches_the_closed_form(start):
    # L(θ* + u) − L(θ*) = ½ uᵀHu (L(θ*) = 0.7), so mean_k f = σ²·mean_k(z_kᵀHz_k)/2 and σ* = √(2·rise / mean_k z_kᵀHz_k).
    P, K, rise = 50, 400, 0.1
    h = torch.linspace(0.5, 2.0, P, dtype=torch.float64)
    centre = torch.linspace(-1, 1, P, dtype=torch.float64)
    out = pac_bayes_sigma(quadratic(h, centre), centre.clone(), rise=rise, num_draws=K, seed=7, rtol=1e-6,
                          sigma_start=start)
    gen, quad, left = torch.Generator().manual_seed(7), [], K  # the same draws, in the same blocks of 16
    while left:
        z = torch.randn(min(16, left), P, generator=gen, dtype=torch.float64)
        quad.append(((z ** 2) * h).sum(dim=1))
        left -= z.shape[0]
    exact = math.sqrt(2 * rise / float(torch.cat(quad).mean()))
    assert out["sigma"] == pytest.approx(exact, rel=2e-6)  # the bisection's width, 1e-6 relative, and rounding
    assert out["inverse_sigma2"] == pytest.approx(1 / out["sigma"] ** 2) and out["increase"] <= rise
    # The population closed form √(2·rise / tr H): mean zᵀHz has relative sd √(2 tr H²)/(tr H·√K) ≈ 0.8 %,
    # so σ's is ≈ 0.4 %; 2 % is five of them.
    assert out["sigma"] == pytest.approx(math.sqrt(2 * rise / float(h.sum())), rel=0.02)


def test_pac_bayes_sigma_refuses_a_loss_the_noise_cannot_raise():
    with pytest.raises(ValueError, match="flat to the noise"):
        pac_bayes_sigma(lambda t: torch.zeros(t.shape[0]), torch.zeros(3), max_doublings=5)


SWEEP = ["sweep", "--data", "blobs", "--data-kwargs", '{"n": 100, "n_test": 40, "dim": 3, "classes": 3, "seed": 5}',
         "--model", "mlp", "--model-kwargs", '{"hidden": [6]}', "--batch-sizes", "10,50", "--lrs", "0.05,0.3,1000",
         "--seeds", "0", "--epochs", "3", "--device", "cpu", "-q"]


def test_a_sweep_of_four_models_end_to_end(capsys, tmp_path):
    sweep_dir = tmp_path / "sweep"
    assert run_cli(capsys, *SWEEP, "--out", sweep_dir)[0] == 0
    code, out, err = run_cli(capsys, "correlate", sweep_dir, "--device", "cpu", "--bootstrap", "100", "--epsilon-paper")
    assert code == 0, err
    assert "ε-sharpness" in out and "Ψ_batch_size" in out and "Ψ_lr" in out and "4 models (4 measured, 0 cached)" in out
    assert "excluded bs10_seed0_lr1000: diverged" in out and "excluded bs50_seed0_lr1000: diverged" in out
    res = sweep_dir / "correlate"
    rows = list(csv.DictReader((res / "models.csv").open()))
    assert sorted(r["run"] for r in rows) == ["bs10_seed0_lr0.05", "bs10_seed0_lr0.3", "bs50_seed0_lr0.05", "bs50_seed0_lr0.3"]
    corr = json.loads((res / "correlation.json").read_text())
    assert corr["axes"] == ["batch_size", "lr"] and corr["n_models"] == 4  # the diverged lr=1000 runs: listed
    assert sorted(e["run"] for e in corr["excluded"]) == ["bs10_seed0_lr1000", "bs50_seed0_lr1000"]
    for measure in ("lambda_max", "trace", "epsilon_sharpness", "epsilon_sharpness_paper", "adaptive_worst", "pac_bayes",
                    "param_norm", "fisher_rao", "dist_from_init"):
        for gap in ("loss_gap", "error_gap"):  # anyone can recompute τ from the CSV
            tau = stats.kendalltau([float(r[measure]) for r in rows], [float(r[gap]) for r in rows]).statistic
            assert corr["correlation"][measure][gap]["tau"] == pytest.approx(tau, abs=1e-12)
    for r in rows:  # the gaps are the sweep's own numbers: test − train loss and error
        assert float(r["loss_gap"]) == pytest.approx(float(r["test_loss"]) - float(r["train_loss"]))
        assert float(r["error_gap"]) == pytest.approx(float(r["test_error"]) - float(r["train_error"]))
        assert float(r["pac_bayes"]) == pytest.approx(1 / float(r["pac_bayes_sigma"]) ** 2)
        assert (r["stopped_by"], r["reached_train_loss"]) == ("epochs", "")  # trained by epochs: no target
    summary = {r["run"]: r for r in json.loads((sweep_dir / "summary.json").read_text())["rows"]}
    for r in rows:  # ‖θ − θ₀‖ from the stored initialization agrees with the one training recorded
        assert float(r["dist_from_init"]) == pytest.approx(summary[r["run"]]["dist_from_init"], rel=1e-5)
    assert (res / "correlation.png").stat().st_size > 10_000
    report = json.loads(next(res.glob("cache-*/bs10_seed0_lr0.05.report.json")).read_text())
    assert report["schema"] == "sharpness.report/1"  # the analysis behind a model's numbers is kept
    assert report["hessian"]["top"]["values"][0] == pytest.approx(float(rows[0]["lambda_max"]))

    # Resumable: a model whose cache entry is lost is measured again, the others are read back.
    caches = list(res.glob("cache-*"))
    assert len(caches) == 1
    (caches[0] / "done" / "bs50_seed0_lr0.3").unlink()
    code, out, _ = run_cli(capsys, "correlate", sweep_dir, "--device", "cpu", "--bootstrap", "100", "--epsilon-paper")
    assert code == 0 and "4 models (1 measured, 3 cached)" in out
    assert json.loads((res / "correlation.json").read_text()) == corr


def test_bad_sweep_directories_are_one_line_errors_with_nothing_written(capsys, tmp_path):
    assert_input_error(run_cli(capsys, "correlate", tmp_path / "missing"), "expected a sweep directory", "not a directory")
    assert_input_error(run_cli(capsys, "correlate", tmp_path), "expected a sweep directory", "without manifest.json")
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text('{"kind": "plane"}')
    (other / "summary.json").write_text("{")
    assert_input_error(run_cli(capsys, "correlate", other), "expected JSON", "summary.json")
    (other / "summary.json").write_text('{"rows": []}')
    assert_input_error(run_cli(capsys, "correlate", other), "expected a sweep directory", "of kind 'plane'")
    small = tmp_path / "small"
    args = [a if a != "10,50" else "10" for a in SWEEP]
    assert run_cli(capsys, *args, "--out", small)[0] == 0  # 2 runs: too few to rank
    assert_input_error(run_cli(capsys, "correlate", small, "--device", "cpu"), "at least 3 finished runs", "got 2")
    assert not (small / "correlate").exists() and not (tmp_path / "correlate").exists()


@pytest.mark.parametrize("layers", [1, 2])
def test_fisher_rao_norm_of_bias_free_relu_networks_matches_liang_et_al(layers):
    # f is `layers`-homogeneous in θ, so ⟨θ, ∇_θ ℓ_i⟩ = layers·⟨∂ℓ/∂f, f(x_i)⟩ with ∂ℓ/∂f = softmax(f) − e_y for
    # cross-entropy: ‖θ‖²_fr = layers²·mean_i ⟨p_i − e_{y_i}, f_i⟩² (Liang et al. 2019, Lemma 2.1). float64:
    # the two sides differ by rounding only.
    torch.manual_seed(0)
    net = (torch.nn.Linear(4, 3, bias=False) if layers == 1 else
           torch.nn.Sequential(torch.nn.Linear(4, 6, bias=False), torch.nn.ReLU(), torch.nn.Linear(6, 3, bias=False))).double()
    x, y = torch.randn(50, 4, dtype=torch.float64), torch.randint(0, 3, (50,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        f = net(x)
        inner = ((torch.softmax(f, dim=1) - torch.nn.functional.one_hot(y, 3)) * f).sum(dim=1)
    exact = layers * float(inner.pow(2).mean().sqrt())
    assert fisher_rao_norm(net, x, y, "cross-entropy", chunk_size=16) == pytest.approx(exact, rel=1e-10)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the model is untouched


def test_a_measure_missing_for_one_model_is_left_out_of_the_ranking_and_said(capsys, tmp_path, monkeypatch):
    import sharpness.correlate.study as study

    sweep_dir = tmp_path / "sweep"
    assert run_cli(capsys, *SWEEP, "--out", sweep_dir)[0] == 0
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("no σ brackets the rise")
        return pac_bayes_sigma(*args, **kwargs)

    monkeypatch.setattr(study, "pac_bayes_sigma", flaky)
    result = study.correlate(sweep_dir, rho=None, bootstrap=0, figure=False)
    assert "pac_bayes" not in result.correlation and "lambda_max" in result.correlation
    assert result.correlation["lambda_max"]["loss_gap"]["ci"] is None  # bootstrap=0: no interval
    corr = json.loads((sweep_dir / "correlate" / "correlation.json").read_text())
    assert {"pac_bayes", "adaptive_worst", "adaptive_average"} <= set(corr["measures_skipped"])
    notes = [m.get("pac_bayes_note") for m in result.models]
    assert notes.count("no σ brackets the rise") == 1 and not (sweep_dir / "correlate" / "correlation.png").exists()


def test_figure_marks_the_models_that_missed_their_loss_target(tmp_path, monkeypatch):
    import matplotlib.axes

    from sharpness.correlate.figure import draw

    crosses = []
    original = matplotlib.axes.Axes.scatter
    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", lambda self, x, y, *a, **k: (
        crosses.append(list(x)) if k.get("marker") == "x" else None) or original(self, x, y, *a, **k))
    models = [{"run": f"m{i}", "batch_size": B, "lr": 0.1, "seed": 0, "loss_gap": 0.1 * i, "lambda_max": float(i),
               "reached_train_loss": i != 2} for i, B in enumerate((16, 32, 64, 128))]
    stats_ = {"tau": 0.5, "psi": None}
    path = draw(tmp_path / "c", models, {"lambda_max": {"loss_gap": stats_}}, ("batch_size",), formats=("png", "pdf"))
    assert crosses == [[2.0]]  # only the model stopped by its epoch cap, at its own coordinates
    assert path == tmp_path / "c.png" and (tmp_path / "c.pdf").is_file()
