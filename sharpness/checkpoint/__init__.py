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
global, unless the caller opted in with ``trust_checkpoint=True`` (the CLI's ``--trust-checkpoint``). A bare
``pickle.dump`` file (neither a torch.save zip archive nor torch's legacy stream) is refused before anything
in it is unpickled, opted in or not: torch.load would run its first object and then fail on the magic number.
Building a model from a checkpoint that names a *factory* (``"file.py:fn"``) imports and runs that code,
so it likewise needs the opt-in, or the same reference given explicitly as ``model=``.

Modules: :mod:`~sharpness.checkpoint.format` (the tag, :class:`Checkpoint`, versions),
:mod:`~sharpness.checkpoint.save`, :mod:`~sharpness.checkpoint.load` (safe reading of any weight file),
:mod:`~sharpness.checkpoint.build` (checkpoint → module) and :mod:`~sharpness.checkpoint.describe`. Every
name is importable from ``sharpness.checkpoint``.
"""

from __future__ import annotations

from .build import build_model_from_checkpoint, load_state_strict  # noqa: F401  (the training loop's strict load)
from .describe import describe
from .format import FORMAT, VERSION, Checkpoint, library_versions
from .load import load_checkpoint
from .save import save_checkpoint

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
