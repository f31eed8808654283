"""Where file-based datasets (IDX, CIFAR) are looked for: ``data_dir``, then ``$SHARPNESS_DATA``, then the
system root ``sharpness.data._SYSTEM_DATA_ROOT`` (read when a search runs, so setting it takes effect)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


def _candidate_dirs(data_dir, subdirs: Iterable[str], system: Iterable[str]) -> list[Path]:
    from . import _SYSTEM_DATA_ROOT  # the package attribute, as set now

    bases = [b for b in (data_dir, os.environ.get("SHARPNESS_DATA")) if b]
    out: list[Path] = []
    for b in bases:
        for s in subdirs:
            out.append(Path(b) / s if s else Path(b))
    out.extend(Path(_SYSTEM_DATA_ROOT) / s for s in system)
    seen, uniq = set(), []
    for p in out:
        if str(p) not in seen:
            seen.add(str(p))
            uniq.append(p)
    return uniq
