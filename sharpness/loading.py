"""From what a user names on the command line to a model and its data.

A checkpoint the toolkit wrote records its model and dataset, so it needs nothing else. A foreign checkpoint
(a bare ``state_dict`` or ``.safetensors``) needs ``model`` (a name or ``file.py:factory``) and ``data``
(a dataset name or ``.npz`` file). Explicit arguments always win over what the checkpoint records.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .checkpoint import Checkpoint, build_model_from_checkpoint, load_checkpoint
from .data import Dataset, dataset_from_spec, load_dataset
from .errors import InputError


@dataclass(frozen=True)
class Loaded:
    model: nn.Module
    dataset: Dataset
    checkpoint: Checkpoint


def load_data(data: str | None, ckpt: Checkpoint | None, *, data_dir: str | None = None, subset: int | None = None,
              seed: int = 0) -> Dataset:
    """The dataset named by ``data``, else the one ``ckpt`` records (rebuilt and hash-checked)."""
    if data is not None:
        return load_dataset(data, data_dir=data_dir, subset=subset, seed=seed)
    if ckpt is not None and ckpt.data:
        return dataset_from_spec(ckpt.data, data_dir=data_dir)
    raise InputError("expected --data NAME|FILE.npz: the checkpoint records no dataset")


def load_model_and_data(
    path: str,
    *,
    model: str | None = None,
    model_kwargs: dict | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    trust_checkpoint: bool = False,
) -> Loaded:
    """Load ``path`` (safely unless ``trust_checkpoint``), its dataset and a model holding its weights."""
    ckpt = load_checkpoint(path, trust_checkpoint=trust_checkpoint)
    # Name every missing flag at once: a user who fixes one should not discover the next on the second try.
    missing = []
    if model is None and not ckpt.model and ckpt.module is None:
        missing.append("--model NAME|FILE.py:FN")
    if data is None and not ckpt.data:
        missing.append("--data NAME|FILE.npz")
    if len(missing) > 1:
        raise InputError(f"expected {' and '.join(missing)} for {str(path)!r}, a bare {ckpt.kind} that records "
                         "neither its architecture nor its dataset")
    dataset = load_data(data, ckpt, data_dir=data_dir)
    net = build_model_from_checkpoint(ckpt, model=model, model_kwargs=model_kwargs, data_spec=dataset.spec)
    return Loaded(net, dataset, ckpt)
