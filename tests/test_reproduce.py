"""Paper reproductions: the registry, the shared runner (resume, provenance, plot-only), the command line and
the script entry points, and every study end to end at the ``smoke`` budget.

The smoke budget only proves the pipeline (files written, figures drawn, numbers finite); it asserts no
science. Every study runs once per session (module-scoped fixture) and the other tests reuse its results.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_helpers import assert_input_error, run_cli
from conftest import TinyMLP, make_classification
from sharpness import analyze
from sharpness.errors import InputError
from sharpness.reproduce import (
    BUDGETS, STUDIES, StudyRun, default_figures_dir, default_results_dir, experiments_dir, git_commit, load_study,
    markdown_table, mean_std, pm, provenance, report_numbers, run_study, study_names,
)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------
# Small pieces
# ----------------------------------------------------------------------------------------------------------


def test_mean_std_is_the_sample_standard_deviation():
    # 1, 2, 3, 4: mean 2.5, Σ(x − x̄)² = 5, sample variance 5/3
    mean, std, n = mean_std([1.0, 2.0, 3.0, 4.0])
    assert (mean, n) == (2.5, 4)
    assert std == pytest.approx(math.sqrt(5.0 / 3.0), rel=1e-15)
    assert mean_std([7.0]) == (7.0, 0.0, 1)
    # None and NaN are missing values, not zeros
    assert mean_std([None, float("nan"), 2.0, 4.0])[:2] == (3.0, math.sqrt(2.0))
    assert math.isnan(mean_std([None])[0])


def test_pm_formats_mean_and_std():
    assert pm([0.98, 0.97], 2, scale=100.0) == "97.50 ± 0.71"
    assert pm([1.5], 3) == "1.500"
    assert pm(2.0, 1) == "2.0"
    assert pm([], 2) == "—"
    assert pm([1.2e-5, 1.4e-5], 4) == "1.3e-05 ± 1.4e-06"  # would read 0.0000 ± 0.0000
    assert pm([0.0, 0.0], 2) == "0.00 ± 0.00"


def test_markdown_table_is_aligned_and_marks_missing_cells():
    text = markdown_table(["run", "value"], [["a", 1], ["bbbb", None]])
    lines = text.splitlines()
    assert lines[0] == "| run  | value |"
    assert lines[1] == "|------|-------|"
    assert lines[3] == "| bbbb | —     |"
    assert len({len(line) for line in lines}) == 1


def test_report_numbers_reads_every_measure_of_a_report():
    x, y = make_classification(n=40, d=5, classes=3, seed=3)
    torch.manual_seed(0)
    model = TinyMLP().double()
    report = analyze(model, x, y, dtype="float64", top_k=1, bottom_k=1, trace_probes=6, epsilon=(1e-3,),
                     subspace_dim=4, epsilon_method="both", adaptive_rho=(0.05,), rho=(0.05,),
                     average_adaptive_rho=(0.05,), average_draws=4, sharpness_steps=2).to_dict()
    got = report_numbers(report)
    assert got["lambda_max"] == report["hessian"]["top"]["values"][0]
    assert got["lambda_min"] == report["hessian"]["bottom"]["values"][0]
    assert got["trace"] == report["hessian"]["trace"]["value"]
    assert got["loss"] == report["loss"]
    assert got["eps_full_0.001"] == report["epsilon_sharpness"][0]["value"]
    assert got["eps_random_0.001"] == report["epsilon_sharpness"][1]["value"]
    assert got["eps_paper_full_0.001"] == report["epsilon_sharpness"][2]["value"]
    assert got["eps_paper_full_0.001_ran_out"] is report["epsilon_sharpness"][2]["budget_exhausted"]
    assert got["adaptive_worst_0.05"] == report["adaptive_sharpness"][0]["value"]
    assert got["plain_worst_0.05"] == report["adaptive_sharpness"][1]["value"]
    assert got["adaptive_average_0.05"] == report["average_sharpness"][0]["value"]
    assert got["lambda_max"] >= got["lambda_min"]


def test_provenance_names_versions_commit_and_device():
    p = provenance("cpu")
    assert p["torch"] == torch.__version__ and p["device"] == "cpu"
    commit = git_commit()
    assert commit is None or (len(commit) == 40 and all(c in "0123456789abcdef" for c in commit))
    assert p["git_commit"] == commit
    assert git_commit(os.path.abspath(os.sep)) is None  # outside any checkout


def test_registry_points_at_scripts_that_define_the_study_api():
    assert experiments_dir() == REPO / "experiments"
    assert set(study_names()) == {"keskar", "batch-tradeoff", "batch-sweep", "warm-start", "li-landscapes", "edge-of-stability",
                                  "noise-scale", "reparam", "lm-batch", "generalization-measures"}
    for name in study_names():
        module = load_study(name)
        for budget in BUDGETS:
            s = module.settings(budget)
            assert json.loads(json.dumps(s)) == s, (name, budget)  # settings are the manifest: plain JSON
            assert isinstance(s["seeds"], int) and s["seeds"] >= 1
    assert default_results_dir("keskar", "full") == REPO / "experiments" / "results" / "keskar"
    assert default_results_dir("keskar", "quick").name == "keskar-quick"
    assert default_figures_dir("full", Path("r")) == REPO / "figures"
    assert default_figures_dir("quick", Path("r")) == Path("r") / "figures"


def test_unknown_study_and_bad_arguments_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="study name"):
        run_study("keskar2", budget="smoke", out=tmp_path)
    with pytest.raises(InputError, match="budget"):
        run_study("keskar", budget="tiny", out=tmp_path)
    with pytest.raises(InputError, match="seeds"):
        run_study("keskar", budget="smoke", seeds=0, out=tmp_path)
    with pytest.raises(InputError, match="plot-only"):
        run_study("keskar", budget="smoke", out=tmp_path / "nothing", plot_only=True)


def test_units_are_computed_once_and_a_different_configuration_is_refused(tmp_path):
    calls = []

    def work():
        calls.append(1)
        return {"value": 1.5}

    first = StudyRun("demo", "smoke", {"a": 1, "seeds": 2}, seeds=2, device="cpu", out=tmp_path)
    assert first.unit("u-1", work, config={"k": 2}, seed=0) == {"value": 1.5}
    record = first.read("u-1")
    assert record["seed"] == 0 and record["config"] == {"k": 2} and record["wall_seconds"] >= 0
    assert record["provenance"]["device"] == "cpu"
    # a second invocation on the same directory (e.g. after a kill) loads the unit; more seeds are fine
    again = StudyRun("demo", "smoke", {"a": 1, "seeds": 5}, seeds=5, device="cpu", out=tmp_path)
    assert again.unit("u-1", work) == {"value": 1.5}
    assert len(calls) == 1
    with pytest.raises(InputError, match="settings.a"):
        StudyRun("demo", "smoke", {"a": 2, "seeds": 2}, seeds=2, device="cpu", out=tmp_path)


# ----------------------------------------------------------------------------------------------------------
# Every study end to end (smoke budget)
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Each study run once at the smoke budget into its own results and figures directories."""
    root = tmp_path_factory.mktemp("reproduce")
    threads = torch.get_num_threads()
    outcomes = {}
    for name in study_names():
        outcomes[name] = run_study(name, budget="smoke", out=root / name, figures=root / name / "figs")
        assert torch.get_num_threads() == threads  # the runner restores the caller's setting
    return outcomes


def _finite_numbers(obj, where="summary"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            _finite_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _finite_numbers(v, f"{where}[{i}]")
    elif isinstance(obj, float):
        assert math.isfinite(obj), where


@pytest.mark.parametrize("name", list(STUDIES))
def test_smoke_study_writes_results_tables_and_figures(smoke, name):
    outcome = smoke[name]
    results = Path(outcome.results_dir)
    saved = json.loads((results / "summary.json").read_text())
    assert saved["study"] == name and saved["budget"] == "smoke" and saved["seeds"] == [0]
    for key in ("torch", "numpy", "python", "sharpness", "git_commit", "device", "threads"):
        assert key in saved["provenance"]
    assert saved["wall_seconds"] > 0 and saved["cpu_seconds"] > 0
    _finite_numbers(saved["summary"])
    units = [json.loads(p.read_text()) for p in results.glob("*.json") if p.name not in ("summary.json", "manifest.json")]
    assert units, "every study records its units"
    for unit in units:
        assert {"config", "seed", "provenance", "wall_seconds", "result"} <= set(unit)
    assert (results / "tables.md").read_text().strip() == outcome.tables.strip()
    assert "|" in outcome.tables
    pngs = [Path(p) for p in outcome.figures if p.endswith(".png")]
    assert pngs and len(outcome.figures) == 2 * len(pngs)
    for path in map(Path, outcome.figures):
        assert path.parent == results / "figs" and path.stat().st_size > 1000
    assert "paper" in outcome.tables.lower()  # the paper's claim or numbers sit beside ours


def test_rerun_loads_every_finished_unit(smoke):
    first = json.loads((Path(smoke["reparam"].results_dir) / "summary.json").read_text())
    again = run_study("reparam", budget="smoke", out=smoke["reparam"].results_dir,
                      figures=Path(smoke["reparam"].results_dir) / "figs")
    second = json.loads(Path(again.summary_path).read_text())
    assert second["unit_seconds"] == {}  # nothing recomputed
    assert second["summary"] == first["summary"]


def test_plot_only_redraws_from_saved_results_without_computing(smoke, monkeypatch, tmp_path):
    module = load_study("keskar")

    def boom(run):
        raise AssertionError("plot-only must not compute")

    monkeypatch.setattr(module, "compute", boom)
    outcome = run_study("keskar", budget="smoke", out=smoke["keskar"].results_dir, figures=tmp_path, plot_only=True)
    assert sorted(Path(p).name for p in outcome.figures) == sorted(Path(p).name for p in smoke["keskar"].figures)
    assert all(Path(p).parent == tmp_path for p in outcome.figures)
    assert outcome.tables == smoke["keskar"].tables


def test_another_studys_directory_is_refused(smoke):
    with pytest.raises(InputError, match="different run"):
        run_study("reparam", budget="smoke", out=smoke["keskar"].results_dir)


def test_cli_reproduce_prints_tables_and_where_things_went(smoke, capsys):
    results = smoke["reparam"].results_dir
    code, out, err = run_cli(capsys, "reproduce", "reparam", "--smoke", "--out", results, "--figures", Path(results) / "figs")
    assert code == 0, err
    assert out.startswith("Reparameterization") and "results in" in out and "reparam_measures.png" in out
    assert_input_error(run_cli(capsys, "reproduce", "nope"), "nope")
    assert_input_error(run_cli(capsys, "reproduce", "keskar", "--plot-only", "--out", Path(results) / "missing"),
                       "expected saved results")


def test_script_entry_point_runs_the_same_study(smoke):
    results = smoke["edge-of-stability"].results_dir
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "edge_of_stability.py"), "--smoke", "--plot-only",
                           "--out", results, "--figures", str(Path(results) / "figs")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("edge-of-stability (smoke): results in")
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "plot_figures.py"), "--results", results,
                           "--figures", str(Path(results) / "figs2"), "edge-of-stability"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (Path(results) / "figs2" / "edge_of_stability.png").is_file()


# ----------------------------------------------------------------------------------------------------------
# The Keskar study by fractions, and the trade-off study's own logic (no science asserted)
# ----------------------------------------------------------------------------------------------------------


def test_keskar_sb_and_lb_are_fractions_of_the_training_set(smoke):
    keskar = load_study("keskar")
    assert keskar.batch_sizes(4000, "0.5%", "10%") == {"SB": 20, "LB": 400}
    assert keskar.batch_sizes(60000, "0.5%", "10%") == {"SB": 300, "LB": 6000}
    full = keskar.settings("full")
    assert (full["sb"], full["lb"]) == ("0.5%", "10%") and full["seeds"] == 5
    # the smoke run trains one network on 4000 samples and one on a 400-sample subset: its sizes follow
    saved = json.loads((Path(smoke["keskar"].results_dir) / "summary.json").read_text())
    nets = saved["summary"]["networks"]
    assert nets["F1"]["n_train"] == 4000 and nets["F1"]["batch_sizes"] == {"SB": 200, "LB": 1000}
    assert nets["F1-small-data"]["n_train"] == 400 and nets["F1-small-data"]["batch_sizes"] == {"SB": 20, "LB": 100}
    assert {r["batch_size"] for r in saved["summary"]["rows"] if r["network"] == "F1-small-data"} == {20, 100}


def test_keskar_trains_both_regimes_to_convergence_and_lists_every_run_that_missed(smoke):
    keskar = load_study("keskar")
    full = keskar.settings("full")
    assert full["until_train_accuracy"] == 0.99 and full["regimes"] == ["converged", "matched"]
    assert all(net["max_epochs"] >= 1 and "epochs" not in net for net in full["networks"].values())
    results = Path(smoke["keskar"].results_dir)
    saved = json.loads((results / "summary.json").read_text())
    s, rows = saved["settings"], saved["summary"]["rows"]
    # every converged run was trained by the accuracy rule, within its network's cap
    for name, net in s["networks"].items():
        configs = [json.loads(p.read_text())["config"] for p in results.glob(f"{name}-converged-*.json")]
        assert len(configs) == 2 and all(c["until_train_accuracy"] == s["until_train_accuracy"] and c["epochs"] is None
                                         and c["max_epochs"] == net["max_epochs"] for c in configs)
    converged = [r for r in rows if r["regime"] == "converged"]
    assert len(converged) == 4
    for r in converged:
        if r["reached"]:
            assert r["stopped_by"] == "until_train_accuracy" and r["train_acc"] >= s["until_train_accuracy"]
        else:
            assert r["stopped_by"] == "max_epochs" and r["train_acc"] < s["until_train_accuracy"]
            assert r["epochs"] == s["networks"][r["network"]]["max_epochs"]
    # the smoke budget has both kinds (F1 reaches the criterion, F1-small-data does not), so both branches are seen
    assert {r["network"] for r in converged if r["reached"]} == {"F1"}
    assert {r["network"] for r in converged if not r["reached"]} == {"F1-small-data"}
    # a run that missed is kept: its rows carry the mark, and one warning line names it; one that reached is unmarked
    missed = [r for r in rows if r["reached"] is False]
    assert [line for line in smoke["keskar"].warnings if "cap" in line] == keskar.missed_lines(saved)
    for r in missed:
        assert any(f"{r['network']} {r['role']} B={r['batch_size']} seed {r['seed']} ({r['regime']}) stopped at its "
                   f"{s['networks'][r['network']]['max_epochs']}-epoch cap" in line for line in smoke["keskar"].warnings)
    table_rows = [line for line in smoke["keskar"].tables.splitlines() if line.startswith("| F1")]
    # (F1-small-data's matched runs reached their target: only its converged rows, headline included, are marked)
    assert table_rows and all(("‡" in line) == (line.startswith("| F1-small-data") and "matched" not in line)
                              for line in table_rows)


def test_lm_batch_sb_and_lb_are_fractions_of_the_training_windows(smoke):
    lm = load_study("lm-batch")
    full = lm.settings("full")
    assert lm.batch_sizes(920, full["sb"], full["lb"], min_sb=full["min_sb"]) == {"SB": 29, "LB": 230}
    assert lm.batch_sizes(3200, "3.125%", "25%", min_sb=16) == {"SB": 100, "LB": 800}  # another corpus size
    with pytest.raises(InputError, match="at least 16, got 9"):
        lm.batch_sizes(300, "3.125%", "25%", min_sb=16)
    with pytest.raises(InputError, match="SB smaller than LB"):
        lm.batch_sizes(920, "25%", "25%")
    saved = json.loads((Path(smoke["lm-batch"].results_dir) / "summary.json").read_text())
    S = saved["summary"]
    assert S["batch_sizes"] == lm.batch_sizes(S["n_train"], saved["settings"]["sb"], saved["settings"]["lb"])
    # the same learning rate and seed at both batch sizes: the batch size is the only difference
    configs = [json.loads(p.read_text())["config"] for p in Path(smoke["lm-batch"].results_dir).glob("fixed-*.json")]
    assert len(configs) == 2 and len({(c["lr"], c["seed"], c["epochs"]) for c in configs}) == 1
    assert {c["batch_size"] for c in configs} == set(S["batch_sizes"].values())


def _keskar_saved(sb_acc, lb_acc, sb_eps=(1.0,), lb_eps=(50.0,)):
    rows = [{"network": "F1", "regime": "converged", "role": role, "seed": i, "test_acc": a, "eps_full_0.001": e,
             "lambda_max": e, "reached": True}
            for role, accs, eps in (("SB", sb_acc, sb_eps), ("LB", lb_acc, lb_eps))
            for i, (a, e) in enumerate(zip(accs, eps * len(accs) if len(eps) == 1 else eps))]
    return {"summary": {"networks": {"F1": {}}, "rows": rows}, "settings": {}}


def test_keskar_flags_a_contrast_within_one_standard_deviation():
    keskar = load_study("keskar")
    assert keskar.warnings(_keskar_saved([0.72, 0.73, 0.71], [0.65, 0.66, 0.64])) == []
    lines = keskar.warnings(_keskar_saved([0.70, 0.74, 0.66], [0.68, 0.70, 0.66]))
    assert len(lines) == 1 and "test accuracy" in lines[0] and "within one standard deviation" in lines[0]
    # one seed: no standard deviation, so only a contrast pointing the other way is flagged
    assert keskar.warnings(_keskar_saved([0.71], [0.65])) == []
    lines = keskar.warnings(_keskar_saved([0.60], [0.65], sb_eps=(80.0,), lb_eps=(50.0,)))
    assert len(lines) == 3 and all("one seed" in line for line in lines)


def test_tradeoff_sweet_spot_is_the_fastest_batch_within_the_accuracy_tolerance():
    tradeoff = load_study("batch-tradeoff")
    rows = [{"rule": "none", "batch_size": B, "reached": reached, "target_seconds": sec, "test_acc": acc}
            for B, reached, sec, acc in ((8, True, 9.0, 0.70), (32, True, 3.0, 0.695), (128, True, 1.0, 0.66),
                                         (512, False, 0.5, 0.70))]
    assert tradeoff.sweet_spot(rows, "none", [8, 32, 128, 512]) == 32  # 128 is faster but 4 pp worse; 512 never got there
    assert tradeoff.sweet_spot(rows, "linear", [8, 32]) is None


def test_keskar_figure_title_claims_a_spread_only_over_several_seeds(smoke, capsys, monkeypatch, tmp_path):
    # The smoke and --quick budgets run one seed: a "mean ± std" over it would be a claim nobody measured.
    import matplotlib.figure

    titles = []
    original = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle",
                        lambda self, t, *a, **k: titles.append(t) or original(self, t, *a, **k))
    code, out, err = run_cli(capsys, "reproduce", "keskar", "--smoke", "--plot-only",
                             "--out", smoke["keskar"].results_dir, "--figures", tmp_path)
    assert code == 0, err
    (title,) = [t for t in titles if "by fractions" in t]
    assert "one seed" in title and "±" not in title


# ----------------------------------------------------------------------------------------------------------
# generalization-measures: the protocol of Jiang et al. 2020 (no science asserted)
# ----------------------------------------------------------------------------------------------------------


def test_generalization_measures_full_grid_follows_the_protocol():
    s = load_study("generalization-measures").settings("full")
    n_train = 4000  # MNIST-1D's training split
    sizes = sorted(s["batch_sizes"])
    assert len(sizes) >= 4 and sizes[0] == n_train // 200 and sizes[-1] == n_train // 10
    assert len(s["lrs"]) >= 3 and s["seeds"] >= 2 and s["target_loss"] == 0.01 and s["max_epochs"] > 0


def test_generalization_measures_lists_models_that_missed_the_target_and_keeps_them(smoke):
    results = Path(smoke["generalization-measures"].results_dir)
    summary = json.loads((results / "summary.json").read_text())["summary"]
    models = summary["models"]
    missed = [m["run"] for m in models if m["reached_train_loss"] is False]
    reached = [m["run"] for m in models if m["reached_train_loss"] is True]
    assert missed and reached  # the smoke budget's cap is set so that both kinds occur
    assert summary["missed_target"] == missed and len(models) == len(summary["sweep_rows"])  # none dropped
    assert all(c["loss_gap"]["n"] == len(models) for c in summary["correlation"].values())
    tables = smoke["generalization-measures"].tables
    line = next(t for t in tables.splitlines() if t.startswith("Models that missed the target"))
    assert all(run in line for run in missed) and not any(run in line for run in reached)
    csv_rows = (results / "correlate" / "models.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + len(models)  # the per-model values behind τ are saved


def test_generalization_measures_ranks_at_the_target_only_the_models_that_reached_it():
    study = load_study("generalization-measures")
    models = [{"run": f"m{i}", "batch_size": B, "lr": 0.01, "seed": 0, "reached_train_loss": True,
               "loss_gap": gap, "lambda_max": lam} for i, (B, gap, lam) in enumerate(((20, 0.1, 1.0), (40, 0.2, 2.0),
                                                                                     (100, 0.3, 3.0), (400, 0.4, 4.0)))]
    models.append({"run": "late", "batch_size": 800, "lr": 0.01, "seed": 0, "reached_train_loss": False,
                   "loss_gap": 0.0, "lambda_max": 9.0})  # discordant, but never at the common loss
    r = study.at_target(models, ["lambda_max"], ["batch_size"], resamples=0)["lambda_max"]
    assert r["n"] == 4 and r["tau"] == pytest.approx(1.0) and r["psi"] == pytest.approx(1.0) and r["ci"] is None
    assert study.at_target(models[:2] + models[4:], ["lambda_max"], ["batch_size"]) == {}  # fewer than 3 at the target


def test_generalization_measures_tables_keep_the_measure_order_when_read_back(smoke):
    from sharpness.correlate import MEASURES

    saved = json.loads((Path(smoke["generalization-measures"].results_dir) / "summary.json").read_text())  # sorted keys
    text = load_study("generalization-measures").tables(saved)
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    labels = [label for label in MEASURES.values() if label in rows]
    assert len(labels) > 3 and [r for r in rows if r in labels][: len(labels)] == labels


def test_generalization_measures_paper_columns_quote_nothing_without_a_note():
    from sharpness.correlate import MEASURES

    study = load_study("generalization-measures")
    notes = {int(re.match(r"\[(\d+)\] ", n).group(1)): n for n in study.PAPER_NOTES}
    assert sorted(notes) == list(range(1, len(notes) + 1))
    for paper in study.PAPER:
        for m in MEASURES:
            cell = study.paper_cell(paper, m)
            marks = {int(k) for k in re.findall(r"\[(\d+)\]", cell)}
            assert marks and marks <= set(notes), (paper, m, cell)  # every cell says where it comes from
            assert not re.search(r"\d\.\d", cell), (paper, m, cell)  # no paper number in a cell until one is read
    assert all("https://" in notes[k] for k in (1, 6, 7))  # the notes that cite a paper's page name it
    text = study.tables({"summary": {"axes": ["batch_size"], "models": [], "missed_target": [], "excluded": [],
                                     "correlation": {}},
                         "settings": study.settings("smoke"), "seeds": [0]})
    assert all(n in text for n in study.PAPER_NOTES)
