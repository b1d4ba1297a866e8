from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import albumentations as A
import numpy as np
import pytest

from adaptive_cache import codec
from adaptive_cache.pipeline import RandomStageError
from training.config import AugmentConfig, DataConfig
from training.data.pipeline import build_pipeline, polygons_to_output_frame, sample_polygons
from training.data.stages import canonical_polygons

from .conftest import IMAGE_SIZE


def test_train_pipeline_layout(data_config: DataConfig) -> None:
    pipe = build_pipeline(data_config, "train", seed=3)
    assert [s.name for s in pipe.stages] == ["decode", "canonical", "db_maps", "pack", "augment"]
    assert pipe.prefix_len == 4 and pipe.seed == 3
    assert pipe.tier_end("image") == 1 and pipe.tier_end("maps") == 3
    assert pipe.tier_end("tensor") == 4
    assert "HorizontalFlip" in pipe.stages[-1].describe_random()


def test_val_and_disabled_augmentation_have_no_random_stage(data_config: DataConfig) -> None:
    val = build_pipeline(data_config, "val")
    assert [s.name for s in val.stages][-1] == "pack" and val.prefix_len == len(val.stages)
    off = data_config.model_copy(update={"augment": AugmentConfig(enabled=False)})
    assert build_pipeline(off, "train").prefix_len == 4
    with pytest.raises(ValueError, match="unknown split"):
        build_pipeline(data_config, "test")


def test_user_compose_is_split_into_cached_and_random_stages(data_config: DataConfig) -> None:
    user = A.Compose([A.ToGray(p=1.0), A.HorizontalFlip(p=0.5), A.Resize(32, 32)])
    pipe = build_pipeline(data_config, "train", transform=user)
    assert [s.name for s in pipe.stages][4:] == ["transform", "augment"]
    assert pipe.tier_end("tensor") == 5
    out = pipe.run(0)
    assert out["image"].shape == (32, 32, 3) and out["gt"].shape == (32, 32)
    gray = pipe.run(0, upto=5)["image"]
    assert (gray[..., 0] == gray[..., 1]).all()


def test_stage_changes_change_the_keys(data_config: DataConfig) -> None:
    def pipe(**update):
        return build_pipeline(data_config.model_copy(update=update), "val")

    a, b = pipe(), pipe(image_size=IMAGE_SIZE + 32)
    c = pipe(shrink_ratio=0.5)
    # The target size picks the DCT reduction, so it changes even the decoded image.
    assert a.key(0, "image") != b.key(0, "image")
    assert pipe(dct_scaling=False).key(0, "image") == (
        pipe(dct_scaling=False, image_size=IMAGE_SIZE + 32).key(0, "image")
    )
    assert a.key(0, "tensor") != b.key(0, "tensor") != c.key(0, "tensor")
    assert a.key(0, "image") == c.key(0, "image") and a.key(0, "maps") != c.key(0, "maps")
    assert a.key(0, "tensor") != a.key(1, "tensor")


def test_tier_after_random_stage_is_refused(data_config: DataConfig) -> None:
    pipe = build_pipeline(data_config, "train")
    from adaptive_cache.pipeline import Pipeline

    with pytest.raises(RandomStageError, match="HorizontalFlip"):
        Pipeline(pipe.source, pipe.stages, {"tensor": "augment"})


def _equal(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def test_every_stage_output_round_trips_through_the_codec(data_config: DataConfig) -> None:
    pipe = build_pipeline(data_config, "train")
    for upto in range(len(pipe.stages) + 1):
        sample = pipe.run(1, epoch=2, upto=upto)
        back = codec.decode(codec.encode(sample))
        assert set(back) == set(sample), upto
        assert all(_equal(sample[k], back[k]) for k in sample), upto


def test_canonical_predictions_map_back_to_the_annotations(
    data_config: DataConfig, synthetic_root: Path
) -> None:
    pipe = build_pipeline(data_config, "val")
    ann = json.loads((synthetic_root / "jsons/val.json").read_text())
    for index in range(len(pipe)):
        sample = pipe.run(index, upto=4)
        meta = {k: v for k, v in sample.items() if not isinstance(v, np.ndarray)}
        back = polygons_to_output_frame(canonical_polygons(sample), meta)
        words = ann["images"][sample["file"]]["words"]
        assert len(back) == len(words)
        for got, word in zip(back, words.values(), strict=True):
            np.testing.assert_allclose(got, np.float32(word["points"]), atol=1e-2)
        h, w = sample["orig_shape"]
        for poly in sample_polygons(sample):
            assert poly.dtype == np.float32
            assert (poly >= 0).all() and (poly[:, 0] <= w).all() and (poly[:, 1] <= h).all()


def test_random_stage_depends_on_seed_epoch_and_index(data_config: DataConfig) -> None:
    pipe = build_pipeline(data_config, "train", seed=1)
    a, b = pipe.run(0, epoch=0), pipe.run(0, epoch=0)
    assert all(np.array_equal(a[k], b[k]) for k in ("image", "gt", "thresh"))
    epochs = [pipe.run(0, epoch=e)["image"] for e in range(1, 6)]
    assert any(not np.array_equal(a["image"], e) for e in epochs)
    other_seed = build_pipeline(data_config, "train", seed=2)
    assert any(
        not np.array_equal(pipe.run(0, epoch=e)["gt"], other_seed.run(0, epoch=e)["gt"])
        for e in range(5)
    )


def _digests(root: str, image_size: int, seed: int, epoch: int, n: int) -> list[str]:
    """Hashes of the train pipeline's outputs for the first ``n`` samples."""
    cfg = DataConfig(root=root, image_size=image_size)
    pipe = build_pipeline(cfg, "train", seed=seed)
    out = []
    for index in range(n):
        sample = pipe.run(index, epoch)
        h = hashlib.sha256()
        for key in ("image", "gt", "thresh", "polys"):
            h.update(sample[key].tobytes())
        out.append(h.hexdigest())
    return out


def test_same_seed_epoch_index_is_bit_identical_in_another_process(synthetic_root: Path) -> None:
    args = (str(synthetic_root), IMAGE_SIZE, 5, 3, 4)
    here = _digests(*args)
    # A fresh interpreter: nothing inherited from this process (no fork).
    code = (
        "import json, sys; from tests.training.data.test_pipeline import _digests; "
        f"print(json.dumps(_digests(*{args!r})))"
    )
    repo = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == here
    assert len(set(here)) == len(here)


def test_resuming_from_a_decoded_tier_gives_the_same_sample(data_config: DataConfig) -> None:
    # What the cache does: store a tier with the codec, then run the remaining stages
    # from the decoded value, whose arrays may be read-only views into a store's buffer.
    pipe = build_pipeline(data_config, "train", seed=4)
    direct = pipe.run(2, epoch=1)
    for tier in ("image", "maps", "tensor"):
        end = pipe.tier_end(tier)
        stored = codec.decode(bytes(codec.encode(pipe.run(2, epoch=1, upto=end))))
        for value in stored.values():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False  # as views into a shared read-only buffer
        resumed = pipe.run(2, epoch=1, start=end, sample=stored)
        assert set(resumed) == set(direct), tier
        assert all(_equal(direct[k], resumed[k]) for k in direct), tier
