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


def _nearest(maps: list[Tensor], grid: Tensor, fills: list[Tensor]) -> list[Tensor]:
    """``grid_sample(mode="nearest")`` on uint8 maps (n, C, H, W) by integer gathering.

    The same source pixel as ``grid_sample`` (``align_corners=False``, round half to
    even), without converting the maps to float; the indices are computed once for
    all maps. Outside the image each map takes its ``fill`` (C values).
    """
    n, _, h, w = maps[0].shape
    ix = torch.round(((grid[..., 0] + 1) * w - 1) / 2)  # (n, H, W)
    iy = torch.round(((grid[..., 1] + 1) * h - 1) / 2)
    inside = ((ix >= 0) & (ix <= w - 1) & (iy >= 0) & (iy <= h - 1)).unsqueeze(1)
    flat = (iy.clamp_(0, h - 1) * w + ix.clamp_(0, w - 1)).long().view(n, 1, -1)
    out = []
    for m, fill in zip(maps, fills, strict=True):
        c = m.shape[1]
        got = m.reshape(n, c, h * w).gather(2, flat.expand(n, c, flat.shape[-1]))
        got = got.view(n, c, grid.shape[1], grid.shape[2])
        out.append(torch.where(inside, got, fill.to(m).view(1, -1, 1, 1)))
    return out


def _warp(
    image: Tensor, maps: list[Tensor], theta: Tensor, fills: list[Tensor]
) -> tuple[Tensor, list[Tensor]]:
    """Warp a float image (n, 3, H, W) bilinear (black outside) and uint8 maps nearest."""
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)  # (n, H, W, 2)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return image, _nearest(maps, grid, fills)


def _to_uint8(x: Tensor) -> Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


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

        def rows(mask: Tensor) -> Tensor:
            return mask.nonzero().squeeze(1).to(dev)

        # Work on uint8 and convert to float only the samples that need it: the batch is
        # memory-bound (a float copy of 16 images at 640 is 79 MB).
        out = image.clone()  # (B, 3, H, W) uint8, the input's strides
        gt, thresh = gt.clone(), thresh.clone()  # (B, 1, H, W) uint8 each
        alpha = torch.where(p.color, p.alpha, 1.0).to(torch.float32)
        beta = torch.where(p.color, p.beta * 255.0, 0.0).to(torch.float32)
        flip_only = p.flip & ~p.affine
        if bool(flip_only.any()):
            i = rows(flip_only)
            out[i], gt[i], thresh[i] = out[i].flip(-1), gt[i].flip(-1), thresh[i].flip(-1)
        if bool(p.affine.any()):
            theta = affine_theta(p.angle, p.scale, p.translate, h, w)[p.affine]
            theta[p.flip[p.affine], 0] *= -1  # flip first: sample at (-x, y), folded in
            i = rows(p.affine)
            fills = [torch.tensor([v], dtype=torch.uint8, device=dev) for v in self.fill]
            warped, (gt[i], thresh[i]) = _warp(
                out[i].float(), [gt[i], thresh[i]], theta.to(dev), fills
            )
            a, c = alpha[p.affine].to(dev), beta[p.affine].to(dev)
            out[i] = _to_uint8(warped.mul_(a.view(-1, 1, 1, 1)).add_(c.view(-1, 1, 1, 1)))
        color_only = p.color & ~p.affine
        if bool(color_only.any()):
            i = rows(color_only)
            a, c = alpha[color_only].to(dev), beta[color_only].to(dev)
            out[i] = _to_uint8(out[i].float().mul_(a.view(-1, 1, 1, 1)).add_(c.view(-1, 1, 1, 1)))
        return {**batch, "image": out, "gt": gt, "thresh": thresh}
