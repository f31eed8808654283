"""From a checkpoint to a module: the recorded architecture (or an explicit one), weights loaded strictly."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..models import build_from_spec, is_factory_ref, model_names
from .format import Checkpoint


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
