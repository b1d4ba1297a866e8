"""Collate OCR samples into a batch: uint8 tensors for the device, polygons beside them.

The image batch is ``np.stack`` of (H, W, 3) samples viewed as (B, 3, H, W) through
``permute``: no copy, and the memory layout is exactly torch's ``channels_last``,
which convolutions on the GPU prefer. Normalisation happens on the device, after
the (4x smaller) uint8 transfer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from adaptive_cache.pipeline import Sample
from training.data.pipeline import sample_polygons

_META_SKIP = ("image", "gt", "thresh", "polys", "poly_offsets", "ignore")


def collate(samples: Sequence[Sample]) -> dict[str, Any]:
    """Stack pipeline outputs (``pack`` or later) into a batch.

    Returns:
        ``image``: uint8 (B, 3, H, W) (a channels-last view); ``gt`` and ``thresh``:
        uint8 (B, 1, H, W) (see :mod:`training.data.db_targets` for the layout);
        ``polygons``: per image a list of float32 (N, 2) ground-truth polygons in the
        output frame; ``ignore``: per image a bool (P,) array; ``meta``: per image a
        dict of the sample's metadata (``file``, ``scale``, ``orig_shape``,
        ``orientation``, ...).

    Raises:
        ValueError: an empty batch, or samples of different shapes.
    """
    if not samples:
        raise ValueError("collate: empty batch")
    try:
        images = np.stack([s["image"] for s in samples])  # (B, H, W, 3)
        gt = np.stack([s["gt"] for s in samples])[:, None]  # (B, 1, H, W)
        thresh = np.stack([s["thresh"] for s in samples])[:, None]
    except ValueError as exc:
        shapes = sorted({tuple(s["image"].shape) for s in samples})
        raise ValueError(f"collate: samples differ in shape {shapes}: {exc}") from None
    return {
        "image": torch.from_numpy(images).permute(0, 3, 1, 2),  # (B, 3, H, W) channels-last
        "gt": torch.from_numpy(gt),
        "thresh": torch.from_numpy(thresh),
        "polygons": [sample_polygons(s) for s in samples],
        "ignore": [np.asarray(s["ignore"], dtype=bool) for s in samples],
        "meta": [
            {k: v for k, v in s.items() if k not in _META_SKIP and not isinstance(v, np.ndarray)}
            for s in samples
        ],
    }
