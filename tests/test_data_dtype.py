"""The dtype the user asked for, end to end: a float64 analysis never sees a float32 rounding of the user's data,
and integer token ids stay integers (issue #27, item 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import sharpness
from sharpness.data import dataset_from_spec, hash_tensors, load_dataset
from sharpness.data.user import user_code_dataset

from cli_helpers import run_cli

FACTORY = """
from torch import nn
def make():
    return nn.Linear(4, 1, bias=False)
"""
SPECTRUM = np.array([18.0, 7.0, 3.0, 1.0])


def _regression(n: int = 40, seed: int = 0):
    """x with (2/N)·xᵀx = diag(18, 7, 3, 1) exactly in float64 (the Hessian of the mean squared error of a
    bias-free linear model, H = 2/N·XᵀX) and entries that float32 cannot hold: rounding x to float32 moves
    λ_max by ~1e-8 relative."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, 4)))
    x = q * np.sqrt(SPECTRUM * n / 2)
    y = x @ np.array([0.3, -0.2, 0.1, 0.5]) + 0.01 * np.random.default_rng(seed + 1).normal(size=n)
    return x, y[:, None]


@pytest.fixture
def float64_npz(tmp_path):
    x, y = _regression()
    np.savez(tmp_path / "reg.npz", x=x, y=y)
    (tmp_path / "factory.py").write_text(FACTORY)
    torch.manual_seed(0)
    torch.save(nn.Linear(4, 1, bias=False).state_dict(), tmp_path / "w.pt")
    return tmp_path, x, y


def test_the_closed_form_holds_in_float64_and_not_after_float32_rounding():
    x, _ = _regression()
    h64 = 2 / len(x) * x.T @ x
    x32 = x.astype(np.float32).astype(np.float64)
    h32 = 2 / len(x) * x32.T @ x32
    assert np.linalg.eigvalsh(h64)[-1] == pytest.approx(18, rel=1e-14)
    assert abs(np.linalg.eigvalsh(h32)[-1] / 18 - 1) > 1e-10  # the rounding this file guards against is visible


def test_analyze_float64_on_a_float64_npz_equals_the_api_and_the_exact_spectrum(capsys, float64_npz):
    d, x, y = float64_npz
    code, out, err = run_cli(capsys, "analyze", d / "w.pt", "--model", f"{d / 'factory.py'}:make",
                             "--data", d / "reg.npz", "--dtype", "float64", "--tol", "1e-10", "--no-trace",
                             "--top-k", "2", "--json", "-")
    assert code == 0, err
    report = json.loads(out)
    cli_top = report["hessian"]["top"]["values"]
    model = nn.Linear(4, 1, bias=False)
    model.load_state_dict(torch.load(d / "w.pt"))
    api = sharpness.analyze(model, torch.from_numpy(x), torch.from_numpy(y), dtype="float64", tol=1e-10,
                            trace=False, top_k=2).to_dict()
    api_top = api["hessian"]["top"]["values"]
    # Lanczos runs to the full dimension 4, so both are exact up to float64 rounding (~1e-15).
    np.testing.assert_allclose(cli_top, api_top, rtol=1e-12)
    np.testing.assert_allclose(cli_top, [18.0, 7.0], rtol=1e-12)
    assert report["analysis_set"]["input_dtype"] == "float64"
    assert report["analysis_set"]["sha256"] == api["analysis_set"]["sha256"]


def test_float64_loading_keeps_the_files_float64_and_records_it(float64_npz):
    d, x, _ = float64_npz
    ds32 = load_dataset(str(d / "reg.npz"))
    ds64 = load_dataset(str(d / "reg.npz"), dtype=torch.float64)
    assert ds32.x_train.dtype == torch.float32  # training's default: unchanged
    assert ds64.x_train.dtype == torch.float64 and torch.equal(ds64.x_train, torch.from_numpy(x))
    assert ds64.y_train.dtype == torch.float64
    assert ds32.spec["stored_x_dtype"] == ds64.spec["stored_x_dtype"] == "float64"
    assert (ds32.spec["x_dtype"], ds64.spec["x_dtype"]) == ("float32", "float64")
    # A spec recorded in float32 (a training checkpoint) rebuilds in float64 and still verifies its hash.
    again = dataset_from_spec(ds32.spec, dtype=torch.float64)
    assert torch.equal(again.x_train, ds64.x_train)
    assert dataset_from_spec(ds32.spec).spec["sha256"] == ds32.spec["sha256"]
    legacy = {k: v for k, v in ds32.spec.items() if k not in ("x_dtype", "y_dtype", "stored_x_dtype")}  # older
    assert dataset_from_spec(legacy, dtype=torch.float64).x_train.dtype == torch.float64
    # a float32 file is exact in float32: a float64 analysis stores (and hashes) it as a float32 one does
    np.savez(d / "reg32.npz", x=x.astype(np.float32), y=np.zeros((len(x), 1), np.float32))
    a, b = load_dataset(str(d / "reg32.npz")), load_dataset(str(d / "reg32.npz"), dtype=torch.float64)
    assert b.x_train.dtype == torch.float32 and a.spec["sha256"] == b.spec["sha256"]
    tampered = dict(ds32.spec, sha256="0" * 64)
    with pytest.raises(sharpness.InputError, match="sha256"):
        dataset_from_spec(tampered, dtype=torch.float64)


def test_integer_token_ids_stay_integers_from_a_data_function_and_an_npz(tmp_path):
    ids = torch.randint(0, 50, (12, 6), generator=torch.Generator().manual_seed(0))
    labels = torch.arange(12) % 3
    ds = user_code_dataset("f.py:fn", (ids, labels))
    assert ds.x_train.dtype == torch.int64 and torch.equal(ds.x_train, ids)
    assert ds.spec["x_dtype"] == "int64"
    np.savez(tmp_path / "tok.npz", x=ids.numpy().astype(np.int32), y=labels.numpy())
    ds = load_dataset(str(tmp_path / "tok.npz"), dtype=torch.float64)
    assert ds.x_train.dtype == torch.int64 and torch.equal(ds.x_train, ids)
    assert dataset_from_spec(ds.spec).x_train.dtype == torch.int64
    # a checkpoint written before dtypes were recorded trained on these integers as float32: it still does
    old = load_dataset(str(tmp_path / "tok.npz"))
    legacy = {k: v for k, v in old.spec.items() if k not in ("x_dtype", "y_dtype", "stored_x_dtype")}
    legacy["sha256"] = hash_tensors([("x_train", ids.float()), ("y_train", labels), ("x_test", None),
                                     ("y_test", None)])
    rebuilt = dataset_from_spec(legacy)
    assert rebuilt.x_train.dtype == torch.float32 and torch.equal(rebuilt.x_train, ids.float())
    # pixels stored as uint8 are images, not token ids: they become floating as before
    np.savez(tmp_path / "img.npz", x=np.arange(24, dtype=np.uint8).reshape(12, 2), y=labels.numpy())
    assert load_dataset(str(tmp_path / "img.npz")).x_train.dtype == torch.float32


def test_a_gap_in_the_labels_is_said_in_one_line_by_training(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = np.arange(40) % 10
    y[4] = 50  # 0–9 and one stray 50: 51 classes, 40 of which never occur
    np.savez(tmp_path / "gap.npz", x=x, y=y)
    ds = load_dataset(str(tmp_path / "gap.npz"))
    assert ds.spec["num_classes"] == 51 and ds.spec["num_classes_inferred"]["distinct_labels"] == 11
    base = ("train", "--model", "mlp", "--epochs", "1", "--batch-size", "20", "--out", tmp_path / "m.pt")
    code, _, err = run_cli(capsys, *base, "--data", tmp_path / "gap.npz")
    assert code == 0, err
    lines = [line for line in err.splitlines() if "classes inferred" in line]
    assert len(lines) == 1 and "51 classes inferred from the largest label 50, but only 11 distinct" in lines[0]
    assert torch.load(tmp_path / "m.pt", weights_only=True)["data"]["num_classes"] == 51
    # said explicitly, or no gap: nothing to say
    code, _, err = run_cli(capsys, *base, "--data", tmp_path / "gap.npz", "--data-kwargs", '{"num_classes": 51}')
    assert code == 0 and "classes inferred" not in err
    np.savez(tmp_path / "full.npz", x=x, y=np.arange(40) % 10)
    code, _, err = run_cli(capsys, *base, "--data", tmp_path / "full.npz")
    assert code == 0 and "classes inferred" not in err
