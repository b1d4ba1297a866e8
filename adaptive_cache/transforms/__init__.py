"""Transforms people already have, split into a cached prefix and a random suffix.

:func:`split_transform` accepts an albumentations ``Compose``, a torchvision
``Compose`` (``transforms.v2`` or classic), a list of callables or one callable; the
library-specific rules live in :mod:`adaptive_cache.transforms.albumentations` and
:mod:`adaptive_cache.transforms.torchvision`. Neither library is imported until a
transform of it is split.
"""

from adaptive_cache.transforms.fingerprint import describe, fingerprint
from adaptive_cache.transforms.seeding import seeded
from adaptive_cache.transforms.split import Part, Split, deterministic, split_transform

__all__ = [
    "Part",
    "Split",
    "describe",
    "deterministic",
    "fingerprint",
    "seeded",
    "split_transform",
]
