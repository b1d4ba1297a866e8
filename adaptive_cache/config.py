"""CacheConfig: every cache setting and its default, validated by pydantic.

Human sizes (``"4GiB"``, ``"512MB"``, ``1048576``) are parsed once, here. Every default
lives in these models; YAML files hold only what differs.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

from adaptive_cache.policies import POLICIES, Policy, check_name

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
SIZE_SUFFIXES = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"


def parse_size(value: Any) -> int:
    """Parse ``"4GiB"``, ``"1.5GB"``, ``"512MiB"`` or a non-negative int into bytes.

    Raises:
        ValueError: anything else; the message lists the accepted suffixes.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 4GiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a non-negative size such as 4GiB, got {value}")
        return value
    if isinstance(value, float) and value >= 0 and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ValueError(
        f"expected a size such as 4GiB (a number with one of {SIZE_SUFFIXES}), got {value!r}"
    )


def format_size(n: float) -> str:
    """``1288490188`` -> ``"1.20 GiB"``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= factor:
            return f"{n / factor:.2f} {unit}"
    return f"{int(n)} B"


Size = Annotated[int, BeforeValidator(parse_size)]


def _yaml_switch(value: Any) -> Any:
    # YAML 1.1 (and so OmegaConf dot-lists) reads on/off as booleans.
    if value is True:
        return "on"
    if value is False:
        return "off"
    return value


class TierMode(str, Enum):
    """``auto``: the policy decides; ``on``: always keep (within budget); ``off``: never."""

    auto = "auto"
    on = "on"
    off = "off"


def _policy(value: Any) -> str | Policy:
    value = _yaml_switch(value)
    if isinstance(value, Policy):
        return value
    if isinstance(value, str):
        return check_name(value)
    raise ValueError(
        f"expected a policy name ({', '.join(sorted(POLICIES))}) or a Policy instance, "
        f"got {value!r}"
    )


PolicySpec = Annotated[
    Any,
    BeforeValidator(_policy),
    PlainSerializer(lambda v: v if isinstance(v, str) else v.name, when_used="json"),
]
"""A policy name (the registry in :mod:`adaptive_cache.policies`) or a Policy instance."""


class _Strict(BaseModel):
    # hide_input_in_errors: a ValidationError's text never repeats a value (a URL with
    # its password); messages name the key and mask what they quote.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)


class Watermarks(_Strict):
    """Memory headroom thresholds, as fractions of the memory the process may use.

    Below ``low`` the cache evicts lowest-worth entries until headroom is back above it
    and raises a memory alert; it grows again only once headroom exceeds ``high``.
    """

    low: float = Field(0.10, ge=0.0, lt=1.0)
    high: float = Field(0.20, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Watermarks:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


def _check_store_setting(store: str | None, key: str | None, value: str | None) -> None:
    if key == "disk_dir" and store == "disk" and not value:
        raise ValueError("store 'disk' needs disk_dir (a directory for the persistent cache)")
    if key == "redis_url":
        if store == "redis" and not value:
            raise ValueError("store 'redis' needs redis_url (redis://host:port/db)")
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            # Only the scheme: the rest of a URL may hold a password.
            raise ValueError(
                "redis_url must start with redis://, rediss:// or unix://, "
                f"got one starting {value.partition(':')[0]!r}"
            )


class CacheConfig(_Strict):
    """Settings of one :class:`~adaptive_cache.engine.AdaptiveCache`.

    With nothing set the cache sizes itself from measured headroom and decides per
    sample which tier to keep.

    Levels: ``store`` is the top level (``shm`` memory by default). With ``store``
    ``shm`` or ``local``, ``disk_dir`` adds a persistent disk level below memory and
    ``redis_url`` a shared Redis level below that (memory -> disk -> Redis). With
    ``store: disk`` or ``store: redis`` the cache is that one store, as before, with no
    levels (``redis_url`` beside ``store: disk`` is refused).

    ``policy`` is a name (``auto``, ``static``, ``lru``, ``off``; ``off`` turns caching
    off) or an instance of a :class:`~adaptive_cache.policies.base.Policy` subclass; an
    instance serves one cache (it holds that cache's membership) and is written as its
    ``name`` in JSON.
    """

    # A redis_url may carry a password: errors name the field and the problem, not the input.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    policy: PolicySpec = "auto"
    store: Literal["shm", "local", "disk", "redis"] = "shm"
    max_bytes: Size | None = None
    # The reserve is reserve_bytes, at most reserve_fraction of the memory limit: 1 GiB
    # on a host or container of 10 GiB or more, 205 MiB in a 2 GiB container (where a
    # fixed 1 GiB would leave the cache nothing). reserve_fraction=null: reserve_bytes.
    reserve_bytes: Size = parse_size("1GiB")
    reserve_fraction: float | None = Field(0.1, ge=0.0, lt=1.0)
    headroom_share: float = Field(0.5, gt=0.0, le=1.0)
    # Caches of one node (runs, splits) share one budget through a registry in shm_dir.
    node_budget: bool = True
    watermarks: Watermarks = Field(default_factory=Watermarks)
    tiers: dict[str, Annotated[TierMode, BeforeValidator(_yaml_switch)]] = Field(
        default_factory=dict
    )
    # The device tier (adaptive_cache.device): collated batches of a deterministic,
    # fixed-order split kept on the accelerator. ``tiers.gpu`` is accepted as an alias.
    gpu: Annotated[TierMode, BeforeValidator(_yaml_switch)] = TierMode.auto
    gpu_share: float = Field(0.25, gt=0.0, le=1.0)
    preload: bool = False
    preload_workers: int = Field(0, ge=0)  # 0: the loader's num_workers
    log_every_n: int = Field(0, ge=0)
    replace_margin: float = Field(1.25, ge=1.0)
    probe_interval_s: float = Field(0.25, ge=0.0)
    shm_dir: str = "/dev/shm"
    #: ``store: disk``: the store's directory; ``store: shm|local``: the disk level's.
    disk_dir: str | None = Field(None, validate_default=True)
    #: Disk level budget per node; ``None``: ``disk_free_share`` of the file system's
    #: free space (plus what the level holds), re-read every few seconds.
    disk_max_bytes: Size | None = None
    disk_free_share: float = Field(0.5, gt=0.0, le=1.0)
    #: ``store: redis``: the store; ``store: shm|local``: the shared Redis level.
    # The password may stay out of the URL (and of every file): ADAPTIVE_CACHE_REDIS_PASSWORD.
    redis_url: str | None = Field(None, validate_default=True)
    redis_timeout_s: float = Field(2.0, gt=0.0)
    #: What one node may write to the Redis level; ``None``: no budget of ours (the
    #: server's ``maxmemory`` and eviction policy bound it; an entry it evicts is a miss).
    redis_max_bytes: Size | None = None
    #: Time to live of a claim on a build (so two nodes do not build one sample at
    #: once); a claim whose holder died expires after it. 0: no claims.
    redis_claim_s: float = Field(30.0, ge=0.0)
    #: Compress entries below memory (zstd): ``auto`` decides per level and tier from
    #: measured (de)compression time and ratio; ``on``/``off`` always/never.
    compress: Annotated[Literal["auto", "on", "off"], BeforeValidator(_yaml_switch)] = "auto"

    @field_validator("disk_dir", "redis_url")
    @classmethod
    def _store_needs(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field validator (run on the default too), so that the error names the key.
        _check_store_setting(info.data.get("store"), info.field_name, value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _gpu_alias(cls, data: Any) -> Any:
        # ``tiers.gpu`` reads like the other tiers but is not a pipeline tier (the engine
        # rejects unknown tiers): move it to ``gpu``, where it wins over the field.
        tiers = data.get("tiers") if isinstance(data, dict) else None
        if isinstance(tiers, dict) and "gpu" in tiers:
            tiers = dict(tiers)
            data = {**data, "gpu": tiers.pop("gpu"), "tiers": tiers}
        return data

    @model_validator(mode="after")
    def _store_needs_on_assignment(self) -> CacheConfig:
        _check_store_setting(self.store, "disk_dir", self.disk_dir)
        _check_store_setting(self.store, "redis_url", self.redis_url)
        return self

    @property
    def levels(self) -> list[str]:
        """The levels below the top store, fastest first (``disk``, ``redis``).

        Only a memory store (``shm``, ``local``) has levels below it; with ``store: disk``
        or ``redis`` the other store's setting is unused (a split may choose its own store
        while the run's ``redis_url`` is set).
        """
        if self.store not in ("shm", "local"):
            return []
        return [name for name, on in (("disk", self.disk_dir), ("redis", self.redis_url)) if on]

    @property
    def enabled(self) -> bool:
        """Whether caching is on (``policy`` is not ``off``)."""
        return not (isinstance(self.policy, str) and self.policy == "off")

    def tier_mode(self, tier: str) -> TierMode:
        return self.tiers.get(tier, TierMode.auto)

    def reserve_for(self, limit_bytes: int) -> int:
        """The reserve kept free below a memory limit of ``limit_bytes``."""
        if self.reserve_fraction is None:
            return self.reserve_bytes
        return min(self.reserve_bytes, int(self.reserve_fraction * limit_bytes))
