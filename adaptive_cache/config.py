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
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class CacheConfig(_Strict):
    """Settings of one :class:`~adaptive_cache.engine.AdaptiveCache`.

    With nothing set the cache sizes itself from measured headroom and decides per
    sample which tier to keep.

    ``policy`` is a name (``auto``, ``static``, ``lru``, ``off``; ``off`` turns caching
    off) or an instance of a :class:`~adaptive_cache.policies.base.Policy` subclass; an
    instance serves one cache (it holds that cache's membership) and is written as its
    ``name`` in JSON.
    """

    policy: PolicySpec = "auto"
    store: Literal["shm", "local", "disk", "redis"] = "shm"
    max_bytes: Size | None = None
    reserve_bytes: Size = parse_size("1GiB")
    headroom_share: float = Field(0.5, gt=0.0, le=1.0)
    watermarks: Watermarks = Field(default_factory=Watermarks)
    tiers: dict[str, Annotated[TierMode, BeforeValidator(_yaml_switch)]] = Field(
        default_factory=dict
    )
    preload: bool = False
    preload_workers: int = Field(0, ge=0)  # 0: the loader's num_workers
    log_every_n: int = Field(0, ge=0)
    replace_margin: float = Field(1.25, ge=1.0)
    probe_interval_s: float = Field(0.25, ge=0.0)
    shm_dir: str = "/dev/shm"
    disk_dir: str | None = None
    redis_url: str | None = None
    redis_timeout_s: float = Field(2.0, gt=0.0)

    @model_validator(mode="after")
    def _store_needs(self) -> CacheConfig:
        if self.store == "disk" and not self.disk_dir:
            raise ValueError("store 'disk' needs disk_dir (a directory for the persistent cache)")
        if self.store == "redis":
            if not self.redis_url:
                raise ValueError("store 'redis' needs redis_url (redis://host:port/db)")
            if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(
                    "redis_url must start with redis://, rediss:// or unix://, "
                    f"got {self.redis_url!r}"
                )
        return self

    @property
    def enabled(self) -> bool:
        """Whether caching is on (``policy`` is not ``off``)."""
        return not (isinstance(self.policy, str) and self.policy == "off")

    def tier_mode(self, tier: str) -> TierMode:
        return self.tiers.get(tier, TierMode.auto)
