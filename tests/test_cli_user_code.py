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


def _user_module(tmp_path, name: str, source: str):
    """``source`` written to ``tmp_path/name`` (what the CLI imports) and executed here too (what tests compare)."""
    path = tmp_path / name
    path.write_text(source)
    ns: dict = {}
    exec(compile(source, str(path), "exec"), ns)
    return path, ns


@pytest.fixture
def user(tmp_path):
    path, ns = _user_module(tmp_path, "mine.py", USER)
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
    assert a["analysis_set"] == b["analysis_set"]  # each rank hashes only its batches; the digests are pooled
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-12)
    assert b["hessian"]["top"]["values"] == pytest.approx(a["hessian"]["top"]["values"], rel=1e-10)
    assert b["hessian"]["trace"]["value"] == pytest.approx(a["hessian"]["trace"]["value"], rel=1e-10)


# --- `sharpness train` / `sweep` --data FILE.py:fn ---------------------------------------------------------------

TRAIN_DATA = textwrap.dedent('''
    import torch
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    def tensors(split="train"):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        x = torch.randn(60 if split == "train" else 20, 3, generator=g)
        return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()

    def loader(split="train"):  # its batch size and shuffling are not what training uses
        return DataLoader(TensorDataset(*tensors(split)), batch_size=7, shuffle=True)

    class Pairs(Dataset):
        def __len__(self):
            return 60
        def __getitem__(self, i):
            x, y = tensors()
            return x[i], int(y[i])

    def samples():  # no split: no test split
        return Pairs()

    def text():
        return "not data"

    def short_labels():
        x, y = tensors()
        return x, y[:50]

    def flat_x():
        return torch.arange(60.0), torch.zeros(60, dtype=torch.long)

    def float_labels():
        x, y = tensors()
        return x, y.float()

    def dicts():
        return DataLoader([{"x": torch.zeros(3), "y": 0}] * 8, batch_size=4)

    class Augmenting(Dataset):
        def __len__(self):
            return 60
        def __getitem__(self, i):
            return torch.randn(3), 0

    def augmenting():
        return DataLoader(Augmenting(), batch_size=10)
''')

TRAIN = ["--model", "mlp", "--model-kwargs", '{"hidden": [8]}', "--batch-size", 10, "--epochs", 2, "--seed", 3,
         "--device", "cpu"]


@pytest.fixture
def train_data(tmp_path):
    return _user_module(tmp_path, "data_fns.py", TRAIN_DATA)


def _same_weights(a, b):
    from sharpness.checkpoint import load_checkpoint

    a, b = load_checkpoint(a), load_checkpoint(b)
    return a.state_dict.keys() == b.state_dict.keys() and all(torch.equal(a.state_dict[k], b.state_dict[k])
                                                              for k in a.state_dict)


def test_train_on_a_data_function_equals_the_same_tensors_as_npz_and_records_the_reference(capsys, train_data, tmp_path):
    import numpy as np

    from sharpness.checkpoint import load_checkpoint

    path, ns = train_data
    (x, y), (xt, yt) = ns["tensors"](), ns["tensors"]("test")
    np.savez(tmp_path / "same.npz", x=x.numpy(), y=y.numpy(), x_test=xt.numpy(), y_test=yt.numpy())
    ref = f"{path}:tensors"
    for data, out in ((ref, "code.pt"), (tmp_path / "same.npz", "npz.pt"), (f"{path}:loader", "loader.pt")):
        code, _, err = run_cli(capsys, "train", "--data", data, *TRAIN, "--out", tmp_path / out)
        assert code == 0, err
    assert _same_weights(tmp_path / "code.pt", tmp_path / "npz.pt")  # bit for bit, the same seeded batches
    assert _same_weights(tmp_path / "code.pt", tmp_path / "loader.pt")  # the loader's shuffle is not used
    code_ckpt, npz_ckpt = load_checkpoint(tmp_path / "code.pt"), load_checkpoint(tmp_path / "npz.pt")
    assert code_ckpt.data["name"] == "user-code" and code_ckpt.data["args"]["ref"] == ref
    assert code_ckpt.data["sha256"] == npz_ckpt.data["sha256"]  # the materialized tensors' hash_tensors digest
    assert (code_ckpt.data["n_train"], code_ckpt.data["n_test"]) == (60, 20)
    assert code_ckpt.train_config["data"] == ref
    assert code_ckpt.metrics["test_acc"] == npz_ckpt.metrics["test_acc"] is not None
    # a function without split= has no test split; a map-style Dataset of (x, int) samples is read in order
    code, _, err = run_cli(capsys, "train", "--data", f"{path}:samples", *TRAIN, "--out", tmp_path / "samples.pt")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "samples.pt").data["n_test"] is None
    assert _same_weights(tmp_path / "samples.pt", tmp_path / "code.pt")  # the same train split; test is only measured


def test_analyze_a_user_code_checkpoint_needs_the_reference_named_again(capsys, train_data, tmp_path):
    import numpy as np

    path, ns = train_data
    ref = f"{path}:tensors"
    (x, y), (xt, yt) = ns["tensors"](), ns["tensors"]("test")
    np.savez(tmp_path / "same.npz", x=x.numpy(), y=y.numpy(), x_test=xt.numpy(), y_test=yt.numpy())
    for data, out in ((ref, "code.pt"), (tmp_path / "same.npz", "npz.pt")):
        assert run_cli(capsys, "train", "--data", data, *TRAIN, "--out", tmp_path / out)[0] == 0
    assert_input_error(run_cli(capsys, "analyze", tmp_path / "code.pt", "--no-trace"),
                       f"expected --data {ref} again", "user code", "never from a recorded reference")
    base = ["--top-k", "1", "--bottom-k", "1", "--no-trace", "--tol", "1e-8", "--json", "-"]
    for split in ("train", "test"):
        code, out, err = run_cli(capsys, "analyze", tmp_path / "code.pt", "--data", ref, "--split", split, *base)
        assert code == 0, err
        got = json.loads(out)
        code, out, err = run_cli(capsys, "analyze", tmp_path / "npz.pt", "--split", split, *base)
        assert code == 0, err
        want = json.loads(out)
        assert got["analysis_set"]["n_samples"] == want["analysis_set"]["n_samples"] == (60 if split == "train" else 20)
        assert got["loss"] == want["loss"] and got["hessian"]["top"]["values"] == want["hessian"]["top"]["values"]


def test_bad_data_functions_for_training_are_one_line_errors(capsys, train_data, tmp_path):
    path, _ = train_data
    out = tmp_path / "r.pt"

    def train(fn, *more):
        return run_cli(capsys, "train", "--data", f"{path}:{fn}", *TRAIN, *more, "--out", out)

    assert_input_error(train("text"), "data function", "got str")
    assert_input_error(train("short_labels"), "as many train labels as samples", "60 x vs 50 y")
    assert_input_error(train("flat_x"), "train x of shape (n, ...)", "got shape [60]")
    assert_input_error(train("float_labels", "--loss", "cross-entropy"), "cross-entropy expects", "float targets")
    assert_input_error(train("dicts"), "(x, y) tensor batches", "dict with keys ['x', 'y']")
    assert_input_error(train("augmenting"), "same samples on every pass", "augmentation")
    assert_input_error(train("tensors", "--data-kwargs", '{"n": 3}'), "no data_kwargs", "['n']")
    assert_input_error(train("missing"), "data function", "no such attribute")
    assert not out.exists() and not (tmp_path / "r.pt.resume").exists()


def test_sweep_on_a_data_function(capsys, train_data, tmp_path):
    from sharpness.checkpoint import load_checkpoint

    path, _ = train_data
    code, out, err = run_cli(capsys, "sweep", "--data", f"{path}:tensors", "--model", "mlp", "--model-kwargs",
                             '{"hidden": [8]}', "--batch-sizes", "10,30", "--epochs", 1, "--device", "cpu",
                             "--out", tmp_path / "sw", "--json", "-")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["test_acc"] is not None for r in rows)
    assert load_checkpoint(rows[0]["checkpoint"]).data["args"]["ref"] == f"{path}:tensors"
