"""OcrDataModule from configuration alone: seed JSON and ICDAR 2015 layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

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
