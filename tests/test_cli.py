"""The command line as a user meets it: info, analyze, the JSON contract, the gate, and bad input.

Every bad-input case must exit 2 with exactly one line on stderr and no traceback.
"""

from __future__ import annotations

import gzip
import re
import json
import pickle
import struct

import numpy as np
import pytest
import torch
from torch import nn

from cli_helpers import assert_input_error, run_cli
from conftest import assert_unchanged, snapshot
from sharpness.checkpoint import save_checkpoint
from sharpness.data import load_dataset
from sharpness.models import build_from_spec, model_spec

FACTORY = '''
import torch
from torch import nn

def make(width=8, classes=3):
    return nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, classes))

def broken():
    raise RuntimeError("factory exploded")

def not_a_module():
    return 42
'''


@pytest.fixture(scope="module")
def toolkit_ckpt(tmp_path_factory):
    """A small toolkit checkpoint: an MLP on a blobs dataset, trained a little so the Hessian is non-trivial."""
    d = tmp_path_factory.mktemp("ckpt")
    ds = load_dataset("blobs", n=120, n_test=40, dim=4, classes=3, seed=1)
    spec = model_spec("mlp", ds.spec["input_shape"], ds.spec["num_classes"], hidden=[8])
    model = build_from_spec(spec, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(ds.x_train), ds.y_train).backward()
        opt.step()
    path = d / "run.pt"
    save_checkpoint(path, model=spec, state_dict=model.state_dict(), data=ds.spec, seed=0)
    return path


@pytest.fixture
def foreign(tmp_path):
    """A bare state_dict, a factory file and an npz dataset, as someone else's code would leave them."""
    (tmp_path / "factory.py").write_text(FACTORY)
    ns: dict = {}
    exec(FACTORY, ns)
    torch.manual_seed(0)
    model = ns["make"]()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    g = np.random.default_rng(0)
    x = g.normal(size=(50, 4)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=(x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0))
    return tmp_path, model


# --- info ------------------------------------------------------------------------------------------------


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and "sharpness" in out


def test_info_toolkit_checkpoint(capsys, toolkit_ckpt):
    code, out, _ = run_cli(capsys, "info", toolkit_ckpt, "--json", "-")
    assert code == 0
    info = json.loads(out)
    assert info["kind"] == "sharpness"
    assert info["model"]["name"] == "mlp"
    assert info["num_parameters"] == 4 * 8 + 8 + 8 * 3 + 3
    code, out, _ = run_cli(capsys, "info", toolkit_ckpt)
    assert code == 0 and "blobs" in out


def test_info_foreign_state_dict(capsys, foreign):
    d, _ = foreign
    code, out, _ = run_cli(capsys, "info", d / "weights.pt", "--json", "-")
    assert code == 0
    assert json.loads(out)["kind"] == "state_dict"


# --- analyze ---------------------------------------------------------------------------------------------


def test_analyze_toolkit_checkpoint_json_contract(capsys, toolkit_ckpt, tmp_path):
    out_json = tmp_path / "report.json"
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--dtype", "float64", "--top-k", "3",
                             "--bottom-k", "2", "--density", "--density-steps", "20", "--density-runs", "2",
                             "--per-layer", "--json", out_json)
    assert code == 0, err
    assert "λ top" in out  # the human table is still printed
    r = json.loads(out_json.read_text())
    assert r["schema"] == "sharpness.report/1"
    for key in ("loss", "accuracy", "analysis_set", "hessian", "per_layer", "cost", "config", "environment", "gate"):
        assert key in r, key
    assert set(r["analysis_set"]) >= {"split", "n_samples", "sha256"}
    assert r["analysis_set"]["n_samples"] == 120
    for end in ("top", "bottom"):
        assert set(r["hessian"][end]) >= {"values", "residuals", "converged", "num_matvecs"}
    top, bottom = r["hessian"]["top"]["values"], r["hessian"]["bottom"]["values"]
    assert top == sorted(top, reverse=True) and len(top) == 3
    assert bottom == sorted(bottom) and len(bottom) == 2
    assert set(r["hessian"]["trace"]) >= {"value", "stderr", "num_probes"}
    assert set(r["hessian"]["density"]) >= {"grid", "density"}
    assert set(r["cost"]) >= {"seconds", "num_matvecs"}
    assert set(r["environment"]) >= {"torch", "device", "dtype", "sharpness"}
    assert r["config"]["top_k"] == 3 and r["gate"] == {"passed": True, "checks": []}
    assert [layer["name"] for layer in r["per_layer"]] == ["1", "3"]  # the two Linear layers of the MLP
    # `sharpness plot` draws the saved report (eigenvalue bars and the density) without recomputing.
    code, out, err = run_cli(capsys, "plot", out_json)
    assert code == 0, err
    assert (tmp_path / "report.png").stat().st_size > 0


def test_analyze_numbers_match_dense_hessian(capsys, toolkit_ckpt):
    from sharpness.checkpoint import build_model_from_checkpoint, load_checkpoint
    from sharpness.hessian import dense_hessian
    from sharpness.objective import Objective

    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--dtype", "float64", "--top-k", "2",
                             "--bottom-k", "1", "--trace-probes", "201", "--json", "-")
    assert code == 0, err
    r = json.loads(out)  # --json - prints only JSON on stdout
    ckpt = load_checkpoint(toolkit_ckpt)
    ds = load_dataset("blobs", n=120, n_test=40, dim=4, classes=3, seed=1)
    model = build_model_from_checkpoint(ckpt, data_spec=ds.spec)
    H = dense_hessian(Objective(model, ds.x_train, ds.y_train, dtype=torch.float64))
    exact = torch.linalg.eigvalsh(H).numpy()
    # Lanczos at tol 1e-4 relative. Hutch++ with 201 matvecs sketches 67 = P directions: the sketch spans
    # the whole space, so its trace is exact up to float64 rounding.
    np.testing.assert_allclose(r["hessian"]["top"]["values"], exact[::-1][:2], rtol=1e-4)
    assert r["hessian"]["bottom"]["values"][0] == pytest.approx(exact[0], abs=1e-4 * abs(exact[-1]))
    assert r["hessian"]["trace"]["value"] == pytest.approx(exact.sum(), rel=1e-9)


def test_analyze_foreign_state_dict_factory_npz(capsys, foreign):
    d, model = foreign
    before = snapshot(model)
    code, out, err = run_cli(capsys, "analyze", d / "weights.pt", "--model", f"{d / 'factory.py'}:make",
                             "--data", d / "data.npz", "--json", "-", "--samples", "31", "--chunk-size", "7",
                             "--trace-probes", "12")
    assert code == 0, err
    r = json.loads(out)
    assert r["analysis_set"]["n_samples"] == 31
    assert r["checkpoint"]["kind"] == "state_dict"
    assert_unchanged(model, before)


def test_gate_failure_exits_3_and_still_writes(capsys, toolkit_ckpt, tmp_path):
    path = tmp_path / "gate.json"
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--max-eigenvalue", "1e-9", "--json", path)
    assert code == 3
    r = json.loads(path.read_text())
    assert r["gate"]["passed"] is False
    assert r["gate"]["checks"][0]["name"] == "max_eigenvalue"
    assert "gate failed" in err and "Traceback" not in err
    code, *_ = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--max-eigenvalue", "1e9")
    assert code == 0


def test_baseline_gate(capsys, toolkit_ckpt, tmp_path):
    base = tmp_path / "base.json"
    assert run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--json", base)[0] == 0
    code, out, _ = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--baseline", base, "--max-increase", "25%",
                           "--json", "-")
    assert code == 0
    checks = json.loads(out)["gate"]["checks"]
    assert [c["name"] for c in checks] == ["lambda_max_increase"] and checks[0]["passed"]
    # A baseline whose λ_max was a fraction of ours fails the 25 % rule.
    r = json.loads(base.read_text())
    r["hessian"]["top"]["values"][0] /= 2
    base.write_text(json.dumps(r))
    code, *_ = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--baseline", base, "--max-increase", "25%")
    assert code == 3
    # Another analysis set cannot be a baseline.
    assert_input_error(
        run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--samples", "50", "--baseline", base,
                "--max-increase", "25%"),
        "another analysis set",
    )


# --- bad input -------------------------------------------------------------------------------------------


def test_missing_empty_truncated_foreign_files(capsys, tmp_path, toolkit_ckpt):
    assert_input_error(run_cli(capsys, "info", tmp_path / "nope.pt"), "not found")
    (tmp_path / "empty.pt").write_bytes(b"")
    assert_input_error(run_cli(capsys, "info", tmp_path / "empty.pt"), "expected")
    blob = toolkit_ckpt.read_bytes()
    (tmp_path / "half.pt").write_bytes(blob[: len(blob) // 2])
    assert_input_error(run_cli(capsys, "analyze", tmp_path / "half.pt"), "expected")
    (tmp_path / "notes.pt").write_text("hello, I am a text file\n")
    assert_input_error(run_cli(capsys, "info", tmp_path / "notes.pt"), "expected")


class _Payload:
    """Unpickling this would create a file: the checkpoint must never be unpickled unsafely."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_that_runs_code_is_refused(capsys, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "x": _Payload(marker)}, path)
    result = run_cli(capsys, "analyze", path, "--model", "linear", "--data", "blobs")
    assert_input_error(result, "--trust-checkpoint")
    assert not marker.exists()
    assert_input_error(run_cli(capsys, "info", path), "--trust-checkpoint")
    assert not marker.exists()


def test_whole_module_pickle_names_class_and_flag(capsys, tmp_path):
    path = tmp_path / "module.pt"
    torch.save(nn.Sequential(nn.Linear(2, 2)), path)
    assert_input_error(run_cli(capsys, "info", path), "Sequential", "--trust-checkpoint")
    code, out, err = run_cli(capsys, "info", path, "--trust-checkpoint", "--json", "-")
    assert code == 0 and json.loads(out)["kind"] == "module"
    # the library's warning reaches the user as one line, not Python's message-plus-source pair
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("sharpness: warning: loading ")]
    assert len(err.splitlines()) == 1


def test_state_dict_not_matching_model(capsys, foreign):
    d, _ = foreign
    assert_input_error(
        run_cli(capsys, "analyze", d / "weights.pt", "--model", f"{d / 'factory.py'}:make",
                "--model-kwargs", '{"width": 5}', "--data", d / "data.npz"),
        "match",
    )
    assert_input_error(run_cli(capsys, "analyze", d / "weights.pt", "--data", d / "data.npz"), "--model")


def test_nan_weights(capsys, foreign):
    d, model = foreign
    sd = model.state_dict()
    sd["0.weight"][0, 0] = float("nan")
    torch.save(sd, d / "nan.pt")
    assert_input_error(
        run_cli(capsys, "analyze", d / "nan.pt", "--model", f"{d / 'factory.py'}:make", "--data", d / "data.npz"),
        "nan",
    )


def test_unknown_names_and_bad_factories(capsys, foreign):
    d, _ = foreign
    w, data = d / "weights.pt", d / "data.npz"
    assert_input_error(run_cli(capsys, "analyze", w, "--model", "no-such-net", "--data", data), "no-such-net")
    assert_input_error(run_cli(capsys, "analyze", w, "--model", f"{d / 'factory.py'}:make", "--data", "no-such-data"),
                       "no-such-data")
    assert_input_error(run_cli(capsys, "analyze", w, "--model", f"{d / 'factory.py'}:missing", "--data", data), "missing")
    assert_input_error(run_cli(capsys, "analyze", w, "--model", f"{d / 'nofile.py'}:make", "--data", data), "nofile.py")
    assert_input_error(run_cli(capsys, "analyze", w, "--model", f"{d / 'factory.py'}:broken", "--data", data),
                       "factory exploded")
    assert_input_error(run_cli(capsys, "analyze", w, "--model", f"{d / 'factory.py'}:not_a_module", "--data", data),
                       "module")
    assert_input_error(run_cli(capsys, "analyze", w, "--model", f"{d / 'factory.py'}:make", "--model-kwargs", "{oops",
                               "--data", data), "--model-kwargs")


def test_bad_npz_files(capsys, foreign):
    d, _ = foreign
    args = ("analyze", d / "weights.pt", "--model", f"{d / 'factory.py'}:make", "--data")
    np.savez(d / "noy.npz", x=np.zeros((5, 4), np.float32))
    assert_input_error(run_cli(capsys, *args, d / "noy.npz"), "y")
    np.savez(d / "short.npz", x=np.zeros((5, 4), np.float32), y=np.zeros(4, np.int64))
    assert_input_error(run_cli(capsys, *args, d / "short.npz"), "5", "4")
    np.savez(d / "neg.npz", x=np.zeros((5, 4), np.float32), y=np.array([0, 1, -1, 0, 1]))
    assert_input_error(run_cli(capsys, *args, d / "neg.npz"), "label")
    # Labels beyond the model's outputs: the model has 3 classes, the data says 5.
    np.savez(d / "wide.npz", x=np.zeros((5, 4), np.float32), y=np.array([0, 1, 4, 0, 1]))
    assert_input_error(run_cli(capsys, *args, d / "wide.npz"), "expected")


def _write_idx(path, array, zero_bytes=(0, 0), truncate=0):
    header = struct.pack(">BBBB", *zero_bytes, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    body = array.astype(np.uint8).tobytes()
    data = header + body[: len(body) - truncate]
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(data)


def test_bad_idx_files(capsys, tmp_path, foreign):
    d, _ = foreign
    images = np.zeros((6, 2, 2), np.uint8)
    labels = np.arange(6, dtype=np.uint8) % 3
    args = ("analyze", d / "weights.pt", "--model", f"{d / 'factory.py'}:make", "--data", "idx", "--data-dir", tmp_path)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, zero_bytes=(0x12, 0x34))  # not an IDX magic
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    assert_input_error(run_cli(capsys, *args), "magic")
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, truncate=3)
    assert_input_error(run_cli(capsys, *args), "expected")


def test_usage_errors_are_one_line(capsys, toolkit_ckpt):
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--top-k", "many"), "top-k")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--no-such-option"), "no-such-option")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--device", "cuda:7"), "cuda")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--data", "digits"), "could not be evaluated")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--max-increase", "25%", "--baseline",
                               toolkit_ckpt), "baseline")


def test_flatness_measures_in_report_and_gate(capsys, toolkit_ckpt):
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--bottom-k", "0", "--epsilon", "1e-3",
                             "--epsilon", "5e-4", "--subspace-dim", "10", "--adaptive-rho", "0.05",
                             "--average-adaptive-rho", "0.05", "--average-draws", "10", "--max-epsilon-sharpness", "1e9", "--json", "-")
    assert code == 0, err
    r = json.loads(out)
    eps = r["epsilon_sharpness"]
    assert [(e["epsilon"], e["space"], e["dim"]) for e in eps] == [
        (1e-3, "full", 67), (1e-3, "random", 10), (5e-4, "full", 67), (5e-4, "random", 10)]
    for e in eps:
        assert set(e) >= {"epsilon", "space", "dim", "start", "value", "values_per_start", "iterations", "status"}
        assert e["value"] >= 0
    # A larger box can only contain a larger maximum (same start, same subspace).
    assert eps[0]["value"] >= eps[2]["value"]
    (worst,) = r["adaptive_sharpness"]
    (average,) = r["average_sharpness"]
    assert worst["rho"] == 0.05 and worst["adaptive"] is True and worst["p"] == "2"
    assert set(average) >= {"rho", "adaptive", "value", "stderr"} and average["distribution"] == "sphere"
    # The same ρ is the same ball: the sphere's average cannot exceed the worst case reported beside it.
    assert average["value"] <= worst["value"] and worst["average_floor"] == average["max_value"]
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--bottom-k", "0", "--top-k", "0",
                             "--average-rho", "0.05", "--average-draws", "4", "--json", "-")
    r2 = json.loads(out)
    assert code == 0 and "adaptive_sharpness" not in r2 and r2["average_sharpness"][0]["adaptive"] is False
    assert r["gate"]["checks"][0]["name"] == "max_epsilon_sharpness" and r["gate"]["passed"]


def test_epsilon_table_names_the_method_and_a_budget_that_ran_out(capsys, toolkit_ckpt):
    # Both maximizers side by side; the paper's 1-iteration budget must run out, and the table a person reads
    # (not only the JSON) says so, with one warning line on stderr per exhausted measurement.
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--bottom-k", "0", "--epsilon", "1e-2",
                             "--epsilon-method", "both", "--epsilon-max-iter", "1")
    assert code == 0, err
    lines = [line for line in out.splitlines() if "ε-sharpness" in line]
    assert len(lines) == 2
    assert "[ascent: 5 × ≤ 1 evaluations" in lines[0] and "[paper: 1 × ≤ 1 L-BFGS-B iterations" in lines[1]
    assert "%" in lines[0] and "BUDGET RAN OUT on 1 of 1 starts" in lines[1]
    warnings = [line for line in err.splitlines() if "lower bound" in line]
    assert any("paper" in w for w in warnings) and all(w.startswith("sharpness: ") for w in warnings)
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--bottom-k", "0", "--epsilon", "1e-2")
    lines = out.splitlines()
    (k,) = [k for k, line in enumerate(lines) if "ε-sharpness" in line]
    assert re.search(r"\[ascent: \d+ × ≤ 100 evaluations, stopped: \d+ (kkt|stalled|step_floor)", lines[k]), lines[k]
    assert "lower bound" not in err
    # The spread of the starts on the line below, from the JSON's values_per_start.
    code, out_json, err = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--bottom-k", "0", "--epsilon", "1e-2",
                                  "--json", "-")
    entry = json.loads(out_json)["epsilon_sharpness"][0]
    values = sorted(entry["values_per_start"], reverse=True)
    assert (entry["second_best"], entry["starts_within_1pct"]) == (values[1], sum(v >= 0.99 * values[0] for v in values))
    assert lines[k + 1].strip().startswith(f"starts: best {values[0]:.4g} %, second {values[1]:.4g} %, "
                                           f"{entry['starts_within_1pct']} of {len(values)} within 1 %")
    assert ("LOCAL MAXIMA DISAGREE" in lines[k + 1]) == entry["maxima_disagree"]


# --- the first hour: bad input that used to get through (issue #14) ---------------------------------------


def test_more_eigenvalues_or_samples_than_exist_are_refused_before_any_work(capsys, toolkit_ckpt):
    # The MLP has 67 parameters and the blobs training split 120 samples.
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--top-k", "5000"), "--top-k ≤ 67", "5000")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--bottom-k", "68"), "--bottom-k ≤ 67")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--epsilon", "1e-3", "--subspace-dim", "100"),
                       "--subspace-dim ≤ 67")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--top-k", "3", "--max-steps", "2"), "--max-steps ≥ 3")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--samples", "100000"),
                       "--samples ≤ 120", "train split", "100000")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--split", "test", "--samples", "41"),
                       "--samples ≤ 40", "test split")
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--samples", "120", "--no-trace", "--json", "-")
    assert code == 0 and json.loads(out)["analysis_set"]["n_samples"] == 120


def test_float_labels_with_a_classifier_are_refused_in_every_loss(capsys, toolkit_ckpt, tmp_path):
    g = np.random.default_rng(0)
    x = g.normal(size=(30, 4)).astype(np.float32)
    np.savez(tmp_path / "float_labels.npz", x=x, y=g.integers(0, 3, 30).astype(np.float32))
    data = tmp_path / "float_labels.npz"
    # (N, 3) logits against (N,) float targets used to broadcast into an (N, 3) difference and exit 0.
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--data", data, "--no-trace"),
                       "mse expects targets with the model's output shape (3,)", "got targets of shape ()", "integers")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--data", data, "--loss", "cross-entropy"),
                       "integer")
    np.savez(tmp_path / "column.npz", x=x, y=g.integers(0, 3, (30, 1)))
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--data", tmp_path / "column.npz"), "[30, 1]")
    assert_input_error(run_cli(capsys, "landscape", toolkit_ckpt, "--data", data, "--dims", "1", "--out", tmp_path / "l"),
                       "mse expects")
    assert not (tmp_path / "l" / "landscape_1d.npz").exists()


def test_landscape_and_interpolate_refuse_more_samples_than_the_training_split(capsys, toolkit_ckpt, tmp_path):
    assert_input_error(run_cli(capsys, "landscape", toolkit_ckpt, "--dims", "1", "--points", "3", "--samples", "121",
                               "--out", tmp_path / "l"), "--samples ≤ 120", "train split")
    assert_input_error(run_cli(capsys, "interpolate", toolkit_ckpt, toolkit_ckpt, "--points", "3", "--samples", "500",
                               "--out", tmp_path / "i"), "--samples ≤ 120")
    # The test split (40 samples) is only a companion curve: it takes all of itself, and says so in one line.
    code, out, err = run_cli(capsys, "landscape", toolkit_ckpt, "--dims", "1", "--points", "3", "--samples", "60",
                             "--out", tmp_path / "l")
    assert code == 0, err
    assert err == "sharpness: the test split has 40 samples, fewer than --samples 60; the test curve uses all 40\n"
    code, out, err = run_cli(capsys, "landscape", toolkit_ckpt, "--dims", "1", "--points", "3", "--samples", "60",
                             "--out", tmp_path / "l", "-q")
    assert code == 0 and err == ""


def test_half_a_baseline_gate_is_refused_before_the_analysis(capsys, toolkit_ckpt, tmp_path):
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--max-increase", "25%"),
                       "expected --baseline", "--max-increase alone")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--baseline", tmp_path / "none.json"),
                       "--max-increase", "--baseline alone")
    result = run_cli(capsys, "analyze", toolkit_ckpt, "--baseline", tmp_path / "none.json", "--max-increase", "25%")
    assert_input_error(result, "none.json", "no such file")
    assert "sharpness: λ" not in result[2]  # refused before the first measure ran


def test_bare_malicious_pickle_is_refused_unrun_in_one_line(capsys, tmp_path):
    # A pickle.dump file is not a torch.save file: refused before unpickling, with or without the opt-in.
    marker = tmp_path / "pwned"
    for name, protocol in (("evil.pkl", pickle.HIGHEST_PROTOCOL), ("evil2.pt", 4), ("evil3.pt", 2), ("evil4.pt", 0)):
        with open(tmp_path / name, "wb") as fh:
            pickle.dump({"weight": _Payload(marker)}, fh, protocol=protocol)
        for trust in ((), ("--trust-checkpoint",)):
            result = run_cli(capsys, "info", tmp_path / name, *trust)
            assert_input_error(result, "expected a torch.save file", "got a bare pickle (pickle.dump) referencing io.open",
                               "even with --trust-checkpoint")
            assert "truncated" not in result[2] and "warning" not in result[2].lower()
            assert_input_error(run_cli(capsys, "analyze", tmp_path / name, "--model", "linear", "--data", "blobs", *trust),
                               "bare pickle")
            assert not marker.exists()


def test_bare_state_dict_names_every_missing_flag_at_once(capsys, foreign):
    d, _ = foreign
    for command in (("analyze",), ("landscape", "--out", d / "l")):
        assert_input_error(run_cli(capsys, *command[:1], d / "weights.pt", *command[1:]),
                           "expected --model NAME|FILE.py:FN and --data NAME|FILE.npz", "bare state_dict")
    assert_input_error(run_cli(capsys, "analyze", d / "weights.pt", "--model", f"{d / 'factory.py'}:make"),
                       "--data")


# --- the first hour: what a new user sees (issue #14) ------------------------------------------------------


def test_failed_gate_prints_the_condition_that_holds(capsys, toolkit_ckpt):
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--max-eigenvalue", "1e-9")
    assert code == 3
    (line,) = [line for line in out.splitlines() if "max_eigenvalue" in line]
    assert re.fullmatch(r"\s+FAIL max_eigenvalue: [0-9.e+-]+ > 1e-09", line), line
    code, out, _ = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--max-eigenvalue", "1e9")
    (line,) = [line for line in out.splitlines() if "max_eigenvalue" in line]
    assert code == 0 and re.fullmatch(r"\s+ok   max_eigenvalue: [0-9.e+-]+ ≤ 1e\+09", line), line


def test_gate_on_a_measure_that_is_not_computed_is_refused_before_the_work(capsys, toolkit_ckpt):
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--max-trace", "5"), "--trace", "--max-trace 5")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--top-k", "0", "--max-eigenvalue", "5"), "--top-k ≥ 1")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--max-epsilon-sharpness", "5"), "--epsilon")


def test_info_prints_words_not_python_literals(capsys, toolkit_ckpt):
    code, out, _ = run_cli(capsys, "info", toolkit_ckpt)
    assert code == 0
    assert not re.search(r"\b(None|True|False)\b", out), out
    assert "num_parameters_exact: yes" in out and "subset: —" in out


def test_analyze_prints_one_stage_line_per_measure_when_stderr_is_a_pipe(capsys, toolkit_ckpt):
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--epsilon", "1e-3", "--average-rho", "0.05",
                             "--average-draws", "3")
    assert code == 0, err
    lines = err.splitlines()
    assert [line.split(" done (")[0] for line in lines] == [
        "sharpness: loss on 120 samples", "sharpness: λ_max/λ_min (Lanczos, top 1, bottom 1)",
        "sharpness: trace (hutch++, 99 matvecs)", "sharpness: ε-sharpness (ascent) ε=0.001 full space",
        "sharpness: plain average-case sharpness ρ=0.05 (sphere)"], err
    assert all(re.search(r" done \([0-9.]+ s\)$", line) for line in lines)
    # The table gives ε-sharpness its unit: it is a loss increase in percent.
    assert re.search(r"ε-sharpness ε=0.001 full\s+[0-9.e+-]+ %", out), out
    assert re.search(r"average\s+ρ=0.05 sphere plain\s+Δloss [0-9.e+-]+ ± ", out), out
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "-q")
    assert code == 0 and err == ""


def test_json_output_path_is_checked_before_the_analysis(capsys, toolkit_ckpt, tmp_path):
    # A missing folder is created up front (as `train --out` does) and the report lands in it.
    target = tmp_path / "new" / "deeper" / "report.json"
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--no-trace", "--json", target)
    assert code == 0, err
    assert json.loads(target.read_text())["schema"] == "sharpness.report/1"
    # A folder that cannot exist (a file is in the way) is refused before any measure runs, naming the flag.
    (tmp_path / "plain-file").write_text("")
    result = run_cli(capsys, "analyze", toolkit_ckpt, "--json", tmp_path / "plain-file" / "report.json")
    assert_input_error(result, "--json", "plain-file")
    assert ".tmp" not in result[2] and "done" not in result[2]
    assert_input_error(run_cli(capsys, "info", toolkit_ckpt, "--json", tmp_path), "--json", "a directory")
    assert_input_error(run_cli(capsys, "landscape", toolkit_ckpt, "--out", tmp_path / "plain-file" / "l"), "--out")
