from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from adaptive_cache.transforms.albumentations import is_empirically_deterministic
from training.config import AugmentConfig
from training.data.db_targets import PROB_MASK_BIT, make_db_maps, pack
from training.data.transforms import (
    AlbumentationsStage,
    augment_compose,
    canonical_compose,
    split_compose,
)

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
MASK = RNG.integers(0, 8, size=(60, 80, 2), dtype=np.uint8)
INPUTS = {"image": IMAGE, "mask": MASK}


def test_split_of_all_deterministic_and_all_random() -> None:
    prefix, suffix = split_compose(canonical_compose(64))
    assert len(prefix.transforms) == 2 and not suffix.transforms
    prefix, suffix = split_compose(augment_compose(AugmentConfig(), 0.3))
    assert not prefix.transforms and len(suffix.transforms) == 3


def test_split_keeps_masks_nearest_and_the_rest_of_the_compose() -> None:
    compose = A.Compose([A.Resize(30, 40), A.HorizontalFlip(p=0.5)], is_check_shapes=False)
    prefix, suffix = split_compose(compose)
    assert prefix.mask_interpolation == suffix.mask_interpolation == cv2.INTER_NEAREST
    assert not prefix.is_check_shapes and not suffix.is_check_shapes
    assert is_empirically_deterministic(prefix, INPUTS)


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
