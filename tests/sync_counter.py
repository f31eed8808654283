"""Count the points where a tensor's value crosses to the host (a device synchronization on a GPU).

On the CPU nothing synchronizes, but the same calls are where a CUDA run would wait for the device:
``Tensor.item``, ``.cpu``, ``.tolist``, ``.numpy``, ``float(t)``, ``int(t)``, ``bool(t)`` and ``torch.equal``.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import torch

_METHODS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__")


@contextlib.contextmanager
def count_syncs(monkeypatch):
    """Patch the conversion points for the body; yields a Counter of calls by name."""
    counts: Counter = Counter()

    def wrap(name, original):
        def counted(*args, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)
        return counted

    with monkeypatch.context() as mp:
        for name in _METHODS:
            mp.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
        mp.setattr(torch, "equal", wrap("equal", torch.equal))
        yield counts
