"""Optional bridges from :class:`sharpness.tracking.SharpnessTracker` to other tools; none is needed by the core.

* :class:`~sharpness.integrations.lightning.SharpnessCallback`: a Lightning callback (``lightning`` or
  ``pytorch_lightning``, whichever is installed) that runs the tracker during ``Trainer.fit``.
* :class:`~sharpness.integrations.tensorboard.TensorBoardWriter`: writes the tracker's records as TensorBoard
  scalars (needs the ``tensorboard`` package for ``torch.utils.tensorboard``).

Importing this package never fails and imports neither tool: the names above are resolved on first access,
and only then is the third-party package imported (raising an ``ImportError`` that says what to install).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SharpnessCallback", "TensorBoardWriter"]

_WHERE = {"SharpnessCallback": ".lightning", "TensorBoardWriter": ".tensorboard"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
