"""The checkpoint format: its tag and version, the :class:`Checkpoint` a load returns, the recorded versions."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn



FORMAT = "sharpness.checkpoint"
VERSION = 1
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """What :func:`load_checkpoint` found. Fields absent from the file are empty (``{}``, ``[]``, ``None``).

    ``kind`` is ``"sharpness"`` (written by :func:`save_checkpoint`), ``"state_dict"``, ``"safetensors"`` or
    ``"module"`` (a pickled ``nn.Module``, loaded only when trusted; the module itself is in ``module``).
    ``trusted`` records whether the caller passed ``trust_checkpoint=True``.
    """

    state_dict: dict[str, Tensor]
    model: dict | None
    data: dict | None
    train_config: dict
    metrics: dict
    history: list
    seed: int | None
    versions: dict
    extra: dict
    kind: str
    path: str
    trusted: bool = False
    module: nn.Module | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        name = None if self.model is None else self.model.get("name")
        return f"Checkpoint(kind={self.kind!r}, path={self.path!r}, model={name!r}, tensors={len(self.state_dict)})"


def library_versions() -> dict[str, str]:
    """``{"sharpness", "torch", "numpy", "python"}`` version strings of the running process."""
    try:
        from importlib.metadata import version

        sharpness_version = version("sharpness")
    except Exception:
        try:
            from sharpness import __version__ as sharpness_version  # type: ignore[attr-defined]
        except Exception:
            sharpness_version = "unknown"
    return {
        "sharpness": str(sharpness_version),
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }
