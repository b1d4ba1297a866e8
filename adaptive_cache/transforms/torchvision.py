"""Splitting a torchvision ``Compose`` (``transforms.v2`` or the classic one).

torchvision has no determinism flag either. A transform counts as deterministic when
its class is in :data:`DETERMINISTIC` (resizes, centre crops, pads, conversions,
normalisation), when it is one of :data:`DETERMINISTIC_AT_P` with ``p`` 0 or 1 (a
``RandomHorizontalFlip(p=1.0)`` always flips), a ``GaussianBlur`` with one fixed sigma,
a ``Compose`` or ``RandomApply(p=1)`` of deterministic transforms, or a ``Lambda`` whose
function is marked with :func:`adaptive_cache.transforms.deterministic`. Everything
else, ``Random*``, ``ColorJitter``, the auto-augment policies and unknown classes,
counts as random. :func:`is_empirically_deterministic` checks a transform by running
it under several seeds.

Only torchvision's own classes are looked up by name (a user subclass of ``Resize``
counts as random unless marked). This module never imports torchvision itself: a
caller with a torchvision ``Compose`` in hand has imported it already.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DETERMINISTIC: frozenset[str] = frozenset(
    {
        "CenterCrop", "ClampBoundingBoxes", "ClampKeyPoints", "ConvertBoundingBoxFormat",
        "ConvertImageDtype", "FiveCrop", "Grayscale", "Identity", "LinearTransformation",
        "Normalize", "PILToTensor", "Pad", "RGB", "Resize", "SanitizeBoundingBoxes",
        "SanitizeKeyPoints", "SetClampingMode", "TenCrop", "ToDtype", "ToImage",
        "ToPILImage", "ToPureTensor", "ToTensor", "UniformTemporalSubsample",
    }
)  # fmt: skip
"""torchvision transform classes whose output depends only on their input."""

DETERMINISTIC_AT_P: frozenset[str] = frozenset(
    {
        "RandomAdjustSharpness", "RandomAutocontrast", "RandomEqualize", "RandomGrayscale",
        "RandomHorizontalFlip", "RandomInvert", "RandomPosterize", "RandomSolarize",
        "RandomVerticalFlip",
    }
)  # fmt: skip
"""Classes that apply one fixed operation with probability ``p``: deterministic at 0 or 1."""


def is_torchvision(transform: Any) -> bool:
    """Whether ``transform`` is one of torchvision's own transform classes."""
    return type(transform).__module__.startswith("torchvision.transforms")


def is_v2(transform: Any) -> bool:
    """Whether ``transform`` comes from ``torchvision.transforms.v2``."""
    return type(transform).__module__.startswith("torchvision.transforms.v2")


def is_deterministic(transform: Any) -> bool:
    """Whether a torchvision transform always gives the same output for one input."""
    if not is_torchvision(transform):
        return False
    name = type(transform).__name__
    p = getattr(transform, "p", None)
    if name == "Compose":
        return all(is_deterministic(t) for t in transform.transforms)
    if name == "RandomApply":
        return p == 0 or (p == 1 and all(is_deterministic(t) for t in transform.transforms))
    if name == "Lambda":
        return getattr(transform.lambd, "deterministic", None) is True
    if name == "GaussianBlur":
        sigma = list(transform.sigma)
        return len(sigma) == 2 and sigma[0] == sigma[1]
    if name in DETERMINISTIC_AT_P:
        return p in (0, 1)
    return name in DETERMINISTIC


def describe_random(transform: Any) -> str:
    """How error messages and logs name a random transform."""
    return f"torchvision {type(transform).__name__}"


def split_compose(compose: Any) -> tuple[Any, Any]:
    """Split a torchvision ``Compose`` at its first random transform.

    Returns:
        ``(prefix, suffix)``: each a ``Compose`` of the same class, or ``None`` where
        it would be empty (torchvision refuses an empty ``Compose``).
    """
    transforms = list(compose.transforms)
    cut = next((i for i, t in enumerate(transforms) if not is_deterministic(t)), len(transforms))
    cls = type(compose)
    head, tail = transforms[:cut], transforms[cut:]
    return (cls(head) if head else None), (cls(tail) if tail else None)


def first_random(compose: Any) -> str | None:
    """Class name of the first random transform in ``compose``; None if there is none."""
    return next((type(t).__name__ for t in compose.transforms if not is_deterministic(t)), None)


def is_empirically_deterministic(
    transform: Any, inputs: Any, seeds: Sequence[int] = (0, 1, 2, 3)
) -> bool:
    """Run ``transform`` on ``inputs`` under several torch seeds; True if outputs agree.

    The answer "random" is certain, "deterministic" is evidence (use several seeds).
    """
    from adaptive_cache.transforms.seeding import seeded

    outputs = []
    for seed in seeds:
        with seeded(seed):
            outputs.append(transform(inputs))
    return all(_equal(outputs[0], o) for o in outputs[1:])


def _equal(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def apply_classic(compose: Any, item: Any) -> Any:
    """Apply a classic (v1) ``Compose`` to the input of an item, as datasets do.

    Classic transforms take one image: in a tuple or list the first element is the
    image and the rest passes through; anything else is the image. (v2 transforms take
    the whole item, whatever its structure, and are simply called.)
    """
    if type(item) in (tuple, list) and item:
        return type(item)((compose(item[0]), *item[1:]))
    return compose(item)
