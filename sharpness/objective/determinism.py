"""The first-chunk probe of an :class:`~sharpness.objective.Objective` and its determinism rule.

Every objective evaluates its first chunk once at construction (twice with ``check_determinism``): shapes,
labels and the loss are checked, a model that reaches fused attention kernels (``F.scaled_dot_product_attention``,
``nn.MultiheadAttention``, ``nn.Transformer*``) is switched to :func:`~sharpness.objective.attention.math_attention`
(the fused kernels have no double backward), and a model whose two evaluations differ by more
than :func:`determinism_tolerance` allows is refused.
"""

from __future__ import annotations

import logging
import math

import torch

from . import batches as B
from ..errors import InputError
from .attention import AttentionSpy, attention_modules

_SdpaSpy = AttentionSpy  # the name it had before attention got its own module

# The objective's logger, whichever of its modules logs.
log = logging.getLogger("sharpness.objective")
_SDPA_NOTICED: set[str] = set()


def determinism_tolerance(device_type: str, dtype: torch.dtype, loss_scale: float, n_samples: int) -> float:
    """How far apart two evaluations of one loss sum may be for the model to count as deterministic.

    CPU (and anything but CUDA): 0.0 — equality bit for bit; CPU kernels are deterministic, so any
    difference is the model's own randomness. CUDA: 16·√n·eps(dtype)·|S| for a sum S of n per-sample
    losses. Reason: correct CUDA kernels may change the order of floating-point sums between calls (atomic
    adds, split-K matmuls, cuDNN algorithm choice), and every reordering perturbs a partial sum by about
    eps relative; n such independent roundings add up like a random walk, ~√n·eps·|S| (Higham, *Accuracy
    and Stability of Numerical Algorithms*, §4.2, for the statistical rounding model), and the factor 16
    leaves room for the same effect inside each forward pass. For float32 and n = 256 this is 3e-5
    relative: eight orders of magnitude below what one dropout mask does (~1e-2 relative and more).
    """
    if device_type != "cuda":
        return 0.0
    return 16.0 * math.sqrt(max(int(n_samples), 1)) * float(torch.finfo(dtype).eps) * abs(float(loss_scale))



class DeterminismProbe:
    """Mixin of :class:`~sharpness.objective.Objective`: the construction-time probe of the first chunk."""

    def _attention_notice(self, calls: list[str]) -> None:
        """One warning per model class and process (a landscape builds several objectives of one model), then
        INFO: the math kernel holds the T×T attention matrix, which costs memory and time on long sequences."""
        kind = type(self._module).__qualname__
        what = ", ".join(attention_modules(self._module) + calls) or "attention"
        log.log(logging.INFO if kind in _SDPA_NOTICED else logging.WARNING,
                f"the model uses attention ({what}), whose fused kernels (scaled_dot_product_attention's flash / "
                "memory-efficient, MultiheadAttention's fast path) have no double backward: evaluating it with the "
                "math kernel (same function; more memory on long sequences)")
        _SDPA_NOTICED.add(kind)

    def _check_determinism(self, *, repeat: bool = True, policy_device: str | None = None) -> None:
        """Evaluate the first chunk (≤ 256 samples) once (twice with ``repeat``): shapes, labels and loss are
        checked, attention is detected (the math kernel from then on), and a model whose two evaluations differ refused.

        "Differ" follows :func:`determinism_tolerance` for the device (``policy_device``, default the
        objective's device type; a test passes ``"cuda"`` to exercise the GPU rule on the CPU): bit-for-bit
        equality on the CPU, a rounding-sized tolerance on CUDA. Which rule applied, with the tolerance and
        the observed difference, is kept in :attr:`determinism` (reports show it under
        ``environment["determinism"]``). Dropout left active (``F.dropout(..., training=True)``) changes
        the loss by orders of magnitude more than any rounding and is refused on every device."""
        batch, w = next(self.chunks())
        n = B.batch_size(batch, self.batch_size_fn)
        m = min(n, 256)
        batch = B.slice_batch(batch, slice(0, m), n)
        w = None if w is None else w[:m]
        params = self._point(None)
        spy = AttentionSpy()
        try:
            with torch.no_grad():
                with spy:
                    out = self.forward(params, batch)
                if spy.seen and self.attention is None:
                    self.attention = "math"
                    out = self.forward(params, batch)  # the first pass ran the fused kernels
                if self.attention == "math":
                    self._attention_notice(sorted(spy.calls))
                if self._loss_fn is None and self.loss_kind in ("cross-entropy", "causal-lm"):
                    self._check_labels(out, self._target(batch))
                a = self.chunk_loss_sum(params, batch, w)
                b = self.chunk_loss_sum(params, batch, w) if repeat else a
        except InputError:
            raise
        except (RuntimeError, IndexError, ValueError, TypeError, KeyError) as err:
            if self.source is None:
                x, y = batch
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise InputError(
                    f"the model could not be evaluated on the analysis set (samples of shape {tuple(x.shape[1:])}, "
                    f"targets of shape {tuple(y.shape[1:])}): {first}"
                ) from None
            raise self._eval_error(err, batch, "the first batch") from None
        if not torch.isfinite(a):
            raise InputError(f"expected a finite loss at the checkpoint, got {float(a)}")
        a_host, b_host = float(a), float(b)
        tol = determinism_tolerance(policy_device or self.device.type, self.dtype, max(abs(a_host), abs(b_host)), m)
        diff = abs(a_host - b_host)
        rule = "exact" if tol == 0.0 else f"|a - b| <= {tol:.3g} (16·sqrt({m})·eps·|loss sum|)"
        self.determinism = {"rule": "exact" if tol == 0.0 else "tolerance", "tolerance": tol,
                            "difference": diff, "repeated": bool(repeat)}
        if not (torch.equal(a, b) if tol == 0.0 else diff <= tol):
            raise InputError(
                f"the model is not deterministic under bn_mode={self.bn_mode!r}: two evaluations of the same "
                f"samples differ ({a_host!r} vs {b_host!r}; check: {rule}); curvature of a random function is "
                "undefined"
            )
        if diff > 0.0:
            log.warning(f"two evaluations of the same samples differ by {diff:.3g} (within the {rule} allowed "
                        f"on {policy_device or self.device.type}): treating the model as deterministic")
