import pytest
import torch

from training.config import ModelConfig
from training.model import BACKBONES, MobileNetSmall, ResNet18, build_backbone, build_model


def test_unknown_backbone_lists_known_names():
    with pytest.raises(ValueError, match="mobilenet_small, resnet18") as err:
        build_backbone("vgg16")
    assert "vgg16" in str(err.value)


def test_neck_channels_must_split_over_four_levels():
    with pytest.raises(ValueError, match="neck_channels=30"):
        build_model(ModelConfig(neck_channels=30))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_levels_have_declared_channels_and_strides(name):
    backbone = build_backbone(name)
    features = backbone(torch.zeros(1, 3, 64, 96))
    assert [f.shape[1] for f in features] == list(backbone.out_channels)
    assert [tuple(f.shape[-2:]) for f in features] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_parameter_counts():
    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert 0.5e6 <= count(MobileNetSmall()) <= 1.5e6
    assert 11.0e6 <= count(ResNet18()) <= 11.5e6  # torchvision's ResNet-18 minus its fc: 11.18M
    assert isinstance(build_model(ModelConfig(backbone="resnet18")).backbone, ResNet18)
