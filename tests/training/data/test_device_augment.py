"""The batched device suffix: invariants, reproducibility, and known patterns."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from training.config import AugmentConfig
from training.data.collate import collate
from training.data.db_targets import PROB_MASK_BIT, unpack
from training.data.device_augment import DeviceAugment, _warp, affine_theta
from training.data.pipeline import build_pipeline

THRESH_MIN = 0.3
FILL = (PROB_MASK_BIT, round(THRESH_MIN * 255))
ALL = AugmentConfig(hflip_p=0.5, affine_p=0.5, color_jitter_p=0.5, translate_limit=0.05)


@pytest.fixture(scope="module")
def batch(synthetic_root):
    """A real collated batch of the train split's cached prefix (no CPU suffix)."""
    from training.config import DataConfig

    data = DataConfig(root=str(synthetic_root), image_size=96, num_workers=0)
    data.augment.on_device = True
    pipe = build_pipeline(data, "train", seed=0)
    assert [s.name for s in pipe.stages][-1] == "pack"  # the pipeline stops at the prefix
    return collate([pipe.run(i) for i in range(8)])


def _aug(cfg: AugmentConfig, seed: int = 0) -> DeviceAugment:
    return DeviceAugment(cfg, THRESH_MIN, seed=seed)


def test_shapes_dtypes_and_other_fields_are_kept(batch):
    out = _aug(ALL)(batch, epoch=0, batch_idx=0)
    for k in ("image", "gt", "thresh"):
        assert out[k].shape == batch[k].shape and out[k].dtype == torch.uint8
    assert out["polygons"] is batch["polygons"] and out["meta"] is batch["meta"]
    assert not torch.equal(out["image"], batch["image"])  # something happened to 8 samples


def test_maps_keep_their_values(batch):
    # Nearest-neighbour: no new gt bit patterns or threshold levels, except the fill.
    for epoch in range(3):
        out = _aug(ALL)(batch, epoch=epoch, batch_idx=0)
        assert set(out["gt"].unique().tolist()) <= set(batch["gt"].unique().tolist()) | {FILL[0]}
        assert set(out["thresh"].unique().tolist()) <= set(batch["thresh"].unique().tolist()) | {
            FILL[1]
        }
        maps = unpack(out["gt"], out["thresh"])
        for name in ("prob", "prob_mask", "thresh_mask"):
            assert set(maps[name].unique().tolist()) <= {0.0, 1.0}


def test_same_seed_same_output_other_epoch_or_batch_differs(batch):
    a = _aug(ALL, seed=3)(batch, epoch=1, batch_idx=5)
    b = _aug(ALL, seed=3)(batch, epoch=1, batch_idx=5)
    assert all(torch.equal(a[k], b[k]) for k in ("image", "gt", "thresh"))
    for other in (
        _aug(ALL, seed=3)(batch, epoch=2, batch_idx=5),
        _aug(ALL, seed=3)(batch, epoch=1, batch_idx=6),
        _aug(ALL, seed=4)(batch, epoch=1, batch_idx=5),
        _aug(ALL, seed=3)(batch, epoch=1, batch_idx=5, rank=1),
    ):
        assert not torch.equal(a["image"], other["image"])


def test_no_transform_is_the_identity(batch):
    none = AugmentConfig(hflip_p=0.0, affine_p=0.0, color_jitter_p=0.0)
    out = _aug(none)(batch, epoch=0, batch_idx=0)
    assert all(torch.equal(out[k], batch[k]) for k in ("image", "gt", "thresh"))


def test_flip_of_a_known_pattern():
    hwc = torch.arange(2 * 4 * 6 * 3, dtype=torch.int64).remainder(256).to(torch.uint8)
    image = hwc.view(2, 4, 6, 3).permute(0, 3, 1, 2)  # channels-last view, as collate gives
    gt = torch.tensor([[0, 1, 3, 5, 7, 2]] * 4, dtype=torch.uint8).expand(2, 1, 4, 6)
    thresh = torch.arange(24, dtype=torch.uint8).view(1, 1, 4, 6).expand(2, 1, 4, 6)
    b = {"image": image, "gt": gt, "thresh": thresh}
    flip = AugmentConfig(hflip_p=1.0, affine_p=0.0, color_jitter_p=0.0)
    out = _aug(flip)(b, epoch=0, batch_idx=0)
    assert torch.equal(out["image"], image.flip(-1))
    assert out["gt"][0, 0, 0].tolist() == [2, 7, 5, 3, 1, 0]
    assert torch.equal(out["thresh"], thresh.flip(-1))


def test_flip_folded_into_the_affine_equals_flip_then_affine(batch):
    cfg = AugmentConfig(hflip_p=1.0, affine_p=1.0, color_jitter_p=0.0, translate_limit=0.1)
    aug = _aug(cfg)
    out = aug(batch, epoch=0, batch_idx=3)
    p = aug.params(8, epoch=0, batch_idx=3)
    h, w = batch["image"].shape[-2:]
    theta = affine_theta(p.angle, p.scale, p.translate, h, w)
    maps = torch.cat([batch["gt"], batch["thresh"]], 1).flip(-1)
    image, (ref,) = _warp(batch["image"].flip(-1).float(), [maps], theta, [torch.tensor(FILL)])
    mismatch = (torch.cat([out["gt"], out["thresh"]], 1) != ref).float().mean()
    assert mismatch < 1e-3  # ties at pixel borders may round the other way
    diff = (out["image"].float() - image.round().clamp(0, 255)).abs()
    assert float(diff.mean()) < 0.05


def test_rotation_matches_albumentations_direction():
    # A 90 degree turn of an even square maps pixel centres onto pixel centres: exact.
    x = np.arange(64, dtype=np.uint8).reshape(8, 8)
    ref = A.Compose(
        [A.Affine(rotate=(90, 90), interpolation=cv2.INTER_NEAREST, p=1)],
        mask_interpolation=cv2.INTER_NEAREST,
    )(image=np.stack([x] * 3, -1), mask=x)["mask"]
    maps = torch.from_numpy(np.stack([x, x]))[None]  # (1, 2, 8, 8)
    theta = affine_theta(torch.tensor([90.0]), torch.tensor([1.0]), torch.zeros(1, 2), 8, 8)
    image = maps[:, :1].float().expand(1, 3, 8, 8)
    warped_image, (warped,) = _warp(image, [maps], theta, [torch.tensor([0, 0])])
    assert np.array_equal(warped[0, 0].numpy(), ref) and np.array_equal(ref, np.rot90(x))
    assert torch.allclose(warped_image[0, 0], torch.from_numpy(ref).float(), atol=1e-3)


def test_zoom_out_fills_background_values():
    maps = torch.full((1, 2, 16, 16), 5, dtype=torch.uint8)
    image = torch.full((1, 3, 16, 16), 200.0)
    theta = affine_theta(torch.zeros(1), torch.tensor([0.5]), torch.zeros(1, 2), 16, 16)
    warped_image, (warped,) = _warp(image, [maps], theta, [torch.tensor(FILL)])
    assert warped[0, :, 0, 0].tolist() == list(FILL)  # outside: background that counts
    assert warped[0, :, 8, 8].tolist() == [5, 5]  # the centre stays
    assert float(warped_image[0, 0, 0, 0]) == 0.0 and float(warped_image[0, 0, 8, 8]) == 200.0


def test_translation_moves_by_the_fraction():
    maps = torch.zeros((1, 2, 10, 10), dtype=torch.uint8)
    maps[0, :, 4, 4] = 9
    theta = affine_theta(torch.zeros(1), torch.ones(1), torch.tensor([[0.2, -0.1]]), 10, 10)
    _, (warped,) = _warp(torch.zeros(1, 3, 10, 10), [maps], theta, [torch.tensor([0, 0])])
    assert (warped[0, 0] == 9).nonzero().tolist() == [[3, 6]]  # +2 columns, -1 row


def test_brightness_contrast_follows_albumentations_formula(batch):
    color = AugmentConfig(hflip_p=0.0, affine_p=0.0, color_jitter_p=1.0)
    aug = _aug(color)
    p = aug.params(8, epoch=0, batch_idx=0)
    out = aug(batch, epoch=0, batch_idx=0)
    for i in range(8):
        ref = A.Compose(
            [A.RandomBrightnessContrast(p=1)]
        )  # its apply: clip(img * alpha + beta * 255), like ours
        expected = ref.transforms[0].apply(
            batch["image"][i].permute(1, 2, 0).contiguous().numpy(),
            alpha=float(p.alpha[i]),
            beta=float(p.beta[i]) * 255,
        )
        diff = np.abs(out["image"][i].permute(1, 2, 0).numpy().astype(int) - expected.astype(int))
        assert diff.max() <= 1  # rounding of x.5
    assert torch.equal(out["gt"], batch["gt"]) and torch.equal(out["thresh"], batch["thresh"])


def test_refuses_float_images(batch):
    bad = dict(batch, image=batch["image"].float())
    with pytest.raises(ValueError, match="'image'.*uint8"):
        _aug(ALL)(bad, epoch=0, batch_idx=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_result(batch):
    cpu = _aug(ALL)(batch, epoch=1, batch_idx=2)
    moved = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
    gpu = _aug(ALL)(moved, epoch=1, batch_idx=2)
    # Same parameters; sampling points that fall on a pixel border may round either way.
    for k in ("gt", "thresh"):
        assert (gpu[k].cpu() != cpu[k]).float().mean() < 1e-3
    assert (gpu["image"].cpu().int() - cpu["image"].int()).abs().float().mean() < 0.5
