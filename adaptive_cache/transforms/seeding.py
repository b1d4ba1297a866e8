"""Seeding the global generators that transform libraries draw from, for one call.

torchvision's random transforms draw from torch's default CPU generator, user code
often from Python's ``random`` or numpy's legacy global generator. :func:`seeded`
seeds all three from one number for the duration of a block and then restores them,
so an augmentation is reproducible per (seed, epoch, index) without disturbing the
caller's own random streams (the model's dropout in the main process, for example).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed ``random``, ``numpy.random`` and torch's CPU generator; restore them after.

    Args:
        seed: any non-negative integer (reduced modulo 2**32 for numpy's legacy seed).
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.default_generator.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.default_generator.set_state(torch_state)
