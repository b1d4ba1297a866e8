"""Seeding the global generators that transform libraries draw from, for one call.

torchvision's random transforms draw from torch's default CPU generator, user code
often from Python's ``random`` or numpy's legacy global generator. :func:`seeded`
seeds them from one number for the duration of a block and then restores them, so an
augmentation is reproducible per (seed, epoch, index) without disturbing the caller's
own random streams (the model's dropout in the main process, for example).

Saving and restoring numpy's and Python's states costs about 100 us (torch's about
2 us), so a caller that knows which generators its transforms use names only those.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

GENERATORS: frozenset[str] = frozenset({"python", "numpy", "torch"})
"""The global generators :func:`seeded` can seed."""


@contextmanager
def seeded(seed: int, generators: Iterable[str] = GENERATORS) -> Iterator[None]:
    """Seed the named global generators; restore them after the block.

    Args:
        seed: any non-negative integer (reduced modulo 2**32 for numpy's legacy seed).
        generators: which of ``python``, ``numpy``, ``torch`` (torch: the CPU default
            generator only; CUDA generators are never touched).

    Raises:
        ValueError: an unknown generator name.
    """
    names = frozenset(generators)
    if not names <= GENERATORS:
        raise ValueError(
            f"unknown generators {sorted(names - GENERATORS)}; known: {sorted(GENERATORS)}"
        )
    py_state = random.getstate() if "python" in names else None
    np_state = np.random.get_state() if "numpy" in names else None
    torch_state = torch.default_generator.get_state() if "torch" in names else None
    if py_state is not None:
        random.seed(seed)
    if np_state is not None:
        np.random.seed(seed % 2**32)
    if torch_state is not None:
        torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        if py_state is not None:
            random.setstate(py_state)
        if np_state is not None:
            np.random.set_state(np_state)
        if torch_state is not None:
            torch.default_generator.set_state(torch_state)
