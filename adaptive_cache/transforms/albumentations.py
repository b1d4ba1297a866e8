"""Splitting an albumentations ``Compose`` at its first random transform.

albumentations has no determinism flag, so :func:`is_deterministic` decides per
transform: deterministic only if its probability is 1 (or 0: it never runs) and its
class is in :data:`DETERMINISTIC` (fixed-size resizes, pads, crops, flips with
``p=1``, colour conversions). Everything from the first other transform on is the
random suffix. :func:`is_empirically_deterministic` checks a transform the other way,
by running it under several seeds; the tests use it to keep :data:`DETERMINISTIC`
honest.

albumentations is imported when this module is, so import it only where a ``Compose``
is at hand (:func:`adaptive_cache.transforms.split_transform` does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import numpy as np

from adaptive_cache.pipeline import stable_hash

DETERMINISTIC: frozenset[type] = frozenset(
    {
        A.LongestMaxSize, A.SmallestMaxSize, A.Resize, A.PadIfNeeded, A.Pad,
        A.CenterCrop, A.Crop, A.Normalize, A.ToFloat, A.FromFloat, A.ToGray, A.ToRGB,
        A.ToSepia, A.InvertImg, A.Equalize, A.HorizontalFlip, A.VerticalFlip, A.Transpose,
    }
)  # fmt: skip
"""Transform classes whose output depends only on their input when they run (p == 1)."""


def is_deterministic(transform: A.BasicTransform | A.BaseCompose) -> bool:
    """Whether a transform (or a nested ``Sequential``) always gives the same output.

    ``p == 0`` never runs, so it is deterministic whatever its class. ``p == 1`` is
    deterministic for classes in :data:`DETERMINISTIC` (``PadIfNeeded`` only with a
    fixed position) and for a ``Sequential`` of deterministic transforms. Anything
    else, including ``OneOf``/``SomeOf`` and unknown classes, counts as random.
    """
    p = float(getattr(transform, "p", 1.0))
    if p == 0.0:
        return True
    if p != 1.0:
        return False
    if type(transform) is A.Sequential:
        return all(is_deterministic(t) for t in transform.transforms)
    if isinstance(transform, A.PadIfNeeded) and transform.position == "random":
        return False
    return type(transform) in DETERMINISTIC


def compose_like(compose: A.Compose, transforms: Sequence[Any], **overrides: Any) -> A.Compose:
    """A ``Compose`` of ``transforms`` with the settings of ``compose`` (targets, shape
    checks, bbox/keypoint parameters, mask interpolation), some replaced by ``overrides``.
    """
    settings: dict[str, Any] = {
        "additional_targets": dict(compose._additional_targets),
        "is_check_shapes": compose.is_check_shapes,
        "mask_interpolation": compose.mask_interpolation,
    }
    for target, arg in (("bboxes", "bbox_params"), ("keypoints", "keypoint_params")):
        if target in compose.processors:
            settings[arg] = compose.processors[target].params
    settings.update(overrides)
    return A.Compose(list(transforms), **settings)


def split_compose(
    compose: A.Compose, *, mask_interpolation: int | None = None
) -> tuple[A.Compose, A.Compose]:
    """Split a ``Compose`` at its first random transform.

    Args:
        compose: the transforms.
        mask_interpolation: if given, both halves use it for masks (the OCR pipeline
            passes nearest-neighbour: its masks are bitfields); otherwise the compose's own.

    Returns:
        ``(prefix, suffix)``: the deterministic transforms before the first random one,
        and the rest (either may be empty), with the compose's settings.

    Raises:
        ValueError: the compose has a probability other than 1 (it would skip its
            deterministic part at random).
    """
    if float(compose.p) != 1.0:
        raise ValueError(f"split_compose: the Compose itself must have p=1.0, got {compose.p}")
    transforms = list(compose.transforms)
    cut = next((i for i, t in enumerate(transforms) if not is_deterministic(t)), len(transforms))
    extra = {} if mask_interpolation is None else {"mask_interpolation": mask_interpolation}
    return (
        compose_like(compose, transforms[:cut], **extra),
        compose_like(compose, transforms[cut:], **extra),
    )


def first_random(compose: A.Compose) -> str | None:
    """Class name of the first random transform in ``compose``; None if there is none."""
    return next((type(t).__name__ for t in compose.transforms if not is_deterministic(t)), None)


def is_empirically_deterministic(
    transform: Callable[..., dict[str, Any]],
    inputs: dict[str, np.ndarray],
    seeds: Sequence[int] = (0, 1, 2, 3),
) -> bool:
    """Run ``transform`` (a ``Compose``) under several seeds; True if all outputs agree.

    A random transform can agree by chance (a flip with p=0.5 under two seeds), so use
    several seeds; the answer "random" is certain, "deterministic" is evidence.
    """
    outputs = []
    for seed in seeds:
        transform.set_random_seed(seed)
        outputs.append(transform(**inputs))
    first = outputs[0]
    return all(
        all(np.array_equal(np.asarray(first[k]), np.asarray(o[k])) for k in inputs)
        for o in outputs[1:]
    )


def _describe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    # Functions and other objects: their qualified name, never an address.
    kind = value if callable(value) and hasattr(value, "__qualname__") else type(value)
    return f"{getattr(kind, '__module__', '')}.{kind.__qualname__}"


def _transform_spec(t: Any) -> Any:
    try:
        return A.to_dict(t)
    except (TypeError, ValueError, NotImplementedError):
        # Not serialisable (an unnamed Lambda): class, probability and public attributes.
        public = {k: _describe(v) for k, v in sorted(vars(t).items()) if not k.startswith("_")}
        public.pop("random_generator", None)
        public.pop("py_random", None)
        return {"class": _describe(type(t)), "attrs": public}


def compose_fingerprint(compose: A.Compose) -> str:
    """Hash of the serialised transforms, the compose's settings and the version."""
    spec = [_transform_spec(t) for t in compose.transforms]
    processors = {k: repr(p.params) for k, p in sorted(compose.processors.items())}
    settings = [compose._additional_targets, compose.mask_interpolation, processors]
    return stable_hash(A.__version__, json.dumps([spec, settings], sort_keys=True, default=str))


def apply(compose: A.Compose, item: Any) -> Any:
    """Apply ``compose`` to a dataset item the way a dataset would.

    A dict is passed as keyword arguments (its keys are albumentations targets such as
    ``image``, ``mask``, ``bboxes``; other keys pass through); in a tuple or list the
    first element is the image and the rest passes through; anything else is the image.
    """
    if type(item) is dict:
        return dict(compose(**item))
    if type(item) in (tuple, list) and item:
        image = compose(image=item[0])["image"]
        return type(item)((image, *item[1:]))
    return compose(image=item)["image"]
