"""Self-describing checkpoints, and safe loading of other people's weight files.

A *sharpness checkpoint* is a ``.pt`` file written by :func:`save_checkpoint` holding only tensors and
plain Python values, so ``torch.load(path, weights_only=True)`` opens it without running code::

    {"format": "sharpness.checkpoint", "version": 1,
     "model": {"name": "mlp", "kwargs": {"input_shape": [40], "num_classes": 10, ...}},  # models.model_spec
     "state_dict": {"0.weight": Tensor, ...},
     "data": {...},                 # data.Dataset.spec (or None)
     "train_config": {...}, "metrics": {...}, "history": [{...}, ...],
     "seed": 0,                     # or None
     "versions": {"sharpness": "...", "torch": "...", "numpy": "...", "python": "..."},
     "extra": {...}}

:func:`load_checkpoint` also reads

- a bare ``state_dict`` (a dict of tensors, or one wrapped as ``{"state_dict": ...}``,
  ``{"model_state_dict": ...}`` or ``{"model": ...}``) → ``kind="state_dict"``;
- a ``.safetensors`` file (needs the optional ``safetensors`` package) → ``kind="safetensors"``;
- with ``trust_checkpoint=True`` only, a pickled ``nn.Module`` (``torch.save(model)``) → ``kind="module"``.

Safety: files are always opened with ``weights_only=True`` first. A pickle that references any other
global (a whole module, or a malicious ``__reduce__``) is refused with an :class:`InputError` naming the
global, unless the caller opted in with ``trust_checkpoint=True`` (the CLI's ``--trust-checkpoint``).
Building a model from a checkpoint that names a *factory* (``"file.py:fn"``) imports and runs that code,
so it likewise needs the opt-in, or the same reference given explicitly as ``model=``.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import platform
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sharpness.errors import InputError
from sharpness.models import build_from_spec, build_model, is_factory_ref, model_names
from sharpness.rundir import atomic_write

__all__ = [
    "FORMAT",
    "VERSION",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "build_model_from_checkpoint",
    "describe",
    "library_versions",
]

FORMAT = "sharpness.checkpoint"
VERSION = 1
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """What :func:`load_checkpoint` found. Fields absent from the file are empty (``{}``, ``[]``, ``None``).

    ``kind`` is ``"sharpness"`` (written by :func:`save_checkpoint`), ``"state_dict"``, ``"safetensors"`` or
    ``"module"`` (a pickled ``nn.Module``, loaded only when trusted; the module itself is in ``module``).
    ``trusted`` records whether the caller passed ``trust_checkpoint=True``.
    """

    state_dict: dict[str, Tensor]
    model: dict | None
    data: dict | None
    train_config: dict
    metrics: dict
    history: list
    seed: int | None
    versions: dict
    extra: dict
    kind: str
    path: str
    trusted: bool = False
    module: nn.Module | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        name = None if self.model is None else self.model.get("name")
        return f"Checkpoint(kind={self.kind!r}, path={self.path!r}, model={name!r}, tensors={len(self.state_dict)})"


def library_versions() -> dict[str, str]:
    """``{"sharpness", "torch", "numpy", "python"}`` version strings of the running process."""
    try:
        from importlib.metadata import version

        sharpness_version = version("sharpness")
    except Exception:
        try:
            from sharpness import __version__ as sharpness_version  # type: ignore[attr-defined]
        except Exception:
            sharpness_version = "unknown"
    return {
        "sharpness": str(sharpness_version),
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------


def _plain(value: Any, where: str) -> Any:
    """Recursively check/convert to dict/list/tuple/str/int/float/bool/None/Tensor (numpy → Python)."""
    if isinstance(value, Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise InputError(f"expected str keys in checkpoint field {where}, got key {k!r} ({type(k).__name__})")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    # Exact builtin types only: subclasses (TorchVersion, IntEnum, ...) would need their class to unpickle.
    if value is None:
        return None
    for typ in (bool, str, int, float):
        if isinstance(value, typ):
            return typ(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, torch.dtype, torch.device)):
        return str(value)
    raise InputError(
        f"expected plain values (dict/list/str/int/float/bool/None/Tensor) in checkpoint field {where}, "
        f"got {type(value).__module__}.{type(value).__qualname__}"
    )


def _as_state_dict(state_dict: Any, where: str) -> dict[str, Tensor]:
    if isinstance(state_dict, nn.Module):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise InputError(f"expected {where} to be a dict of tensors, got {type(state_dict).__name__}")
    out: dict[str, Tensor] = {}
    for k, v in state_dict.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise InputError(f"expected {where} to map str → Tensor, got {k!r} → {type(v).__name__}")
        out[k] = v
    return out


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: dict | None,
    state_dict: Mapping[str, Tensor] | nn.Module,
    data: dict | None = None,
    train_config: dict | None = None,
    metrics: dict | None = None,
    history: list | None = None,
    seed: int | None = None,
    extra: dict | None = None,
) -> None:
    """Write a sharpness checkpoint atomically (temp file in the same directory, fsync, ``os.replace``).

    Args:
        path: destination ``.pt`` file; its directory must exist and be writable.
        model: a :func:`sharpness.models.model_spec` dict (``None`` writes weights without a description).
        state_dict: the model's ``state_dict()`` (an ``nn.Module`` is accepted and its state taken);
            tensors are detached, moved to CPU and cloned compactly.
        data: a dataset spec (:attr:`sharpness.data.Dataset.spec`).
        train_config, metrics, history, extra: plain values only (numpy scalars/arrays become Python
            values); anything else raises :class:`InputError`.
        seed: the seed the run used.

    Raises:
        InputError: non-plain values, or a destination that cannot be written.
    """
    if model is not None and (not isinstance(model, Mapping) or not isinstance(model.get("name"), str)
                              or not isinstance(model.get("kwargs", {}), Mapping)):
        raise InputError(f"expected model to be a model_spec dict {{'name': str, 'kwargs': dict}} or None, got {str(model)[:80]}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise InputError(f"expected seed to be an integer or None, got {seed!r}")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": _plain(model, "model"),
        "state_dict": _plain(_as_state_dict(state_dict, "state_dict"), "state_dict"),
        "data": _plain(data, "data"),
        "train_config": _plain(train_config or {}, "train_config"),
        "metrics": _plain(metrics or {}, "metrics"),
        "history": _plain(history or [], "history"),
        "seed": None if seed is None else int(seed),
        "versions": _plain(library_versions(), "versions"),
        "extra": _plain(extra or {}, "extra"),
    }
    _atomic_torch_save(payload, Path(path))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """:func:`~sharpness.rundir.atomic_write` of ``torch.save(obj)``, its failures said as checkpoint errors."""
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"expected a file path to write the checkpoint to, got directory {str(path)!r}")
    if not directory.is_dir():
        raise InputError(f"expected an existing directory to write {path.name!r} into, got {str(directory)!r} (missing)")
    opened = False

    def write(fh: Any) -> None:
        nonlocal opened
        opened = True  # the temporary file exists: a failure from here on is a failed write, not a closed directory
        torch.save(obj, fh)

    try:
        atomic_write(path, write)
    except OSError as e:
        what = "to write checkpoint" if opened else "a writable directory for checkpoint"
        raise InputError(f"expected {what} {str(path)!r}, got {type(e).__name__}: {e.strerror or e}") from None


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------

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


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n <= size - 8 and head[8:9] == b"{"


def load_checkpoint(path: str | os.PathLike, *, trust_checkpoint: bool = False) -> Checkpoint:
    """Open a checkpoint safely and say what it holds (module docstring: accepted formats).

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)``. Only when that
    refuses a pickled global *and* ``trust_checkpoint=True`` is it read again with ``weights_only=False``
    (which runs code from the file; a warning is issued).

    Raises:
        InputError: missing, empty, truncated or foreign file; a pickle needing arbitrary globals without
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

    try:
        with warnings.catch_warnings():
            # torch warns (3 lines on stderr) about any pickle protocol it does not write itself; the outcome
            # of this load is reported as one line below, whatever it is.
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        offending = _disallowed_global(str(e))
        if offending is None and head[:1] == b"\x80":
            offending = _first_global(p)  # a bare pickle the weights-only reader cannot parse (protocol ≥ 3)
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


# ----------------------------------------------------------------------------------------------------------
# Building the model
# ----------------------------------------------------------------------------------------------------------


def _check_finite(state_dict: Mapping[str, Tensor], path: str) -> None:
    for k, t in state_dict.items():
        if (t.is_floating_point() or t.is_complex()) and t.numel():
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                n_nan = int(torch.isnan(t).sum())
                n_inf = int((~finite).sum()) - n_nan
                raise InputError(
                    f"expected finite weights in checkpoint {path!r}, got tensor {k!r} with {n_nan} NaN and "
                    f"{n_inf} Inf of {t.numel()} entries"
                )


def _shape_from_data(spec: dict | None) -> tuple[Any, Any]:
    if not isinstance(spec, Mapping):
        return None, None
    out = spec.get("output_dim", spec.get("num_classes"))
    return spec.get("input_shape"), out


def _first(*values):
    for v in values:
        if v is not None:
            return v
    return None


def build_model_from_checkpoint(
    ckpt: Checkpoint,
    *,
    model: str | None = None,
    model_kwargs: dict | None = None,
    data_spec: dict | None = None,
) -> nn.Module:
    """Rebuild the architecture and load the checkpoint's weights with ``strict=True``.

    The architecture comes from ``model`` (a built-in name or factory reference, with ``model_kwargs``) when
    given, else from the recorded spec, else (``kind="module"``) from a copy of the pickled module.
    With an override, the recorded kwargs are reused when the names match, and ``input_shape`` /
    ``num_classes`` are filled from (in order) ``model_kwargs``, the recorded model spec, ``data_spec``
    (its ``output_dim``/``num_classes``) and the recorded data spec. A recorded *factory* reference is run
    only if the checkpoint was loaded with ``trust_checkpoint=True`` or the same reference is passed as
    ``model``. The model is initialized with seed 0 (the global RNG is untouched) and cast to the
    checkpoint's floating dtype if all its floating tensors share one.

    Returns:
        A new module, in train mode as PyTorch builds it; the caller chooses ``eval()``/``train()``.

    Raises:
        InputError: no architecture available (bare state_dict without ``model``), non-finite weights
            (naming the tensor), or a state_dict that does not match (missing/unexpected keys and the
            first shape mismatch, in one line).
    """
    if not isinstance(ckpt, Checkpoint):
        raise InputError(f"expected a Checkpoint from load_checkpoint, got {type(ckpt).__name__}")
    _check_finite(ckpt.state_dict, ckpt.path)
    recorded = ckpt.model if isinstance(ckpt.model, Mapping) else None
    if model is not None:
        rec_kwargs = dict(recorded.get("kwargs") or {}) if recorded else {}
        kwargs = rec_kwargs if recorded and recorded.get("name") == model else {}
        d_shape, d_out = _shape_from_data(data_spec)
        c_shape, c_out = _shape_from_data(ckpt.data)
        user = dict(model_kwargs or {})
        kwargs.update(user)
        kwargs["input_shape"] = _first(user.get("input_shape"), rec_kwargs.get("input_shape"), d_shape, c_shape)
        kwargs["num_classes"] = _first(user.get("num_classes"), rec_kwargs.get("num_classes"), d_out, c_out)
        name = model
        if name in model_names() and (kwargs["input_shape"] is None or kwargs["num_classes"] is None):
            raise InputError(
                f"expected input_shape and num_classes for model {name!r} (from --data or --model-kwargs), "
                f"got input_shape={kwargs['input_shape']!r}, num_classes={kwargs['num_classes']!r}"
            )
        spec = {"name": name, "kwargs": kwargs}
        net = build_from_spec(spec, seed=0)
    elif recorded is not None:
        name = recorded["name"]
        if model_kwargs:
            spec = {"name": name, "kwargs": {**dict(recorded.get("kwargs") or {}), **model_kwargs}}
        else:
            spec = dict(recorded)
        if is_factory_ref(name) and not ckpt.trusted:
            raise InputError(
                f"expected confirmation to run model factory {name!r} named by checkpoint {ckpt.path!r}, got none; "
                f"pass --model {name!r} (or --trust-checkpoint) to run that code"
            )
        net = build_from_spec(spec, seed=0)
    elif ckpt.kind == "module" and ckpt.module is not None:
        return copy.deepcopy(ckpt.module)
    else:
        raise InputError(
            f"expected a model description, got a bare {ckpt.kind} in {ckpt.path!r}; "
            "pass --model NAME or FACTORY (with --data or --model-kwargs for its input shape and outputs)"
        )

    dtypes = {t.dtype for t in ckpt.state_dict.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        (dtype,) = dtypes
        if any(p.is_floating_point() and p.dtype != dtype for p in net.parameters()):
            net = net.to(dtype)
    load_state_strict(net, ckpt.state_dict, name, ckpt.path)
    return net


def load_state_strict(net: nn.Module, state_dict: Mapping[str, Tensor], name: str, path: str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatch = next(((k, list(state_dict[k].shape), list(own[k].shape)) for k in own
                     if k in state_dict and state_dict[k].shape != own[k].shape), None)
    if missing or unexpected or mismatch:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (", …" if len(keys) > 3 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) [{some(missing)}]")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) [{some(unexpected)}]")
        if mismatch:
            parts.append(f"first shape mismatch {mismatch[0]}: checkpoint {mismatch[1]} vs model {mismatch[2]}")
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = " (keys start with 'module.': saved from DataParallel/DDP; strip the prefix)"
        raise InputError(f"expected checkpoint {path!r} to match model {name!r}, got {'; '.join(parts)}{hint}")
    try:
        net.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise InputError(f"expected checkpoint {path!r} to load into model {name!r}, got {first[-1] if first else e}") from None


# ----------------------------------------------------------------------------------------------------------
# Describing
# ----------------------------------------------------------------------------------------------------------


def _summary(value: Any) -> Any:
    """JSON-able view: tensors become ``"Tensor(shape=[...], dtype=...)"`` strings."""
    if isinstance(value, Tensor):
        if value.numel() == 1:
            return value.item()
        return f"Tensor(shape={list(value.shape)}, dtype={str(value.dtype).replace('torch.', '')})"
    if isinstance(value, Mapping):
        return {str(k): _summary(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_summary(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return repr(value)


def describe(ckpt: Checkpoint) -> dict:
    """A JSON-able summary of a checkpoint (what ``sharpness info`` prints). Runs no user code.

    Keys: ``path, kind, model, num_parameters, num_parameters_exact, num_tensors, num_elements, bytes,
    dtypes, tensors`` (``[{"name", "shape", "dtype"}]`` in file order), ``nonfinite_tensors, data,
    train_config, metrics, history_length, last_history, seed, versions, extra``.
    ``num_parameters`` is exact for built-in models and pickled modules; otherwise it counts floating
    tensors other than BatchNorm running statistics (``num_parameters_exact: false``).
    """
    sd = ckpt.state_dict
    num_params, exact = None, False
    if ckpt.kind == "module" and ckpt.module is not None:
        num_params, exact = sum(p.numel() for p in ckpt.module.parameters()), True
    elif ckpt.model and ckpt.model.get("name") in model_names():
        try:
            net = build_from_spec(ckpt.model, seed=0)
            num_params, exact = sum(p.numel() for p in net.parameters()), True
        except InputError:
            pass
    if num_params is None:
        num_params = sum(t.numel() for k, t in sd.items() if t.is_floating_point() and not k.endswith(_BUFFER_SUFFIXES))
    dtypes: dict[str, int] = {}
    for t in sd.values():
        key = str(t.dtype).replace("torch.", "")
        dtypes[key] = dtypes.get(key, 0) + 1
    nonfinite = [k for k, t in sd.items() if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())]
    return {
        "path": ckpt.path,
        "kind": ckpt.kind,
        "model": _summary(ckpt.model),
        "num_parameters": int(num_params),
        "num_parameters_exact": exact,
        "num_tensors": len(sd),
        "num_elements": int(sum(t.numel() for t in sd.values())),
        "bytes": int(sum(t.numel() * t.element_size() for t in sd.values())),
        "dtypes": dtypes,
        "tensors": [{"name": k, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")} for k, t in sd.items()],
        "nonfinite_tensors": nonfinite,
        "data": _summary(ckpt.data),
        "train_config": _summary(ckpt.train_config),
        "metrics": _summary(ckpt.metrics),
        "history_length": len(ckpt.history),
        "last_history": _summary(ckpt.history[-1]) if ckpt.history else None,
        "seed": ckpt.seed,
        "versions": _summary(ckpt.versions),
        "extra": _summary(ckpt.extra),
    }
