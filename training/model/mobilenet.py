"""A small depthwise-separable backbone for CPU runs (MobileNetV1 layout at width 0.5).

About 0.8M parameters against ResNet-18's 11M. Blocks that keep their shape get an
identity shortcut: the network trains from scratch here (no pretrained weights), and
the shortcuts make that converge faster than the plain MobileNetV1 stack.
"""

from __future__ import annotations

from torch import Tensor, nn

from training.model.resnet import _init_weights


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv, BN, ReLU, 1x1 pointwise conv, BN (+ identity), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
        )
        self.pointwise = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.residual = stride == 1 and in_channels == out_channels
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pointwise(self.depthwise(x))
        if self.residual:
            out = out + x
        return self.relu(out)


# (out_channels, stride) of each block per stage; the last block of a stage is C2..C5.
_STAGES: tuple[tuple[tuple[int, int], ...], ...] = (
    ((32, 1), (64, 2), (64, 1)),  # stride 4
    ((128, 2), (128, 1)),  # stride 8
    ((256, 2), (256, 1), (256, 1), (256, 1), (256, 1), (256, 1)),  # stride 16
    ((512, 2), (512, 1)),  # stride 32
)


class MobileNetSmall(nn.Module):
    """Depthwise-separable backbone returning ``[C2, C3, C4, C5]`` at strides 4 to 32."""

    out_channels: tuple[int, ...] = tuple(stage[-1][0] for stage in _STAGES)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        stages = []
        in_channels = 16
        for spec in _STAGES:
            blocks = []
            for channels, stride in spec:
                blocks.append(DepthwiseSeparable(in_channels, channels, stride))
                in_channels = channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        _init_weights(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)  # (B, 16, H/2, W/2)
        features = []
        for stage in self.stages:
            x = stage(x)  # (B, C_i, H/2^(i+2), W/2^(i+2))
            features.append(x)
        return features
