"""Benchmark isolation: contenders in child processes, memory sampled from outside."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import psutil
import pytest

from adaptive_cache.bench import (
    ContenderError,
    TreeSampler,
    checkpoint,
    dir_bytes,
    mapped_from,
    run_isolated,
)


def test_sampler_sees_memory_of_a_child_process(tmp_path):
    # A real child that allocates and touches 64 MiB, then waits for us.
    code = (
        "import sys; b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); "
        "print('ok', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"ok"
        shm = tmp_path / "shm"
        shm.mkdir()
        (shm / "entry").write_bytes(b"\0" * (1 << 20))
        sampler = TreeSampler(os.getpid(), shm_dirs=[str(shm)])
        sampler.sample(pss=True)
        assert sampler.peak_bytes >= (64 << 20) + (1 << 20)
        assert sampler.peak_pss_bytes >= (64 << 20)
    finally:
        proc.stdin.close()
        proc.wait()


def test_dir_bytes_counts_files_and_tolerates_a_missing_directory(tmp_path):
    (tmp_path / "a").write_bytes(b"\1" * 10_000)
    assert dir_bytes(tmp_path) >= 10_000
    assert dir_bytes(tmp_path / "gone") == 0


def _allocate_and_checkpoint(nbytes: int) -> dict:
    block = bytearray(nbytes)
    block[::4096] = b"y" * len(block[::4096])
    checkpoint()  # the parent samples now, with this block alive
    return {"held": len(block)}


def _fail() -> dict:
    raise ValueError("contender broke")


def test_isolated_run_returns_result_with_peak_memory():
    result = run_isolated(_allocate_and_checkpoint, 32 << 20, label="alloc")
    assert result["held"] == 32 << 20
    assert result["peak_pss_bytes"] >= 32 << 20
    assert result["peak_memory_bytes"] >= result["peak_pss_bytes"] // 2


def test_isolated_failure_carries_the_child_traceback():
    with pytest.raises(ContenderError, match="contender broke"):
        run_isolated(_fail, label="broken")


def test_mapped_cache_files_are_counted_once(tmp_path):
    # An owner maps its shm entries to serve hits: those pages belong to the files.
    import tempfile
    from pathlib import Path

    shm_dir = Path(tempfile.mkdtemp(prefix="bench-test-", dir="/dev/shm"))
    store = shm_dir / "bench-mapped"
    store.mkdir()
    entry = store / "entry"
    entry.write_bytes(b"\1" * (8 << 20))
    code = (
        "import mmap, sys; f = open(sys.argv[1], 'rb'); "
        "m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); sum(m[::4096]); "
        "print('ok', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(entry)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"ok"
        rss, pss = mapped_from(proc.pid, [str(store)])
        assert rss == 8 << 20 and 0 < pss <= 8 << 20
        assert mapped_from(proc.pid, [str(shm_dir / "elsewhere")]) == (0, 0)
        process_rss = psutil.Process(proc.pid).memory_info().rss  # includes the mapping
        sampler = TreeSampler(proc.pid, shm_dirs=[str(store)])
        sampler.sample(pss=True)
        # The process without its mapping, plus the file once (not twice).
        assert sampler.peak_bytes <= process_rss + (1 << 20)
        assert sampler.peak_bytes >= (8 << 20)
    finally:
        proc.stdin.close()
        proc.wait()
        shutil.rmtree(shm_dir, ignore_errors=True)
