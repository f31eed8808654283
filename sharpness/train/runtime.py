"""The process around a run: device choice, derived seeds, the RNG streams a run forks, deterministic
kernels, and Ctrl-C/SIGTERM deferred to a step boundary (so the saved state is consistent)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import InputError

log = logging.getLogger("sharpness.train")


class _DeferredInterrupt:
    """While active (main thread only), the first SIGINT/SIGTERM only sets a flag that :meth:`check` turns
    into ``KeyboardInterrupt`` at the next step boundary, where the saved state is consistent. A second
    signal interrupts at once (mid-step or mid-evaluation: nothing is saved)."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        log.warning("interrupt received: stopping after this step (press again to stop at once, unsaved)")

    def check(self) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration, restored afterwards. Used on CPU, where it costs nothing (the
    kernels on this path already are). On CUDA the caller's setting is kept: bit-identical GPU runs also need
    ``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts, and slower kernels, a choice left to the user."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _device(name: str) -> torch.device:
    """``auto`` → CUDA when available; the CLI has already checked the name (``cli.options.resolve_device``)."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"expected an available device, got {name!r} (CUDA is not available)")
    return device


def _derived_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for a named stream of ``seed`` (so order and dropout do not share one)."""
    return int(np.random.SeedSequence([int(seed) % 2**63, stream]).generate_state(2, dtype=np.uint64)[0] >> 1)


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _seed_global(device: torch.device, seed: int) -> None:
    """Seed the RNG streams that ``fork_rng`` protects: the CPU one and, when training there, the CUDA device's
    (``torch.manual_seed`` would also reseed every other CUDA device, outside the fork)."""
    torch.default_generator.manual_seed(seed)
    for index in _rng_devices(device):
        with torch.cuda.device(index):
            torch.cuda.manual_seed(seed)
