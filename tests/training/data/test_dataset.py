from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from training.config import DataConfig
from training.data.collate import collate
from training.data.dataset import PipelineDataset
from training.data.db_targets import unpack
from training.data.pipeline import build_pipeline

from .conftest import IMAGE_SIZE


def _epoch(dataset: PipelineDataset, workers: int, epoch: int) -> list[dict]:
    dataset.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=collate)
    return list(loader)


@pytest.mark.parametrize("split", ["train", "val"])
def test_loader_end_to_end_with_and_without_workers(data_config: DataConfig, split: str) -> None:
    dataset = PipelineDataset(build_pipeline(data_config, split, seed=11))
    n = len(dataset)
    results = {w: _epoch(dataset, w, epoch=1) for w in (0, 2)}
    for batches in results.values():
        assert sum(b["image"].shape[0] for b in batches) == n
        for batch in batches:
            b = batch["image"].shape[0]
            assert batch["image"].shape == (b, 3, IMAGE_SIZE, IMAGE_SIZE)
            assert batch["image"].dtype == torch.uint8
            maps = unpack(batch["gt"], batch["thresh"])
            for key in ("prob", "prob_mask", "thresh_mask"):
                assert maps[key].shape == (b, 1, IMAGE_SIZE, IMAGE_SIZE)
                assert set(torch.unique(maps[key]).tolist()) <= {0.0, 1.0}
            t = maps["thresh"]
            assert t.min() >= 0.3 - 1 / 255 and t.max() <= 0.7 + 1 / 255
            assert maps["prob"].sum() > 0
            for polys, meta in zip(batch["polygons"], batch["meta"], strict=True):
                h, w = meta["orig_shape"]
                for p in polys:
                    assert (p >= 0).all() and (p[:, 0] <= w).all() and (p[:, 1] <= h).all()
    # Worker processes compute exactly what the main process computes.
    for a, b in zip(results[0], results[2], strict=True):
        for key in ("image", "gt", "thresh"):
            assert torch.equal(a[key], b[key])
        assert a["meta"] == b["meta"]


def test_set_epoch_changes_augmentation_only(data_config: DataConfig) -> None:
    dataset = PipelineDataset(build_pipeline(data_config, "train"))
    first = [dataset[i]["gt"] for i in range(4)]
    dataset.set_epoch(1)
    second = [dataset[i]["gt"] for i in range(4)]
    assert dataset.epoch == 1
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    dataset.set_epoch(0)
    assert all(np.array_equal(a, dataset[i]["gt"]) for i, a in enumerate(first))
    val = PipelineDataset(build_pipeline(data_config, "val"), epoch_fn=lambda: 7)
    assert val.epoch == 7 and np.array_equal(val[0]["gt"], val[0]["gt"])
    with pytest.raises(IndexError):
        dataset[len(dataset)]
