"""The floating-point dtypes a user may name (``--dtype``, ``TrainConfig.dtype``, ``SharpnessTracker(dtype=)``).

One table, so the CLI's choices, the training configuration's check and the tracker's check cannot drift apart.
float32 is the fast default; float64 is there for checking (DESIGN §5).
"""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}

__all__ = ["DTYPES"]
