"""OcrDataModule from configuration alone: seed JSON and ICDAR 2015 layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import CONFIG_DIR, load_config
from training.data.synthetic import generate
from training.datamodule import OcrDataModule


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dm") / "synthetic"
    generate(root, n_train=4, n_val=2, seed=3, progress=False, scale=0.5)
    return root


def _as_icdar(src: Path, dst: Path) -> None:
    """Rewrite the seed-format set as ICDAR 2015 (images + gt_<stem>.txt, ### = don't care)."""
    for split, (img_dir, gt_dir) in {
        "train": ("ch4_training_images", "ch4_training_localization_transcription_gt"),
        "val": ("ch4_test_images", "Challenge4_Test_Task1_GT"),
    }.items():
        (dst / img_dir).mkdir(parents=True)
        (dst / gt_dir).mkdir(parents=True)
        doc = json.loads((src / "jsons" / f"{split}.json").read_text())
        for name, entry in doc["images"].items():
            shutil.copy(src / "images" / split / name, dst / img_dir / name)
            lines = []
            for i, word in enumerate(entry["words"].values()):
                pts = word["points"][:4]
                text = "###" if i % 5 == 0 else "word"
                lines.append(",".join(str(round(v)) for p in pts for v in p) + "," + text)
            (dst / gt_dir / f"gt_{Path(name).stem}.txt").write_text("\ufeff" + "\n".join(lines))


@pytest.mark.parametrize("layout", ["seed", "icdar2015"])
def test_loaders_from_config_alone(synthetic, tmp_path, layout):
    common = ["data.image_size=128", "data.batch_size=2", "data.num_workers=0", "cache.store=local"]
    if layout == "seed":
        cfg = load_config([f"data.root={synthetic}", *common])
    else:
        _as_icdar(synthetic, tmp_path / "icdar")
        cfg = load_config(
            [f"data.root={tmp_path / 'icdar'}", *common],
            config_files=[CONFIG_DIR / "data" / "icdar2015.yaml"],
        )
        assert cfg.data.train.format == "icdar2015"
    dm = OcrDataModule(cfg)
    try:
        dm.setup("fit")
        for split in ("train", "val"):
            batch = next(iter(dm.loader(split)))
            assert (
                batch["image"].shape == (2, 3, 128, 128)
                and str(batch["image"].dtype) == "torch.uint8"
            )
            assert batch["gt"].shape == (2, 1, 128, 128)
            assert all(len(p) > 0 for p in batch["polygons"])
            if layout == "icdar2015":
                assert any(np.asarray(ig).any() for ig in batch["ignore"])  # ### parsed
    finally:
        dm.close()


def test_validation_behind_the_device_tier(synthetic):
    from adaptive_cache.device_loader import DeviceCachedLoader
    from adaptive_cache.loader import CacheLoader

    common = [f"data.root={synthetic}", "data.image_size=128", "data.batch_size=1"]
    common += ["data.num_workers=0", "cache.store=local"]
    # auto on a CPU: the batch already lives in host memory, so no device tier.
    dm = OcrDataModule(load_config(common))
    try:
        assert isinstance(dm.val_dataloader(), CacheLoader) and not dm.device_caches
    finally:
        dm.close()
    # on (here through the per-split alias of the spelling): the CPU as device.
    dm = OcrDataModule(load_config([*common, "data.val.cache.tiers.gpu=on"]))
    try:
        plain = [b["image"].clone() for b in dm.loader("val", shuffle=False)]
        val = dm.val_dataloader()
        assert isinstance(val, DeviceCachedLoader) and val.cache.device.type == "cpu"
        for epoch in range(3):
            got = []
            for batch in val:
                got.append(batch["image"].clone())
                batch["image"] = batch["image"].float()  # as the module's hook does
            assert [torch.equal(a, b) for a, b in zip(got, plain, strict=True)] == [True] * 2
            held = {"device_batches": 2 * (epoch > 0), "loader_batches": 2 * (epoch == 0)}
            assert val.last_epoch == held
        assert dm.device_caches["val"].stats().hits == 4
    finally:
        dm.close()
    # A forced device tier over the random train split fails with the stage's name.
    dm = OcrDataModule(load_config([*common, "data.train.cache.gpu=on"]))
    try:
        with pytest.raises(ValueError, match=r"data\.train\.cache\.gpu=on.*'augment'"):
            dm.device_loader("train")
    finally:
        dm.close()
