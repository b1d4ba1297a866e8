"""CacheConfig and human sizes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adaptive_cache.config import CacheConfig, TierMode, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GiB", 4 * 1024**3),
        ("1.5GB", 1_500_000_000),
        ("512MiB", 512 * 1024**2),
        ("10", 10),
        (7, 7),
        ("2 kib", 2048),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1GiB", "4 GiBs", True, -5, "1e3", None])
def test_parse_size_rejects_with_suffix_list(bad):
    with pytest.raises(ValueError, match="GiB"):
        parse_size(bad)


def test_format_size():
    assert format_size(1288490188) == "1.20 GiB"
    assert format_size(512) == "512 B"


def test_yaml_switches_and_store_requirements():
    cfg = CacheConfig(policy=False, tiers={"tensor": False, "image": True})
    assert cfg.policy == "off"
    assert cfg.tier_mode("tensor") is TierMode.off and cfg.tier_mode("image") is TierMode.on
    assert cfg.tier_mode("maps") is TierMode.auto
    with pytest.raises(ValidationError, match="disk_dir"):
        CacheConfig(store="disk")
    with pytest.raises(ValidationError, match="redis_url"):
        CacheConfig(store="redis", redis_url="http://x")
    with pytest.raises(ValidationError, match="low"):
        CacheConfig(watermarks={"low": 0.5, "high": 0.2})
    # The error is on the missing key itself, so a message can name it.
    for kwargs, key in (({"store": "disk"}, "disk_dir"), ({"store": "redis"}, "redis_url")):
        with pytest.raises(ValidationError) as err:
            CacheConfig(**kwargs)
        assert [e["loc"] for e in err.value.errors()] == [(key,)]
    # Also when the store is switched afterwards.
    cfg = CacheConfig()
    with pytest.raises(ValidationError, match="redis_url"):
        cfg.store = "redis"
    with pytest.raises(ValidationError, match="extra"):
        CacheConfig(max_byte="1GiB")


def test_policy_is_a_name_or_an_instance():
    from adaptive_cache.policies import StaticPolicy

    with pytest.raises(ValidationError, match="unknown cache policy 'fifo'; known: auto, lru"):
        CacheConfig(policy="fifo")
    with pytest.raises(ValidationError, match="a Policy instance"):
        CacheConfig(policy=3)
    policy = StaticPolicy()
    cfg = CacheConfig(policy=policy)
    assert cfg.policy is policy and cfg.enabled
    assert cfg.model_dump(mode="json")["policy"] == "static"
    assert not CacheConfig(policy="off").enabled
