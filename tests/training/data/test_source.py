from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from adaptive_cache.pipeline import Source
from training.data.source import OcrSource, pack_polygons, unpack_polygons


def _copy(synthetic_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    return root


def test_seed_source_lists_annotated_images(synthetic_root: Path) -> None:
    src = OcrSource(synthetic_root / "images/train", synthetic_root / "jsons/train.json")
    assert isinstance(src, Source)
    assert len(src) == 8
    assert [src.sample_id(i) for i in range(len(src))] == [f"train_{i:05d}.jpg" for i in range(8)]
    sample = src.load(3)
    assert sample["data"].dtype == np.uint8
    file = synthetic_root / "images/train/train_00003.jpg"
    assert sample["data"].tobytes() == file.read_bytes()
    polys = unpack_polygons(sample["polys"], sample["poly_offsets"])
    ann = json.loads((synthetic_root / "jsons/train.json").read_text())
    words = ann["images"]["train_00003.jpg"]["words"]
    assert len(polys) == len(words) == len(sample["ignore"])
    np.testing.assert_allclose(polys[0], np.float32(words["0001"]["points"]))
    assert sample["polys"].dtype == np.float32 and sample["poly_offsets"].dtype == np.int32
    assert sample["ignore"].dtype == np.uint8
    assert sample["file"] == "train_00003.jpg" and sample["index"] == 3


def test_identity_follows_image_and_annotation_files(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy(synthetic_root, tmp_path)
    src = OcrSource(root / "images/train", root / "jsons/train.json")
    before = [src.identity(i) for i in range(len(src))]
    img = root / "images/train/train_00002.jpg"
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    after = [src.identity(i) for i in range(len(src))]
    assert [a != b for a, b in zip(before, after, strict=True)] == [i == 2 for i in range(8)]
    ann = root / "jsons/train.json"
    os.utime(ann, ns=(ann.stat().st_atime_ns, ann.stat().st_mtime_ns + 1_000_000))
    reparsed = OcrSource(root / "images/train", ann)
    assert all(reparsed.identity(i) != after[i] for i in range(len(src)))


def test_missing_image_raises_or_is_skipped(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy(synthetic_root, tmp_path)
    (root / "images/train/train_00004.jpg").unlink()
    with pytest.raises(ValueError, match=r"train_00004\.jpg.*not found"):
        OcrSource(root / "images/train", root / "jsons/train.json")
    src = OcrSource(root / "images/train", root / "jsons/train.json", on_bad_sample="skip")
    assert len(src) == 7 and "train_00004.jpg" in src.skipped


def test_bad_annotation_entry_raises_or_is_skipped(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy(synthetic_root, tmp_path)
    ann = root / "jsons/train.json"
    doc = json.loads(ann.read_text())
    doc["images"]["train_00001.jpg"]["words"]["0002"]["points"][0][1] = "oops"
    ann.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r'images\."train_00001\.jpg"\.words\."0002"\.points'):
        OcrSource(root / "images/train", ann)
    src = OcrSource(root / "images/train", ann, on_bad_sample="skip")
    assert len(src) == 7 and list(src.skipped) == ["train_00001.jpg"]


def test_unannotated_images_are_ignored_and_empty_split_fails(
    synthetic_root: Path, tmp_path: Path
) -> None:
    root = _copy(synthetic_root, tmp_path)
    (root / "images/train/extra.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert len(OcrSource(root / "images/train", root / "jsons/train.json")) == 8
    (root / "empty.json").write_text('{"images": {}}')
    with pytest.raises(ValueError, match="no usable samples"):
        OcrSource(root / "images/train", root / "empty.json")
    with pytest.raises(ValueError, match="does not exist"):
        OcrSource(root / "nope", root / "jsons/train.json")


def test_icdar_source(tmp_path: Path) -> None:
    images, gts = tmp_path / "imgs", tmp_path / "gt"
    images.mkdir()
    gts.mkdir()
    for name in ("img_1.jpg", "img_2.JPG"):
        (images / name).write_bytes(b"\xff\xd8\xff")
        stem = Path(name).stem
        (gts / f"gt_{stem}.txt").write_bytes(
            b"\xef\xbb\xbf1,1,20,1,20,10,1,10,hello\n30,1,50,1,50,10,30,10,###\n"
        )
    src = OcrSource(images, gts, format="icdar2015")
    assert [src.sample_id(i) for i in range(2)] == ["img_1.jpg", "img_2.JPG"]
    sample = src.load(1)
    assert sample["ignore"].tolist() == [0, 1]
    assert src.identity(0) != src.identity(1)


def test_unreadable_image_is_reported_by_load(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy(synthetic_root, tmp_path)
    src = OcrSource(root / "images/train", root / "jsons/train.json")
    (root / "images/train/train_00000.jpg").unlink()
    sample = src.load(0)
    assert sample["data"].size == 0 and "cannot read" in sample["read_error"]


def test_pack_polygons_round_trip() -> None:
    polys = [np.ones((4, 2), np.float32), np.zeros((6, 2), np.float32)]
    flat, offsets = pack_polygons(polys)
    assert flat.shape == (10, 2) and offsets.tolist() == [0, 4, 10]
    back = unpack_polygons(flat, offsets)
    assert all(np.array_equal(a, b) for a, b in zip(back, polys, strict=True))
    flat, offsets = pack_polygons([])
    assert flat.shape == (0, 2) and offsets.tolist() == [0] and unpack_polygons(flat, offsets) == []
