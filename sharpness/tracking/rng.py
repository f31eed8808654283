"""The tracker's randomness: global RNG states saved and restored around each measurement, and independent
per-measurement seeds derived from (seed, step, stream)."""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

# Streams of the per-measurement seed (see _seed_for): one per random quantity, so that turning the trace or
# the verification on or off never changes the Lanczos start vector (random for a cold start, the random
# component of a warm one, and restarts after breakdown); the verification's cold start is independent of it.
_LANCZOS_STREAM, _TRACE_STREAM, _VERIFY_STREAM = 0, 1, 2


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Save the torch (CPU and every initialized CUDA device), NumPy and Python global RNG states; restore on exit.

    Whatever runs inside — a user's ``forward`` that draws noise, a library that seeds globally — the
    training loop outside sees the RNG streams exactly as they were.
    """
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(np_state)
        random.setstate(py_state)


def _seed_for(seed: int, step: int, stream: int) -> int:
    """An independent 63-bit seed for (tracker seed, step, stream): a measurement's randomness depends only on
    where it is taken, not on how many measurements came before (so resuming reproduces it)."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(step), stream]).generate_state(2, dtype=np.uint64)[0] >> 1)
