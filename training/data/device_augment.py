"""The random training suffix as one batched stage on the device (torch only).

The same transforms as :func:`training.data.transforms.augment_compose`, on a whole
uint8 batch where it already lives (the GPU, after the transfer): horizontal flip,
affine (rotation, scale, translation about the centre; bilinear for the image, nearest
for the DB maps) and brightness/contrast, each drawn per sample with its probability.
The maps warp with the image: ``gt`` is a bitfield and ``thresh`` a uint8 level, so
nearest-neighbour sampling keeps both valid without unpacking, and areas pulled in from
outside the image take the background values of
:func:`training.data.db_targets.background_fill` (the image gets black), as on the CPU.

Parameters come from a generator seeded by ``(seed, epoch, batch, rank)`` and drawn on
the CPU, so a batch gets the same augmentation on any device and in any run. They are
not the ones the per-sample CPU suffix would draw (another generator, per batch rather
than per sample): the two paths agree in distribution, not bit for bit.

Example:
    >>> augment = DeviceAugment(AugmentConfig(), thresh_min=0.3, seed=0)
    >>> batch = augment(batch, epoch=2, batch_idx=17)  # uint8 in, uint8 out
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from training.config import AugmentConfig
from training.data.db_targets import background_fill
from training.data.transforms import BRIGHTNESS_LIMIT, CONTRAST_LIMIT


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters of one batch, CPU tensors of length B."""

    flip: Tensor  # bool
    affine: Tensor  # bool
    angle: Tensor  # degrees, counter-clockwise
    scale: Tensor
    translate: Tensor  # (B, 2) fractions of (width, height)
    color: Tensor  # bool
    alpha: Tensor  # contrast factor
    beta: Tensor  # brightness shift, a fraction of 255


def batch_seed(*parts: int) -> int:
    """A 64-bit seed from integers (``numpy.random.SeedSequence`` mixes them)."""
    lo, hi = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int(lo) | (int(hi) << 32)


def draw_params(cfg: AugmentConfig, batch_size: int, generator: torch.Generator) -> AugmentParams:
    """Draw every sample's parameters (all draws happen, used or not: fixed stream)."""

    def uniform(*shape: int) -> Tensor:  # in [-1, 1)
        return torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1

    def chance(p: float) -> Tensor:
        return torch.rand(batch_size, generator=generator, dtype=torch.float64) < p

    flip = chance(cfg.hflip_p)
    geometric = cfg.rotate_limit > 0 or cfg.scale_limit > 0 or cfg.translate_limit > 0
    affine = chance(cfg.affine_p) & geometric
    angle = uniform(batch_size) * cfg.rotate_limit
    scale = 1.0 + uniform(batch_size) * cfg.scale_limit
    translate = uniform(batch_size, 2) * cfg.translate_limit
    color = chance(cfg.color_jitter_p)
    alpha = 1.0 + uniform(batch_size) * CONTRAST_LIMIT
    beta = uniform(batch_size) * BRIGHTNESS_LIMIT
    return AugmentParams(flip, affine, angle, scale, translate, color, alpha, beta)


def affine_theta(
    angle: Tensor, scale: Tensor, translate: Tensor, height: int, width: int
) -> Tensor:
    """``F.affine_grid`` matrices (B, 2, 3) for rotation and scale about the centre.

    The forward map in pixels is ``x' = s R (x - c) + c + t``; ``affine_grid`` wants the
    inverse in coordinates normalised to [-1, 1] per axis: ``D^-1 M D`` with
    ``M = (s R)^-1`` and ``D = diag(W/2, H/2)``, which keeps angles right on
    non-square images.
    """
    rad = angle.to(torch.float64) * math.pi / 180.0
    cos, sin = torch.cos(rad) / scale, torch.sin(rad) / scale
    # M = R(angle) / s inverts s R(-angle): with rows growing downwards, a turn by
    # -angle in (x, y) is counter-clockwise on screen, as albumentations' positive angles.
    m = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    d = torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64)
    lin = m * d.view(1, 1, 2) / d.view(1, 2, 1)  # D^-1 M D
    t_norm = translate.to(torch.float64) * 2.0  # pixels t / (W/2) = 2 * fraction
    offset = -(lin @ t_norm.unsqueeze(-1))  # (B, 2, 1)
    return torch.cat([lin, offset], dim=-1).to(torch.float32)


def _warp(
    image: Tensor, maps: Tensor, theta: Tensor, fill: Tensor
) -> tuple[Tensor, Tensor]:
    """Warp float image (b, 3, H, W) bilinear and uint8 maps (b, 2, H, W) nearest."""
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)  # (b, H, W, 2)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ones = torch.ones_like(maps[:, :1], dtype=torch.float32)
    stacked = torch.cat([maps.float(), ones], dim=1)  # (b, 3, H, W): gt, thresh, inside
    out = F.grid_sample(stacked, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    inside = out[:, 2:3] > 0.5
    maps = torch.where(inside, out[:, :2], fill.view(1, 2, 1, 1)).round_().to(torch.uint8)
    return image, maps


class DeviceAugment:
    """The training suffix on a collated batch, on the batch's device.

    Args:
        cfg: the augmentation settings (``data.augment``).
        thresh_min: ``data.thresh_min`` (the threshold map's background value).
        seed: the run's seed.

    Raises:
        ValueError: on a batch without uint8 ``image``, ``gt`` and ``thresh``.
    """

    def __init__(self, cfg: AugmentConfig, thresh_min: float, *, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = int(seed)
        self.fill = background_fill(thresh_min)  # (gt, thresh)

    def params(
        self, batch_size: int, *, epoch: int, batch_idx: int, rank: int = 0
    ) -> AugmentParams:
        """The parameters of one batch (the same for the same seed, epoch, batch, rank)."""
        generator = torch.Generator().manual_seed(batch_seed(self.seed, epoch, batch_idx, rank))
        return draw_params(self.cfg, batch_size, generator)

    def __call__(
        self, batch: dict[str, Any], *, epoch: int, batch_idx: int, rank: int = 0
    ) -> dict[str, Any]:
        """A new batch dict with ``image``, ``gt`` and ``thresh`` augmented (uint8)."""
        image, gt, thresh = batch["image"], batch["gt"], batch["thresh"]
        for name, t in (("image", image), ("gt", gt), ("thresh", thresh)):
            if not isinstance(t, Tensor) or t.dtype != torch.uint8:
                raise ValueError(f"device augment: batch[{name!r}] must be a uint8 tensor")
        b, _, h, w = image.shape
        p = self.params(b, epoch=epoch, batch_idx=batch_idx, rank=rank)
        dev = image.device
        maps = torch.cat([gt, thresh], dim=1)  # (B, 2, H, W) uint8
        img = image.float()  # (B, 3, H, W), exact for uint8
        flip = p.flip.to(dev)
        if bool(p.flip.any()):
            img = torch.where(flip.view(-1, 1, 1, 1), img.flip(-1), img)
            maps = torch.where(flip.view(-1, 1, 1, 1), maps.flip(-1), maps)
        if bool(p.affine.any()):
            idx = p.affine.nonzero().squeeze(1).to(dev)
            theta = affine_theta(p.angle, p.scale, p.translate, h, w).to(dev)[idx]
            fill = torch.tensor(self.fill, dtype=torch.float32, device=dev)
            img[idx], maps[idx] = _warp(img[idx], maps[idx], theta, fill)
        if bool(p.color.any()):
            alpha = torch.where(p.color, p.alpha, 1.0).to(dev, torch.float32).view(-1, 1, 1, 1)
            beta = torch.where(p.color, p.beta * 255.0, 0.0).to(dev, torch.float32)
            img = img * alpha + beta.view(-1, 1, 1, 1)
        out = dict(batch)
        out["image"] = img.round_().clamp_(0, 255).to(torch.uint8)
        out["gt"] = maps[:, :1].contiguous()
        out["thresh"] = maps[:, 1:].contiguous()
        return out
