"""Pipeline: tiers, fingerprints, keys, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive_cache.pipeline import FunctionStage, Pipeline, RandomStageError
from adaptive_cache.sources import FileSource
from tests.adaptive_cache.pipelines import image_pipeline, write_images


def test_prefix_ends_at_first_random_stage(tmp_path):
    write_images(tmp_path, 2)
    pipe = image_pipeline(tmp_path)
    assert pipe.prefix_len == 2
    assert pipe.tiers == ["small", "image"]  # deepest first
    assert pipe.tier_end("image") == 1 and pipe.tier_end("small") == 2


def test_tier_after_random_stage_is_refused_with_its_name(tmp_path):
    write_images(tmp_path, 1)
    src = FileSource.glob(tmp_path, "*.png")
    stages = [
        FunctionStage("decode", lambda s: s),
        FunctionStage("jitter", lambda s, r: s, deterministic=False, uses_rng=True),
        FunctionStage("resize", lambda s: s),
    ]
    with pytest.raises(RandomStageError, match="jitter"):
        Pipeline(src, stages, {"small": "resize"})
    with pytest.raises(ValueError, match="not in the pipeline"):
        Pipeline(src, stages, {"x": "nope"})
    with pytest.raises(ValueError, match="unique"):
        Pipeline(src, [stages[0], stages[0]], {})


def test_keys_change_with_file_and_stage_parameters(tmp_path):
    paths = write_images(tmp_path / "a", 2)
    k1 = image_pipeline(tmp_path / "a").keys(0, ["image", "small"])
    assert k1 == image_pipeline(tmp_path / "a").keys(0, ["image", "small"])
    assert k1["small"].tier == "small" and k1["image"].tier == "image"
    assert str(k1["small"]) == f"small-{k1['small'].digest}"
    k2 = image_pipeline(tmp_path / "a", resize_version="2").keys(0, ["image", "small"])
    assert k2["image"] == k1["image"] and k2["small"] != k1["small"]
    write_images(tmp_path / "b", 1, seed=5)
    paths[0].write_bytes((tmp_path / "b" / "img0000.png").read_bytes())
    k3 = image_pipeline(tmp_path / "a").keys(0, ["image", "small"])
    assert k3["image"] != k1["image"] and k3["small"] != k1["small"]


def test_one_pipeline_sees_a_file_change_at_once(tmp_path):
    # Keys are remembered per sample while the file is unchanged; a change must show.
    paths = write_images(tmp_path / "a", 2)
    pipe = image_pipeline(tmp_path / "a")
    before = pipe.keys(0, ["image", "small"])
    assert pipe.keys(0, ["small", "image"]) == before
    write_images(tmp_path / "b", 1, seed=5)
    paths[0].write_bytes((tmp_path / "b" / "img0000.png").read_bytes())
    after = pipe.keys(0, ["image", "small"])
    assert after["image"] != before["image"] and after["small"] != before["small"]
    assert after == image_pipeline(tmp_path / "a").keys(0, ["image", "small"])


def test_random_stages_are_seeded_by_epoch_and_index(tmp_path):
    write_images(tmp_path, 3)
    pipe = image_pipeline(tmp_path)
    a = pipe.run(1, epoch=4)["image"]
    np.testing.assert_array_equal(a, image_pipeline(tmp_path).run(1, epoch=4)["image"])
    outs = {pipe.run(1, epoch=e)["image"].tobytes() for e in range(8)}
    assert len(outs) > 1


def test_run_from_a_tier_equals_full_run(tmp_path):
    write_images(tmp_path, 2)
    pipe = image_pipeline(tmp_path)
    mid = pipe.run(0, 3, upto=pipe.tier_end("small"))
    rest = pipe.run(0, 3, start=pipe.tier_end("small"), sample=mid)
    np.testing.assert_array_equal(rest["image"], pipe.run(0, 3)["image"])
    timings = [0.0] * 4
    pipe.run(0, 3, timings=timings)
    assert all(t > 0 for t in timings)
