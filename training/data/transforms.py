"""albumentations transforms: the canonical prefix, the training suffix, and the split.

Which transforms are deterministic, and so where a ``Compose`` is split, is decided by
:mod:`adaptive_cache.transforms.albumentations`; :func:`split_compose` here adds what
the OCR pipeline needs (nearest-neighbour masks, no bbox parameters).

:class:`AlbumentationsStage` wraps a ``Compose`` as a pipeline stage. Images are uint8
throughout (normalisation happens on the device); the DB maps ride along as one
two-channel uint8 mask ``(gt, thresh)`` so geometric transforms warp them with the
image, with nearest-neighbour interpolation (the ``gt`` bitfield stays valid) and
the background values of :func:`training.data.db_targets.background_fill` where a
transform pulls in pixels from outside the image.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from adaptive_cache.pipeline import Sample, Stage
from adaptive_cache.transforms import albumentations as albu
from adaptive_cache.transforms.albumentations import compose_fingerprint, first_random
from training.config import AugmentConfig
from training.data.db_targets import background_fill

_NOT_UINT8 = (A.Normalize, A.ToFloat)

# RandomBrightnessContrast of the training suffix (the device suffix uses the same).
BRIGHTNESS_LIMIT = 0.2
CONTRAST_LIMIT = 0.2


def split_compose(compose: A.Compose) -> tuple[A.Compose, A.Compose]:
    """Split a ``Compose`` at its first random transform, for the OCR pipeline.

    :func:`adaptive_cache.transforms.albumentations.split_compose` with masks (the DB
    maps) always warped nearest-neighbour, so the ``gt`` bitfield stays valid.

    Raises:
        ValueError: the compose has a probability other than 1, or bounding-box/keypoint
            parameters (the pipeline carries polygons itself).
    """
    if compose.processors:
        raise ValueError(
            "split_compose: bbox_params/keypoint_params are not supported; polygons travel "
            "beside the image and the DB maps are passed as masks"
        )
    return albu.split_compose(compose, mask_interpolation=cv2.INTER_NEAREST)


def canonical_compose(image_size: int) -> A.Compose:
    """LongestMaxSize + PadIfNeeded at the top left, constant 0: the canonical frame.

    Bilinear: the shrink factor is below 2 after a DCT-reduced decode (or for pages up
    to twice the target), where bilinear still reads every source pixel; OpenCV's
    INTER_AREA costs about 8x more at non-integer factors (25 ms against 3 ms for a
    1162x915 page on the 2-core container). Top-left padding keeps canonical
    coordinates a pure scale of the original ones (the centre padding albumentations
    uses by default would add an offset).
    """
    return A.Compose(
        [
            A.LongestMaxSize(max_size=image_size, interpolation=cv2.INTER_LINEAR),
            A.PadIfNeeded(
                min_height=image_size,
                min_width=image_size,
                position="top_left",
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
            ),
        ]
    )


def augment_compose(augment: AugmentConfig, thresh_min: float) -> A.Compose:
    """The random training suffix from ``data.augment`` (transforms with p=0 left out):
    HorizontalFlip, Affine (rotation and scale), RandomBrightnessContrast.

    Geometric transforms fill outside the image with black pixels and the DB maps'
    background values, so pulled-in areas count as background in the loss.
    """
    fill_gt, fill_thresh = background_fill(thresh_min)
    transforms: list[A.BasicTransform] = []
    if augment.hflip_p > 0:
        transforms.append(A.HorizontalFlip(p=augment.hflip_p))
    if augment.affine_p > 0 and (
        augment.rotate_limit > 0 or augment.scale_limit > 0 or augment.translate_limit > 0
    ):
        t = augment.translate_limit
        transforms.append(
            A.Affine(
                rotate=(-augment.rotate_limit, augment.rotate_limit),
                scale=(1.0 - augment.scale_limit, 1.0 + augment.scale_limit),
                **({"translate_percent": (-t, t)} if t > 0 else {}),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=(fill_gt, fill_thresh),
                p=augment.affine_p,
            )
        )
    if augment.color_jitter_p > 0:
        # Brightness and contrast only: on receipts (nearly grey) saturation and hue
        # jitter add little, and albumentations' ColorJitter costs ~10 ms per 640x640
        # image here against 0.5 ms (a lookup table).
        transforms.append(
            A.RandomBrightnessContrast(
                brightness_limit=BRIGHTNESS_LIMIT,
                contrast_limit=CONTRAST_LIMIT,
                p=augment.color_jitter_p,
            )
        )
    return A.Compose(transforms, mask_interpolation=cv2.INTER_NEAREST)


class AlbumentationsStage(Stage):
    """A pipeline stage applying an albumentations ``Compose`` to image and DB maps.

    The sample's ``image`` (uint8 (H, W, 3)) is transformed; when the sample has the
    compact maps ``gt`` and ``thresh`` they go along as one (H, W, 2) mask. A random
    stage seeds the compose per sample from the generator the pipeline passes, so
    the same (seed, epoch, index) always gets the same augmentation.

    Args:
        name: stage name.
        compose: the transforms (must keep the image uint8: no Normalize or ToFloat).
        deterministic: defaults to "every transform is deterministic".

    Raises:
        ValueError: the compose contains Normalize or ToFloat.
    """

    version = "1"

    def __init__(self, name: str, compose: A.Compose, *, deterministic: bool | None = None):
        bad = [type(t).__name__ for t in compose.transforms if isinstance(t, _NOT_UINT8)]
        if bad:
            raise ValueError(
                f"stage {name!r}: {bad} would turn the uint8 image into floats; images stay "
                "uint8 in the data pipeline and are normalised on the device"
            )
        self.name = name
        self.compose = compose
        self._first_random = first_random(compose)
        self.deterministic = self._first_random is None if deterministic is None else deterministic
        self._fingerprint = compose_fingerprint(compose)

    def params(self) -> object:
        return self._fingerprint

    def describe_random(self) -> str:
        return f"albumentations {self._first_random or 'transform'} in stage {self.name!r}"

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not self.compose.transforms:
            return sample
        if not self.deterministic:
            self.compose.set_random_seed(int(rng.integers(0, 2**31 - 1)))
        has_maps = "gt" in sample
        inputs: dict[str, np.ndarray] = {"image": sample["image"]}
        if has_maps:
            inputs["mask"] = np.stack([sample["gt"], sample["thresh"]], axis=-1)
        out = self.compose(**inputs)
        result = dict(sample)
        result["image"] = np.ascontiguousarray(out["image"])
        if has_maps:
            mask = out["mask"]
            result["gt"] = np.ascontiguousarray(mask[..., 0])
            result["thresh"] = np.ascontiguousarray(mask[..., 1])
        return result
