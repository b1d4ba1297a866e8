"""Small map-style datasets of the kinds people wrap, on real files where they have files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


def write_class_folders(root: Path, per_class: int = 4, classes=("cat", "dog")) -> Path:
    """PNG files in one folder per class, as torchvision's ImageFolder expects."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = 24 + 4 * (i % 3), 28 + 2 * i
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{c}{i}.png")
    return root


class TensorPairs(Dataset):
    """``(uint8 tensor (3, H, W), label)`` computed from the index: no files."""

    def __init__(self, n: int = 8) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        return torch.randint(0, 256, (3, 20, 22), dtype=torch.uint8, generator=g), i % 3


class SegmentationDicts(Dataset):
    """``{"image": HWC uint8, "mask": HW uint8, "label": int}`` numpy dicts, as albumentations
    users write them."""

    def __init__(self, n: int = 8) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        rng = np.random.default_rng(i)
        image = rng.integers(0, 256, size=(30, 26, 3), dtype=np.uint8)
        mask = (image[..., 0] > 128).astype(np.uint8)
        return {"image": image, "mask": mask, "label": i}


class TvTensorSamples(Dataset):
    """``{"image": tv_tensors.Image, "mask": tv_tensors.Mask, "label": int}``."""

    def __init__(self, n: int = 8) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        from torchvision import tv_tensors

        g = torch.Generator().manual_seed(100 + i)
        image = torch.randint(0, 256, (3, 28, 24), dtype=torch.uint8, generator=g)
        return {
            "image": tv_tensors.Image(image),
            "mask": tv_tensors.Mask((image[0] > 128).to(torch.uint8)),
            "label": i,
        }
