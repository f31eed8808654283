"""The float32 precision policy of an analysis, set on entry and restored on exit.

On Ampere and newer GPUs PyTorch may run float32 convolutions (cuDNN's default) and matrix products (when
``torch.backends.cuda.matmul.allow_tf32`` or ``torch.set_float32_matmul_precision("high")`` is set) in TF32,
whose 10-bit mantissa gives ~1e-3 relative error in every product — and so in every Hessian-vector product,
eigenvalue and trace, without any sign on the CPU where the same code is exact to float32 rounding. An
analysis therefore turns TF32 off (matmul precision ``"highest"``, cuDNN TF32 off) unless the user opts in
with ``allow_tf32=True`` (``--allow-tf32``), turns cuDNN's benchmark mode off (it may pick a different
convolution algorithm between two evaluations, which the determinism probe would see as a random model),
and restores every global flag afterwards, also when the analysis raises.

:func:`precision_policy` is the context manager; it yields the record that reports keep under
``environment["precision"]``. Nested use is fine: each level restores what it found.
"""

from __future__ import annotations

import dataclasses
import functools
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import torch

__all__ = ["precision_flags", "precision_policy", "with_precision_policy"]

F = TypeVar("F", bound=Callable[..., Any])
#: allow_tf32 of the policies entered and not yet left (innermost last): a decorated entry point called
#: inside another (landscape() → plane()) inherits the caller's choice instead of resetting it.
_ACTIVE: list[bool] = []


#: The per-backend settings of torch's newer precision API (``torch.backends.<path>.fp32_precision``, torch ≥
#: 2.9), generic before specific; the legacy flags (allow_tf32, set_float32_matmul_precision) are views on them.
_FP32_PATHS = ("", "cuda.matmul", "mkldnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn", "cudnn", "cudnn.conv",
               "cudnn.rnn")


def _backend(path: str) -> Any:
    obj: Any = torch.backends
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part, None)
    return obj


def _fp32_settings() -> dict[str, str]:
    return {path or "global": str(_backend(path).fp32_precision) for path in _FP32_PATHS
            if _backend(path) is not None and hasattr(_backend(path), "fp32_precision")}


def _matmul_precision() -> str:
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:  # per-backend settings that disagree (set through the new API): no single answer
        return "mixed"


def _legacy(read: Callable[[], Any]) -> bool | None:
    try:
        return bool(read())
    except RuntimeError:  # torch refuses a legacy read after per-backend settings it cannot express
        return None


def precision_flags() -> dict[str, Any]:
    """The global flags that decide float32 accuracy and kernel choice, as they are now (``"mixed"`` / None
    where settings made through torch's per-backend API have no legacy value)."""
    return {
        "float32_matmul_precision": _matmul_precision(),
        "cuda_matmul_allow_tf32": _legacy(lambda: torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": _legacy(lambda: torch.backends.cudnn.allow_tf32),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
    }


def _restore(saved: dict[str, Any], fp32: dict[str, str]) -> None:
    legacy = saved["float32_matmul_precision"] != "mixed" and None not in (
        saved["cuda_matmul_allow_tf32"], saved["cudnn_allow_tf32"])
    if not legacy:  # the user set them through the per-backend API: write those back, generic settings first
        for path, value in fp32.items():
            _backend("" if path == "global" else path).fp32_precision = value
        torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
        return
    # set_float32_matmul_precision also sets matmul.allow_tf32 (they are one flag): restoring it restores
    # both, and writing allow_tf32 again after e.g. "medium" would mix torch's legacy and new precision APIs
    # (get_float32_matmul_precision then raises). The cuDNN flags are independent of it.
    torch.set_float32_matmul_precision(saved["float32_matmul_precision"])
    if bool(torch.backends.cuda.matmul.allow_tf32) != saved["cuda_matmul_allow_tf32"]:
        torch.backends.cuda.matmul.allow_tf32 = saved["cuda_matmul_allow_tf32"]
    torch.backends.cudnn.allow_tf32 = saved["cudnn_allow_tf32"]
    torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]


@contextmanager
def precision_policy(allow_tf32: bool = False) -> Iterator[dict[str, Any]]:
    """Run the body with TF32 off (or on, with ``allow_tf32=True``) and cuDNN benchmark mode off.

    Yields ``{"allow_tf32": ..., **precision_flags()}`` as set inside the body (the report's record); on exit,
    normal or by an exception, the flags found on entry are restored.
    """
    if not isinstance(allow_tf32, bool):
        raise ValueError(f"allow_tf32 must be a bool, got {allow_tf32!r}")
    saved, fp32 = precision_flags(), _fp32_settings()
    _ACTIVE.append(allow_tf32)
    try:
        torch.set_float32_matmul_precision("high" if allow_tf32 else "highest")  # = matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
        torch.backends.cudnn.benchmark = False
        yield {"allow_tf32": allow_tf32, **precision_flags()}
    finally:
        _ACTIVE.pop()
        _restore(saved, fp32)


def with_precision_policy(fn: F) -> F:
    """Decorate a library entry point: it takes a keyword ``allow_tf32`` (default ``False``, or the enclosing
    policy's choice when called inside one) and runs under :func:`precision_policy`; a dataclass result with a
    ``config`` dict (a landscape result) records the policy there under ``"precision"``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, allow_tf32: bool | None = None, **kwargs: Any) -> Any:
        if allow_tf32 is None:
            allow_tf32 = _ACTIVE[-1] if _ACTIVE else False
        with precision_policy(allow_tf32) as policy:
            result = fn(*args, **kwargs)
        if dataclasses.is_dataclass(result) and isinstance(getattr(result, "config", None), dict):
            result = dataclasses.replace(result, config={**result.config, "precision": policy})
        return result

    return wrapper  # type: ignore[return-value]
