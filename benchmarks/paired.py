"""What the paired-rounds benchmarks (``conv_shortcut.py``, ``grid_batching.py``) share: their result file."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import torch


def write_result(path: Path | None, rows: list[dict], *, load_before: tuple[float, ...], **config) -> None:
    """Write ``{date, torch, load_before, load_after, **config, rows}`` as JSON to ``path`` (if given)."""
    if path is None:
        return
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
           "load_before": list(load_before), "load_after": list(os.getloadavg()), **config, "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"→ {path}")
