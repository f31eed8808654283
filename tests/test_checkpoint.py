"""Tests for sharpness.checkpoint: round trips, safe loading, foreign files, mismatches, describe."""

from __future__ import annotations

import json
import os
import pickle
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from sharpness.checkpoint import (
    FORMAT,
    VERSION,
    Checkpoint,
    build_model_from_checkpoint,
    describe,
    load_checkpoint,
    save_checkpoint,
)
from sharpness.data import load_dataset
from sharpness.errors import InputError
from sharpness.models import build_from_spec, build_model, model_spec

FOREIGN = "expected a PyTorch checkpoint (.pt) or .safetensors file, got"


class PickledNet(nn.Module):
    """A user class: `torch.save(PickledNet())` pickles a reference to it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x)


class CreatesFile:
    """Unpickling this (without restrictions) creates `marker`: a stand-in for a malicious payload."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def trained(tmp_path):
    ds = load_dataset("blobs", n=30, n_test=10, dim=4, classes=3, seed=1)
    spec = model_spec("mlp", ds.spec["input_shape"], ds.spec["num_classes"], hidden=[8], batchnorm=True)
    model = build_from_spec(spec, seed=5)
    model(ds.x_train)  # a train-mode pass moves the BatchNorm running statistics
    path = tmp_path / "run.pt"
    save_checkpoint(
        path, model=spec, state_dict=model.state_dict(), data=ds.spec,
        train_config={"lr": 0.1, "batch_size": 16, "betas": (0.9, 0.99)},
        metrics={"train_loss": np.float32(0.25), "acc": 0.9, "curve": np.array([1.0, 0.5])},
        history=[{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], seed=5, extra={"note": "hi"},
    )
    return path, model, ds, spec


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------------------------------------
# Round trip and format
# ----------------------------------------------------------------------------------------------------------


def test_round_trip(trained):
    path, model, ds, spec = trained
    ck = load_checkpoint(path)
    assert isinstance(ck, Checkpoint) and ck.kind == "sharpness" and ck.path == str(path)
    assert ck.model == spec and ck.data == ds.spec and ck.seed == 5 and ck.extra == {"note": "hi"}
    assert ck.train_config == {"lr": 0.1, "batch_size": 16, "betas": [0.9, 0.99]}
    assert ck.metrics == {"train_loss": 0.25, "acc": 0.9, "curve": [1.0, 0.5]}
    assert ck.history[-1] == {"step": 2, "loss": 0.5}
    assert set(ck.versions) == {"sharpness", "torch", "numpy", "python"}
    rebuilt = build_model_from_checkpoint(ck)
    assert _same_weights(model, rebuilt)
    assert rebuilt.training  # returned as built; the caller picks eval()/train()
    model.eval()
    rebuilt.eval()
    assert torch.equal(model(ds.x_test), rebuilt(ds.x_test))


def test_file_opens_with_plain_weights_only_torch_load(trained):
    path, model, _, _ = trained
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == VERSION == 1
    assert set(raw) == {"format", "version", "model", "state_dict", "data", "train_config", "metrics", "history",
                        "seed", "versions", "extra"}
    assert type(raw["state_dict"]) is dict and raw["state_dict"].keys() == model.state_dict().keys()
    assert all(type(v) is str for v in raw["versions"].values())


def test_save_is_atomic_and_overwrites(trained):
    path, model, _, spec = trained
    before = sorted(os.listdir(path.parent))
    save_checkpoint(path, model=spec, state_dict=model, metrics={"v": 2})
    assert sorted(os.listdir(path.parent)) == before  # no temp files left behind
    assert load_checkpoint(path).metrics == {"v": 2}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_save_errors(tmp_path):
    sd = {"w": torch.zeros(2)}
    with pytest.raises(InputError, match="existing directory.*missing"):
        save_checkpoint(tmp_path / "no" / "dir" / "x.pt", model=None, state_dict=sd)
    with pytest.raises(InputError, match="got directory"):
        save_checkpoint(tmp_path, model=None, state_dict=sd)
    with pytest.raises(InputError, match=r"metrics\['bad'\].*got builtins.object"):
        save_checkpoint(tmp_path / "x.pt", model=None, state_dict=sd, metrics={"bad": object()})
    with pytest.raises(InputError, match="str → Tensor"):
        save_checkpoint(tmp_path / "x.pt", model=None, state_dict={"w": [1, 2]})
    with pytest.raises(InputError, match="model_spec dict"):
        save_checkpoint(tmp_path / "x.pt", model="mlp", state_dict=sd)
    assert list(tmp_path.iterdir()) == []


def test_save_into_unwritable_directory(tmp_path, monkeypatch):
    # chmod cannot stop root, so simulate what the OS answers for a read-only directory
    import sharpness.files.rundir as R  # the package's one atomic write creates the temporary file

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(R.tempfile, "mkstemp", denied)
    with pytest.raises(InputError, match="expected a writable directory .*PermissionError: Permission denied"):
        save_checkpoint(tmp_path / "x.pt", model=None, state_dict={"w": torch.zeros(1)})
    assert not (tmp_path / "x.pt").exists()


def test_newer_version_and_malformed_are_refused(tmp_path):
    p = tmp_path / "v2.pt"
    torch.save({"format": FORMAT, "version": 2, "state_dict": {}}, p)
    with pytest.raises(InputError, match="version ≤ 1, got version 2"):
        load_checkpoint(p)
    torch.save({"format": FORMAT, "version": 1, "state_dict": {"a": 3}}, p)
    with pytest.raises(InputError, match="str → Tensor"):
        load_checkpoint(p)


# ----------------------------------------------------------------------------------------------------------
# Other people's files
# ----------------------------------------------------------------------------------------------------------


def test_bare_state_dict_needs_model(tmp_path):
    model = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[8], seed=0)
    p = tmp_path / "sd.pt"
    torch.save(model.state_dict(), p)
    ck = load_checkpoint(p)
    assert ck.kind == "state_dict" and ck.model is None and ck.metrics == {}
    with pytest.raises(InputError, match="bare state_dict.*--model"):
        build_model_from_checkpoint(ck)
    with pytest.raises(InputError, match="input_shape and num_classes for model 'mlp'.*--data"):
        build_model_from_checkpoint(ck, model="mlp", model_kwargs={"hidden": [8]})
    data_spec = load_dataset("blobs", n=10, dim=4, classes=3).spec
    rebuilt = build_model_from_checkpoint(ck, model="mlp", model_kwargs={"hidden": [8]}, data_spec=data_spec)
    assert _same_weights(model, rebuilt)
    rebuilt2 = build_model_from_checkpoint(ck, model="mlp", model_kwargs={"hidden": [8], "input_shape": [4], "num_classes": 3})
    assert _same_weights(model, rebuilt2)


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_wrapped_state_dict_is_unwrapped(tmp_path, key):
    sd = {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}
    p = tmp_path / "w.pt"
    torch.save({key: sd, "epoch": 7, "optimizer": {"state": {}}}, p)
    ck = load_checkpoint(p)
    assert ck.kind == "state_dict" and set(ck.state_dict) == {"weight", "bias"}
    assert ck.extra == {"wrapper_key": key, "other_keys": ["epoch", "optimizer"]}


def test_dict_that_is_not_a_state_dict(tmp_path):
    p = tmp_path / "d.pt"
    torch.save({"epoch": 3, "lr": 0.1}, p)
    with pytest.raises(InputError, match=r"state_dict \(a dict of tensors.*keys \[epoch, lr\]"):
        load_checkpoint(p)
    torch.save([torch.zeros(1)], p)
    with pytest.raises(InputError, match="pickled list"):
        load_checkpoint(p)


def test_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    model = build_model("linear", input_shape=(5,), num_classes=2, seed=0)
    p = tmp_path / "w.safetensors"
    st.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(p), metadata={"who": "me"})
    ck = load_checkpoint(p)
    assert ck.kind == "safetensors" and ck.extra == {"safetensors_metadata": {"who": "me"}}
    assert _same_weights(model, build_model_from_checkpoint(ck, model="linear", model_kwargs={"input_shape": [5], "num_classes": 2}))
    # detected by content even without the extension
    q = tmp_path / "w.bin"
    q.write_bytes(p.read_bytes())
    assert load_checkpoint(q).kind == "safetensors"
    r = tmp_path / "cut.safetensors"
    r.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(InputError, match=FOREIGN.replace("(", r"\(").replace(")", r"\)")):
        load_checkpoint(r)


def test_pickled_module_refused_then_accepted_with_trust(tmp_path):
    net = PickledNet()
    p = tmp_path / "module.pt"
    torch.save(net, p)
    with pytest.raises(InputError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    assert "PickledNet" in msg and f"{PickledNet.__module__}.PickledNet" in msg
    assert "refused as unsafe (unpickling it could run code); pass --trust-checkpoint to run code from this file" in msg
    assert "\n" not in msg
    with pytest.warns(UserWarning, match="weights_only=False"):
        ck = load_checkpoint(p, trust_checkpoint=True)
    assert ck.kind == "module" and ck.trusted and isinstance(ck.module, PickledNet)
    assert ck.extra["module_class"].endswith("PickledNet")
    rebuilt = build_model_from_checkpoint(ck)
    assert _same_weights(net, rebuilt) and rebuilt is not ck.module
    info = describe(ck)
    assert info["num_parameters"] == 8 and info["num_parameters_exact"]


BARE = "expected a torch.save file (a zip archive or torch's legacy format) or .safetensors, got a bare pickle"


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_bare_pickle_is_refused_unrun_even_with_trust(tmp_path, protocol):
    # torch.load would unpickle a bare pickle.dump's first object (running its code) before failing on the
    # missing magic number: such a file is refused before anything in it is unpickled, opt-in or not.
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pkl"
    with open(p, "wb") as f:
        pickle.dump({"weight": torch.zeros(2), "x": CreatesFile(str(marker))}, f, protocol=protocol)
    for trust in (False, True):
        with pytest.raises(InputError, match="even with --trust-checkpoint") as info:
            load_checkpoint(p, trust_checkpoint=trust)
        assert str(info.value).startswith(BARE) and "referencing" in str(info.value)
        assert not marker.exists()
    q = tmp_path / "module.pkl"
    with open(q, "wb") as f:
        pickle.dump(PickledNet(), f, protocol=protocol)
    with pytest.raises(InputError, match="referencing"):
        load_checkpoint(q, trust_checkpoint=True)


@pytest.mark.parametrize("protocol", [2, 3])  # what torch's weights-only reader parses in a legacy stream
def test_legacy_torch_save_still_loads(tmp_path, protocol):
    # torch.save's legacy stream is a sequence of pickles too, opening with torch's magic number: it is not bare.
    net = PickledNet()
    p = tmp_path / "legacy.pt"
    torch.save(net.state_dict(), p, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    ck = load_checkpoint(p)
    assert ck.kind == "state_dict" and all(torch.equal(ck.state_dict[k], v) for k, v in net.state_dict().items())
    q = tmp_path / "legacy_module.pt"
    torch.save(net, q, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    with pytest.raises(InputError, match="refused as unsafe"):
        load_checkpoint(q)
    with pytest.warns(UserWarning, match="weights_only=False"):
        assert load_checkpoint(q, trust_checkpoint=True).kind == "module"


def test_plain_value_pickle_is_bare_too(tmp_path):
    p = tmp_path / "plain.pkl"
    p.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=0))
    with pytest.raises(InputError) as info:
        load_checkpoint(p, trust_checkpoint=True)
    assert str(info.value).startswith(BARE + " (pickle.dump):")


def test_malicious_payload_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": CreatesFile(str(marker))}, p)
    with pytest.raises(InputError, match=r"referencing (io|builtins)?\.?open: refused as unsafe"):
        load_checkpoint(p)
    assert not marker.exists()
    # the opt-in is what makes the difference: with it, the file's code runs (and the result is still rejected)
    with pytest.warns(UserWarning), pytest.raises(InputError):
        load_checkpoint(p, trust_checkpoint=True)
    assert marker.exists()


def test_empty_truncated_and_foreign_files(tmp_path, trained):
    path, *_ = trained
    cases = {}
    (tmp_path / "empty.pt").write_bytes(b"")
    cases["empty.pt"] = "an empty file"
    data = path.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    cases["half.pt"] = "truncated"
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    cases["noise.pt"] = "unrecognized binary file"
    (tmp_path / "notes.txt").write_text("these are not weights\n" * 5)
    cases["notes.txt"] = "a text file"
    np.savez(tmp_path / "arrays.npz", x=np.zeros(3))
    cases["arrays.npz"] = "a NumPy .npz archive"
    for name, what in cases.items():
        with pytest.raises(InputError) as e:
            load_checkpoint(tmp_path / name)
        assert str(e.value).startswith(FOREIGN) and what in str(e.value), (name, str(e.value))
        assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(InputError, match="got directory"):
        load_checkpoint(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# Building: mismatches, non-finite weights, factories, dtype
# ----------------------------------------------------------------------------------------------------------


def test_state_dict_mismatch_is_one_line(trained):
    path, *_ = trained
    ck = load_checkpoint(path)
    with pytest.raises(InputError) as e:
        build_model_from_checkpoint(ck, model="mlp", model_kwargs={"hidden": [16]})
    msg = str(e.value)
    assert "first shape mismatch 1.weight: checkpoint [8, 4] vs model [16, 4]" in msg and "\n" not in msg
    with pytest.raises(InputError, match=r"missing key\(s\).*unexpected key\(s\)"):
        build_model_from_checkpoint(ck, model="mlp", model_kwargs={"hidden": [8], "batchnorm": False})
    prefixed = Checkpoint(**{**ck.__dict__, "state_dict": {"module." + k: v for k, v in ck.state_dict.items()}})
    with pytest.raises(InputError, match="DataParallel"):
        build_model_from_checkpoint(prefixed)


def test_nonfinite_weights_name_the_tensor(tmp_path):
    model = build_model("linear", input_shape=(3,), num_classes=2, seed=0)
    sd = model.state_dict()
    sd["1.weight"][0, 0] = float("nan")
    sd["1.bias"][1] = float("inf")
    p = tmp_path / "nan.pt"
    save_checkpoint(p, model=model_spec("linear", (3,), 2), state_dict=sd)
    ck = load_checkpoint(p)
    with pytest.raises(InputError, match=r"tensor '1\.weight' with 1 NaN and 0 Inf of 6 entries"):
        build_model_from_checkpoint(ck)
    assert describe(ck)["nonfinite_tensors"] == ["1.weight", "1.bias"]


def test_factory_checkpoint_needs_confirmation(tmp_path):
    f = tmp_path / "facts.py"
    f.write_text(textwrap.dedent("""
        from torch import nn
        def make(num_classes, width=3):
            return nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, num_classes))
    """))
    ref = f"{f}:make"
    spec = model_spec(ref, (4,), 2, width=5)
    model = build_from_spec(spec, seed=1)
    p = tmp_path / "f.pt"
    save_checkpoint(p, model=spec, state_dict=model.state_dict())
    ck = load_checkpoint(p)
    with pytest.raises(InputError, match=r"confirmation to run model factory.*pass --model"):
        build_model_from_checkpoint(ck)
    assert _same_weights(model, build_model_from_checkpoint(ck, model=ref))  # recorded kwargs reused
    assert _same_weights(model, build_model_from_checkpoint(load_checkpoint(p, trust_checkpoint=True)))
    info = describe(ck)  # runs no user code
    assert info["num_parameters"] == 4 * 5 + 5 + 5 * 2 + 2 and not info["num_parameters_exact"]


def test_float64_checkpoint_builds_float64_model(tmp_path):
    spec = model_spec("mlp", (4,), 2, hidden=[3])
    model = build_from_spec(spec, seed=0).double()
    p = tmp_path / "f64.pt"
    save_checkpoint(p, model=spec, state_dict=model.state_dict())
    rebuilt = build_model_from_checkpoint(load_checkpoint(p))
    assert next(rebuilt.parameters()).dtype == torch.float64 and _same_weights(model, rebuilt)


def test_build_does_not_touch_global_rng(trained):
    path, *_ = trained
    ck = load_checkpoint(path)
    state = torch.get_rng_state()
    build_model_from_checkpoint(ck)
    assert torch.equal(torch.get_rng_state(), state)


def test_describe_is_json_and_informative(trained):
    path, model, ds, spec = trained
    info = describe(load_checkpoint(path))
    assert json.loads(json.dumps(info)) == info
    assert info["kind"] == "sharpness" and info["model"] == spec and info["seed"] == 5
    assert info["num_parameters"] == sum(p.numel() for p in model.parameters()) and info["num_parameters_exact"]
    assert info["num_tensors"] == len(model.state_dict())
    assert {"name": "1.weight", "shape": [8, 4], "dtype": "float32"} in info["tensors"]
    assert info["data"]["sha256"] == ds.spec["sha256"] and info["metrics"]["acc"] == 0.9
    assert info["history_length"] == 2 and info["last_history"] == {"step": 2, "loss": 0.5}
    assert info["dtypes"] == {"float32": 8, "int64": 1}  # 2 Linear × (w, b) + BN (w, b, mean, var); BN count
