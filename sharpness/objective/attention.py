"""Attention with second derivatives: the math SDPA kernel and no fused MultiheadAttention fast path.

PyTorch reaches fused attention kernels in two ways, and neither has a double backward (nor forward-mode AD):

* ``F.scaled_dot_product_attention`` dispatches to flash, memory-efficient or cuDNN kernels on a GPU and to
  ``_scaled_dot_product_flash_attention_for_cpu`` on a CPU; their backward is a single opaque kernel, so a
  Hessian-vector product fails with "derivative for aten::…_backward is not implemented". ``nn.MultiheadAttention``
  (through ``F.multi_head_attention_forward``) and every ``nn.Transformer*`` layer call it inside, as do Hugging
  Face models with ``attn_implementation="sdpa"``.
* ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` take a *fast path* in eval mode when no gradient is
  needed (``torch._native_multi_head_attention``, ``torch._transformer_encoder_layer_fwd``, nested tensors for
  padding masks): a different kernel, so f(θ) under ``torch.no_grad`` would differ in its last bits from the f(θ)
  whose gradient is taken.

:func:`math_attention` closes both ways for the duration of a forward pass: the math backend computes
softmax(QKᵀ/√d + mask)·V from ordinary differentiable ops (every order of derivative, forward and reverse), and
with the fast path off every evaluation runs that same composite code, so values, gradients and Hessian-vector
products are derivatives of one function. The user's settings are restored on exit.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

#: Modules that reach fused attention (directly or through the fast path); seen by a scan of the model.
ATTENTION_MODULES: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
    nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer,
)
#: Functions a model may call that reach fused attention kernels (seen by :class:`AttentionSpy`).
ATTENTION_FUNCTIONS = frozenset(f for f in (
    F.scaled_dot_product_attention, F.multi_head_attention_forward,
    getattr(torch, "_native_multi_head_attention", None), getattr(torch, "_transformer_encoder_layer_fwd", None),
) if f is not None)


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Within the block: ``F.scaled_dot_product_attention`` uses only the math backend and
    ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` skip their fused fast path.

    The previous SDPA backend choice (``torch.nn.attention.sdpa_kernel``) and fast-path flag
    (``torch.backends.mha.get_fastpath_enabled``) are restored on exit, also when the block raises.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def attention_modules(model: nn.Module) -> list[str]:
    """Class names of the submodules of ``model`` that reach fused attention (empty when there are none)."""
    return sorted({type(m).__name__ for m in model.modules() if isinstance(m, ATTENTION_MODULES)})


class AttentionSpy(TorchFunctionMode):
    """Notes which attention functions a forward pass calls at its own level (and changes nothing).

    A torch-function mode is switched off while it handles a call, so the SDPA call *inside*
    ``F.multi_head_attention_forward`` is not seen — which is why that function is watched by name too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: set[str] = set()

    @property
    def seen(self) -> bool:
        return bool(self.calls)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in ATTENTION_FUNCTIONS:
            self.calls.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))
