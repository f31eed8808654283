"""Run directories: manifest checks, atomic files, done markers."""

import json

import numpy as np
import pytest
import torch

from sharpness.errors import InputError
from sharpness.files.rundir import RunDir, array_digest, atomic_write


def test_manifest_is_written_and_an_equal_one_reopens(tmp_path):
    RunDir(tmp_path / "run", {"kind": "plane", "grid": (3, 4)})
    assert json.loads((tmp_path / "run" / "manifest.json").read_text()) == {"kind": "plane", "grid": [3, 4]}
    # a tuple and a list are the same JSON: reopening with the tuple form must be accepted
    run = RunDir(tmp_path / "run", {"grid": (3, 4), "kind": "plane"})
    assert run.manifest == {"kind": "plane", "grid": [3, 4]}


def test_a_different_manifest_is_refused_naming_the_keys(tmp_path):
    RunDir(tmp_path, {"kind": "plane", "cfg": {"lr": 0.1, "seed": 0}, "theta": "abc"})
    with pytest.raises(InputError, match=r"cfg\.lr.*theta|theta.*cfg\.lr") as err:
        RunDir(tmp_path, {"kind": "plane", "cfg": {"lr": 0.2, "seed": 0}, "theta": "abd"})
    assert "seed" not in str(err.value) and "\n" not in str(err.value)


def test_an_unreadable_manifest_is_an_input_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="JSON manifest"):
        RunDir(tmp_path, {"kind": "x"})


def test_done_markers_and_listing(tmp_path):
    run = RunDir(tmp_path, {"k": 1})
    assert not run.done("row-00001") and run.completed() == []
    run.mark_done("row-00001")
    run.mark_done("row-00000")
    assert run.done("row-00001") and run.completed() == ["row-00000", "row-00001"]
    assert RunDir(tmp_path, {"k": 1}).done("row-00000")  # survives reopening
    for bad in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(ValueError):
            run.done(bad)


def test_npz_and_json_round_trip_without_pickle(tmp_path):
    run = RunDir(tmp_path, {"k": 1})
    a = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    run.save_npz("block", loss=a, acc=torch.tensor([0.5, 1.0]), mask=np.array([True, False]))
    back = run.load_npz("block")
    assert np.array_equal(back["loss"], a) and back["loss"].dtype == np.float64
    assert np.array_equal(back["acc"], [0.5, 1.0]) and back["mask"].dtype == bool
    run.write_json("summary.json", {"b": 2, "a": [1, 2]})
    assert run.read_json("summary.json") == {"a": [1, 2], "b": 2}
    assert [p.name for p in run.files()] == ["block.npz", "summary.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.bin"
    atomic_write(target, lambda fh: fh.write(b"old"))

    def broken(fh):
        fh.write(b"half of the new con")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.bin"]


def test_array_digest_sees_values_dtype_and_shape():
    x = np.arange(6, dtype=np.float64)
    assert array_digest(x) == array_digest(torch.arange(6, dtype=torch.float64))
    assert array_digest(x) != array_digest(x.astype(np.float32))
    assert array_digest(x) != array_digest(x.reshape(2, 3))
    y = x.copy()
    y[3] = np.nextafter(y[3], 10)
    assert array_digest(x) != array_digest(y)
    assert array_digest(x, y) != array_digest(y, x)
