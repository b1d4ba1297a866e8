"""Splitting an albumentations Compose: which transforms are deterministic, and where."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from adaptive_cache.transforms.albumentations import (
    DETERMINISTIC,
    apply,
    compose_fingerprint,
    first_random,
    is_deterministic,
    is_empirically_deterministic,
    split_compose,
)

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
MASK = RNG.integers(0, 8, size=(60, 80, 2), dtype=np.uint8)
INPUTS = {"image": IMAGE, "mask": MASK}

# One instance (p=1) of every class the split treats as deterministic.
KNOWN = [
    A.LongestMaxSize(max_size=50, p=1),
    A.SmallestMaxSize(max_size=40, p=1),
    A.Resize(30, 40, p=1),
    A.PadIfNeeded(100, 100, position="top_left", p=1),
    A.Pad(padding=3, p=1),
    A.CenterCrop(20, 20, p=1),
    A.Crop(0, 0, 20, 20, p=1),
    A.Normalize(p=1),
    A.ToFloat(p=1),
    A.FromFloat(p=1),
    A.ToGray(p=1),
    A.ToRGB(p=1),
    A.ToSepia(p=1),
    A.InvertImg(p=1),
    A.Equalize(p=1),
    A.HorizontalFlip(p=1),
    A.VerticalFlip(p=1),
    A.Transpose(p=1),
]


def _inputs_for(t) -> dict:
    if isinstance(t, A.FromFloat):
        return {"image": IMAGE.astype(np.float32) / 255, "mask": MASK}
    if isinstance(t, A.ToRGB):
        return {"image": IMAGE[..., :1], "mask": MASK}
    return INPUTS


def test_known_list_is_complete() -> None:
    assert {type(t) for t in KNOWN} == set(DETERMINISTIC)


@pytest.mark.parametrize("t", KNOWN, ids=lambda t: type(t).__name__)
def test_known_deterministic_transforms_are_empirically_deterministic(t) -> None:
    assert is_deterministic(t)
    assert is_empirically_deterministic(A.Compose([t]), _inputs_for(t))


@pytest.mark.parametrize(
    "t",
    [
        A.HorizontalFlip(p=0.5),
        A.Affine(rotate=(-10, 10), p=1),
        A.ColorJitter(p=1),
        A.RandomBrightnessContrast(p=1),
        A.PadIfNeeded(100, 100, position="random", p=1),
        A.RandomCrop(20, 20, p=1),
        A.OneOf([A.HorizontalFlip(p=1), A.VerticalFlip(p=1)], p=1),
    ],
    ids=lambda t: type(t).__name__,
)
def test_random_transforms_are_classified_random_and_are_random(t) -> None:
    assert not is_deterministic(t)
    # Several seeds: a p=0.5 flip agrees with itself under two seeds half the time.
    assert not is_empirically_deterministic(A.Compose([t]), INPUTS, seeds=range(8))


def test_p_zero_and_sequential() -> None:
    assert is_deterministic(A.Affine(rotate=10, p=0.0))
    assert is_deterministic(A.Sequential([A.Resize(10, 10), A.HorizontalFlip(p=1)], p=1))
    assert not is_deterministic(A.Sequential([A.Resize(10, 10), A.HorizontalFlip()], p=1))
    assert not is_deterministic(A.Sequential([A.Resize(10, 10)], p=0.5))


def test_split_at_first_random_transform() -> None:
    compose = A.Compose(
        [
            A.LongestMaxSize(64),
            A.PadIfNeeded(64, 64, position="top_left"),
            A.HorizontalFlip(p=0.5),
            A.Resize(32, 32),  # deterministic, but after a random one: stays in the suffix
        ]
    )
    prefix, suffix = split_compose(compose)
    assert [type(t).__name__ for t in prefix.transforms] == ["LongestMaxSize", "PadIfNeeded"]
    assert [type(t).__name__ for t in suffix.transforms] == ["HorizontalFlip", "Resize"]
    assert first_random(compose) == "HorizontalFlip" and first_random(prefix) is None
    assert is_empirically_deterministic(prefix, INPUTS)
    assert not is_empirically_deterministic(suffix, INPUTS, seeds=range(8))
    # The two halves applied in turn give what the whole gives under the same seed.
    whole = A.Compose(list(compose.transforms), seed=5)(**INPUTS)
    suffix.set_random_seed(5)
    halves = suffix(**prefix(**INPUTS))
    np.testing.assert_array_equal(whole["image"], halves["image"])


def test_split_keeps_the_compose_settings() -> None:
    compose = A.Compose(
        [A.Resize(32, 32), A.HorizontalFlip(p=0.5)],
        bbox_params=A.BboxParams(format="coco", label_fields=["labels"]),
        additional_targets={"image2": "image"},
        mask_interpolation=0,
    )
    prefix, suffix = split_compose(compose)
    for half in (prefix, suffix):
        assert half.processors["bboxes"].params.format == "coco"
        assert half._additional_targets == {"image2": "image"}
        assert half.mask_interpolation == 0
    out = prefix(image=IMAGE, image2=IMAGE, bboxes=[[4, 4, 10, 10]], labels=[1])
    assert out["image2"].shape == (32, 32, 3) and len(out["bboxes"]) == 1
    with pytest.raises(ValueError, match=r"p=1\.0"):
        split_compose(A.Compose([A.Resize(8, 8)], p=0.5))


def test_fingerprint_covers_parameters_and_compose_settings() -> None:
    def fp(*ts, **kw):
        return compose_fingerprint(A.Compose(list(ts), **kw))

    assert fp(A.Resize(32, 32)) == fp(A.Resize(32, 32))
    assert fp(A.Resize(32, 32)) != fp(A.Resize(32, 33))
    assert fp(A.Resize(32, 32)) != fp(A.Resize(32, 32), mask_interpolation=0)


def test_apply_follows_the_item_structure() -> None:
    compose = A.Compose([A.Resize(16, 16)])
    out = apply(compose, {"image": IMAGE, "mask": MASK[..., 0], "label": 3})
    assert out["image"].shape == (16, 16, 3) and out["mask"].shape == (16, 16)
    assert out["label"] == 3
    image, label = apply(compose, (IMAGE, 7))
    assert image.shape == (16, 16, 3) and label == 7
    assert apply(compose, IMAGE).shape == (16, 16, 3)
