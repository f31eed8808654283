"""From what a user names on the command line to a model and its data.

A checkpoint the toolkit wrote records its model and dataset, so it needs nothing else. A foreign checkpoint
(a bare ``state_dict`` or ``.safetensors``) needs ``model`` (a name or ``file.py:factory``) and ``data``
(a dataset name or ``.npz`` file). Explicit arguments always win over what the checkpoint records.

The researcher's own code — ``--data FILE.py:fn`` returning a Dataset, DataLoader or tensors, ``--loss`` and
``--forward`` callables — is run only when the user names it on the command line (as for ``--model``); a
reference recorded in a checkpoint or report is never followed without that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset as TorchDataset

from ..checkpoint import Checkpoint, build_model_from_checkpoint, load_checkpoint
from ..data import Dataset, dataset_from_spec, load_dataset
from ..data.user import user_code_dataset
from ..errors import InputError
from .usercode import accepts, load_factory, one_line


@dataclass(frozen=True)
class Loaded:
    model: nn.Module
    dataset: Dataset | None
    checkpoint: Checkpoint
    #: what ``--data FILE.py:fn`` returned (then ``dataset`` is None)
    user_data: Any = None


def load_data(data: str | None, ckpt: Checkpoint | None, *, data_dir: str | None = None, subset: int | None = None,
              seed: int = 0, dtype: torch.dtype = torch.float32) -> Dataset:
    """The dataset named by ``data``, else the one ``ckpt`` records (rebuilt and hash-checked), its floating
    tensors in ``dtype`` (the analysis dtype: a float64 analysis reads a float64 file as float64)."""
    if data is not None:
        return load_dataset(data, data_dir=data_dir, subset=subset, seed=seed, dtype=dtype)
    if ckpt is not None and ckpt.data:
        return dataset_from_spec(ckpt.data, data_dir=data_dir, dtype=dtype)
    raise InputError("expected --data NAME|FILE.npz: the checkpoint records no dataset")


def load_model_and_data(
    path: str,
    *,
    model: str | None = None,
    model_kwargs: dict | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    trust_checkpoint: bool = False,
    split: str = "train",
    dtype: torch.dtype = torch.float32,
) -> Loaded:
    """Load ``path`` (safely unless ``trust_checkpoint``), its dataset (floating tensors in ``dtype``) and a
    model holding its weights.

    ``data="FILE.py:fn"`` runs ``fn`` (the user named it) for the analysis set of ``split``."""
    ckpt = load_checkpoint(path, trust_checkpoint=trust_checkpoint)
    # Name every missing flag at once: a user who fixes one should not discover the next on the second try.
    missing = []
    if model is None and not ckpt.model and ckpt.module is None:
        missing.append("--model NAME|FILE.py:FN")
    if data is None and not ckpt.data:
        missing.append("--data NAME|FILE.npz|FILE.py:FN")
    if len(missing) > 1:
        raise InputError(f"expected {' and '.join(missing)} for {str(path)!r}, a bare {ckpt.kind} that records "
                         "neither its architecture nor its dataset")
    if is_code_ref(data):
        user_data = load_user_data(data, split=split)
        net = build_model_from_checkpoint(ckpt, model=model, model_kwargs=model_kwargs, data_spec=None)
        # A checkpoint holds weights, not a mode: the model built here is evaluated (eval mode, DESIGN §5), so
        # no train-mode notice is due for a mode nobody chose.
        return Loaded(net.eval(), None, ckpt, user_data)
    dataset = load_data(data, ckpt, data_dir=data_dir, dtype=dtype)
    net = build_model_from_checkpoint(ckpt, model=model, model_kwargs=model_kwargs, data_spec=dataset.spec)
    return Loaded(net.eval(), dataset, ckpt)


def is_code_ref(text: str | None) -> bool:
    """True for ``"file.py:fn"`` / ``"pkg.mod:fn"`` (code to run), not a dataset name or an ``.npz`` path."""
    return isinstance(text, str) and ":" in text and not text.lower().endswith(".npz")


class NamedCallable:
    """A user's callable loaded from ``ref``, recorded in reports by that reference."""

    def __init__(self, fn: Callable, ref: str) -> None:
        self.fn = fn
        self.sharpness_ref = ref

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def load_user_callable(ref: str, what: str) -> NamedCallable:
    """The callable ``ref`` names (``--loss FILE.py:fn``, ``--forward FILE.py:fn``). This RUNS the user's code:
    the CLI calls it only for a reference the user typed, never for one recorded in a checkpoint."""
    return NamedCallable(load_factory(ref, what), ref)


def load_user_data(ref: str, *, split: str = "train", optional: bool = False) -> Any:
    """The analysis set ``fn()`` returns for ``--data FILE.py:fn``: a ``Dataset``, a ``DataLoader``, a
    re-iterable of batches, or ``(x, y)`` tensors. ``fn`` receives ``split=`` when its signature names it.
    ``optional``: ``None`` is an answer too (a function without that split). This RUNS the user's code (see
    :func:`load_user_callable`)."""
    fn = load_factory(ref, "data function")
    try:
        out = fn(split=split) if accepts(fn, "split") else fn()
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"expected data function {ref!r} to return an analysis set, got {one_line(e)}") from None
    if out is None and optional:
        return None
    if isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, Tensor) for t in out):
        return tuple(out)
    # A map-style torch Dataset has __getitem__/__len__ but no __iter__: it is a Dataset all the same.
    iterable = hasattr(out, "__iter__") or isinstance(out, TorchDataset)
    if isinstance(out, Tensor) or out is None or isinstance(out, (str, bytes, dict)) or not iterable:
        raise InputError(
            f"expected data function {ref!r} to return a Dataset, a DataLoader, a re-iterable of batches or (x, y) "
            f"tensors, got {type(out).__name__}"
        )
    return out


def load_user_training_data(ref: str, *, subset: int | None = None, seed: int = 0) -> Dataset:
    """The training :class:`Dataset` of ``--data FILE.py:fn`` for ``train``/``sweep``: ``fn(split="train")``
    (or ``fn()``) and, when ``fn`` takes ``split``, ``fn(split="test")`` (``None``: no test split), each
    materialized once into tensors (:mod:`sharpness.data.user`); ``subset`` is drawn with ``seed`` as for a
    named dataset. This RUNS the user's code: only for a reference the user typed."""
    train = load_user_data(ref, split="train")
    test = load_user_data(ref, split="test", optional=True) if accepts(load_factory(ref, "data function"), "split") else None
    return user_code_dataset(ref, train, test, subset=subset, seed=seed)
