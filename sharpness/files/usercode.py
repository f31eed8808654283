"""Loading a user's callable by reference: ``"pkg.module:fn"`` (imported) or ``"path/to/file.py:fn"`` (executed).

One loader for every piece of user code the toolkit runs by name (``--model``, ``--data FILE.py:FN``,
``--loss``, ``--forward``): :func:`load_factory` resolves the reference and refuses, as an
:class:`~sharpness.errors.InputError` in one line, anything that does not resolve to a callable;
:func:`accepts` tells which keyword arguments a loaded factory takes.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable

from sharpness.errors import InputError


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_factory(ref: str, what: str = "model factory") -> Callable[..., Any]:
    """Resolve ``"pkg.module:fn"`` (importable) or ``"path/to/file.py:fn"`` to the callable ``fn``.

    ``what`` names the callable in error messages (``"model factory"``, ``"data function"``, ``"loss"``, …).

    A file is executed as a module named ``sharpness_user_<file stem>_<hash of its absolute path>`` and
    registered in ``sys.modules`` (so its classes pickle and repeated loads reuse it). ``fn`` may be a dotted
    attribute path (``"mod:Class.build"``). This runs the referenced code.

    Raises:
        InputError: malformed reference, missing file, module not importable (or raising on import),
            missing attribute, or an attribute that is not callable.
    """
    if not isinstance(ref, str) or ":" not in ref:
        raise InputError(f"expected a {what} reference 'pkg.module:fn' or 'path/to/file.py:fn', got {ref!r}")
    target, attr = ref.rsplit(":", 1)
    if not target or not attr:
        raise InputError(f"expected a {what} reference 'pkg.module:fn' or 'path/to/file.py:fn', got {ref!r}")
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise InputError(f"expected a Python file for {what} {ref!r}, got {str(path)!r} (not found)")
        resolved = path.resolve()
        mod_name = f"sharpness_user_{resolved.stem}_{hashlib.sha256(str(resolved).encode()).hexdigest()[:10]}"
        module = sys.modules.get(mod_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(mod_name, resolved)
            if spec is None or spec.loader is None:
                raise InputError(f"expected an importable Python file for {what} {ref!r}, got {str(path)!r}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[mod_name]
                raise InputError(f"expected {str(path)!r} to import cleanly for {what} {ref!r}, got {one_line(e)}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise InputError(f"expected an importable module for {what} {ref!r}, got {one_line(e)}") from None
        except Exception as e:
            raise InputError(f"expected module {target!r} to import cleanly for {what} {ref!r}, got {one_line(e)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"expected attribute {attr!r} in {target!r} for {what} {ref!r}, got no such attribute")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"expected {ref!r} to be a callable {what}, got {type(obj).__name__}")
    return obj


def accepts(fn: Callable, name: str) -> bool:
    """True when ``fn`` takes a parameter ``name`` by keyword (False when its signature cannot be read)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get(name)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
