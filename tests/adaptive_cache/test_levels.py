"""Levels below memory (adaptive_cache/levels): real disk directories and a real Redis."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis

from adaptive_cache import codec
from adaptive_cache.config import CacheConfig
from adaptive_cache.engine import AdaptiveCache, pid_namespace
from adaptive_cache.levels import LeveledStore, frame, ledger
from adaptive_cache.levels.cost import TRIALS, LevelCost
from adaptive_cache.levels.redis_level import RedisLevelStore
from adaptive_cache.pipeline import FunctionStage, Pipeline
from adaptive_cache.sources import FileSource
from tests.adaptive_cache.pipelines import collate, image_pipeline, write_images
from tests.adaptive_cache.test_engine import StaticProbe
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(pipe, shm_dir, disk_dir=None, *, name="val", probe=None, clock=None, **kw):
    kw.setdefault("reserve_bytes", 0)
    kw.setdefault("probe_interval_s", 0.0)
    cfg = CacheConfig(shm_dir=str(shm_dir), disk_dir=str(disk_dir) if disk_dir else None, **kw)
    extra = {"clock": clock} if clock is not None else {}
    return AdaptiveCache(
        pipe, cfg, name=name, namespace=pid_namespace(name), probe=probe or StaticProbe(), **extra
    )


def _level_files(disk_dir: Path, name: str = "val") -> dict[str, int]:
    d = disk_dir / f"adaptive-cache-{name}"
    return {p.name: p.stat().st_size for p in d.iterdir() if not p.name.startswith(".")}


def _epoch(cache, n, epoch=0):
    """Samples ``0..n-1`` of one epoch from a cache, or from a plain pipeline."""
    if isinstance(cache, Pipeline):
        return [cache.run(i, epoch) for i in range(n)]
    return [cache.get(i, epoch) for i in range(n)]


def _same(got, want):
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])


def _flat_images(root: Path, n: int) -> None:
    """PNGs of flat colour with a few dots: their decoded pixels compress 100x."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        img = np.full((96, 96, 3), 40 + i, np.uint8)
        img[rng.integers(0, 96, 8), rng.integers(0, 96, 8)] = 255
        cv2.imwrite(str(root / f"f{i:03d}.png"), img)


def _decode_only(root: Path) -> Pipeline:
    """One tier (``image``) whose rebuild costs a steady 3 ms, so worths barely vary."""

    def decode(s):
        time.sleep(0.003)  # a stable cost stands in for real decoding work
        return {"image": cv2.imdecode(np.asarray(s["data"]), cv2.IMREAD_COLOR)}

    stages = [FunctionStage("decode", decode)]
    return Pipeline(FileSource.glob(root, "*.png"), stages, {"image": "decode"})


# ---------------------------------------------------------------------- frames, config, costs


def test_frame_keeps_raw_payload_aligned_and_rejects_corruption():
    payload = codec.encode({"a": np.arange(1000, dtype=np.float32), "m": 1})
    raw = frame.frame(payload, zstd=False, seconds=0.25)
    body, info = frame.unframe(raw)
    assert (info.codec, info.raw_len, info.seconds) == (frame.RAW, len(payload), 0.25)
    assert isinstance(body, memoryview) and bytes(body) == bytes(payload)
    assert len(raw) - len(payload) == frame.FRAME == 64  # codec alignment kept
    z = frame.frame(payload, zstd=True, seconds=0.0)
    assert len(z) < len(raw)
    assert bytes(frame.unframe(z)[0]) == bytes(payload)
    for bad in (raw[:10], b"XXXX" + bytes(raw[4:]), bytes(z[:-5]), bytes(raw[:-1])):
        with pytest.raises(frame.FrameError):
            frame.unframe(bad)


def test_config_levels_defaults_and_errors():
    assert CacheConfig().levels == []
    assert CacheConfig(disk_dir="/x").levels == ["disk"]
    assert CacheConfig(disk_dir="/x", redis_url="redis://h:1/0").levels == ["disk", "redis"]
    assert CacheConfig(store="disk", disk_dir="/x").levels == []  # the single-store choice
    # A split may pick the disk store while the run's redis_url is set: no levels then.
    assert CacheConfig(store="disk", disk_dir="/x", redis_url="redis://h/0").levels == []
    with pytest.raises(ValueError, match="redis://") as err:
        CacheConfig(redis_url="http://user:hunter2@h/0")
    assert "hunter2" not in str(err.value)
    cfg = CacheConfig(disk_dir="/x")
    assert (cfg.disk_max_bytes, cfg.disk_free_share, cfg.redis_max_bytes) == (None, 0.5, None)
    assert (cfg.compress, cfg.redis_claim_s) == ("auto", 30.0)


def test_compression_rule_from_measurements():
    cost = LevelCost("auto")
    for _ in range(TRIALS):
        assert cost.codec("t", 0.02, 100, 10**9, issue=True) == "trial"
    # Trials handed out but not measured yet: raw meanwhile.
    assert cost.codec("t", 0.02, 100, 10**9, issue=True) == "raw"
    for _ in range(TRIALS):
        cost.observe_trial("t", 2_000_000, 400_000, 0.003, 0.001)
    # Everything fits and reads are free: raw saves more per entry.
    assert cost.codec("t", 0.02, 100, 10**9) == "raw"
    # It does not fit: compressed saves more per byte.
    assert cost.codec("t", 0.02, 100, 10**7) == "zstd"
    # It fits but reads are slow (a network, 100 MB/s): reading 5x fewer bytes pays.
    cost.observe_read(2_000_000, 2_000_000, 0.02, 0.0)
    assert cost.codec("t", 0.02, 100, 10**9) == "raw"  # one size read: slope unknown
    cost.observe_read(400_000, 400_000, 0.004, 0.0)
    assert cost.read_seconds(1_000_000) == pytest.approx(0.01)
    assert cost.codec("t", 0.02, 100, 10**9) == "zstd"
    assert LevelCost("off").codec("t", 1.0, 1, 1) == "raw"


# ---------------------------------------------------------------------- disk level


def test_write_through_and_warm_restart_served_in_place(tmp_path, shm_dir):
    write_images(tmp_path / "img", 12, size=64)
    pipe = image_pipeline(tmp_path / "img", random=False)
    want = _epoch(image_pipeline(tmp_path / "img", random=False), 12)
    disk = tmp_path / "disk"
    with _cache(pipe, shm_dir, disk, max_bytes="16KiB", compress="off") as a:
        assert isinstance(a.store, LeveledStore) and a.store.name == "shm+disk"
        _same(_epoch(a, 12), want)
        assert a.stats().level("disk").items == 12
    files = _level_files(disk)
    assert len(files) == 12 and all(k.startswith("small-") for k in files)
    with _cache(image_pipeline(tmp_path / "img", random=False), shm_dir, disk, compress="off") as b:
        assert b.stats().level("disk").items == 12  # adopted
        loader = b.loader(batch_size=4, num_workers=0, collate_fn=lambda s: s)
        got = [s for batch in loader for s in batch]
        st = b.stats()
        assert st.hits == 12 and st.level("disk").hits == 12
        assert loader.last_epoch["worker_samples"] == 0  # raw entries: served in place
        _same(got, want)


def test_warm_restart_across_two_processes_is_bit_identical(tmp_path, shm_dir):
    write_images(tmp_path / "img", 16, size=64)
    runs = []
    for run in range(2):
        out = tmp_path / f"run{run}.json"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.adaptive_cache.levels_run",
                str(tmp_path),
                str(shm_dir),
                str(out),
            ],
            check=True,
            cwd=ROOT,
            env=env,
            timeout=120,
        )
        runs.append(json.loads(out.read_text()))
    first, second = runs
    assert first["epochs"][0]["hits"] == 0
    assert second["epochs"][0]["hits"] == 16 == second["epochs"][0]["disk_hits"]
    assert second["digests"] == first["digests"] == second["uncached"]


def test_stale_entries_are_deleted_and_never_served(tmp_path, shm_dir):
    write_images(tmp_path / "img", 8, size=64)
    disk = tmp_path / "disk"
    with _cache(image_pipeline(tmp_path / "img", random=False), shm_dir, disk) as a:
        _epoch(a, 8)
    assert len(_level_files(disk)) == 8
    # A changed stage: every key changes, every entry is stale.
    changed = image_pipeline(tmp_path / "img", random=False, resize_version="2")
    with _cache(changed, shm_dir, disk) as b:
        st = b.stats().level("disk")
        assert st.items == 0 and st.evictions["invalid"] == 8
        got = _epoch(b, 8)
        assert b.stats().hits == 0
    _same(got, _epoch(image_pipeline(tmp_path / "img", random=False, resize_version="2"), 8))
    # A changed file: only its entry is stale.
    path = tmp_path / "img" / "img0003.png"
    cv2.imwrite(str(path), np.zeros((64, 64, 3), np.uint8))
    os.utime(path, ns=(1, 1))
    with _cache(
        image_pipeline(tmp_path / "img", random=False, resize_version="2"), shm_dir, disk
    ) as c:
        assert c.stats().level("disk").evictions["invalid"] == 1
        got = _epoch(c, 8)
        assert c.stats().hits == 7
        np.testing.assert_array_equal(got[3]["image"], np.zeros((32, 32, 3), np.uint8))


@pytest.mark.parametrize("damage", ["truncate", "payload"])
def test_corrupt_disk_entry_is_a_miss_and_dropped(tmp_path, shm_dir, damage):
    write_images(tmp_path / "img", 4, size=64)
    disk = tmp_path / "disk"
    with _cache(image_pipeline(tmp_path / "img", random=False), shm_dir, disk, compress="off") as a:
        _epoch(a, 4)
    key = sorted(_level_files(disk))[0]
    path = disk / "adaptive-cache-val" / key
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:100]
    else:  # a valid frame around a sample the codec rejects
        data[frame.FRAME : frame.FRAME + 4] = b"JUNK"
    path.write_bytes(bytes(data))
    want = _epoch(image_pipeline(tmp_path / "img", random=False), 4)
    with _cache(image_pipeline(tmp_path / "img", random=False), shm_dir, disk) as b:
        _same(_epoch(b, 4), want)
        assert b.stats().hits == 3
        assert b.stats().level("disk").evictions["invalid"] >= 1
    assert not path.exists() or path.read_bytes() != bytes(data)


def test_promotion_from_disk_into_memory(tmp_path, shm_dir):
    """Compressed entries are read in the general path, which promotes them."""
    write_images(tmp_path / "img", 10, size=64)
    disk = tmp_path / "disk"
    with _cache(image_pipeline(tmp_path / "img", random=False), shm_dir, disk, compress="on") as a:
        _epoch(a, 10)
    with _cache(image_pipeline(tmp_path / "img", random=False), shm_dir, disk, compress="on") as b:
        disk_stats = b.stats().level("disk")
        assert disk_stats.compressed_items == 10
        _epoch(b, 10)
        st = b.stats()
        assert st.level("disk").hits == 10 and st.level("disk").promotions == 10
        assert b.bytes_held > 0 and len(list(b.held_keys())) == 10
        _epoch(b, 10, epoch=1)
        st = b.stats()
        assert st.memory_hits == 10 and st.level("disk").hits == 10


def test_in_place_hits_are_promoted_within_the_memory_budget(tmp_path, shm_dir, monkeypatch):
    monkeypatch.setattr(ledger, "PROMOTE_SHARE", 1e9)  # no pacing: every offer is made
    write_images(tmp_path / "img", 12, size=64)
    disk = tmp_path / "disk"
    with _cache(image_pipeline(tmp_path / "img", random=False), shm_dir, disk, compress="off") as a:
        _epoch(a, 12)
    pipe = image_pipeline(tmp_path / "img", random=False)
    with _cache(pipe, shm_dir, disk, max_bytes="16KiB", compress="off") as b:
        loader = b.loader(batch_size=4, num_workers=0, collate_fn=collate)
        for _ in range(3):
            for _ in loader:
                pass
        st = b.stats()
        assert st.level("disk").promotions >= 1
        assert 0 < b.bytes_held <= 16 * 1024
        assert st.memory_hits >= 1
        assert loader.last_epoch["worker_samples"] == 0


def test_demotion_when_memory_evicts_what_disk_lacks(tmp_path, shm_dir):
    write_images(tmp_path / "img", 8, size=64)
    disk, clock, probe = tmp_path / "disk", Clock(), StaticProbe()
    pipe = image_pipeline(tmp_path / "img", random=False)
    with _cache(pipe, shm_dir, disk, probe=probe, clock=clock, disk_max_bytes=0) as a:
        _epoch(a, 8)
        assert len(list(a.held_keys())) == 8
        assert _level_files(disk) == {}  # the disk level had no room
        a.config.disk_max_bytes = 10**6
        clock.now += 60  # the disk budget is re-read
        probe.available = 0  # memory pressure: memory evicts everything
        a.get(0)
        st = a.stats()
        assert st.tier("small").evictions["pressure"] >= 7
        assert st.level("disk").demotions >= 7
    files = _level_files(disk)
    assert len(files) >= 7
    with _cache(image_pipeline(tmp_path / "img", random=False), shm_dir, disk) as b:
        _epoch(b, 8)
        assert b.stats().level("disk").hits >= 7


def test_each_level_keeps_its_own_budget(tmp_path, shm_dir, redis_server):
    write_images(tmp_path / "img", 12, size=64)
    disk = tmp_path / "disk"
    entry = 32 * 32 * 3 + 512  # a "small" entry: pixels plus codec header and frame
    pipe = image_pipeline(tmp_path / "img", random=False)
    name = pid_namespace("budgets")
    with _cache(
        pipe,
        shm_dir,
        disk,
        name=name,
        max_bytes="12KiB",
        disk_max_bytes=5 * entry,
        redis_url=redis_server,
        redis_max_bytes=3 * entry,
        compress="off",
    ) as cache:
        for epoch in range(3):
            _epoch(cache, 12, epoch)
        st = cache.stats()
        assert cache.bytes_held <= 12 * 1024
        assert 0 < st.level("disk").bytes <= 5 * entry
        assert sum(_level_files(disk, name).values()) == st.level("disk").bytes
        assert 0 < st.level("redis").bytes <= 3 * entry
        assert st.level("disk").budget_bytes == 5 * entry
        client = redis.Redis.from_url(redis_server)
        stored = [client.strlen(k) for k in client.scan_iter(f"adaptive-cache:{name}:*")]
        assert sum(stored) == st.level("redis").bytes
        client.close()


@pytest.mark.parametrize(
    ("images", "disk_budget", "compressed"),
    [("flat", 8 * 200, True), ("flat", 10**9, False), ("noise", 8 * 4000, False)],
)
def test_auto_compression_where_it_raises_seconds_saved_per_byte(
    tmp_path, shm_dir, images, disk_budget, compressed
):
    """Flat images under a binding budget are kept compressed; when everything fits, or
    the data does not compress, entries stay raw once the trials are measured."""
    root = tmp_path / "img"
    if images == "flat":
        _flat_images(root, 16)
    else:
        write_images(root, 16, size=36)
    disk = tmp_path / "disk"
    with _cache(_decode_only(root), shm_dir, disk, max_bytes=0, disk_max_bytes=disk_budget) as c:
        for epoch in range(3):
            _epoch(c, 16, epoch)
        st = c.stats().level("disk")
        book = c.levels.books[0]
        assert book.cost.prefers_compressed("image", 0.003, 16, book.budget) is compressed
        assert st.items > 0
        if compressed:
            assert st.compressed_items == st.items > TRIALS
            assert st.bytes < st.raw_bytes / 10
        else:
            assert st.compressed_items == 0 < st.items  # trials are stored raw


# ---------------------------------------------------------------------- Redis level


def test_redis_level_shares_builds_between_nodes(tmp_path, shm_dir, redis_server):
    write_images(tmp_path / "img", 12, size=64)
    want = _epoch(image_pipeline(tmp_path / "img", random=False), 12)
    name = pid_namespace("shared")
    kw = {"name": name, "redis_url": redis_server}
    a = _cache(image_pipeline(tmp_path / "img", random=False), shm_dir, **kw)
    b = _cache(image_pipeline(tmp_path / "img", random=False), shm_dir, **kw)
    try:
        for i in range(12):
            (a if i % 2 == 0 else b).get(i)
        builds = sum(c.stats().misses for c in (a, b))
        assert builds == 12
        got_a, got_b = _epoch(a, 12), _epoch(b, 12)
        assert sum(c.stats().misses for c in (a, b)) == 12  # nothing built twice
        assert a.stats().level("redis").hits == 6 == b.stats().level("redis").hits
        _same(got_a, want)
        _same(got_b, want)
    finally:
        a.close()
        b.close()


def test_redis_claims(redis_server):
    ns = pid_namespace("claims")
    one = RedisLevelStore(redis_server, ns, claim_s=5)
    two = RedisLevelStore(redis_server, ns, claim_s=5)
    try:
        assert one.claim("k-1")
        assert not two.claim("k-1")  # held by another process
        one.put("k-1", b"built")
        assert bytes(two.wait("k-1")) == b"built"  # the entry is there: no build
        assert one.claim("k-2") and not two.claim("k-2")
        one.release("k-2")
        assert two.wait("k-2") is None  # the claim went away without an entry
        assert two.claim("k-2")
        one.release("k-2")  # not one's claim any more: no effect
        assert not one.claim("k-2")
    finally:
        one.clear()
        one.close()
        two.close()


@pytest.fixture
def password_redis(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "s3cret-pw",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        if "Ready to accept connections" in line:
            break
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_password_from_url_works_and_is_never_logged(
    tmp_path, shm_dir, password_redis, caplog
):
    write_images(tmp_path / "img", 2, size=64)
    pipe = image_pipeline(tmp_path / "img", random=False)
    good = f"redis://:s3cret-pw@127.0.0.1:{password_redis}/0"
    with _cache(pipe, shm_dir, redis_url=good) as cache:
        assert cache.store.name == "shm+redis"
        cache.get(0)
        assert cache.stats().level("redis").items == 1
    caplog.set_level(logging.DEBUG)
    bad = f"redis://:wrong-pw@127.0.0.1:{password_redis}/0"
    with _cache(pipe, shm_dir, redis_url=bad) as cache:
        assert cache.store.name == "shm"  # left out; the run goes on
        cache.get(0)
    assert "unavailable" in caplog.text
    assert "wrong-pw" not in caplog.text and "s3cret-pw" not in caplog.text
