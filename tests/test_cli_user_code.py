"""``sharpness analyze CKPT --model FILE.py:fn --data FILE.py:fn [--loss/--forward FILE.py:fn]`` from the shell."""

import json
import textwrap

import pytest
import torch

from cli_helpers import assert_input_error, run_cli

USER = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    class Dicts(Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(30, 4, generator=g, dtype=torch.float64)
            self.y = torch.randint(0, 3, (30,), generator=g)
        def __len__(self):
            return 30
        def __getitem__(self, i):
            return {"features": self.x[i], "labels": self.y[i]}

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()

    def loader(split="train"):
        return DataLoader(Dicts(), batch_size=8, shuffle=True)

    def tensors():
        d = Dicts()
        return d.x, d.y

    def fwd(model, batch):
        return model(batch["features"])

    def loss(outputs, batch):
        return F.cross_entropy(outputs, batch["labels"], reduction="none")

    def scalar_loss(outputs, batch):
        return F.cross_entropy(outputs, batch["labels"])

    def generator():
        return (b for b in loader())

    def tuple_loader():
        from torch.utils.data import TensorDataset
        d = Dicts()
        return DataLoader(TensorDataset(d.x, d.y), batch_size=8, shuffle=True)
''')


@pytest.fixture
def user(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(USER)
    ns: dict = {}
    exec(compile(USER, str(path), "exec"), ns)
    ckpt = tmp_path / "ckpt.pt"
    torch.save(ns["net"]().state_dict(), ckpt)
    return path, ckpt, ns


def test_analyze_a_foreign_state_dict_on_the_users_loader_loss_and_forward(capsys, user):
    path, ckpt, ns = user
    base = ["analyze", ckpt, "--model", f"{path}:net", "--top-k", "2", "--bottom-k", "1", "--trace-probes", "9",
            "--dtype", "float64", "--device", "cpu", "--tol", "1e-10", "--json", "-"]
    code, out, err = run_cli(capsys, *base, "--data", f"{path}:loader", "--loss", f"{path}:loss",
                             "--forward", f"{path}:fwd")
    assert code == 0, err
    got = json.loads(out)
    code, out, err = run_cli(capsys, *base, "--data", f"{path}:tensors")  # the same samples as tensors
    assert code == 0, err
    ref = json.loads(out)
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-12)
    assert got["hessian"]["top"]["values"] == pytest.approx(ref["hessian"]["top"]["values"], rel=1e-10)
    assert got["analysis_set"]["sample_sha256"] != ref["analysis_set"]["sample_sha256"]  # dicts vs tuples
    assert got["analysis_set"]["n_samples"] == 30 and got["analysis_set"]["dataset"] == f"{path}:loader"
    assert got["config"]["loss"] == f"callable:{path}:loss"
    assert got["config"]["objective"]["forward"] == f"{path}:fwd"
    # the built-in loss on dict batches needs only the forward
    code, out, err = run_cli(capsys, *base, "--data", f"{path}:loader", "--forward", f"{path}:fwd")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(ref["accuracy"], rel=1e-12)


def test_user_code_errors_are_one_line(capsys, user):
    path, ckpt, _ = user
    base = ["analyze", ckpt, "--model", f"{path}:net", "--device", "cpu", "--dtype", "float64", "--top-k", "1",
            "--no-trace"]
    assert_input_error(run_cli(capsys, *base, "--data", f"{path}:loader", "--forward", f"{path}:fwd",
                               "--loss", f"{path}:scalar_loss"), "per-example losses", "got a scalar")
    assert_input_error(run_cli(capsys, *base, "--data", f"{path}:loader", "--forward", f"{path}:fwd",
                               "--target-key", "y"), "target key 'y'", "keys ['features', 'labels']")
    assert_input_error(run_cli(capsys, *base, "--data", f"{path}:generator", "--forward", f"{path}:fwd"),
                       "re-iterable", "generator")
    assert_input_error(run_cli(capsys, *base, "--data", f"{path}:nope"), "data function", "no such attribute")
    assert_input_error(run_cli(capsys, *base, "--data", f"{path}:loader", "--loss", "hinge"), "--loss expects", "hinge")


def test_landscape_slices_the_users_loader(capsys, user, tmp_path):
    path, ckpt, ns = user
    code, out, err = run_cli(capsys, "landscape", ckpt, "--model", f"{path}:net", "--data", f"{path}:tuple_loader",
                             "--dims", "1", "--points", "3", "--device", "cpu", "--dtype", "float64",
                             "--out", tmp_path / "land")
    assert code == 0, err
    import numpy as np

    arrays = np.load(tmp_path / "land" / "landscape_1d.npz")
    x, y = ns["tensors"]()
    with torch.no_grad():
        want = torch.nn.functional.cross_entropy(ns["net"]()(x), y).item()
    assert float(arrays["train_loss"][1]) == pytest.approx(want, rel=1e-12)  # alpha = 0 is the checkpoint


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_ranks_stream_the_users_loader_to_the_one_process_report(capsys, user, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    path, ckpt, _ = user
    args = ["analyze", str(ckpt), "--model", f"{path}:net", "--data", f"{path}:loader", "--forward", f"{path}:fwd",
            "--dtype", "float64", "--device", "cpu", "--top-k", "1", "--bottom-k", "1", "--trace-probes", "9"]
    one = tmp_path / "one.json"
    assert run_cli(capsys, *args, "--json", one)[0] == 0
    two = tmp_path / "two.json"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "sharpness", *args, "--json", str(two)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert b["environment"]["distributed"]["world_size"] == 2
    assert a["analysis_set"] == b["analysis_set"]  # every rank hashes the whole set; each evaluates its batches
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-12)
    assert b["hessian"]["top"]["values"] == pytest.approx(a["hessian"]["top"]["values"], rel=1e-10)
    assert b["hessian"]["trace"]["value"] == pytest.approx(a["hessian"]["trace"]["value"], rel=1e-10)
