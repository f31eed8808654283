"""The worked examples in examples/ run as users run them (each ``main(argv)`` in-process, to share the imports),
with their numbers checked. The Hugging Face and Lightning ones skip only without their packages (CI has them)."""

import importlib.util
from pathlib import Path

import pytest
import torch

from sharpness.hessian import dense_hessian
from sharpness.objective import Objective

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_loop_analyzes_its_own_dataloader(capsys):
    plain = example("plain_loop")
    model, report = plain.main(["--steps", "60"])
    assert "λ_max" in capsys.readouterr().out
    x, y = plain.make_data().tensors
    # Independent truth: the dense float64 Hessian of the mean loss over the same 256 samples.
    H = dense_hessian(Objective(model, x, y, dtype=torch.float64))
    eig = torch.linalg.eigvalsh(H)
    # float32 analysis, Lanczos tol 1e-4 on the eigenvalue error: well inside 1e-3.
    assert report["hessian"]["top"]["values"][0] == pytest.approx(float(eig[-1]), rel=1e-3)
    assert report["hessian"]["bottom"]["values"][0] == pytest.approx(float(eig[0]), abs=1e-3 * float(eig[-1]))
    assert report["analysis_set"]["n_samples"] == 256


def test_lightning_fit_example_tracks_and_logs(tmp_path, capsys):
    pytest.importorskip("lightning")
    records = example("lightning_fit").main(["--steps", "20", "--every", "10", "--logs", str(tmp_path)])
    assert [r["step"] for r in records] == [0, 10, 20]
    assert all(r["eos_threshold"] == pytest.approx(20.0) for r in records)  # 2/η, η = 0.1
    (metrics,) = tmp_path.glob("sharpness/version_*/metrics.csv")
    assert "sharpness/lambda_max" in metrics.read_text().splitlines()[0]


def test_hf_trainer_example_tracks_logs_gates_and_saves(tmp_path, capsys, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("tensorboard")
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    hf = example("hf_trainer")
    out = hf.main(["--steps", "8", "--every", "4", "--out", str(tmp_path)])
    assert [r["step"] for r in out["records"]] == [0, 4, 8]
    logged = [e["sharpness/lambda_max"] for e in out["log_history"] if "sharpness/lambda_max" in e]
    assert logged == [r["lambda_max"] for r in out["records"]]
    assert out["report"]["gate"]["passed"] and list(tmp_path.glob("runs/*/events.out.tfevents.*"))
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "model" / "model.safetensors").is_file()
    assert "gate passed" in capsys.readouterr().out

    with pytest.raises(SystemExit) as failed:
        hf.main(["--steps", "1", "--every", "1", "--max-eigenvalue", "1e-3", "--out", str(tmp_path / "fail")])
    assert failed.value.code == 3 and "gate FAILED: max_eigenvalue" in capsys.readouterr().err
