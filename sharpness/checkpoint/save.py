"""Writing a checkpoint: plain values only (checked), tensors detached to CPU, written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from ..files.rundir import atomic_write
from .format import FORMAT, VERSION, library_versions


def _plain(value: Any, where: str) -> Any:
    """Recursively check/convert to dict/list/tuple/str/int/float/bool/None/Tensor (numpy → Python)."""
    if isinstance(value, Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise InputError(f"expected str keys in checkpoint field {where}, got key {k!r} ({type(k).__name__})")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    # Exact builtin types only: subclasses (TorchVersion, IntEnum, ...) would need their class to unpickle.
    if value is None:
        return None
    for typ in (bool, str, int, float):
        if isinstance(value, typ):
            return typ(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, torch.dtype, torch.device)):
        return str(value)
    raise InputError(
        f"expected plain values (dict/list/str/int/float/bool/None/Tensor) in checkpoint field {where}, "
        f"got {type(value).__module__}.{type(value).__qualname__}"
    )


def _as_state_dict(state_dict: Any, where: str) -> dict[str, Tensor]:
    if isinstance(state_dict, nn.Module):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise InputError(f"expected {where} to be a dict of tensors, got {type(state_dict).__name__}")
    out: dict[str, Tensor] = {}
    for k, v in state_dict.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise InputError(f"expected {where} to map str → Tensor, got {k!r} → {type(v).__name__}")
        out[k] = v
    return out


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: dict | None,
    state_dict: Mapping[str, Tensor] | nn.Module,
    data: dict | None = None,
    train_config: dict | None = None,
    metrics: dict | None = None,
    history: list | None = None,
    seed: int | None = None,
    extra: dict | None = None,
) -> None:
    """Write a sharpness checkpoint atomically (temp file in the same directory, fsync, ``os.replace``).

    Args:
        path: destination ``.pt`` file; its directory must exist and be writable.
        model: a :func:`sharpness.models.model_spec` dict (``None`` writes weights without a description).
        state_dict: the model's ``state_dict()`` (an ``nn.Module`` is accepted and its state taken);
            tensors are detached, moved to CPU and cloned compactly.
        data: a dataset spec (:attr:`sharpness.data.Dataset.spec`).
        train_config: the training configuration, plain values only (numpy scalars/arrays become Python
            values; anything else raises :class:`InputError`), as are the next three.
        metrics: final metrics (train/test loss and accuracy, ...).
        history: per-epoch records.
        extra: anything else the caller wants kept beside the weights.
        seed: the seed the run used.

    Raises:
        InputError: non-plain values, or a destination that cannot be written.
    """
    if model is not None and (not isinstance(model, Mapping) or not isinstance(model.get("name"), str)
                              or not isinstance(model.get("kwargs", {}), Mapping)):
        raise InputError(f"expected model to be a model_spec dict {{'name': str, 'kwargs': dict}} or None, got {str(model)[:80]}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise InputError(f"expected seed to be an integer or None, got {seed!r}")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": _plain(model, "model"),
        "state_dict": _plain(_as_state_dict(state_dict, "state_dict"), "state_dict"),
        "data": _plain(data, "data"),
        "train_config": _plain(train_config or {}, "train_config"),
        "metrics": _plain(metrics or {}, "metrics"),
        "history": _plain(history or [], "history"),
        "seed": None if seed is None else int(seed),
        "versions": _plain(library_versions(), "versions"),
        "extra": _plain(extra or {}, "extra"),
    }
    _atomic_torch_save(payload, Path(path))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """:func:`~sharpness.files.rundir.atomic_write` of ``torch.save(obj)``, its failures said as checkpoint errors."""
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"expected a file path to write the checkpoint to, got directory {str(path)!r}")
    if not directory.is_dir():
        raise InputError(f"expected an existing directory to write {path.name!r} into, got {str(directory)!r} (missing)")
    opened = False

    def write(fh: Any) -> None:
        nonlocal opened
        opened = True  # the temporary file exists: a failure from here on is a failed write, not a closed directory
        torch.save(obj, fh)

    try:
        atomic_write(path, write)
    except OSError as e:
        what = "to write checkpoint" if opened else "a writable directory for checkpoint"
        raise InputError(f"expected {what} {str(path)!r}, got {type(e).__name__}: {e.strerror or e}") from None
