"""NodeRegistry: one memory budget shared by every cache of a node.

Without it, each cache sizes itself from the node's headroom alone: two runs on one
node, or the train and val caches of one run, each claimed about half of the memory
available (four caches claimed ~10 GiB each of 22 GiB). With it, every owner of a
cache in memory (one :class:`~adaptive_cache.engine.AdaptiveCache` in one process)
keeps a small JSON file in ``<shm_dir>/adaptive-cache.node/``: its pid and start time
(liveness, from ``/proc/PID/stat``), its group (the cache's store namespace: the DDP
ranks of one cache are one group), the bytes it holds, what it would hold at most (its
*demand*, once measured), whether its size is fixed by ``max_bytes``, and the budget
it was given. Owners are assumed to share one pid namespace (as the shm store does).

At each probe an owner reads the others' files (removing those of dead owners) and
computes the node's budget the way one cache computed its own::

    node = headroom_share * (available + held by every owner) - reserve
           - held by owners of a fixed size

then takes its group's max-min fair share of it (:func:`fair_shares`): a group that
asks for less than an equal share gets what it asks for, the others split the rest
equally. A group holding more than its share sheds the difference at its next probe
(the engine evicts down to its budget). Files are small and rewritten at each probe
and whenever the bytes held moved by more than 1% of the memory limit, so the others'
figures are never staler than that.

Example:
    >>> registry = NodeRegistry("/dev/shm/adaptive-cache.node")
    >>> slot = registry.join("val-1234")
    >>> slot.publish(held_bytes=0, demand_bytes=None, budget_bytes=0)
    >>> [c.group for c in registry.claims()]
    ['val-1234']
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from adaptive_cache.config import CacheConfig
from adaptive_cache.stores.files import pid_alive

log = logging.getLogger(__name__)

#: The registry's directory inside ``shm_dir``. Not ``adaptive-cache-*``: the shm
#: store sweeps those directories when they have no live ``.owner``.
DIRNAME = "adaptive-cache.node"
_SUFFIX = ".json"
#: Stores whose entries are held in this node's memory.
MEMORY_STORES = ("shm", "local")
_warned = False


@dataclass(frozen=True)
class Claim:
    """One owner's record: what it holds and asks for, and the budget it was given."""

    owner: str
    group: str
    pid: int
    start: float
    held_bytes: int
    demand_bytes: int | None
    fixed: bool
    budget_bytes: int
    updated: float


def fair_shares(total: int, demands: Mapping[str, int | None]) -> dict[str, int]:
    """Max-min fair split of ``total`` bytes among groups.

    A group whose demand (``None``: unknown, so unbounded) is at most an equal share
    of what is left gets its demand; the others split the rest equally.

    Example:
        >>> fair_shares(100, {"train": None, "val": 10})
        {'val': 10, 'train': 90}
    """
    out: dict[str, int] = {}
    left = max(0, int(total))
    pending = dict(demands)
    while pending:
        equal = left // len(pending)
        small = {g: d for g, d in pending.items() if d is not None and d <= equal}
        if not small:
            out.update(dict.fromkeys(pending, equal))
            break
        for group, demand in small.items():
            out[group] = demand
            left -= demand
            del pending[group]
    return out


def _proc_stat(pid: int) -> tuple[bytes, float] | None:
    """(state, start time in clock ticks since boot) from ``/proc/PID/stat``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0], float(fields[19])
    except (IndexError, ValueError):
        return None


_HAVE_PROC = os.path.exists(f"/proc/{os.getpid()}/stat")


def _start_time(pid: int) -> float | None:
    """When ``pid`` started (an identity: a reused pid has another), ``None`` if gone."""
    if _HAVE_PROC:
        stat = _proc_stat(pid)
        return None if stat is None or stat[0] in (b"Z", b"X") else stat[1]
    if not pid_alive(pid):
        return None
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _alive(claim: Claim) -> bool:
    # One read of /proc/PID/stat (about 10 us; psutil took 0.35 ms per claim).
    start = _start_time(claim.pid)
    return start is not None and abs(start - claim.start) < 0.5


def _parse(path: Path) -> Claim | None:
    try:
        doc = json.loads(path.read_bytes())
        demand = doc["demand"]
        return Claim(
            owner=path.name[: -len(_SUFFIX)],
            group=str(doc["group"]),
            pid=int(doc["pid"]),
            start=float(doc["start"]),
            held_bytes=max(0, int(doc["held"])),
            demand_bytes=None if demand is None else max(0, int(demand)),
            fixed=bool(doc["fixed"]),
            budget_bytes=max(0, int(doc["budget"])),
            updated=float(doc["updated"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class NodeRegistry:
    """The directory of one node's cache owners.

    Args:
        directory: where the owners' files live (created 0700; must be ours).

    Raises:
        OSError: the directory cannot be created, or belongs to another user.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(self.directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise OSError(f"node registry {self.directory}: not a directory of this user")

    @classmethod
    def in_shm_dir(cls, shm_dir: str | os.PathLike[str]) -> NodeRegistry:
        """The registry of the node whose shared memory is ``shm_dir``."""
        return cls(Path(shm_dir) / DIRNAME)

    def join(self, group: str, *, fixed: bool = False) -> NodeSlot:
        """Register an owner of ``group`` in this process (see :class:`NodeSlot`)."""
        return NodeSlot(self, group, fixed=fixed)

    def claims(self) -> list[Claim]:
        """The claims of live owners; files of dead owners are removed."""
        out = []
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            log.debug("node registry %s unreadable: %s", self.directory, exc)
            return []
        for name in names:
            if name.startswith(".") or not name.endswith(_SUFFIX):
                continue
            path = self.directory / name
            claim = _parse(path)
            if claim is None:
                continue  # being replaced, or not ours to judge
            if _alive(claim):
                out.append(claim)
            else:
                log.debug("node registry: removing the claim of dead owner %d", claim.pid)
                _unlink(path)
        return out


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("node registry: cannot remove %s: %s", path, exc)


def _remove_if_owner(path: Path, pid: int) -> None:
    # Finalizers are inherited by forked workers; only the owner removes its claim.
    if os.getpid() == pid:
        _unlink(path)


class NodeSlot:
    """One owner's place in a :class:`NodeRegistry` (its claim file).

    The file is removed at :meth:`close`, when the slot is garbage-collected, at exit,
    or, after a crash, by the next owner that reads the registry.

    Args:
        registry: the node's registry.
        group: the cache's store namespace (DDP ranks of one cache give the same).
        fixed: the owner's size is set by ``max_bytes``, not by its share.
    """

    def __init__(self, registry: NodeRegistry, group: str, *, fixed: bool = False) -> None:
        self.registry = registry
        self.group = group
        self.fixed = fixed
        self.pid = os.getpid()
        self.start = _start_time(self.pid) or time.time()
        self.owner = f"{self.pid}-{uuid.uuid4().hex[:12]}"
        self.path = registry.directory / f"{self.owner}{_SUFFIX}"
        self.published_held: int | None = None
        self._finalizer = weakref.finalize(self, _remove_if_owner, self.path, self.pid)

    def publish(self, *, held_bytes: int, demand_bytes: int | None, budget_bytes: int) -> None:
        """Write this owner's claim (atomically: readers see the old or the new one)."""
        if os.getpid() != self.pid or not self._finalizer.alive:
            return
        doc = {
            "group": self.group,
            "pid": self.pid,
            "start": self.start,
            "held": int(held_bytes),
            "demand": None if demand_bytes is None else int(demand_bytes),
            "fixed": self.fixed,
            "budget": int(budget_bytes),
            "updated": time.time(),
        }
        tmp = self.registry.directory / f".{self.owner}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, json.dumps(doc).encode())
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("node registry: cannot publish %s: %s", self.path, exc)
            return
        self.published_held = int(held_bytes)

    def others(self) -> list[Claim]:
        """The live claims of every other owner of the node."""
        return [c for c in self.registry.claims() if c.owner != self.owner]

    def close(self) -> None:
        """Withdraw the claim."""
        self._finalizer()


def join_node(config: CacheConfig, group: str) -> NodeSlot | None:
    """Register a cache in its node's registry (``<shm_dir>/adaptive-cache.node``).

    Returns ``None`` for a cache that does not share the node's budget: ``node_budget``
    off, a store outside memory (disk, Redis), or a registry that cannot be used (one
    warning per process; the cache then sizes itself alone).
    """
    global _warned
    if not config.node_budget or config.store not in MEMORY_STORES:
        return None
    try:
        registry = NodeRegistry.in_shm_dir(config.shm_dir)
    except OSError as exc:
        if not _warned:
            _warned = True
            log.warning(
                "cache.shm_dir=%s: node registry unusable (%s); each cache sizes itself "
                "alone (set cache.node_budget=false to silence)",
                config.shm_dir,
                exc,
            )
        return None
    return registry.join(group, fixed=config.max_bytes is not None)
