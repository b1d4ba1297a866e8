"""Issue 10, errors a user sees: one line, the key or file to change, an exit code.

Runs the real ``adaptive-cache`` command. The runs that fail at start are launched
together (a module fixture) and checked one per test: each is a separate process, and
together they cost the time of the slowest twice over on two cores, not their sum.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port
from tests.reliability import _cli

SECRET = "s3cr3t-pw"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cli.make_dataset(tmp_path_factory.mktemp("cli-errors") / "synthetic")


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A loopback port another program listens on (as a first run's exporter would)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def failures(
    dataset: Path, busy_port: int, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, _cli.Run]:
    """Every run that must fail at start, run concurrently; name -> finished run."""
    tmp = tmp_path_factory.mktemp("failures")
    base = [*_cli.TINY, f"data.root={dataset}", f"output_dir={tmp}/runs"]
    garbage = tmp / "garbage.ckpt"
    garbage.write_bytes(b"PK\x03\x04" + os.urandom(2048))
    existing = _cli.make_dataset(tmp / "existing", n_train=1, n_val=1)
    commands = {
        "disk_dir": ["train", *base, "cache.store=disk", "cache.disk_dir=/proc/nope"],
        # With the default memory store, disk_dir adds a disk level below it.
        "disk_level": ["train", *base, "cache.disk_dir=/proc/nope"],
        "redis_down": [
            "train",
            *base,
            "cache.store=redis",
            f"cache.redis_url=redis://:{SECRET}@127.0.0.1:{free_port()}/0",
        ],
        "redis_url_missing": ["train", *base, "cache.store=redis"],
        "port_busy": ["train", *base, f"monitoring.port={busy_port}"],
        "ckpt_garbage": ["predict", *base, f"ckpt={garbage}"],
        "make_data_exists": ["make-data", "--out", str(existing), "--n-train", "1"],
    }
    started = {name: _cli.start(args, cwd=tmp) for name, args in commands.items()}
    runs = {name: _cli.finish(proc, rid) for name, (proc, rid) in started.items()}
    runs["make_data_exists"].existing = existing  # type: ignore[attr-defined]
    return runs


def _one_line(run: _cli.Run, code: int = 2) -> str:
    assert run.rc == code, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    (line,) = run.error_lines()
    return line


def test_unwritable_disk_dir_names_the_key(failures: dict[str, _cli.Run]) -> None:
    line = _one_line(failures["disk_dir"])
    assert line.startswith("adaptive-cache train: error: cache.disk_dir: ")
    assert "/proc/nope" in line
    assert _cli.leftovers(failures["disk_dir"].run_id) == []


def test_unwritable_disk_level_names_the_key(failures: dict[str, _cli.Run]) -> None:
    line = _one_line(failures["disk_level"])
    assert line.startswith("adaptive-cache train: error: cache.disk_dir: ")
    assert _cli.leftovers(failures["disk_level"].run_id) == []


def test_refused_redis_names_the_key_and_hides_the_password(
    failures: dict[str, _cli.Run],
) -> None:
    run = failures["redis_down"]
    line = _one_line(run)
    assert line.startswith("adaptive-cache train: error: cache.redis_url: ")
    assert "Connection refused" in line
    assert SECRET not in run.stderr + run.stdout
    assert _cli.leftovers(run.run_id) == []


def test_missing_redis_url_names_the_key_not_the_section(failures: dict[str, _cli.Run]) -> None:
    line = _one_line(failures["redis_url_missing"])
    assert "cache.redis_url: store 'redis' needs redis_url" in line
    assert "{" not in line and "policy" not in line  # the section is never echoed


def test_busy_metrics_port_says_how_to_run_a_second_job(
    failures: dict[str, _cli.Run], busy_port: int
) -> None:
    run = failures["port_busy"]
    line = _one_line(run)
    assert f"monitoring.port={busy_port}" in line and "monitoring.port=0" in line
    # The exporter failed after the caches were made: they are released all the same.
    assert _cli.leftovers(run.run_id) == []


def test_predict_on_a_corrupt_checkpoint(failures: dict[str, _cli.Run]) -> None:
    # Truncated, empty and foreign checkpoints: tests/training/test_predict.py.
    run = failures["ckpt_garbage"]
    line = _one_line(run)
    assert "garbage.ckpt: unreadable checkpoint" in line
    assert "weights_only" not in run.stderr + run.stdout


def test_make_data_keeps_an_existing_data_set(failures: dict[str, _cli.Run]) -> None:
    run = failures["make_data_exists"]
    existing: Path = run.existing  # type: ignore[attr-defined]
    line = _one_line(run)
    assert "already holds a data set" in line and "--force" in line
    # Nothing was replaced: still the one 140x190 train page made by the fixture.
    assert sorted(p.name for p in (existing / "images/train").iterdir()) == ["train_00000.jpg"]


def _workers(trainer: psutil.Process) -> list[psutil.Process]:
    # DataLoader workers are forked: same command line as the trainer.
    try:
        cmdline = trainer.cmdline()
        return [c for c in trainer.children() if c.cmdline() == cmdline]
    except psutil.Error:
        return []


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


def _listening_socket(trainer: psutil.Process) -> str:
    (conn,) = [c for c in trainer.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    return os.readlink(f"/proc/{trainer.pid}/fd/{conn.fd}")


def _wait(predicate, what: str, deadline_s: float = 120.0):
    # A bounded wait for something that happens (not a timing assertion).
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def test_a_killed_worker_ends_the_run_with_one_line_and_leaves_nothing(
    dataset: Path, tmp_path: Path
) -> None:
    proc, run_id = _cli.start(
        [
            "train",
            *_cli.TINY,
            f"data.root={dataset}",
            f"output_dir={tmp_path}/runs",
            "trainer.max_epochs=500",  # far longer than the test: it must end on the kill
        ],
        cwd=tmp_path,
    )
    try:
        trainer = psutil.Process(proc.pid)
        workers = _wait(lambda: _workers(trainer), "the DataLoader workers")
        victim = workers[0]
        # The metrics socket listens in the trainer; a forked worker closed its copy.
        listening = _listening_socket(trainer)
        _wait(lambda: listening not in _socket_inodes(victim.pid), "the worker to close it", 10)
        victim.send_signal(signal.SIGKILL)
        run = _cli.finish(proc, run_id, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert run.rc == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    (line,) = run.error_lines()
    m = re.search(
        r"DataLoader worker (\d) \(pid (\d+)\) of the (train|val) split was killed by "
        r"signal SIGKILL in epoch (\d+)",
        line,
    )
    assert m is not None, line
    assert int(m.group(2)) == victim.pid
    # Nothing left: the node-shared cache and the statistics directory are removed,
    # and no worker outlives the trainer.
    assert _cli.leftovers(run_id) == []
    alive = [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert alive == []
