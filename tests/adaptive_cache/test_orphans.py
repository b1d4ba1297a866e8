"""Workers tied to their parent's life (real processes; the full case with a killed
trainer is in tests/reliability/test_memory_limits.py)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from adaptive_cache.engine import AdaptiveCache, pid_namespace
from adaptive_cache.orphans import WorkerInit
from tests.adaptive_cache.pipelines import collate, image_pipeline, write_images
from tests.adaptive_cache.test_engine import StaticProbe, _config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux")
REPO = Path(__file__).resolve().parents[2]


def test_a_process_whose_parent_already_died_kills_itself():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    code = (
        "from adaptive_cache.orphans import die_with_parent\n"
        f"die_with_parent({dead.pid})\n"
        "print('survived')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == -signal.SIGKILL
    assert "survived" not in done.stdout


def test_a_live_parent_keeps_its_worker():
    code = (
        "import os\n"
        "from adaptive_cache.orphans import die_with_parent\n"
        "print(die_with_parent(os.getppid()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert (done.returncode, done.stdout.strip()) == (0, "True")


def _record(directory: str, worker_id: int) -> None:
    Path(directory, f"{worker_id}-{os.getpid()}").touch()


def test_the_users_worker_init_fn_still_runs_in_every_worker(tmp_path):
    write_images(tmp_path / "img", 8)
    cache = AdaptiveCache(
        image_pipeline(tmp_path / "img"),
        _config(store="shm", max_bytes="1GiB"),
        name="t",
        probe=StaticProbe(),
        namespace=pid_namespace("orph"),
    )
    seen = tmp_path / "seen"
    seen.mkdir()
    with cache:
        loader = cache.loader(
            batch_size=2,
            num_workers=2,
            collate_fn=collate,
            worker_init_fn=partial(_record, str(seen)),
        )
        assert sum(len(b) for b in loader) == 8
    ids = sorted(p.name.split("-")[0] for p in seen.iterdir())
    assert ids == ["0", "1"]
    assert all(int(p.name.split("-")[1]) != os.getpid() for p in seen.iterdir())


def test_worker_init_pickles_for_spawn():
    init = pickle.loads(pickle.dumps(WorkerInit(partial(_record, "/nowhere"))))
    assert init.parent_pid == os.getpid() and init.fn.args == ("/nowhere",)
