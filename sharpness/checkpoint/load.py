"""Reading any weight file safely: a sharpness checkpoint, a bare or wrapped ``state_dict``, ``.safetensors``,
or (opted in) a pickled module; a pickle that needs any other global is refused with that global named. A bare
``pickle.dump`` file is none of these and is refused before anything in it is unpickled, opt-in or not."""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .format import _WRAPPER_KEYS, FORMAT, VERSION, Checkpoint
from .save import _as_state_dict


_GLOBAL_PATTERNS = (
    re.compile(r"GLOBAL (\S+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL (\S+) whose module"),
    re.compile(r"unrecognized function (.+?)(?: which belongs|$)", re.M),
    re.compile(r"(?:Can only create new object|Can only build).*but got <class '([^']+)'>"),
)


def _disallowed_global(message: str) -> str | None:
    """The global a weights-only load refused, parsed from torch's UnpicklingError text (None if other)."""
    for pattern in _GLOBAL_PATTERNS:
        m = pattern.search(message)
        if m:
            return m.group(1).strip()
    return None


class _Global(Exception):
    """Raised by :class:`_GlobalScanner` with the first global a pickle names."""


class _GlobalScanner(pickle.Unpickler):
    """Reads a pickle up to its first global and stops there, so nothing the file names is ever imported or
    called (every object a pickle can build without a global is a plain dict/list/str/number)."""

    def find_class(self, module: str, name: str):
        raise _Global(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _Global(f"a persistent id {str(pid)[:40]}")


def _first_global(path: Path) -> str | None:
    """The first global a bare pickle references (``"posix.system"``), or None for a pickle of plain values
    or a file that is not a readable pickle. Never builds an object from a global."""
    try:
        with open(path, "rb") as f:
            _GlobalScanner(f).load()
    except _Global as found:
        return str(found)
    except Exception:
        return None
    return None


def _describe_foreign(path: Path, head: bytes, size: int) -> str:
    if size == 0:
        return "an empty file"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return "a truncated or corrupt zip archive"
        if names and all(n.endswith(".npy") for n in names):
            return "a NumPy .npz archive"
        return "a zip archive that is not a PyTorch checkpoint (or a truncated one)"
    if head[:1] == b"\x80":
        return "a truncated or unsupported pickle"
    try:
        head.decode("utf-8")
        if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
            return "a text file"
    except UnicodeDecodeError:
        pass
    return f"an unrecognized binary file ({size} bytes)"


def _foreign(path: Path, head: bytes, size: int, detail: str = "") -> InputError:
    what = _describe_foreign(path, head, size)
    return InputError(f"expected a PyTorch checkpoint (.pt) or .safetensors file, got {what}: {path}{detail}")


# torch.load reads two formats: a zip archive (local-file-header magic) and the legacy stream, which opens with
# torch's magic number pickled alone (at whatever protocol torch.save was given).
_ZIP_HEAD = b"PK\x03\x04"
_LEGACY_TORCH_HEADS = tuple(pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=k)
                            for k in range(pickle.HIGHEST_PROTOCOL + 1))


def _is_bare_pickle(p: Path, head: bytes) -> bool:
    """True for a file ``pickle.dump`` wrote (not one of torch.load's formats), decided without unpickling:
    protocol ≥ 2 by its PROTO opcode, protocols 0/1 by parsing opcodes (:func:`pickletools.genops` builds
    nothing) up to STOP."""
    if head.startswith(_ZIP_HEAD) or head.startswith(_LEGACY_TORCH_HEADS):
        return False
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return True
    try:
        with open(p, "rb") as f:
            for op, _, _ in pickletools.genops(f):
                if op.name == "STOP":
                    return True
    except Exception:
        return False
    return False


def _bare_pickle_refused(p: Path) -> InputError:
    """torch.load given a bare pickle unpickles its first object (running any code in it) before it finds no
    magic number, so such a file is refused unread, with or without the opt-in; the scanner that names its
    first global imports and builds nothing."""
    offending = _first_global(p)
    what = f"a bare pickle (pickle.dump) referencing {offending}" if offending else "a bare pickle (pickle.dump)"
    return InputError(f"expected a torch.save file (a zip archive or torch's legacy format) or .safetensors, got "
                      f"{what}: {p}; refused without running anything in it, even with --trust-checkpoint "
                      "(torch.load cannot read it): re-save its contents with torch.save")


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n <= size - 8 and head[8:9] == b"{"


def load_checkpoint(path: str | os.PathLike, *, trust_checkpoint: bool = False) -> Checkpoint:
    """Open a checkpoint safely and say what it holds (module docstring: accepted formats).

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)``. Only when that
    refuses a pickled global *and* ``trust_checkpoint=True`` is it read again with ``weights_only=False``
    (which runs code from the file; a warning is issued). A file in neither of torch.load's formats (zip
    archive, legacy stream) that parses as a pickle is refused first, trusted or not: nothing in it runs.

    Raises:
        InputError: missing, empty, truncated or foreign file; a bare ``pickle.dump`` file; a pickle needing arbitrary globals without
            ``trust_checkpoint``; a malformed or newer-version sharpness checkpoint.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"expected a checkpoint file, got {str(p)!r} (not found)")
    if p.is_dir():
        raise InputError(f"expected a checkpoint file, got directory {str(p)!r}")
    size = p.stat().st_size
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise InputError(f"expected a readable checkpoint file, got {str(p)!r} ({e.strerror or e})") from None
    if size == 0:
        raise _foreign(p, head, size)
    if p.suffix == ".safetensors" or _looks_like_safetensors(head, size):
        return _load_safetensors(p, head, size, trust_checkpoint)
    if _is_bare_pickle(p, head):
        raise _bare_pickle_refused(p)

    try:
        with warnings.catch_warnings():
            # torch warns (3 lines on stderr) about any pickle protocol it does not write itself; the outcome
            # of this load is reported as one line below, whatever it is.
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        offending = _disallowed_global(str(e))
        if offending is None:
            raise _foreign(p, head, size) from None
        if not trust_checkpoint:
            raise InputError(
                f"expected a checkpoint of tensors and plain values, got {str(p)!r} referencing {offending}: "
                "refused as unsafe (unpickling it could run code); pass --trust-checkpoint to run code from this file"
            ) from None
        warnings.warn(
            f"loading {p} with weights_only=False because trust_checkpoint=True: this runs code from the file "
            f"(it references {offending})",
            stacklevel=2,
        )
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e2:
            raise _foreign(p, head, size, f" ({type(e2).__name__}: {str(e2).strip().splitlines()[0] if str(e2).strip() else ''})") from None
    except Exception:  # any other decoding error (zip, EOF, OS) means: not a readable checkpoint
        raise _foreign(p, head, size) from None
    return _interpret(obj, p, trust_checkpoint)


def _interpret(obj: Any, p: Path, trusted: bool) -> Checkpoint:
    def make(state_dict, *, kind, model=None, data=None, train_config=None, metrics=None, history=None,
             seed=None, versions=None, extra=None, module=None) -> Checkpoint:
        return Checkpoint(
            state_dict=state_dict, model=model, data=data, train_config=train_config or {},
            metrics=metrics or {}, history=history or [], seed=seed, versions=versions or {},
            extra=extra or {}, kind=kind, path=str(p), trusted=trusted, module=module,
        )

    if isinstance(obj, nn.Module):  # reachable only with trust_checkpoint=True
        sd = {k: v.detach() for k, v in obj.state_dict().items()}
        return make(sd, kind="module", module=obj, extra={"module_class": f"{type(obj).__module__}.{type(obj).__qualname__}"})
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        version = obj.get("version")
        if not isinstance(version, int) or version < 1:
            raise InputError(f"expected a sharpness checkpoint version ≥ 1 in {str(p)!r}, got {version!r}")
        if version > VERSION:
            raise InputError(f"expected a sharpness checkpoint of version ≤ {VERSION}, got version {version} in {str(p)!r} (upgrade sharpness)")
        model = obj.get("model")
        if model is not None and (not isinstance(model, Mapping) or not isinstance(model.get("name"), str)):
            raise InputError(f"expected a model spec {{'name', 'kwargs'}} in {str(p)!r}, got {str(model)[:60]}")
        for key, typ in (("data", (dict, type(None))), ("train_config", dict), ("metrics", dict), ("history", list),
                         ("versions", dict), ("extra", dict)):
            if key in obj and obj[key] is not None and not isinstance(obj[key], typ):
                raise InputError(f"expected field {key!r} of a sharpness checkpoint to be {typ}, got {type(obj[key]).__name__} in {str(p)!r}")
        return make(
            _as_state_dict(obj.get("state_dict"), f"the state_dict in {str(p)!r}"), kind="sharpness",
            model=None if model is None else dict(model), data=obj.get("data"), train_config=obj.get("train_config"),
            metrics=obj.get("metrics"), history=obj.get("history"), seed=obj.get("seed"),
            versions=obj.get("versions"), extra=obj.get("extra"),
        )
    if isinstance(obj, Mapping):
        if obj and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
            return make(dict(obj), kind="state_dict")
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in inner.items()):
                others = sorted(str(k) for k in obj if k != key)
                return make(dict(inner), kind="state_dict", extra={"wrapper_key": key, "other_keys": others})
        keys = ", ".join(sorted(str(k) for k in obj)[:8])
        raise InputError(
            f"expected a state_dict (a dict of tensors, possibly under 'state_dict'/'model_state_dict'/'model') "
            f"or a sharpness checkpoint in {str(p)!r}, got a dict with keys [{keys}]"
        )
    raise InputError(
        f"expected a PyTorch checkpoint (.pt) or .safetensors file holding a state_dict, got a pickled "
        f"{type(obj).__name__}: {p}"
    )


def _load_safetensors(p: Path, head: bytes, size: int, trusted: bool) -> Checkpoint:
    try:
        from safetensors import safe_open
    except ImportError:
        raise InputError(f"expected the 'safetensors' package to read {str(p)!r} (pip install safetensors), got ImportError") from None
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise _foreign(p, head, size, f" (safetensors: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
    return Checkpoint(
        state_dict=sd, model=None, data=None, train_config={}, metrics={}, history=[], seed=None, versions={},
        extra={"safetensors_metadata": dict(metadata)} if metadata else {}, kind="safetensors", path=str(p),
        trusted=trusted,
    )
