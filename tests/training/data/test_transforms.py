from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from training.config import AugmentConfig
from training.data.db_targets import PROB_MASK_BIT, make_db_maps, pack
from training.data.transforms import (
    DETERMINISTIC,
    AlbumentationsStage,
    augment_compose,
    canonical_compose,
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


def test_split_of_all_deterministic_and_all_random() -> None:
    prefix, suffix = split_compose(canonical_compose(64))
    assert len(prefix.transforms) == 2 and not suffix.transforms
    prefix, suffix = split_compose(augment_compose(AugmentConfig(), 0.3))
    assert not prefix.transforms and len(suffix.transforms) == 3


def test_split_rejects_unsplittable_composes() -> None:
    with pytest.raises(ValueError, match=r"p=1\.0"):
        split_compose(A.Compose([A.Resize(8, 8)], p=0.5))
    with pytest.raises(ValueError, match="bbox_params"):
        split_compose(A.Compose([A.Resize(8, 8)], bbox_params=A.BboxParams(format="coco")))


def test_canonical_compose_pads_top_left() -> None:
    out = canonical_compose(100)(image=IMAGE)["image"]  # 60x80 -> 75x100, pad bottom
    assert out.shape == (100, 100, 3) and out.dtype == np.uint8
    assert (out[75:] == 0).all() and out[:75].any()


def test_augment_compose_leaves_out_disabled_transforms() -> None:
    cfg = AugmentConfig(hflip_p=0.0, affine_p=0.5, color_jitter_p=0.0)
    assert [type(t).__name__ for t in augment_compose(cfg, 0.3).transforms] == ["Affine"]
    cfg = AugmentConfig(hflip_p=0.0, affine_p=0.0, color_jitter_p=0.0)
    assert augment_compose(cfg, 0.3).transforms == []


def _sample(size: int = 96) -> dict:
    polys = [np.array([[10.2, 20.3], [60.7, 20.3], [60.7, 34.1], [10.2, 34.1]])]
    maps = make_db_maps(polys, [False], (size, size))
    gt, thresh = pack(maps)
    img = np.full((size, size, 3), 200, np.uint8)
    cv2.fillPoly(img, [np.int32(polys[0])], (20, 20, 20))
    return {"image": img, "gt": gt, "thresh": thresh, "file": "a.jpg"}


def test_random_stage_is_reproducible_from_the_rng() -> None:
    stage = AlbumentationsStage("augment", augment_compose(AugmentConfig(affine_p=1.0), 0.3))
    assert not stage.deterministic
    sample = _sample()
    a = stage(sample, np.random.default_rng([0, 1, 2]))
    b = stage(sample, np.random.default_rng([0, 1, 2]))
    others = [stage(sample, np.random.default_rng([0, 1, s])) for s in range(3, 7)]
    for key in ("image", "gt", "thresh"):
        np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a["gt"], o["gt"]) for o in others)
    assert a["file"] == "a.jpg" and a["image"].dtype == np.uint8
    assert "Affine" in stage.describe_random() or "HorizontalFlip" in stage.describe_random()


def test_geometric_augmentation_keeps_the_bitfield_valid_and_fills_background() -> None:
    compose = augment_compose(AugmentConfig(rotate_limit=30, scale_limit=0.3, affine_p=1.0), 0.3)
    stage = AlbumentationsStage("augment", compose)
    sample = _sample()
    allowed_gt = set(np.unique(sample["gt"])) | {PROB_MASK_BIT}
    allowed_thresh = set(np.unique(sample["thresh"])) | {round(0.3 * 255)}
    for seed in range(6):
        out = stage(sample, np.random.default_rng(seed))
        assert set(np.unique(out["gt"])) <= allowed_gt  # nearest: no blended bit patterns
        assert set(np.unique(out["thresh"])) <= allowed_thresh
        assert out["gt"].shape == sample["gt"].shape and out["gt"].flags.c_contiguous


def test_flip_stage_moves_maps_with_the_image() -> None:
    size = 96
    stage = AlbumentationsStage("flip", A.Compose([A.HorizontalFlip(p=1)]))
    assert stage.deterministic
    sample = _sample(size)
    out = stage(sample, np.random.default_rng(0))
    flipped_poly = [np.array([[size - 60.7, 20.3], [size - 10.2, 20.3], [size - 10.2, 34.1],
                              [size - 60.7, 34.1]])]  # fmt: skip
    gt, thresh = pack(make_db_maps(flipped_poly, [False], (size, size)))
    np.testing.assert_array_equal(out["gt"], gt)
    np.testing.assert_array_equal(out["thresh"], thresh)
    np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1])


def test_stage_rejects_float_output_and_fingerprints_parameters() -> None:
    with pytest.raises(ValueError, match="Normalize"):
        AlbumentationsStage("t", A.Compose([A.Normalize()]))
    a = AlbumentationsStage("t", A.Compose([A.Resize(32, 32)]))
    b = AlbumentationsStage("t", A.Compose([A.Resize(32, 32)]))
    c = AlbumentationsStage("t", A.Compose([A.Resize(32, 33)]))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()

    def lam(fn):
        return AlbumentationsStage("t", A.Compose([A.Lambda(image=fn)]))

    assert lam(_identity).fingerprint() == lam(_identity).fingerprint()
    assert lam(_identity).fingerprint() != lam(_invert).fingerprint()
    assert not lam(_identity).deterministic  # unknown class: random


def _identity(x, **kw):
    return x


def _invert(x, **kw):
    return 255 - x
