"""The OCR pipeline: source and stages assembled from the data configuration.

::

    read -> decode -> canonical -> db_maps -> pack -> [transform] -> [augment]
            "image"                "maps"     "tensor" (the last deterministic stage)

``transform`` holds the deterministic head of a user-supplied ``Compose`` (if any);
``augment`` its random tail, or, by default, the random suffix built from
``data.augment`` (train split only, when enabled). Augmentation warps the image and
the DB maps together; the polygons in the sample (and in :func:`sample_polygons`)
describe the un-augmented image.

Frames: *original* is the full-resolution image as displayed (EXIF applied); the
*output* frame is the one the annotations were given in (the original frame, or
the stored pixels when ``data.annotation_frame`` is ``stored``). Predictions on the
canonical image go back with :func:`polygons_to_output_frame`; ground truth comes
out in the output frame from :func:`sample_polygons`, so both compare directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np

from adaptive_cache.pipeline import Pipeline, Stage
from training.config import DataConfig
from training.data import orientation as orient
from training.data.source import OcrSource, unpack_polygons
from training.data.stages import CanonicalStage, DBMapsStage, DecodeStage, PackStage
from training.data.transforms import AlbumentationsStage, augment_compose, split_compose

TIER_STAGES = {"image": "decode", "maps": "db_maps"}


def build_source(data: DataConfig, split: str) -> OcrSource:
    """The :class:`OcrSource` of one split, paths relative to ``data.root``."""
    cfg = data.split(split)
    root = Path(data.root)
    return OcrSource(
        root / cfg.images,
        root / cfg.annotations,
        format=cfg.format,
        extensions=data.image_extensions,
        on_bad_sample=data.on_bad_sample,
    )


def build_pipeline(
    data: DataConfig,
    split: str,
    seed: int = 0,
    *,
    transform: A.Compose | None = None,
    source: OcrSource | None = None,
) -> Pipeline:
    """Build the OCR pipeline of one split.

    Args:
        data: the data configuration.
        split: ``train`` or ``val``.
        seed: base seed of the random stages.
        transform: transforms applied after ``pack`` instead of the configured
            augmentation; split automatically into a deterministic ``transform`` stage
            (inside the cacheable prefix) and a random ``augment`` stage.
        source: a ready source (default: :func:`build_source`).

    Returns:
        The pipeline, with tiers ``image`` (decode), ``maps`` (db_maps) and ``tensor``
        (the last deterministic stage).

    Raises:
        ValueError: an unknown split, missing files, invalid annotations (with
            ``on_bad_sample=raise``) or a transform that does not keep images uint8.

    Example:
        >>> pipe = build_pipeline(load_config().data, "train")
        >>> sample = pipe.run(index=0, epoch=0)
        >>> sample["image"].shape, sample["gt"].dtype
        ((640, 640, 3), dtype('uint8'))
    """
    src = source if source is not None else build_source(data, split)
    stages: list[Stage] = [
        DecodeStage(
            src,
            target_size=data.image_size if data.dct_scaling else None,
            decoder=data.decoder,
            annotation_frame=data.annotation_frame,
            on_bad_sample=data.on_bad_sample,
            max_pixels=data.max_pixels,
        ),
        CanonicalStage(data.image_size),
        DBMapsStage(
            shrink_ratio=data.shrink_ratio,
            thresh_min=data.thresh_min,
            thresh_max=data.thresh_max,
            min_text_size=data.min_text_size,
        ),
        PackStage(),
    ]
    if transform is None:
        # On the device, the suffix runs on whole batches after the transfer.
        augment = split == "train" and data.augment.enabled and not data.augment.on_device
        transform = augment_compose(data.augment, data.thresh_min) if augment else A.Compose([])
    prefix, suffix = split_compose(transform)
    if prefix.transforms:
        stages.append(AlbumentationsStage("transform", prefix, deterministic=True))
    if suffix.transforms:
        stages.append(AlbumentationsStage("augment", suffix, deterministic=False))
    last_det = [s.name for s in stages if s.deterministic][-1]
    return Pipeline(src, stages, {**TIER_STAGES, "tensor": last_det}, seed=seed)


def _to_output(points: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """Original (displayed) frame -> output frame."""
    if meta.get("annotation_frame") == "stored":
        return orient.undo_on_points(points, tuple(meta["stored_shape"]), meta["orientation"])
    return points


def polygons_to_output_frame(
    polygons: list[np.ndarray], meta: Mapping[str, Any]
) -> list[np.ndarray]:
    """Map polygons from the canonical frame back to the frame of the annotations.

    Undoes the top-left padding (nothing to undo), the canonical resize (and any DCT
    reduction, via ``meta["scale_xy"]``) and, when the annotations were given on the
    stored pixels, the EXIF orientation.

    Args:
        polygons: float (N, 2) ``(x, y)`` arrays in the canonical frame (model output).
        meta: the sample's metadata (``scale_xy``, ``orientation``, ``stored_shape``,
            ``annotation_frame``), as in a collated batch's ``meta`` list.

    Returns:
        float32 (N, 2) arrays in the output frame.
    """
    scale = np.asarray(meta["scale_xy"], dtype=np.float64)
    return [
        _to_output(np.asarray(p, dtype=np.float64) / scale, meta).astype(np.float32)
        for p in polygons
    ]


def sample_polygons(sample: Mapping[str, Any]) -> list[np.ndarray]:
    """The sample's ground-truth polygons in the output frame, float32 (N, 2) each."""
    # One call for all points (the mapping is per point), then views per polygon.
    points = np.array(_to_output(np.asarray(sample["polys"]), sample), dtype=np.float32)
    return unpack_polygons(points, sample["poly_offsets"])
