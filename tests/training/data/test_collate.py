from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config import DataConfig
from training.data.collate import collate
from training.data.pipeline import build_pipeline

from .conftest import IMAGE_SIZE


@pytest.fixture
def samples(data_config: DataConfig) -> list[dict]:
    pipe = build_pipeline(data_config, "train")
    return [pipe.run(i, epoch=0) for i in range(3)]


def test_batch_shapes_dtypes_and_layout(samples: list[dict]) -> None:
    batch = collate(samples)
    s = IMAGE_SIZE
    assert batch["image"].shape == (3, 3, s, s) and batch["image"].dtype == torch.uint8
    # A view of the stacked HWC arrays: channels-last memory, no copy.
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    for key in ("gt", "thresh"):
        assert batch[key].shape == (3, 1, s, s) and batch[key].dtype == torch.uint8
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(batch["image"][i].permute(1, 2, 0).numpy(), sample["image"])
        np.testing.assert_array_equal(batch["gt"][i, 0].numpy(), sample["gt"])
    assert len(batch["polygons"]) == len(batch["ignore"]) == len(batch["meta"]) == 3
    for polys, ignore, sample in zip(batch["polygons"], batch["ignore"], samples, strict=True):
        assert len(polys) == len(ignore) == len(sample["poly_offsets"]) - 1
        assert all(p.dtype == np.float32 and p.shape[1] == 2 for p in polys)
        assert ignore.dtype == bool
    meta = batch["meta"][0]
    assert {"file", "scale", "scale_xy", "orig_shape", "orientation"} <= set(meta)
    assert not any(isinstance(v, np.ndarray) for v in meta.values())


def test_collate_errors(samples: list[dict]) -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    odd = dict(samples[1], image=samples[1]["image"][:-1])
    with pytest.raises(ValueError, match="differ in shape"):
        collate([samples[0], odd])
