"""Optional bridges from :class:`sharpness.tracking.SharpnessTracker` to other tools; none is needed by the core.

* :class:`~sharpness.integrations.lightning.SharpnessCallback`: a Lightning callback (``lightning`` or
  ``pytorch_lightning``, whichever is installed) that runs the tracker during ``Trainer.fit``.
* :class:`~sharpness.integrations.tensorboard.TensorBoardWriter`: writes the tracker's records as TensorBoard
  scalars (needs the ``tensorboard`` package for ``torch.utils.tensorboard``).
* :class:`~sharpness.integrations.wandb.WandbWriter`: the same records to a Weights & Biases run (online or
  ``WANDB_MODE=offline``); ``wandb`` is imported only when a writer starts its own run.
* :class:`~sharpness.integrations.hf_trainer.SharpnessTrainerCallback` and
  :func:`~sharpness.integrations.hf_trainer.gate`: the tracker inside a Hugging Face ``Trainer`` run, logging
  through ``Trainer.log``, and the pass/fail check after ``Trainer.train()`` (needs ``transformers``).
* :func:`~sharpness.integrations.pretrained.load_pretrained`: a ``save_pretrained`` directory, read from local
  files only (what ``sharpness analyze DIR`` uses; imports ``transformers`` when called).

Install them all with ``pip install sharpness[all]`` (or one extra: ``[hf]``, ``[lightning]``, ``[tensorboard]``, ``[wandb]``).

Importing this package never fails and imports neither tool: the names above are resolved on first access,
and only then is the third-party package imported (raising an ``ImportError`` that says what to install).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SharpnessCallback", "TensorBoardWriter", "WandbWriter", "SharpnessTrainerCallback", "gate",
           "load_pretrained"]

_WHERE = {"SharpnessCallback": ".lightning", "TensorBoardWriter": ".tensorboard", "WandbWriter": ".wandb",
          "SharpnessTrainerCallback": ".hf_trainer", "gate": ".hf_trainer", "load_pretrained": ".pretrained"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
