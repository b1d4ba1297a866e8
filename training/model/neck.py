"""FPN neck as in DBNet: lateral 1x1, top-down sum, 3x3 smoothing, concat at 1/4 scale."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FPN(nn.Module):
    """Fuses the backbone's C2..C5 into one map at stride 4.

    Each level is projected to ``channels`` (lateral 1x1), summed top-down,
    smoothed by a 3x3 conv to ``channels // 4`` and upsampled to the C2 size; the
    four levels are concatenated, so the output has ``channels`` channels
    (DBNet's ``inner_channels`` convention: 256 = 4 x 64).

    Args:
        in_channels: channels of C2..C5, lowest stride first.
        channels: output channels; must be divisible by the number of levels.

    Raises:
        ValueError: ``channels`` is not divisible by ``len(in_channels)``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int) -> None:
        super().__init__()
        levels = len(in_channels)
        if channels % levels:
            raise ValueError(
                f"model.neck_channels={channels}: must be divisible by {levels} "
                f"(the FPN concatenates {levels} levels of neck_channels/{levels} channels)"
            )
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1, bias=False) for c in in_channels)
        self.smooth = nn.ModuleList(
            nn.Conv2d(channels, channels // levels, 3, padding=1, bias=False) for _ in in_channels
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        self.out_channels = channels

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        # Top-down: sizes are taken from the finer level, so odd sizes still line up.
        for i in range(len(laterals) - 1, 0, -1):
            up = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + up  # (B, channels, H_i, W_i)
        size = laterals[0].shape[-2:]
        outs = [conv(x) for conv, x in zip(self.smooth, laterals, strict=True)]
        outs = [outs[0], *(F.interpolate(o, size=size, mode="nearest") for o in outs[1:])]
        return torch.cat(outs, dim=1)  # (B, channels, H/4, W/4)
