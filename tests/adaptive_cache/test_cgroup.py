"""cgroup file parsing (whole hierarchies are tested through MemoryProbe in test_memory)."""

from __future__ import annotations

from pathlib import Path

from adaptive_cache.cgroup import KernelFile, open_cgroup, parse_limit, stat_field

MiB = 1024**2
FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"


def test_parse_limit_values():
    assert parse_limit(b"max\n") is None
    assert parse_limit(b"9223372036854771712\n") is None  # v1 "no limit"
    assert parse_limit(b"4611686018427387904") is None  # 2**62
    assert parse_limit(b"4611686018427387903") == 2**62 - 1
    assert parse_limit(b"1048576\n") == MiB
    assert parse_limit(b"") is None
    assert parse_limit(b"garbage") is None
    assert parse_limit(None) is None


def test_stat_field_matches_whole_names_only():
    raw = b"total_inactive_file 7\ninactive_file 5\nfile 3\n"
    assert stat_field(raw, b"inactive_file") == 5
    assert stat_field(raw, b"total_inactive_file") == 7
    assert stat_field(raw, b"file") == 3
    assert stat_field(raw, b"anon") is None
    assert stat_field(b"x 1", b"x") == 1  # no trailing newline


def _open(name: str):
    return open_cgroup(str(FIXTURES / name / "root"), str(FIXTURES / name / "proc_cgroup"))


def test_detects_the_hierarchy_and_this_process_cgroup():
    v1 = _open("v1_limited")
    assert type(v1).__name__ == "_V1"
    assert v1.directory == FIXTURES / "v1_limited" / "root" / "memory" / "docker" / "abc"
    v2 = _open("v2_nested")
    assert type(v2).__name__ == "_V2"
    root = FIXTURES / "v2_nested" / "root"
    assert v2.directories == [root / "user.slice" / "job.scope", root / "user.slice", root]
    assert _open("none") is None
    assert open_cgroup("/nonexistent", "/nonexistent") is None


def test_kernel_file_rereads_fresh_content(tmp_path):
    path = tmp_path / "memory.current"
    path.write_text("1\n")
    f = KernelFile(path)
    assert f.read() == b"1\n"
    path.write_text("22\n")  # same inode, rewritten
    assert f.read() == b"22\n"
    f.close()
    assert KernelFile(tmp_path / "missing").read() is None
