"""Stores: one contract suite over local, shm, disk and redis, then each store's own
guarantees (shared across processes, ownership of shm, disk full, redis failures)."""

from __future__ import annotations

import json
import mmap
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptive_cache.config import CacheConfig
from adaptive_cache.redact import masked_url
from adaptive_cache.stores import (
    DiskStore,
    LocalStore,
    RedisStore,
    ShmStore,
    Store,
    StoreError,
    open_store,
)
from adaptive_cache.stores.shm import OWNER_FILE, PREFIX
from tests.conftest import free_port, start_redis

REPO = Path(__file__).resolve().parents[2]
MiB = 1024**2


def _namespace() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def _open(kind: str, request, tmp_path: Path, shm_dir: Path) -> Store:
    if kind == "redis":
        config = CacheConfig(store="redis", redis_url=request.getfixturevalue("redis_server"))
    elif kind == "disk":
        config = CacheConfig(store="disk", disk_dir=str(tmp_path / "disk"))
    else:
        config = CacheConfig(store=kind, shm_dir=str(shm_dir))
    return open_store(config, namespace=_namespace())


@pytest.fixture(params=["local", "shm", "disk", "redis"])
def store(request, tmp_path, shm_dir):
    s = _open(request.param, request, tmp_path, shm_dir)
    yield s
    s.clear()
    s.close()


# ---------------------------------------------------------------- contract, every store


def test_get_after_put_returns_equal_bytes(store):
    payloads = {"aa": b"", "bb": b"x", "image-0f": os.urandom(300_000)}
    for key, data in payloads.items():
        assert store.put(key, data) >= len(data)
    for key, data in payloads.items():
        assert bytes(store.get(key)) == data
    # a memoryview of a mutable buffer is copied, not referenced
    buf = bytearray(b"mutable")
    store.put("cc", memoryview(buf))
    buf[:] = b"changed"
    assert bytes(store.get("cc")) == b"mutable"


def test_delete_frees_what_put_took(store):
    n = store.put("tensor-ab", os.urandom(10_000))
    assert store.contains("tensor-ab")
    assert dict(store.entries()) == {"tensor-ab": n}
    assert store.delete("tensor-ab") == n
    assert store.get("tensor-ab") is None
    assert not store.contains("tensor-ab")
    assert store.delete("tensor-ab") == 0


def test_view_gives_the_bytes_of_get_and_none_when_absent(store):
    data = os.urandom(200_000)
    store.put("tensor-0a", data)
    view = store.view("tensor-0a")
    assert view is not None and bytes(view.buffer) == data
    assert store.view("tensor-0b") is None
    store.put("tensor-0a", b"second")
    assert bytes(store.view("tensor-0a").buffer) == b"second"
    store.delete("tensor-0a")
    assert store.view("tensor-0a") is None


def test_overwrite_replaces_value_and_size(store):
    store.put("aa", b"1" * 5000)
    n = store.put("aa", b"2" * 10)
    assert bytes(store.get("aa")) == b"2" * 10
    assert dict(store.entries()) == {"aa": n}


def test_keys_entries_contains_consistent_and_clear_resets(store):
    sizes = {f"maps-{i:02x}": store.put(f"maps-{i:02x}", bytes(i * 100)) for i in range(12)}
    assert sorted(store.keys()) == sorted(sizes)
    assert dict(store.entries()) == sizes
    assert all(store.contains(k) for k in sizes)
    store.clear()
    assert list(store.keys()) == [] and list(store.entries()) == []
    assert store.get("maps-01") is None


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "../x", "a b", "x" * 201, 7])
def test_bad_keys_are_rejected(store, bad):
    with pytest.raises(ValueError, match="store key"):
        store.put(bad, b"x")


def test_handle_is_picklable_and_opens_the_same_entries(store):
    store.put("aa", b"shared?")
    other = pickle.loads(pickle.dumps(store.handle())).open()
    try:
        if store.shared:
            assert bytes(other.get("aa")) == b"shared?"
            other.put("bb", b"back")
            assert bytes(store.get("bb")) == b"back"
        else:
            assert other.get("aa") is None  # a local store is private to its process
    finally:
        other.close()
    assert bytes(store.get("aa")) == b"shared?"  # closing a non-owner removes nothing


_keys = st.sampled_from(["aa", "bb", "cc", "tensor-0d", "image-ee"])
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _keys, st.binary(max_size=3000)),
        st.tuples(st.just("get"), _keys, st.just(b"")),
        st.tuples(st.just("delete"), _keys, st.just(b"")),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_random_sequences_match_a_dict(store, ops):
    store.clear()
    model: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    for op, key, data in ops:
        if op == "put":
            sizes[key] = store.put(key, data)
            model[key] = data
        elif op == "get":
            got = store.get(key)
            assert (None if got is None else bytes(got)) == model.get(key)
        else:
            assert store.delete(key) == sizes.pop(key, 0)
            model.pop(key, None)
    assert sorted(store.keys()) == sorted(model)
    assert dict(store.entries()) == sizes


def test_open_store_registry(tmp_path, shm_dir):
    assert isinstance(open_store(CacheConfig(store="local"), namespace="x"), LocalStore)
    disk = open_store(CacheConfig(store="disk", disk_dir=str(tmp_path)), namespace="ns1")
    assert isinstance(disk, DiskStore) and disk.directory == tmp_path / f"{PREFIX}ns1"
    shm = open_store(CacheConfig(shm_dir=str(shm_dir)), namespace="ns1")
    assert isinstance(shm, ShmStore) and shm.owner
    shm.close()
    with pytest.raises(ValueError, match="disk, local, redis, shm"):
        open_store(CacheConfig.model_construct(store="nfs"), namespace="x")
    with pytest.raises(ValueError, match="namespace"):
        open_store(CacheConfig(store="local"), namespace="../etc")


def test_open_store_failures_name_the_setting(tmp_path):
    # Each message starts with the key to change, in one line.
    with pytest.raises(StoreError) as err:
        open_store(CacheConfig(store="disk", disk_dir="/proc/nope"), namespace="x")
    assert str(err.value).startswith("cache.disk_dir: disk store: cannot create /proc/nope/")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"^cache\.shm_dir: shm store: cannot create"):
        open_store(CacheConfig(shm_dir=str(blocker)), namespace="x")
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(StoreError) as err:
        open_store(CacheConfig(store="redis", redis_url=url, redis_timeout_s=1), namespace="x")
    message = str(err.value)
    assert message.startswith("cache.redis_url: redis store redis://:***@127.0.0.1:")
    assert "hunter2" not in message and "\n" not in message


# ---------------------------------------------------------------- shm


def _child_reads_and_writes(handle, key: str, queue) -> None:
    store = handle.open()
    got = store.get(key)
    store.put("fromchild", b"written by " + str(os.getpid()).encode())
    queue.put((None if got is None else bytes(got), store.owner))
    store.close()


def test_shm_entries_are_seen_by_a_spawned_process(shm_dir):
    store = ShmStore(str(shm_dir), _namespace())
    try:
        data = os.urandom(2 * MiB)
        store.put("tensor-aa", data)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        args = (store.handle(), "tensor-aa", queue)
        child = ctx.Process(target=_child_reads_and_writes, args=args)
        child.start()
        got, child_owner = queue.get(timeout=60)
        child.join(60)
        assert got == data
        assert child_owner is False
        assert bytes(store.get("fromchild")).startswith(b"written by")
        assert store.directory.exists()  # the child's close removed nothing
    finally:
        store.close()


def _close_in_fork(store: ShmStore) -> None:
    store.close()  # an inherited copy is not the owner: must not remove
    del store


def test_shm_owner_close_removes_and_non_owners_never_do(shm_dir):
    ns = _namespace()
    owner = ShmStore(str(shm_dir), ns)
    owner.put("aa", b"x")
    rank = ShmStore(str(shm_dir), ns)  # same namespace, owner alive: joins
    assert owner.owner and not rank.owner
    assert bytes(rank.get("aa")) == b"x"
    rank.close()
    copy = pickle.loads(pickle.dumps(owner))
    assert not copy.owner
    copy.close()
    child = mp.get_context("fork").Process(target=_close_in_fork, args=(owner,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert owner.directory.exists()
    owner.close()
    assert not owner.directory.exists()
    assert rank.get("aa") is None  # a reader after the owner left just misses
    with pytest.raises(StoreError, match=str(owner.directory)):
        rank.put("bb", b"y")


def test_shm_leftover_of_a_killed_owner_is_removed_at_next_start(shm_dir):
    ns = _namespace()
    code = (
        "import sys\n"
        "from adaptive_cache.stores.shm import ShmStore\n"
        "s = ShmStore(sys.argv[1], sys.argv[2])\n"
        "s.put('aa', b'x' * 100000)\n"
        "print(s.directory, flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(shm_dir), ns],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    directory = Path(proc.stdout.readline().strip())
    assert (directory / "aa").exists() and (directory / OWNER_FILE).exists()
    alive = ShmStore(str(shm_dir), _namespace())  # a live owner's directory is kept
    assert directory.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert directory.exists(), "SIGKILL runs no cleanup: the leftover is still there"
    restarted = ShmStore(str(shm_dir), ns)  # same namespace: must not fail
    assert restarted.owner
    assert restarted.get("aa") is None  # the dead owner's entries are gone
    assert alive.directory.exists()
    restarted.close()
    alive.close()
    assert list(shm_dir.iterdir()) == []


def test_shm_temp_files_of_dead_writers_are_swept(shm_dir):
    store = ShmStore(str(shm_dir), _namespace())
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_tmp = store.directory / f".aa.{int(dead.stdout)}-0123abcd.tmp"
    live_tmp = store.directory / f".bb.{os.getpid()}-0123abcd.tmp"
    dead_tmp.write_bytes(b"partial")
    live_tmp.write_bytes(b"in progress")
    assert store.sweep() == 1
    assert not dead_tmp.exists() and live_tmp.exists()
    assert list(store.keys()) == []  # temporaries are never entries
    store.close()


def test_deleting_an_shm_entry_returns_its_memory_to_the_os(shm_dir):
    store = ShmStore(str(shm_dir), _namespace())
    size = 64 * MiB

    def used() -> int:
        st = os.statvfs(shm_dir)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    try:
        # /dev/shm is shared with the rest of the machine: a concurrent writer can blur
        # one measurement, so allow three attempts.
        for _ in range(3):
            store.put("big", os.urandom(size))
            # A mapping kept for serving hits must not hold the pages after a delete.
            assert len(store.view("big").buffer) == size
            before = used()
            freed = store.delete("big")
            after = used()
            if before - after >= 0.95 * size:
                break
        assert freed == size
        assert before - after >= 0.95 * size, f"tmpfs use fell by {(before - after) / MiB} MiB"
    finally:
        store.close()


def _rewrite_in_child(handle, key: str, data: bytes) -> None:
    handle.open().put(key, data)


def test_shm_view_is_kept_and_never_stale(shm_dir):
    store = ShmStore(str(shm_dir), _namespace())
    try:
        store.put("tensor-aa", b"a" * 10_000)
        first = store.view("tensor-aa")
        assert isinstance(first.buffer, mmap.mmap)
        assert store.view("tensor-aa") is first  # the same mapping, while unchanged
        # Another process replaces the entry: the next view maps the new file.
        ctx = mp.get_context("spawn")
        child = ctx.Process(
            target=_rewrite_in_child, args=(store.handle(), "tensor-aa", b"b" * 20_000)
        )
        child.start()
        child.join(60)
        assert child.exitcode == 0
        second = store.view("tensor-aa")
        assert second is not first and second.ident != first.ident
        assert bytes(second.buffer) == b"b" * 20_000
        assert bytes(first.buffer) == b"a" * 10_000  # a view in use stays whole
        # ... and removes it: the view is gone, not served from the old mapping.
        os.unlink(store.directory / "tensor-aa")
        assert store.view("tensor-aa") is None
    finally:
        store.close()


def _mapped_here(path: str, queue) -> None:
    with open("/proc/self/maps") as f:
        queue.put(path in f.read())


def test_a_forked_child_drops_the_mappings_it_inherits(shm_dir):
    # A persistent forked worker must not keep the pages of entries its parent evicts.
    store = ShmStore(str(shm_dir), _namespace())
    try:
        store.put("tensor-aa", os.urandom(256 * 1024))
        assert store.view("tensor-aa") is not None
        path = str(store.directory / "tensor-aa")
        with open("/proc/self/maps") as f:
            assert path in f.read()
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_mapped_here, args=(path, queue))
        child.start()
        in_child = queue.get(timeout=60)
        child.join(60)
        assert in_child is False
        store.delete("tensor-aa")
        with open("/proc/self/maps") as f:
            assert path not in f.read()
    finally:
        store.close()


def test_prune_drops_mappings_of_entries_removed_elsewhere(shm_dir):
    store = ShmStore(str(shm_dir), _namespace())
    try:
        for key in ("tensor-aa", "tensor-bb"):
            store.put(key, os.urandom(128 * 1024))
            assert store.view(key) is not None
        gone = str(store.directory / "tensor-aa")
        os.unlink(gone)  # another rank evicted it; nobody asks for it here again
        with open("/proc/self/maps") as f:
            assert gone in f.read()  # still held by the kept mapping
        assert store.prune_views() == 1
        with open("/proc/self/maps") as f:
            assert gone not in f.read()
        assert store.view("tensor-bb") is not None and store.prune_views() == 0
    finally:
        store.close()


def test_shm_keeps_at_most_max_mapped_views(shm_dir):
    store = ShmStore(str(shm_dir), _namespace())
    store.max_mapped = 3
    try:
        for i in range(5):
            store.put(f"tensor-{i:02x}", bytes([i]) * 5000)
        views = [store.view(f"tensor-{i:02x}") for i in range(5)]
        assert [bytes(v.buffer[:1]) for v in views] == [bytes([i]) for i in range(5)]
        assert len(store._views) == 3
        assert store.view("tensor-04") is views[4]  # recent ones are kept
        assert store.view("tensor-00") is not views[0]  # the oldest was dropped
    finally:
        store.close()


# ---------------------------------------------------------------- disk


def test_disk_store_survives_reopen(tmp_path):
    first = DiskStore.for_namespace(tmp_path, "ns")
    data = {f"tensor-{i:02x}": os.urandom(1000 + i) for i in range(5)}
    sizes = {k: first.put(k, v) for k, v in data.items()}
    first.close()
    again = DiskStore.for_namespace(tmp_path, "ns")
    assert dict(again.entries()) == sizes
    assert all(bytes(again.get(k)) == v for k, v in data.items())


def test_disk_store_in_an_impossible_place_raises_store_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match="file"):
        DiskStore(tmp_path / "file" / "cache")


def _put_past_file_size_limit(directory: str, queue) -> None:
    import resource

    from adaptive_cache.stores.base import StoreError
    from adaptive_cache.stores.disk import DiskStore

    store = DiskStore(directory)
    store.put("small", b"s" * 1000)
    # The kernel refuses writes past RLIMIT_FSIZE with EFBIG (once SIGXFSZ is ignored):
    # a real failed write() half way through the file, as on a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (MiB, MiB))
    try:
        store.put("big", b"b" * (4 * MiB))
        queue.put(None)
    except StoreError as exc:
        queue.put(str(exc))


def test_disk_write_failure_mid_file_leaves_no_partial_entry(tmp_path):
    directory = tmp_path / "cache"
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_put_past_file_size_limit, args=(str(directory), queue))
    child.start()
    message = queue.get(timeout=60)
    child.join(60)
    assert message is not None, "the write past the limit did not fail"
    assert str(directory / "big") in message and "too large" in message
    assert sorted(os.listdir(directory)) == ["small"]  # no temp file, no partial entry
    assert DiskStore(directory).get("small") == b"s" * 1000


_FULL_DISK = """
import json, os, sys
from adaptive_cache.stores.base import StoreError
from adaptive_cache.stores.disk import DiskStore
store = DiskStore(sys.argv[1] + "/cache")
store.put("kept", b"k" * 300_000)
try:
    store.put("big", os.urandom(2_000_000))
    error = None
except StoreError as exc:
    error = str(exc)
print(json.dumps({"error": error, "files": sorted(os.listdir(store.directory)),
                  "kept": store.get("kept") == b"k" * 300_000}))
"""


def _unshare_tmpfs_works(mnt: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            'mount -t tmpfs -o size=1m tmpfs "$0"',
            str(mnt),
        ],
        capture_output=True,
    )
    return probe.returncode == 0


def test_disk_full_is_a_store_error_and_leaves_no_partial_file(tmp_path):
    # A real ENOSPC: a 1 MiB tmpfs mounted in a private user+mount namespace.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _unshare_tmpfs_works(mnt):
        pytest.skip("cannot mount a small tmpfs in a user namespace here (unshare refused)")
    out = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$1" -c "$2" "$0"',
            str(mnt),
            sys.executable,
            _FULL_DISK,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["error"] is not None and "No space left" in result["error"]
    assert f"{mnt}/cache/big" in result["error"]
    assert result["files"] == ["kept"] and result["kept"]


# ---------------------------------------------------------------- redis


def test_redis_values_are_raw_bytes_under_the_prefix(redis_server):
    store = RedisStore(redis_server, "rawcheck")
    raw = redis.Redis.from_url(redis_server)
    try:
        store.put("aa", b"\x00\x01payload")
        assert raw.get("adaptive-cache:rawcheck:aa") == b"\x00\x01payload"
        raw.set("someone-else:aa", b"keep me")
        raw.set("adaptive-cache:rawcheck2:aa", b"another namespace")
        store.clear()
        assert raw.get("someone-else:aa") == b"keep me"
        assert raw.get("adaptive-cache:rawcheck2:aa") == b"another namespace"
        assert raw.get("adaptive-cache:rawcheck:aa") is None
    finally:
        raw.delete("someone-else:aa", "adaptive-cache:rawcheck2:aa")
        raw.close()
        store.close()


def test_unreachable_redis_is_a_store_error_naming_the_url():
    port = free_port()  # nothing listens there
    url = f"redis://cacheuser:s3cret@127.0.0.1:{port}/0"
    with pytest.raises(StoreError) as info:
        RedisStore(url, "ns", timeout_s=0.5)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "s3cret" not in message and "***" in message


def test_redis_server_gone_mid_use_is_a_store_error(tmp_path):
    proc, port = start_redis(tmp_path)
    store = RedisStore(f"redis://127.0.0.1:{port}/0", "ns", timeout_s=0.5)
    store.put("aa", b"x")
    proc.kill()
    proc.wait(10)
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}"):
        store.get("aa")
    store.close()


def test_masked_url_masks_only_the_password():
    assert masked_url("redis://u:pw@h:6379/0") == "redis://u:***@h:6379/0"
    assert masked_url("rediss://:pw@h/1") == "rediss://:***@h/1"
    assert masked_url("redis://h:6379/0") == "redis://h:6379/0"


def test_redis_down_fails_fast_within_the_back_off_and_recover_retries(tmp_path):
    proc, port = start_redis(tmp_path)
    store = RedisStore(f"redis://127.0.0.1:{port}/0", "ns", timeout_s=0.5)
    handle = store.handle()
    proc.kill()
    proc.wait(10)
    with pytest.raises(StoreError, match=r"Connection refused|Error 111"):
        store.get("aa")
    with pytest.raises(StoreError, match="unreachable"):  # no network call: back-off
        store.get("aa")
    worker = handle.open()  # a worker opening the store while it is down does not fail
    with pytest.raises(StoreError):
        worker.put("aa", b"x")
    proc, _ = start_redis(tmp_path, port=port)  # the same server comes back
    try:
        store.recover()
        store.put("aa", b"x")
        assert store.get("aa") == b"x"
    finally:
        proc.kill()
        proc.wait(10)
        store.close()
        worker.close()


def test_directory_stores_report_the_file_systems_free_space(tmp_path, shm_dir):
    disk = DiskStore(tmp_path / "disk")
    shm = ShmStore(str(shm_dir), _namespace())
    try:
        for store in (disk, shm):
            st = os.statvfs(store.directory)
            free = st.f_bavail * st.f_frsize
            reserve = 0.10 * st.f_blocks * st.f_frsize
            assert store.space_bytes() == pytest.approx(max(0, free - reserve), abs=1 * MiB)
        assert LocalStore().space_bytes() is None
    finally:
        shm.close()


def test_sweep_and_prune_views_are_part_of_every_store():
    store = LocalStore()
    store.put("tensor-aa", b"x")
    assert store.sweep() == 0 and store.prune_views() == 0
    assert store.get("tensor-aa") == b"x"
