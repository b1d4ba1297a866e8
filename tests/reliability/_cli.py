"""Running the real ``adaptive-cache`` command in a subprocess, on tiny synthetic data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from training.data.synthetic import generate

REPO = Path(__file__).resolve().parents[2]
# A few small pages (about 140x190) at a 64 px canonical size: a run takes seconds.
TINY = [
    "data.image_size=64",
    "data.batch_size=2",
    "data.num_workers=2",
    "data.persistent_workers=true",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "model.neck_channels=8",
    "monitoring.port=0",
]


def make_dataset(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """A synthetic data set in ``root`` (the layout ``data.root`` expects)."""
    generate(root, n_train=n_train, n_val=n_val, seed=3, progress=False, scale=0.15)
    return root


def copy_dataset(src: Path, dst: Path) -> Path:
    """A private copy of a data set, to damage."""
    shutil.copytree(src, dst)
    return dst


@dataclass
class Run:
    """A finished command: exit code, output, the run id it was given."""

    rc: int
    stdout: str
    stderr: str
    run_id: str

    def error_lines(self) -> list[str]:
        """The lines of stderr that report an error (``adaptive-cache CMD: error: ...``)."""
        return [ln for ln in self.stderr.splitlines() if ln.startswith("adaptive-cache ")]


def env_for(run_id: str) -> dict[str, str]:
    """The environment of a command: this checkout first on the path, a fixed run id."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["ADAPTIVE_CACHE_RUN_ID"] = run_id
    return env


def start(args: list[str], *, cwd: Path, run_id: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``adaptive-cache ARGS``; returns the process and its run id."""
    run_id = run_id or uuid.uuid4().hex[:12]
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.cli", *args],
        cwd=cwd,
        env=env_for(run_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, run_id


def finish(proc: subprocess.Popen, run_id: str, timeout: float = 300) -> Run:
    """Wait for a command started with :func:`start`."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"adaptive-cache did not finish in {timeout} s:\n{err[-3000:]}"
        ) from None
    return Run(proc.returncode, out, err, run_id)


def run(args: list[str], *, cwd: Path, timeout: float = 300) -> Run:
    """Run ``adaptive-cache ARGS`` to the end."""
    proc, run_id = start(args, cwd=cwd)
    return finish(proc, run_id, timeout)


def leftovers(run_id: str) -> list[str]:
    """What a run with this id left in /dev/shm and the temporary directory."""
    shm = [str(p) for p in Path("/dev/shm").glob(f"adaptive-cache-{run_id}*")]
    tmp = [str(p) for p in Path(tempfile.gettempdir()).glob(f"adaptive-cache-*{run_id}*")]
    return shm + tmp
