"""Fixtures shared by every test package: real servers the tests talk to."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import cv2
import pytest
import redis

# Before torch is imported (as training/cli.py does): spinning OpenMP threads made
# steps many times slower on this shared 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Before any OpenCV call (see training/__init__.py): forked children of a process that
# used OpenCV's thread pool deadlock.
cv2.setNumThreads(1)


def _drain(stream) -> None:
    for _ in stream:
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(
    workdir, *, port: int | None = None, args: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, int]:
    """Start a real redis-server on a free loopback port; returns it once it listens.

    Args:
        workdir: its working directory (where a dump or append-only file goes).
        port: listen here (to restart a server on the port its clients know).
        args: more options, overriding the defaults (no persistence), e.g.
            ``("--appendonly", "yes")`` or ``("--requirepass", "pw")``.

    Skips the calling test (with the reason) only when the binary is absent.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (make system-deps or apt-get install redis-server)")
    port = port or free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--save",
            "",
            "--appendonly",
            "no",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    # redis-server logs this line once it listens: wait for it instead of sleeping.
    log = []
    for line in proc.stdout:
        log.append(line)
        if "Ready to accept connections" in line:
            break
    else:
        proc.wait(10)
        pytest.fail(f"redis-server exited ({proc.returncode}) before it was ready:\n{''.join(log)}")
    # Keep draining its log so that it never blocks on a full pipe.
    threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
    return proc, port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, for the whole session; yields its URL."""
    proc, port = start_redis(tmp_path_factory.mktemp("redis"))
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=5)
    assert client.ping()
    client.close()
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
