from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.config import DataConfig
from training.data import orientation as orient
from training.data.images import MAX_PIXELS, BadSampleError, decode_image
from training.data.pipeline import build_pipeline, sample_polygons
from training.data.source import unpack_polygons
from training.data.stages import canonical_polygons

from .conftest import IMAGE_SIZE


def _tagged_indices(root: Path) -> list[int]:
    files = sorted((root / "images/train").glob("*.jpg"))
    return [i for i, f in enumerate(files) if orient.read_orientation(f.read_bytes()) != 1]


def test_decode_stage_output(data_config: DataConfig, synthetic_root: Path) -> None:
    pipe = build_pipeline(data_config, "val")
    sample = pipe.run(0, upto=1)
    raw = (synthetic_root / "images/val/val_00000.jpg").read_bytes()
    full = decode_image(raw, path="x")
    assert "data" not in sample
    assert sample["orig_shape"] == list(full.image.shape[:2])
    assert sample["orientation"] == full.orientation and sample["annotation_frame"] == "displayed"
    k = sample["reduction"]
    assert k >= 2  # 192 px target: every small synthetic page is reduced
    assert sample["image"].shape[:2] == tuple(-(-s // k) for s in full.image.shape[:2])


def test_canonical_stage_scale_and_polygons(data_config: DataConfig) -> None:
    pipe = build_pipeline(data_config, "train")
    for index in range(len(pipe)):
        sample = pipe.run(index, upto=2)
        assert sample["image"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        h, w = sample["orig_shape"]
        sx, sy = sample["scale_xy"]
        assert sample["scale"] == pytest.approx(IMAGE_SIZE / max(h, w), rel=0.01)
        assert sx == pytest.approx(sy, rel=0.02)
        ch, cw = sample["canonical_shape"]
        assert max(ch, cw) == IMAGE_SIZE
        assert (sample["image"][ch:] == 0).all() and (sample["image"][:, cw:] == 0).all()
        for poly in canonical_polygons(sample):
            assert (poly >= -0.5).all() and (poly[:, 0] <= cw + 0.5).all()
            assert (poly[:, 1] <= ch + 0.5).all()


def test_maps_and_pack_stages(data_config: DataConfig) -> None:
    pipe = build_pipeline(data_config, "val")
    maps = pipe.run(1, upto=3)
    for key in ("prob", "prob_mask", "thresh_map", "thresh_mask"):
        assert maps[key].shape == (IMAGE_SIZE, IMAGE_SIZE) and maps[key].dtype == np.float32
    assert maps["prob"].sum() > 0
    assert maps["thresh_map"].min() >= 0.3 - 1e-6 and maps["thresh_map"].max() <= 0.7 + 1e-6
    packed = pipe.run(1, upto=4)
    assert not {"prob", "prob_mask", "thresh_map", "thresh_mask"} & set(packed)
    assert packed["gt"].dtype == np.uint8 and packed["thresh"].dtype == np.uint8
    assert packed["gt"].max() <= 7 and (packed["gt"] & 1).sum() == maps["prob"].sum()


@pytest.fixture
def stored_frame_root(synthetic_root: Path, tmp_path: Path) -> Path:
    """The synthetic set with annotations rewritten into the stored-pixel frame."""
    root = tmp_path / "stored"
    shutil.copytree(synthetic_root, root)
    ann = root / "jsons/train.json"
    doc = json.loads(ann.read_text())
    for name, entry in doc["images"].items():
        dec = decode_image((root / "images/train" / name).read_bytes(), path=name)
        for word in entry["words"].values():
            pts = np.array(word["points"], np.float64)
            word["points"] = orient.undo_on_points(pts, dec.stored_hw, dec.orientation).tolist()
    ann.write_text(json.dumps(doc))
    return root


def test_stored_frame_annotations_are_moved_to_the_displayed_frame(
    data_config: DataConfig, synthetic_root: Path, stored_frame_root: Path
) -> None:
    tagged = _tagged_indices(synthetic_root)
    assert tagged, "the synthetic fixture should hold EXIF-tagged files"
    displayed = build_pipeline(data_config, "train")
    stored_cfg = data_config.model_copy(
        update={"root": str(stored_frame_root), "annotation_frame": "stored"}
    )
    stored = build_pipeline(stored_cfg, "train")
    for index in tagged:
        a, b = displayed.run(index, upto=1), stored.run(index, upto=1)
        np.testing.assert_allclose(a["polys"], b["polys"], atol=1e-3)
        # Ground truth comes back out in the frame it was given in.
        gt_stored = sample_polygons(b)
        raw = stored.source.load(index)
        given = unpack_polygons(raw["polys"], raw["poly_offsets"])
        for got, want in zip(gt_stored, given, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-3)
    assert displayed.fingerprint() != stored.fingerprint()


@pytest.fixture
def corrupt_root(synthetic_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "corrupt"
    shutil.copytree(synthetic_root, root)
    img = root / "images/train/train_00002.jpg"
    img.write_bytes(img.read_bytes()[:300])  # truncated
    (root / "images/train/train_00003.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_bad_sample_raise_names_the_file(data_config: DataConfig, corrupt_root: Path) -> None:
    pipe = build_pipeline(data_config.model_copy(update={"root": str(corrupt_root)}), "train")
    with pytest.raises(BadSampleError, match=r"train_00002\.jpg"):
        pipe.run(2)


def test_bad_sample_skip_replaces_deterministically(
    data_config: DataConfig, corrupt_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = data_config.model_copy(update={"root": str(corrupt_root), "on_bad_sample": "skip"})
    pipe = build_pipeline(cfg, "train")
    with caplog.at_level("WARNING", logger="training.data.stages"):
        first = pipe.run(2, epoch=0, upto=4)
        again = pipe.run(2, epoch=0, upto=4)
        third = pipe.run(3, epoch=0, upto=4)
    # Both bad files are skipped; index 2 and 3 are replaced by the next good one, 4.
    assert first["file"] == third["file"] == "train_00004.jpg"
    assert first["replaced_from"] == "train_00002.jpg"
    assert third["replaced_from"] == "train_00003.jpg"
    np.testing.assert_array_equal(first["gt"], again["gt"])
    decode = pipe.stages[0]
    assert sorted(Path(p).name for p in decode.bad) == ["train_00002.jpg", "train_00003.jpg"]
    logged = [r.getMessage() for r in caplog.records if "skipping bad sample" in r.getMessage()]
    assert len(logged) == 2  # once per file, however often it is met
    assert pipe.run(4, upto=4)["file"] == "train_00004.jpg"


def test_max_pixels_keeps_default_keys_and_refuses_large_images(
    data_config: DataConfig, synthetic_root: Path
) -> None:
    default = build_pipeline(data_config, "val")
    assert data_config.max_pixels == MAX_PIXELS
    same = build_pipeline(data_config.model_copy(update={"max_pixels": MAX_PIXELS}), "val")
    # Keys made before the limit existed stay valid with the default limit.
    assert default.stages[0].params() == (IMAGE_SIZE, "auto", "displayed")
    assert same.key(0, "image") == default.key(0, "image")
    small = build_pipeline(data_config.model_copy(update={"max_pixels": 1000}), "val")
    assert small.key(0, "image") != default.key(0, "image")  # it decides replacements
    with pytest.raises(BadSampleError, match="above the limit of 1,000"):
        small.run(0, upto=1)
