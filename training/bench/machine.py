"""What the benchmark ran on: CPU, cores, memory, versions, GPU, load."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _commit() -> str | None:
    """The git commit of this checkout (``+dirty`` with uncommitted changes), if any."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}+dirty" if dirty else rev


def machine_info() -> dict[str, Any]:
    """The machine and software the numbers come from.

    ``load_average`` is taken now; other processes competing for the cores show up
    there and as wide min-max ranges in the results.
    """
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": props.name,
            "memory_bytes": props.total_memory,
            "count": torch.cuda.device_count(),
        }
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_bytes": psutil.virtual_memory().total,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pytorch_lightning": _version("pytorch-lightning"),
        "monai": _version("monai"),
        "gpu": gpu,
        "load_average": list(os.getloadavg()),
        "commit": _commit(),
        "argv": sys.argv,
    }
