"""DBNet: backbones, FPN neck, DB head, loss and post-processing."""

from training.model.build import BACKBONES, build_backbone, build_model
from training.model.dbnet import DBNet
from training.model.head import DBHead
from training.model.loss import DBLoss, unpack_targets
from training.model.mobilenet import MobileNetSmall
from training.model.neck import FPN
from training.model.postprocess import boxes_from_prob, unclip
from training.model.resnet import ResNet18

__all__ = [
    "BACKBONES",
    "FPN",
    "DBHead",
    "DBLoss",
    "DBNet",
    "MobileNetSmall",
    "ResNet18",
    "boxes_from_prob",
    "build_backbone",
    "build_model",
    "unclip",
    "unpack_targets",
]
