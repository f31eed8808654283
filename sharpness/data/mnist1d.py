"""MNIST-1D (Greydanus 2020), generated in-process by the ``mnist1d`` package and cached per process."""

from __future__ import annotations

import functools
import json
import random

import numpy as np

from ..errors import InputError
from .dataset import _check_int, _jsonable, _Raw


_MNIST1D_KEYS = (
    "num_samples", "train_split", "template_len", "padding", "scale_coeff", "max_translation",
    "corr_noise_scale", "iid_noise_scale", "shear_scale", "shuffle_seq", "final_seq_length",
)


def _mnist1d_defaults() -> dict:
    try:
        from mnist1d.data import get_dataset_args
    except ImportError as e:  # pragma: no cover - mnist1d is a hard dependency
        raise InputError(f"expected the 'mnist1d' package for dataset 'mnist1d', got ImportError: {e}") from None
    d = dict(get_dataset_args(as_dict=True))
    d.pop("url", None)
    d["mnist1d_seed"] = d.pop("seed")
    return d


@functools.lru_cache(maxsize=8)
def _mnist1d_arrays(args_json: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    a = json.loads(args_json)
    a["seed"] = a.pop("mnist1d_seed")
    # make_dataset seeds numpy's and Python's global RNGs; put the caller's state back afterwards.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(ObjectView(a))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    out = (
        np.asarray(d["x"], dtype=np.float32),
        np.asarray(d["y"], dtype=np.int64),
        np.asarray(d["x_test"], dtype=np.float32),
        np.asarray(d["y_test"], dtype=np.int64),
    )
    for arr in out:
        arr.setflags(write=False)
    return out


def _load_mnist1d(*, data_dir, seed, **kwargs) -> _Raw:
    args = _mnist1d_defaults()
    for k, v in kwargs.items():
        args[k] = list(v) if isinstance(v, tuple) else v
    _check_int("num_samples", args["num_samples"], minimum=10, label="dataset 'mnist1d'")
    x, y, xt, yt = _mnist1d_arrays(json.dumps(_jsonable(args), sort_keys=True))
    return _Raw(x, y, xt, yt, "classification", 10, args)
