"""A Hugging Face ``save_pretrained`` directory as a model to analyze, read from local files only.

    model, info = load_pretrained("out/checkpoint-500")     # config.json + model.safetensors
    report = sharpness.analyze(model, batches, loss="causal-lm")

The directory must hold ``config.json`` naming its architecture (``"architectures": ["GPT2LMHeadModel"]``) and
its weights as safetensors (``model.safetensors``, or the shards a ``model.safetensors.index.json`` lists).
The class is looked up among the classes ``transformers`` itself exports: ``trust_remote_code`` is never used,
so a directory that ships its own modelling code is refused rather than run. Loading happens with
``local_files_only=True`` and the Hub switched off (``HF_HUB_OFFLINE=1``) while it runs: nothing is ever
downloaded, and a file that is missing is an error, not a fetch. Pickled ``pytorch_model.bin`` weights are
refused (unpickling can run code; safetensors cannot).

``info`` is what a report records about the directory: the architecture, ``model_type``, the SHA-256 of
``config.json``'s bytes (two reports on the same config agree on it), the weight files and the transformers
version. Needs ``transformers`` (``pip install sharpness[hf]``), imported only when a directory is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from ..errors import InputError
from ..files.usercode import one_line

__all__ = ["is_pretrained_dir", "load_pretrained", "default_loss", "describe_dir"]

KIND = "save_pretrained"
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def is_pretrained_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a ``config.json`` (what ``save_pretrained`` writes)."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def default_loss(architecture: str) -> str | None:
    """The built-in loss a ``*ForCausalLM`` / ``*LMHeadModel`` is trained with (``"causal-lm"``: position t
    predicts token t + 1, as the model's own ``.loss``), None for others (the usual ``auto`` rule applies)."""
    return "causal-lm" if architecture.endswith(("ForCausalLM", "LMHeadModel")) else None


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """The Hub off for the duration (environment restored after): belt and braces with ``local_files_only``."""
    saved = {k: os.environ.get(k) for k in _OFFLINE}
    os.environ.update(_OFFLINE)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _weight_files(root: Path) -> list[str]:
    if (root / "model.safetensors").is_file():
        return ["model.safetensors"]
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InputError(f"expected {str(index)!r} to hold a 'weight_map' of shard files, got unreadable JSON") from None
        missing = [s for s in shards if not (root / s).is_file()]
        if missing:
            raise InputError(f"expected the safetensors shards {index.name} lists in {str(root)!r}, missing {missing[:3]}")
        return shards
    present = sorted(p.name for p in root.iterdir())[:8]
    pickled = " (pickled pytorch_model.bin is refused: re-save with safe_serialization=True)" if (
        root / "pytorch_model.bin").exists() else ""
    raise InputError(f"expected model.safetensors (or model.safetensors.index.json) in {str(root)!r}, "
                     f"got {present}{pickled}")


def read_config(path: str | os.PathLike) -> tuple[dict, str]:
    """``config.json`` of a ``save_pretrained`` directory as a dict, and the SHA-256 of its bytes."""
    config_path = Path(path) / "config.json"
    raw = config_path.read_bytes()
    try:
        config = json.loads(raw)
    except ValueError as e:
        raise InputError(f"expected {str(config_path)!r} to be JSON, got {one_line(e)}") from None
    if not isinstance(config, dict):
        raise InputError(f"expected {str(config_path)!r} to hold a JSON object, got {type(config).__name__}")
    return config, hashlib.sha256(raw).hexdigest()


def load_pretrained(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """The model saved in ``path`` (eval mode, the saved dtype) and what a report records about it (module
    docstring). Raises :class:`~sharpness.errors.InputError` for anything wrong with the directory."""
    root = Path(path)
    if not is_pretrained_dir(root):
        raise InputError(f"expected a save_pretrained directory with config.json, got {str(root)!r}")
    config, digest = read_config(root)
    archs = config.get("architectures")
    if not (isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs)):
        raise InputError(f"expected config.json in {str(root)!r} to name its architecture "
                         f"(\"architectures\": [\"GPT2LMHeadModel\"]), got {archs!r}")
    architecture = archs[0]
    weights = _weight_files(root)
    with _hub_offline():  # set before the first import: huggingface_hub reads HF_HUB_OFFLINE when imported
        try:
            import transformers
        except ImportError as e:
            raise InputError(f"analyzing a save_pretrained directory needs transformers (pip install sharpness[hf]), "
                             f"got ImportError: {one_line(e)}") from None
        cls = getattr(transformers, architecture, None)
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            raise InputError(f"expected an architecture transformers {transformers.__version__} provides (custom "
                             f"modelling code is never run), got {architecture!r} in {str(root / 'config.json')!r}")
        try:
            model = cls.from_pretrained(str(root), local_files_only=True)
        except Exception as e:  # anything transformers or safetensors rejects (SafetensorError, OSError, ...)
            raise InputError(f"expected {str(root)!r} to load as {architecture}, got {one_line(e)}") from None
    model.eval()
    info = {"kind": KIND, "architecture": architecture, "model_type": config.get("model_type"),
            "config_sha256": digest, "weights": weights, "transformers": transformers.__version__}
    return model, info


def _safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (8-byte little-endian length, then that many bytes of JSON):
    ``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}``. No tensor data is read."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        if size <= 0 or size > path.stat().st_size - 8:
            raise InputError(f"expected a safetensors file, got {str(path)!r} with a header length of {size} bytes")
        try:
            header = json.loads(fh.read(size))
        except ValueError:
            raise InputError(f"expected a safetensors file, got {str(path)!r} with an unreadable header") from None
    if not isinstance(header, dict):
        raise InputError(f"expected a safetensors file, got {str(path)!r} whose header is not a JSON object")
    return header


def describe_dir(path: str | os.PathLike) -> dict:
    """What ``sharpness info DIR`` prints, from ``config.json`` and the safetensors headers alone (no model is
    built, transformers is not needed): the architecture, ``model_type``, the config's SHA-256, and per weight
    file the number of tensors and stored values, with their dtypes."""
    root = Path(path)
    if not is_pretrained_dir(root):
        raise InputError(f"expected a save_pretrained directory with config.json, got {str(root)!r}")
    config, digest = read_config(root)
    files = []
    for name in _weight_files(root):
        tensors = {k: v for k, v in _safetensors_header(root / name).items() if k != "__metadata__"}
        values = sum(math.prod(t.get("shape", [])) for t in tensors.values())
        files.append({"file": name, "tensors": len(tensors), "values": values,
                      "dtypes": sorted({t.get("dtype") for t in tensors.values()})})
    archs = config.get("architectures") or [None]
    return {"kind": KIND, "architecture": archs[0], "model_type": config.get("model_type"),
            "config_sha256": digest, "stored_values": sum(f["values"] for f in files), "weights": files,
            "transformers_version": config.get("transformers_version")}


def describe(info: dict[str, Any]) -> str:
    """One line for people: ``GPT2LMHeadModel (gpt2), config sha256 1a2b3c4d5e6f…``."""
    return f"{info['architecture']} ({info['model_type']}), config sha256 {info['config_sha256'][:12]}…"
