from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from training.cli import main
from training.data import orientation as orient
from training.data.annotations import parse_seed_json
from training.data.images import decode_image
from training.data.synthetic import existing_dataset, _encode, generate


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", n_train=3, n_val=2, seed=5, progress=False, scale=0.3)
    generate(tmp_path / "b", n_train=3, n_val=2, seed=5, progress=False, scale=0.3)
    generate(tmp_path / "c", n_train=3, n_val=2, seed=6, progress=False, scale=0.3)
    ha, hb, hc = (_hashes(tmp_path / x) for x in "abc")
    assert len(ha) == 3 + 2 + 2 and ha == hb
    assert all(ha[k] != hc[k] for k in ha)
    assert a["counts"]["train"] == 3 and a["counts"]["val"] == 2 and a["seconds"] >= 0
    assert a["paths"]["train"]["annotations"] == str(tmp_path / "a/jsons/train.json")


def test_regenerating_replaces_earlier_files(tmp_path: Path) -> None:
    generate(tmp_path, n_train=4, n_val=1, seed=1, progress=False, scale=0.3)
    generate(tmp_path, n_train=2, n_val=1, seed=1, progress=False, scale=0.3)
    assert sorted(p.name for p in (tmp_path / "images/train").iterdir()) == [
        "train_00000.jpg",
        "train_00001.jpg",
    ]


def test_dataset_content(synthetic_root: Path) -> None:
    ann = parse_seed_json(synthetic_root / "jsons/train.json")
    assert ann.dropped == 0 and len(ann.images) == 8
    raw = json.loads((synthetic_root / "jsons/train.json").read_text())
    tagged = 0
    for name, entry in ann.images.items():
        data = (synthetic_root / "images/train" / name).read_bytes()
        assert data[:3] == b"\xff\xd8\xff"
        dec = decode_image(data, path=name)
        tagged += dec.orientation != 1
        h, w = dec.image.shape[:2]
        assert 15 <= len(entry) <= 80
        for poly in entry.polygons:
            assert poly.shape == (4, 2)
            assert (poly >= 0).all() and (poly[:, 0] <= w).all() and (poly[:, 1] <= h).all()
        texts = [word["text"] for word in raw["images"][name]["words"].values()]
        assert all(isinstance(t, str) and t for t in texts)
    assert tagged >= 1


def test_words_are_drawn_inside_their_polygons(synthetic_root: Path) -> None:
    ann = parse_seed_json(synthetic_root / "jsons/val.json")
    for name, entry in ann.images.items():
        img = decode_image((synthetic_root / "images/val" / name).read_bytes(), path=name).image
        gray = img.mean(axis=2)
        for poly in entry.polygons[:10]:
            x0, y0 = np.floor(poly.min(axis=0)).astype(int)
            x1, y1 = np.ceil(poly.max(axis=0)).astype(int)
            box = gray[y0:y1, x0:x1]
            # Dark ink on light paper: the box holds both.
            assert box.min() < box.max() - 60


def test_exif_share_and_orientations() -> None:
    rng_values = []
    image = np.zeros((16, 24, 3), np.uint8)
    for i in range(200):
        data, o = _encode(np.random.default_rng(i), image)
        assert orient.read_orientation(data) == o
        rng_values.append(o)
    share = np.mean([o != 1 for o in rng_values])
    assert 0.15 < share < 0.35 and set(rng_values) == set(orient.ORIENTATIONS)


def test_cli_make_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(["make-data", "--out", str(out), "--n-train", "1", "--n-val", "1", "--seed", "2"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["train"] == 1 and (out / "jsons/val.json").is_file()


def test_make_data_refuses_to_replace_a_data_set_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "synthetic"
    assert existing_dataset(out) == []
    generate(out, n_train=2, n_val=1, seed=0, progress=False, scale=0.1)
    assert existing_dataset(out) == [
        "jsons/train.json",
        "2 images in images/train",
        "jsons/val.json",
        "1 images in images/val",
    ]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    args = ["make-data", "--out", str(out), "--n-train", "1", "--n-val", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already holds a data set" in err and "--force" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert main([*args, "--force"]) == 0
    assert sorted(p.name for p in (out / "images/train").iterdir()) == ["train_00000.jpg"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        generate(Path("unused"), n_train=-1, n_val=0, seed=0, progress=False)
    with pytest.raises(ValueError, match="scale"):
        generate(Path("unused"), n_train=1, n_val=0, seed=0, progress=False, scale=0)
