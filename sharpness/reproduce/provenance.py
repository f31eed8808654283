"""What every result records about where it came from: library versions, Python, platform, git commit, device."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache

import numpy as np
import torch

from .. import __version__
from .registry import _source_root


@lru_cache(maxsize=None)
def git_commit(path: str | None = None) -> str | None:
    """``git rev-parse HEAD`` of the tree at ``path`` (default: the source checkout), or None without one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path or _source_root(), capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def provenance(device: str = "cpu") -> dict:
    """Versions, platform, git commit, device and threads: what a saved number needs to be traced back."""
    dev = torch.device(device)
    name = str(dev)
    if dev.type == "cuda" and torch.cuda.is_available():
        name = f"{dev} ({torch.cuda.get_device_name(dev)})"
    return {
        "sharpness": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "device": name,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
