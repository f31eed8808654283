"""Make an installed package look missing for one test, to check the "pip install ..." messages."""

from __future__ import annotations

import importlib.abc
import sys


class _Hidden(importlib.abc.MetaPathFinder):
    """Makes ``import name`` (and its submodules) fail as if the package were not installed."""

    def __init__(self, names):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def hide(monkeypatch, *names: str) -> None:
    """Hide the top-level packages ``names`` (and modules already imported from them) for one test; monkeypatch
    puts every removed module back afterwards, so later tests see the real packages again."""
    for key in list(sys.modules):
        # torch.utils.tensorboard imports the tensorboard package: it must be re-imported too
        if key.split(".")[0] in names or ("tensorboard" in names and key.startswith("torch.utils.tensorboard")):
            monkeypatch.delitem(sys.modules, key)
    monkeypatch.setattr(sys, "meta_path", [_Hidden(set(names)), *sys.meta_path])
