"""ResNet-18 backbone (BasicBlock, layers 2-2-2-2) returning the C2..C5 feature maps."""

from __future__ import annotations

from torch import Tensor, nn


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 without the classifier, trained from scratch (no pretrained weights here).

    ``forward`` returns ``[C2, C3, C4, C5]`` at strides 4, 8, 16 and 32 with
    :attr:`out_channels` channels each.
    """

    out_channels: tuple[int, ...] = (64, 128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        in_channels = 64
        for i, channels in enumerate(self.out_channels):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(
                    BasicBlock(in_channels, channels, stride), BasicBlock(channels, channels)
                )
            )
            in_channels = channels
        self.stages = nn.ModuleList(stages)
        _init_weights(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)  # (B, 64, H/4, W/4)
        features = []
        for stage in self.stages:
            x = stage(x)  # (B, C_i, H/2^(i+2), W/2^(i+2))
            features.append(x)
        return features
