"""Tests for sharpness.data: every file format is generated in tmp_path; real Fashion-MNIST is optional."""

from __future__ import annotations

import gzip
import math
import hashlib
import json
import pickle
import random
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sharpness import data as D
from sharpness.data import Dataset, dataset_from_spec, dataset_names, hash_tensors, load_dataset, read_idx
from sharpness.errors import InputError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# ----------------------------------------------------------------------------------------------------------
# Fixture writers (test-only helpers)
# ----------------------------------------------------------------------------------------------------------

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
              np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False, magic: bytes | None = None, cut: int = 0) -> Path:
    """Write ``array`` as an IDX file (big-endian); ``magic`` overrides the 4 magic bytes, ``cut`` drops tail bytes."""
    array = np.asarray(array)
    header = magic if magic is not None else bytes([0, 0, _IDX_CODES[array.dtype], array.ndim])
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if cut:
        payload = payload[:-cut]
    if gz:
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def make_idx_dir(d: Path, *, n_train: int = 12, n_test: int = 5, hw: tuple[int, int] = (4, 3), gz: bool = False,
                 seed: int = 0, test: bool = True) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, *hw), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=n_train).astype(np.uint8),
    }
    if test:
        arrays["t10k-images-idx3-ubyte"] = rng.integers(0, 256, size=(n_test, *hw), dtype=np.uint8)
        arrays["t10k-labels-idx1-ubyte"] = rng.integers(0, 10, size=n_test).astype(np.uint8)
    for name, a in arrays.items():
        write_idx(d / (name + (".gz" if gz else "")), a, gz=gz)
    return arrays


def write_cifar_batch(path: Path, data: np.ndarray, labels, *, label_key: str = "labels", str_keys: bool = False,
                      protocol: int = 2, extra: dict | None = None) -> None:
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    obj = {key("data"): data, key(label_key): labels, key("batch_label"): b"testing batch"}
    obj.update(extra or {})
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def make_cifar10_dir(d: Path, *, per_batch: int = 3, str_keys: bool = False, protocol: int = 2) -> tuple[np.ndarray, np.ndarray]:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        write_cifar_batch(d / name, x, y, str_keys=str_keys, protocol=protocol)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


class _CreatesFile:
    """A pickle payload that would create ``marker`` when unpickled by an unrestricted unpickler."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------------------------------------------------
# Names, arguments, hashing
# ----------------------------------------------------------------------------------------------------------


def test_dataset_names_lists_every_loader():
    assert dataset_names() == sorted(["blobs", "cifar10", "cifar100", "digits", "fashion-mnist", "idx", "mnist",
                                      "mnist1d", "npz", "teacher-student", "text"])


def test_text_is_next_byte_windows_of_pythons_docs_and_rebuilds_from_its_spec(tmp_path):
    from sharpness.data import default_text

    text, where = default_text()
    ds = load_dataset("text", context=16, max_bytes=4000, test_fraction=0.25)
    n = (4000 - 1) // 16
    assert ds.x_train.dtype == torch.int64 and ds.x_train.shape == (n - math.ceil(0.25 * n), 16)
    assert ds.x_test.shape == (math.ceil(0.25 * n), 16)
    tokens = torch.tensor(list(text[:4000]))
    assert torch.equal(ds.x_train[3], tokens[48:64]) and torch.equal(ds.y_train[3], tokens[49:65])
    assert torch.equal(ds.y_test[-1], tokens[16 * (n - 1) + 1 : 16 * n + 1])
    assert ds.spec["text_sha256"] == hashlib.sha256(text[:4000]).hexdigest() and "pydoc_data" in where
    assert ds.spec["num_classes"] == 256 and ds.spec["input_shape"] == [16] and ds.spec["task"] == "language-model"
    assert dataset_from_spec(ds.spec).spec["sha256"] == ds.spec["sha256"]
    f = tmp_path / "mine.txt"
    f.write_bytes(b"abcabcabcabcabc")
    mine = load_dataset("text", path=str(f), context=4, test_fraction=0.0)
    assert mine.x_test is None and mine.x_train.tolist() == [[97, 98, 99, 97], [98, 99, 97, 98], [99, 97, 98, 99]]
    with pytest.raises(InputError, match="at least one training window"):
        load_dataset("text", path=str(f), context=40)


def test_unknown_name_lists_known_names():
    with pytest.raises(InputError, match=r"one of blobs, cifar10.*got 'imagenet'"):
        load_dataset("imagenet")


def test_unknown_keyword_is_rejected():
    with pytest.raises(InputError, match=r"dataset 'blobs'.*unknown colour"):
        load_dataset("blobs", colour="red")


def test_aliases_are_normalized():
    assert load_dataset("Teacher_Student", n=10, n_test=0).spec["name"] == "teacher-student"


def test_hash_tensors_matches_documented_recipe():
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float32)
    h = hashlib.sha256()
    h.update(b"a:<f4:[1, 2];")
    h.update(np.array([[1.0, 2.0]], dtype="<f4").tobytes())
    h.update(b"b:none;")
    assert hash_tensors([("a", x), ("b", None)]) == h.hexdigest()
    # dtype and shape are part of the hash
    assert hash_tensors([("a", x.double())]) != hash_tensors([("a", x)])
    assert hash_tensors([("a", x.reshape(2, 1))]) != hash_tensors([("a", x)])


def test_split_accessor_and_missing_test_split():
    ds = load_dataset("blobs", n=20, n_test=0)
    x, y = ds.split("train")
    assert x is ds.x_train and y is ds.y_train
    with pytest.raises(InputError, match="test split"):
        ds.split("test")
    with pytest.raises(InputError, match="'train' or 'test', got 'val'"):
        ds.split("val")
    assert "blobs" in repr(ds) and len(repr(ds)) < 300


# ----------------------------------------------------------------------------------------------------------
# IDX
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_loads_raw_and_gzip(tmp_path, gz):
    arrays = make_idx_dir(tmp_path / "d", gz=gz)
    ds = load_dataset("idx", data_dir=str(tmp_path / "d"))
    assert ds.x_train.shape == (12, 1, 4, 3) and ds.x_test.shape == (5, 1, 4, 3)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    expected = torch.tensor(arrays["train-images-idx3-ubyte"], dtype=torch.float32)[:, None] / 255
    assert torch.equal(ds.x_train, expected)
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert ds.spec["source"] == str((tmp_path / "d").resolve())
    assert ds.spec["num_classes"] == max(arrays["train-labels-idx1-ubyte"].max(), arrays["t10k-labels-idx1-ubyte"].max()) + 1


def test_idx_gzip_and_raw_give_identical_hash(tmp_path):
    make_idx_dir(tmp_path / "raw", gz=False)
    make_idx_dir(tmp_path / "gz", gz=True)
    assert load_dataset("idx", data_dir=str(tmp_path / "raw")).spec["sha256"] == \
        load_dataset("idx", data_dir=str(tmp_path / "gz")).spec["sha256"]


def test_read_idx_other_element_types(tmp_path):
    a = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "i.idx", a)), a)
    f = np.linspace(0, 1, 6).reshape(2, 3)
    assert np.array_equal(read_idx(write_idx(tmp_path / "f.idx.gz", f, gz=True)), f)


def test_idx_without_test_files_has_no_test_split(tmp_path):
    make_idx_dir(tmp_path, test=False)
    ds = load_dataset("idx", data_dir=str(tmp_path))
    assert ds.x_test is None and ds.spec["n_test"] is None


def test_idx_wrong_magic(tmp_path):
    write_idx(tmp_path / "x.idx", np.zeros((2, 2), np.uint8), magic=b"\x12\x34\x08\x02")
    with pytest.raises(InputError, match=r"expected an IDX file.*got magic 12340802"):
        read_idx(tmp_path / "x.idx")


def test_idx_truncated_and_padded(tmp_path):
    write_idx(tmp_path / "t.idx", np.zeros((3, 4, 4), np.uint8), cut=5)
    with pytest.raises(InputError, match=r"expected 48 data bytes for IDX dims \[3, 4, 4\].*got 43 \(truncated\)"):
        read_idx(tmp_path / "t.idx")
    (tmp_path / "p.idx").write_bytes(write_idx(tmp_path / "q.idx", np.zeros(3, np.uint8)).read_bytes() + b"\0")
    with pytest.raises(InputError, match="trailing bytes"):
        read_idx(tmp_path / "p.idx")


def test_idx_truncated_gzip_stream(tmp_path):
    write_idx(tmp_path / "g.gz", np.zeros((50, 8, 8), np.uint8), gz=True)
    raw = (tmp_path / "g.gz").read_bytes()
    (tmp_path / "g.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_idx(tmp_path / "g.gz")


def test_idx_images_labels_count_mismatch(tmp_path):
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, np.uint8))
    with pytest.raises(InputError, match="12 images .* vs 11 labels"):
        load_dataset("idx", data_dir=str(tmp_path))


def test_idx_missing_directory_and_files(tmp_path):
    with pytest.raises(InputError, match="data_dir"):
        load_dataset("idx")
    with pytest.raises(InputError, match="not a directory"):
        load_dataset("idx", data_dir=str(tmp_path / "nope"))
    with pytest.raises(InputError, match="train-images"):
        load_dataset("idx", data_dir=str(tmp_path))


def test_idx_only_one_test_file_is_an_error(tmp_path):
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match="t10k-labels"):
        load_dataset("idx", data_dir=str(tmp_path))


def test_fashion_mnist_search_order_torchvision_layout(tmp_path, monkeypatch):
    monkeypatch.delenv("SHARPNESS_DATA", raising=False)
    arrays = make_idx_dir(tmp_path / "FashionMNIST" / "raw", gz=True)
    ds = load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert ds.spec["source"] == str((tmp_path / "FashionMNIST" / "raw").resolve())
    assert ds.spec["num_classes"] == 10 and ds.spec["n_train"] == 12
    assert ds.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()


def test_fashion_mnist_from_env_var(tmp_path, monkeypatch):
    make_idx_dir(tmp_path / "fashion-mnist", n_train=7)
    monkeypatch.setenv("SHARPNESS_DATA", str(tmp_path))
    assert load_dataset("fashion-mnist").spec["n_train"] == 7


def test_mnist_layout_and_not_found_lists_places(tmp_path, monkeypatch):
    monkeypatch.delenv("SHARPNESS_DATA", raising=False)
    monkeypatch.setattr(D, "_SYSTEM_DATA_ROOT", str(tmp_path / "system"))
    with pytest.raises(InputError) as e:
        load_dataset("mnist", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "MNIST" / "raw") in msg and str(tmp_path / "system" / "mnist") in msg
    make_idx_dir(tmp_path / "MNIST" / "raw")
    assert load_dataset("mnist", data_dir=str(tmp_path)).spec["input_shape"] == [1, 4, 3]


def test_named_idx_labels_out_of_range(tmp_path, monkeypatch):
    monkeypatch.delenv("SHARPNESS_DATA", raising=False)
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(12, 10, np.uint8))
    with pytest.raises(InputError, match=r"labels in \[0, 10\).*got label 10"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path))


@pytest.fixture(scope="module")
def real_fashion():
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    if not all((FASHION_DIR / n).exists() or (FASHION_DIR / (n + ".gz")).exists() for n in names):
        pytest.skip(f"Fashion-MNIST IDX files not present in {FASHION_DIR}")
    return load_dataset("fashion-mnist", data_dir=str(FASHION_DIR))


def test_real_fashion_mnist(real_fashion):
    ds = real_fashion
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert 0.0 == float(ds.x_train.min()) and float(ds.x_train.max()) == 1.0
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.spec["input_shape"] == [1, 28, 28] and ds.spec["num_classes"] == 10


# ----------------------------------------------------------------------------------------------------------
# CIFAR
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("str_keys,protocol", [(False, 2), (False, 5), (True, 4)])
def test_cifar10_batches(tmp_path, str_keys, protocol):
    x, y = make_cifar10_dir(tmp_path / "cifar-10-batches-py", str_keys=str_keys, protocol=protocol)
    ds = load_dataset("cifar10", data_dir=str(tmp_path))
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    expected = torch.tensor(x[:15].reshape(15, 3, 32, 32), dtype=torch.float32) / 255
    assert torch.equal(ds.x_train, expected)
    assert ds.y_train.tolist() == y[:15].tolist() and ds.y_test.tolist() == y[15:].tolist()
    assert ds.spec["num_classes"] == 10 and ds.spec["input_shape"] == [3, 32, 32]


def test_cifar100_fine_and_coarse(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 4), ("test", 2)):
        obj = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
               b"fine_labels": [99, 1, 2, 3][:n], b"coarse_labels": [19, 0, 1, 2][:n]}
        (d / name).write_bytes(pickle.dumps(obj, protocol=2))
    fine = load_dataset("cifar100", data_dir=str(tmp_path))
    coarse = load_dataset("cifar100", data_dir=str(tmp_path), label_mode="coarse")
    assert fine.spec["num_classes"] == 100 and fine.y_train.tolist() == [99, 1, 2, 3]
    assert coarse.spec["num_classes"] == 20 and coarse.y_train.tolist() == [19, 0, 1, 2]
    assert coarse.spec["args"]["label_mode"] == "coarse"
    with pytest.raises(InputError, match="label_mode"):
        load_dataset("cifar100", data_dir=str(tmp_path), label_mode="medium")


def test_cifar_malicious_pickle_is_refused_and_never_runs(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    make_cifar10_dir(d)
    marker = tmp_path / "pwned"
    write_cifar_batch(d / "data_batch_3", np.zeros((3, 3072), np.uint8), [0, 1, 2],
                      extra={b"evil": _CreatesFile(str(marker))})
    with pytest.raises(InputError, match=r"data_batch_3.*references (io|builtins)\.open, which is not allowed") as e:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert "refusing to run code" in str(e.value)
    assert not marker.exists()


def test_cifar_bad_contents(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    make_cifar10_dir(d)
    write_cifar_batch(d / "test_batch", np.zeros((3, 100), np.uint8), [0, 1, 2])
    with pytest.raises(InputError, match=r"uint8 array of shape \(N, 3072\)"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    write_cifar_batch(d / "test_batch", np.zeros((3, 3072), np.uint8), [0, 1])
    with pytest.raises(InputError, match="expected 3 integer labels"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    (d / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(InputError, match="unreadable"):
        load_dataset("cifar10", data_dir=str(tmp_path))


def test_cifar_missing_lists_places(tmp_path, monkeypatch):
    monkeypatch.delenv("SHARPNESS_DATA", raising=False)
    with pytest.raises(InputError, match=r"data_batch_1\.\.5.*" + str(tmp_path / "cifar-10-batches-py")):
        load_dataset("cifar10", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------------------------------------
# MNIST-1D
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d():
    return load_dataset("mnist1d")


def test_mnist1d_shapes(mnist1d):
    ds = mnist1d
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert set(ds.y_train.unique().tolist()) == set(range(10))
    assert ds.spec["num_classes"] == 10 and ds.spec["input_shape"] == [40]
    assert ds.spec["args"]["mnist1d_seed"] == 42 and "url" not in ds.spec["args"]


def test_mnist1d_is_cached_and_copies(mnist1d):
    t0 = time.perf_counter()
    again = load_dataset("mnist1d")
    assert time.perf_counter() - t0 < 2.0  # generating takes several seconds
    assert again.spec["sha256"] == mnist1d.spec["sha256"]
    again.x_train.zero_()  # mutating one result must not leak into the cache
    assert load_dataset("mnist1d").spec["sha256"] == mnist1d.spec["sha256"]


def test_mnist1d_leaves_global_rngs_untouched():
    D._mnist1d_arrays.cache_clear()
    np.random.seed(123)
    random.seed(7)
    torch.manual_seed(5)
    np_state, py_state, t_state = np.random.get_state(), random.getstate(), torch.get_rng_state()
    expected = (np.random.rand(3).tolist(), random.random())
    np.random.set_state(np_state)
    random.setstate(py_state)
    ds = load_dataset("mnist1d", num_samples=200)  # small: generated for real, not served from cache
    assert ds.spec["n_train"] == 160 and ds.spec["n_test"] == 40
    assert (np.random.rand(3).tolist(), random.random()) == expected
    assert torch.equal(torch.get_rng_state(), t_state)


# ----------------------------------------------------------------------------------------------------------
# digits, synthetic
# ----------------------------------------------------------------------------------------------------------


def test_digits_split_is_seeded_and_recorded():
    pytest.importorskip("sklearn")
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert a.spec["n_train"] + a.spec["n_test"] == 1797 and a.spec["n_test"] == 359
    assert a.spec["input_shape"] == [64] and a.spec["args"] == {"test_fraction": 0.2, "seed": 0, "subset": None}
    assert 0.0 <= float(a.x_train.min()) and float(a.x_train.max()) == 1.0
    assert a.spec["sha256"] != b.spec["sha256"]
    assert load_dataset("digits", seed=0).spec["sha256"] == a.spec["sha256"]
    # same samples, split differently
    all_a = torch.cat([a.x_train, a.x_test]).sum(0)
    all_b = torch.cat([b.x_train, b.x_test]).sum(0)
    assert torch.allclose(all_a, all_b)


def test_digits_without_sklearn_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(InputError, match="scikit-learn"):
        load_dataset("digits")


def test_blobs_deterministic_by_seed():
    a, b, c = load_dataset("blobs", seed=3), load_dataset("blobs", seed=3), load_dataset("blobs", seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.spec["sha256"] == b.spec["sha256"] != c.spec["sha256"]
    assert a.x_train.shape == (600, 2) and a.x_test.shape == (200, 2)
    assert torch.bincount(a.y_train).tolist() == [200, 200, 200]
    ds = load_dataset("blobs", n=90, n_test=0, dim=5, classes=4, std=0.0)
    assert ds.spec["num_classes"] == 4 and ds.x_test is None
    # std=0: every sample sits on its class centre
    for k in range(4):
        pts = ds.x_train[ds.y_train == k]
        assert torch.equal(pts, pts[:1].expand_as(pts))


def test_teacher_student_regression_recovers_teacher_noise():
    ds = load_dataset("teacher-student", n=2000, dim=5, out_dim=2, noise=0.1, seed=1)
    assert ds.spec["task"] == "regression" and ds.spec["num_classes"] is None and ds.spec["output_dim"] == 2
    assert ds.y_train.shape == (2000, 2) and ds.y_train.dtype == torch.float32
    x, y = ds.x_train.double(), ds.y_train.double()
    w = torch.linalg.lstsq(x, y).solution
    resid = (y - x @ w).std().item()
    assert 0.09 < resid < 0.11  # a linear teacher: least squares leaves only the noise
    mlp = load_dataset("teacher-student", teacher="mlp", seed=1)
    assert mlp.spec["sha256"] == load_dataset("teacher-student", teacher="mlp", seed=1).spec["sha256"]
    assert mlp.spec["sha256"] != load_dataset("teacher-student", teacher="mlp", seed=2).spec["sha256"]
    with pytest.raises(InputError, match="teacher 'linear' or 'mlp'"):
        load_dataset("teacher-student", teacher="cnn")
    with pytest.raises(InputError, match="n to be an integer"):
        load_dataset("teacher-student", n=0)


# ----------------------------------------------------------------------------------------------------------
# npz
# ----------------------------------------------------------------------------------------------------------


def test_npz_classification_with_test_and_name_as_path(tmp_path):
    p = tmp_path / "d.npz"
    x = np.arange(24, dtype=np.float64).reshape(6, 4)
    np.savez(p, x=x, y=np.array([0, 1, 2, 0, 1, 2]), x_test=x[:2], y_test=np.array([4, 0]))
    ds = load_dataset(str(p))
    assert ds.spec["name"] == "npz" and ds.spec["args"]["path"] == str(p.resolve())
    assert ds.spec["task"] == "classification" and ds.spec["num_classes"] == 5  # max over train and test + 1
    assert ds.x_train.dtype == torch.float32 and torch.equal(ds.x_train, torch.tensor(x, dtype=torch.float32))
    assert load_dataset("npz", path=str(p)).spec["sha256"] == ds.spec["sha256"]
    assert load_dataset("npz", path=str(p), num_classes=8).spec["num_classes"] == 8


def test_npz_float_targets_are_regression(tmp_path):
    p = tmp_path / "r.npz"
    np.savez(p, x=np.ones((5, 3), np.float32), y=np.linspace(0, 1, 5))
    ds = load_dataset("npz", path=str(p))
    assert ds.spec["task"] == "regression" and ds.spec["num_classes"] is None and ds.spec["output_dim"] == 1
    assert ds.y_train.dtype == torch.float32 and ds.x_test is None


@pytest.mark.parametrize(
    "arrays,kwargs,match",
    [
        ({"x": np.ones((3, 2))}, {}, r"arrays 'x' and 'y'.*got \['x'\]"),
        ({"x": np.ones((3, 2)), "y": np.zeros(4, int)}, {}, "3 x vs 4 y"),
        ({"x": np.ones((3, 2)), "y": np.array([0, -1, 1])}, {}, "non-negative train labels.*got label -1"),
        ({"x": np.ones((3, 2)), "y": np.array([0, 5, 1])}, {"num_classes": 3}, r"labels in \[0, 3\).*got label 5"),
        ({"x": np.array([[0.0, np.nan], [1, 1]]), "y": np.array([0, 1])}, {}, "finite train x.*NaN in 1 entries"),
        ({"x": np.ones((2, 2)), "y": np.array([0, 1]), "x_test": np.ones((1, 2))}, {}, "both 'x_test' and 'y_test'"),
        ({"x": np.ones((2, 2)), "y": np.array([0, 1]), "x_test": np.ones((1, 3)), "y_test": np.array([0])}, {},
         r"per-sample shape \[2\]"),
        ({"x": np.ones((2, 2)), "y": np.array([0.5, 1])}, {"num_classes": 2}, "integer labels when num_classes"),
    ],
)
def test_npz_validation(tmp_path, arrays, kwargs, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(InputError, match=match) as e:
        load_dataset("npz", path=str(p), **kwargs)
    assert "\n" not in str(e.value)


def test_npz_object_arrays_and_missing_file(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(InputError, match="object arrays"):
        load_dataset("npz", path=str(p))
    with pytest.raises(InputError, match="not found"):
        load_dataset(str(tmp_path / "missing.npz"))
    with pytest.raises(InputError, match="path="):
        load_dataset("npz")
    (tmp_path / "junk.npz").write_bytes(b"hello")
    with pytest.raises(InputError, match="NumPy .npz archive"):
        load_dataset(str(tmp_path / "junk.npz"))


# ----------------------------------------------------------------------------------------------------------
# subsets, specs, round trips
# ----------------------------------------------------------------------------------------------------------


def test_subset_is_seeded_recorded_and_drawn_from_train():
    full = load_dataset("blobs", n=100)
    a = load_dataset("blobs", n=100, subset=30)
    assert a.spec["n_train"] == 30 and a.spec["args"]["subset"] == 30
    assert torch.equal(a.x_test, full.x_test)  # the test split is never subsetted
    # every subset row is a train row, in increasing index order
    idx = [int((full.x_train == row).all(1).nonzero()[0]) for row in a.x_train]
    assert idx == sorted(idx) and len(set(idx)) == 30
    expected = torch.randperm(100, generator=torch.Generator().manual_seed(0))[:30].sort().values
    assert idx == expected.tolist()
    assert a.spec["args"]["subset_indices_sha256"] == hash_tensors([("indices", expected)])


def test_spec_hash_stable_and_sensitive_to_subset():
    a1, a2 = load_dataset("blobs", subset=50), load_dataset("blobs", subset=50)
    assert a1.spec == a2.spec
    others = {load_dataset("blobs", subset=50, seed=1).spec["sha256"], load_dataset("blobs", subset=51).spec["sha256"],
              load_dataset("blobs").spec["sha256"]}
    assert a1.spec["sha256"] not in others and len(others) == 3


@pytest.mark.parametrize("subset", [0, -3, 601, 2.5, True])
def test_subset_out_of_range(subset):
    with pytest.raises(InputError, match="subset"):
        load_dataset("blobs", subset=subset)


def test_spec_is_plain_json():
    spec = load_dataset("blobs", subset=10).spec
    assert json.loads(json.dumps(spec)) == spec
    assert set(spec) >= {"name", "args", "n_train", "n_test", "input_shape", "num_classes", "task", "sha256"}


def test_dataset_from_spec_round_trip_synthetic_and_files(tmp_path):
    spec = json.loads(json.dumps(load_dataset("teacher-student", n=50, subset=20, seed=5).spec))
    again = dataset_from_spec(spec)
    assert again.spec == spec
    make_idx_dir(tmp_path / "idx")
    idx_spec = load_dataset("idx", data_dir=str(tmp_path / "idx"), subset=4).spec
    assert dataset_from_spec(idx_spec).spec["sha256"] == idx_spec["sha256"]  # found via the recorded source
    p = tmp_path / "d.npz"
    np.savez(p, x=np.ones((4, 2)), y=np.array([0, 1, 0, 1]))
    npz_spec = load_dataset(str(p)).spec
    moved = tmp_path / "moved"
    moved.mkdir()
    p.rename(moved / "d.npz")
    assert dataset_from_spec(npz_spec, data_dir=str(moved)).spec["sha256"] == npz_spec["sha256"]


def test_dataset_from_spec_detects_changed_data(tmp_path):
    spec = load_dataset("blobs", n=40).spec
    bad = dict(spec, sha256="0" * 64)
    with pytest.raises(InputError, match=r"sha256 000000000000… as recorded, got " + spec["sha256"][:12]):
        dataset_from_spec(bad)
    sub = load_dataset("blobs", n=40, subset=10).spec
    bad_sub = dict(sub, args=dict(sub["args"], subset_indices_sha256="f" * 64))
    with pytest.raises(InputError, match="subset indices"):
        dataset_from_spec(bad_sub)
    make_idx_dir(tmp_path / "idx", seed=0)
    idx_spec = load_dataset("idx", data_dir=str(tmp_path / "idx")).spec
    make_idx_dir(tmp_path / "idx", seed=1)  # the files changed since the checkpoint was written
    with pytest.raises(InputError, match="different files"):
        dataset_from_spec(idx_spec)
    with pytest.raises(InputError, match="data spec dict"):
        dataset_from_spec({"args": {}})


def test_dataset_is_frozen():
    ds = load_dataset("blobs", n=10, n_test=0)
    assert isinstance(ds, Dataset)
    with pytest.raises(Exception):
        ds.x_train = torch.zeros(1)  # type: ignore[misc]


def test_test_subset_is_seeded_recorded_and_rebuilt_from_the_spec():
    from sharpness.data import dataset_from_spec

    full = load_dataset("blobs", n=50, n_test=40, dim=3)
    ds = load_dataset("blobs", n=50, n_test=40, dim=3, test_subset=10)
    assert ds.x_test.shape[0] == 10 and ds.spec["n_test"] == 10 and ds.spec["args"]["test_subset"] == 10
    assert torch.equal(ds.x_train, full.x_train)  # the training split is untouched
    rows = {tuple(r.tolist()) for r in full.x_test}
    assert all(tuple(r.tolist()) in rows for r in ds.x_test)  # a subset of the real test split
    again = load_dataset("blobs", n=50, n_test=40, dim=3, test_subset=10)
    assert torch.equal(again.x_test, ds.x_test)  # seeded
    assert torch.equal(dataset_from_spec(ds.spec).x_test, ds.x_test)  # a checkpoint's spec rebuilds it
    assert "test_subset" not in full.spec["args"]  # specs of runs without it are unchanged
    with pytest.raises(InputError, match="test_subset"):
        load_dataset("blobs", n=50, n_test=40, test_subset=41)
