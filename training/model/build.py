"""Name-to-class registry of backbones and the model factory (the config boundary)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from training.config import ModelConfig
from training.model.dbnet import DBNet
from training.model.mobilenet import MobileNetSmall
from training.model.resnet import ResNet18

BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "mobilenet_small": MobileNetSmall,
    "resnet18": ResNet18,
}


def build_backbone(name: str) -> nn.Module:
    """A fresh backbone by name.

    Raises:
        ValueError: ``name`` is not in :data:`BACKBONES`; the message lists the known names.
    """
    try:
        factory = BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(
            f"model.backbone={name!r}: unknown backbone; expected one of {known}"
        ) from None
    return factory()


def build_model(cfg: ModelConfig) -> DBNet:
    """The DBNet described by ``cfg`` (``backbone``, ``neck_channels``, ``k``).

    Raises:
        ValueError: unknown backbone, or ``neck_channels`` not divisible by 4.
    """
    return DBNet(build_backbone(cfg.backbone), cfg.neck_channels, cfg.k)
