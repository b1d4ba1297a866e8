"""split_transform: lists of callables, the deterministic marker, dispatch, fingerprints."""

from __future__ import annotations

import operator
import random

import albumentations as A
import numpy as np
import pytest
import torch

from adaptive_cache.transforms import deterministic, fingerprint, seeded, split_transform
from tests.adaptive_cache.torchvision_import import torchvision_or_skip


@deterministic
def double(x):
    return x * 2


def noise(x):
    return x + torch.rand(x.shape)


def test_a_plain_callable_is_random_unless_marked() -> None:
    split = split_transform([double, double, noise, double])
    assert split.prefix.names == ("double", "double")
    assert split.suffix.names == ("noise", "double")
    assert "noise" in split.first_random and "deterministic" in split.first_random
    x = torch.ones(2)
    assert torch.equal(split.prefix(x), torch.full((2,), 4.0))


def test_marking_a_builtin_wraps_it_and_a_class_attribute_counts() -> None:
    neg = deterministic(operator.neg)  # builtins take no attributes: wrapped
    assert neg(3) == -3 and neg.deterministic is True

    class Scale:
        deterministic = True

        def __init__(self, k):
            self.k = k

        def __call__(self, x):
            return x * self.k

    split = split_transform([neg, Scale(3)])
    assert not split.suffix and split.first_random is None
    assert split.prefix(2) == -6


def test_one_callable_and_none() -> None:
    assert not split_transform(noise).prefix and split_transform(noise).suffix
    empty = split_transform(None)
    assert not empty.prefix and not empty.suffix and empty.first_random is None


def test_lists_refuse_what_takes_its_input_differently() -> None:
    with pytest.raises(TypeError, match=r"transform\[1\] is not callable"):
        split_transform([double, 3])
    with pytest.raises(ValueError, match=r"A\.Compose"):
        split_transform([A.Resize(8, 8)])
    torchvision_or_skip()
    from torchvision import transforms as classic

    with pytest.raises(ValueError, match="classic torchvision Resize"):
        split_transform([classic.Resize(8)])


def test_albumentations_and_torchvision_composes_are_dispatched() -> None:
    split = split_transform(A.Compose([A.Resize(8, 8), A.HorizontalFlip(p=0.5)]))
    assert split.prefix.names == ("Resize",) and split.suffix.names == ("HorizontalFlip",)
    assert split.first_random == "albumentations HorizontalFlip"
    assert split.suffix.reseed is not None and split.prefix.reseed is None
    image = np.zeros((16, 12, 3), np.uint8)
    assert split.prefix((image, 1))[0].shape == (8, 8, 3)
    torchvision_or_skip()
    from torchvision.transforms import v2

    split = split_transform(v2.Compose([v2.Resize(8), v2.RandomCrop(4)]))
    assert split.prefix.names == ("Resize",) and split.first_random == "torchvision RandomCrop"
    out = split.prefix((torch.zeros(3, 16, 16, dtype=torch.uint8), 5))
    assert out[0].shape == (3, 8, 8) and out[1] == 5
    # One classic transform on its own is treated as a classic Compose of one.
    from torchvision import transforms as classic

    assert split_transform(classic.RandomHorizontalFlip(p=1.0)).prefix.names == (
        "RandomHorizontalFlip",
    )


def test_fingerprints_follow_parameters_and_code() -> None:
    def scaler(k):
        return deterministic(lambda x: x * k)

    assert fingerprint(scaler(2)) == fingerprint(scaler(2))
    assert fingerprint(scaler(2)) != fingerprint(scaler(3))  # closure value
    assert fingerprint(lambda x: x + 1) != fingerprint(lambda x: x - 1)  # code
    prefix = split_transform([double]).prefix.fingerprint
    assert prefix == split_transform([double]).prefix.fingerprint
    assert prefix != split_transform([scaler(2)]).prefix.fingerprint
    a = split_transform(A.Compose([A.Resize(8, 8)])).prefix.fingerprint
    assert a != split_transform(A.Compose([A.Resize(8, 9)])).prefix.fingerprint
    # Arrays by content, no object addresses.
    assert fingerprint(np.arange(3)) == fingerprint(np.arange(3)) != fingerprint(np.arange(4))
    assert fingerprint(torch.ones(2)) != fingerprint(torch.zeros(2))

    class Opaque:
        __slots__ = ()

    assert fingerprint(Opaque()) == fingerprint(Opaque())


def test_seeded_is_reproducible_and_restores_the_global_generators() -> None:
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    before = (torch.rand(1), random.random(), np.random.rand())
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    with seeded(7):
        a = (torch.rand(1), random.random(), np.random.rand())
    with seeded(7):
        b = (torch.rand(1), random.random(), np.random.rand())
    after = (torch.rand(1), random.random(), np.random.rand())
    assert a == b
    assert after == before  # as if the seeded blocks never ran


def _same_image(image, **kwargs):
    return image


def test_parts_name_the_global_generators_their_transforms_draw_from() -> None:
    assert split_transform([noise]).suffix.generators == {"python", "numpy", "torch"}
    albu = split_transform(A.Compose([A.HorizontalFlip(p=0.5)]))
    assert albu.suffix.generators == frozenset()  # albumentations' own, reseeded
    lam = split_transform(A.Compose([A.Lambda(image=_same_image)]))
    assert lam.suffix.generators == {"python", "numpy", "torch"}
    torchvision_or_skip()
    from torchvision.transforms import v2

    assert split_transform(v2.Compose([v2.RandomCrop(4)])).suffix.generators == {"torch"}
    nested = v2.Compose([v2.RandomApply([v2.Lambda(lambda x: x)], p=0.5)])
    assert split_transform(nested).suffix.generators == {"python", "numpy", "torch"}


def test_seeded_touches_only_the_named_generators() -> None:
    np.random.seed(3)
    expected = np.random.rand()
    np.random.seed(3)
    with seeded(9, {"torch"}):
        torch.rand(1)
        assert np.random.rand() == expected  # numpy left running, not reseeded
    with pytest.raises(ValueError, match="unknown generators"), seeded(1, {"cuda"}):
        pass
