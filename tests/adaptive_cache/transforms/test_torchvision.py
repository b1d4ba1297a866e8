"""Splitting a torchvision Compose: which transforms are deterministic, and where."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from adaptive_cache.transforms import deterministic
from adaptive_cache.transforms.torchvision import (
    DETERMINISTIC,
    DETERMINISTIC_AT_P,
    apply_classic,
    first_random,
    is_deterministic,
    is_empirically_deterministic,
    split_compose,
)
from tests.adaptive_cache.torchvision_import import torchvision_or_skip

tv = torchvision_or_skip()
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

GEN = torch.Generator().manual_seed(0)
# Not the full range: autocontrast and equalize then change it.
IMAGE = tv_tensors.Image(torch.randint(40, 200, (3, 20, 24), dtype=torch.uint8, generator=GEN))
BOXES = tv_tensors.BoundingBoxes(
    torch.tensor([[2.0, 3.0, 12.0, 15.0], [1.0, 1.0, 30.0, 30.0]]),
    format="XYXY",
    canvas_size=(20, 24),
)
SAMPLE = {"image": IMAGE, "boxes": BOXES, "labels": torch.tensor([1, 2])}


def _pil():
    from PIL import Image

    return Image.fromarray(IMAGE.permute(1, 2, 0).numpy())


def _to_tensor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # deprecated, still deterministic
        return v2.ToTensor()


# One instance of every class the split treats as deterministic, with an input it takes.
KNOWN = [
    (v2.CenterCrop(8), SAMPLE),
    (v2.ClampBoundingBoxes(), SAMPLE),
    (v2.ClampKeyPoints(), {"points": tv_tensors.KeyPoints([[1.0, 50.0]], canvas_size=(20, 24))}),
    (v2.ConvertBoundingBoxFormat("CXCYWH"), SAMPLE),
    (v2.ConvertImageDtype(torch.float32), IMAGE),
    (v2.FiveCrop(8), IMAGE),
    (v2.Grayscale(), SAMPLE),
    (v2.Identity(), SAMPLE),
    (v2.LinearTransformation(torch.eye(3 * 4 * 4), torch.zeros(3 * 4 * 4)), torch.rand(3, 4, 4)),
    (v2.Normalize([0.5, 0.4, 0.3], [0.2, 0.2, 0.2]), IMAGE.float() / 255),
    (v2.PILToTensor(), None),
    (v2.Pad(3), SAMPLE),
    (v2.RGB(), SAMPLE),
    (v2.Resize((10, 12)), SAMPLE),
    (v2.SanitizeBoundingBoxes(), SAMPLE),
    (v2.SanitizeKeyPoints(), {"points": tv_tensors.KeyPoints([[1.0, 5.0]], canvas_size=(20, 24))}),
    (v2.SetClampingMode("hard"), SAMPLE),
    (v2.TenCrop(8), IMAGE),
    (v2.ToDtype(torch.float32, scale=True), SAMPLE),
    (v2.ToImage(), IMAGE.as_subclass(torch.Tensor)),
    (v2.ToPILImage(), IMAGE),
    (v2.ToPureTensor(), SAMPLE),
    (_to_tensor(), None),
    (v2.UniformTemporalSubsample(2), tv_tensors.Video(torch.zeros(4, 3, 8, 8))),
]


def test_known_list_is_complete() -> None:
    assert {type(t).__name__ for t, _ in KNOWN} == set(DETERMINISTIC)


@pytest.mark.filterwarnings("ignore::UserWarning")  # ToTensor is deprecated
@pytest.mark.parametrize(("t", "inputs"), KNOWN, ids=lambda x: type(x).__name__)
def test_known_deterministic_transforms_are_empirically_deterministic(t, inputs) -> None:
    assert is_deterministic(t)
    assert is_empirically_deterministic(t, _pil() if inputs is None else inputs)


AT_P = [
    v2.RandomAdjustSharpness(2.0, p=1.0),
    v2.RandomAutocontrast(p=1.0),
    v2.RandomEqualize(p=1.0),
    v2.RandomGrayscale(p=1.0),
    v2.RandomHorizontalFlip(p=1.0),
    v2.RandomInvert(p=1.0),
    v2.RandomPosterize(4, p=1.0),
    v2.RandomSolarize(100, p=1.0),
    v2.RandomVerticalFlip(p=1.0),
]


def test_at_p_list_is_complete() -> None:
    assert {type(t).__name__ for t in AT_P} == set(DETERMINISTIC_AT_P)


@pytest.mark.parametrize("t", AT_P, ids=lambda t: type(t).__name__)
def test_fixed_operations_at_p_one_or_zero_are_deterministic(t) -> None:
    assert is_deterministic(t)
    assert is_empirically_deterministic(t, SAMPLE)
    t.p = 0.5
    assert not is_deterministic(t)
    assert not is_empirically_deterministic(t, SAMPLE, seeds=range(8))
    t.p = 0.0
    assert is_deterministic(t)


@pytest.mark.parametrize(
    "t",
    [
        v2.RandomCrop(8),
        v2.RandomResizedCrop(8),
        v2.ColorJitter(brightness=0.5),
        v2.RandomApply([v2.RandomHorizontalFlip(p=1.0)], p=0.5),
        v2.RandomChoice([v2.Resize(8), v2.CenterCrop(8)]),
        v2.GaussianBlur(3, sigma=(0.1, 2.0)),
        v2.RandomErasing(p=1.0),
        v2.RandomRotation(30),
        v2.TrivialAugmentWide(),
    ],
    ids=lambda t: type(t).__name__,
)
def test_random_transforms_are_classified_random_and_are_random(t) -> None:
    assert not is_deterministic(t)
    assert not is_empirically_deterministic(t, IMAGE, seeds=range(8))


def test_containers_lambdas_and_fixed_blur() -> None:
    assert is_deterministic(v2.Compose([v2.Resize(8), v2.RandomHorizontalFlip(p=1.0)]))
    assert not is_deterministic(v2.Compose([v2.Resize(8), v2.RandomHorizontalFlip()]))
    assert is_deterministic(v2.RandomApply([v2.Resize(8)], p=1.0))
    assert is_deterministic(v2.RandomApply([v2.RandomCrop(8)], p=0.0))
    assert is_deterministic(v2.GaussianBlur(3, sigma=1.0))
    assert not is_deterministic(v2.Lambda(lambda x: x))
    assert is_deterministic(v2.Lambda(deterministic(lambda x: x * 2)))

    class MyResize(v2.Resize):  # a user subclass may do anything
        pass

    assert not is_deterministic(MyResize(8))


def test_split_at_first_random_transform() -> None:
    compose = v2.Compose([v2.ToImage(), v2.Resize(16), v2.RandomCrop(12), v2.Resize(8)])
    prefix, suffix = split_compose(compose)
    assert type(prefix) is v2.Compose and type(suffix) is v2.Compose
    assert [type(t).__name__ for t in prefix.transforms] == ["ToImage", "Resize"]
    assert [type(t).__name__ for t in suffix.transforms] == ["RandomCrop", "Resize"]
    assert first_random(compose) == "RandomCrop" and first_random(prefix) is None
    torch.manual_seed(5)
    whole = compose(SAMPLE)
    torch.manual_seed(5)
    halves = suffix(prefix(SAMPLE))
    assert torch.equal(whole["image"], halves["image"])
    assert torch.equal(whole["boxes"], halves["boxes"])


def test_classic_compose_splits_and_applies_to_the_input() -> None:
    from torchvision import transforms as classic

    compose = classic.Compose([classic.Resize(16), classic.RandomHorizontalFlip()])
    prefix, suffix = split_compose(compose)
    assert type(prefix) is classic.Compose and type(suffix) is classic.Compose
    assert [type(t).__name__ for t in prefix.transforms] == ["Resize"]
    image, label = apply_classic(prefix, (IMAGE.as_subclass(torch.Tensor), 3))
    assert image.shape == (3, 16, 19) and label == 3
    assert np.array_equal(apply_classic(prefix, IMAGE).numpy(), image.numpy())


def test_an_empty_half_is_none() -> None:
    prefix, suffix = split_compose(v2.Compose([v2.Resize(8)]))
    assert suffix is None and [type(t).__name__ for t in prefix.transforms] == ["Resize"]
    assert split_compose(v2.Compose([v2.RandomCrop(8)]))[0] is None
