"""Secrets masked in URLs, free text and nested configuration."""

from __future__ import annotations

import pytest

from adaptive_cache.redact import MASK, is_secret_key, mask_text, masked_url, redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pw@h:6379/0", "redis://u:***@h:6379/0"),
        ("rediss://:pw@h/1", "rediss://:***@h/1"),
        ("redis://:p@ss@h:1/0", "redis://:***@h:1/0"),  # an unencoded "@" in the password
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://h/0?password=pw&db=1", "redis://h/0?password=***&db=1"),
        ("unix://:pw@/run/redis.sock", "unix://:***@/run/redis.sock"),
    ],
)
def test_masked_url(url, shown):
    assert masked_url(url) == shown


def test_mask_text_masks_urls_and_secret_parameters_inside_messages():
    text = "bad redis_url 'redis://:s3cret@10.0.0.1:6379/0', token=abc123 at http://host:8080/x"
    out = mask_text(text)
    assert "s3cret" not in out and "abc123" not in out
    assert "redis://:***@10.0.0.1:6379/0" in out and "http://host:8080/x" in out


def test_redact_masks_secret_keys_and_urls_at_any_depth():
    config = {
        "cache": {"redis_url": "redis://:s3cret@h/0", "store": "redis"},
        "monitoring": {"auth": {"api_token": "t0k", "bearer_secret": None}},
        "hosts": ["redis://u:pw2@a/0", "plain"],
        "port": 9108,
    }
    out = redact(config)
    assert out["cache"] == {"redis_url": "redis://:***@h/0", "store": "redis"}
    assert out["monitoring"]["auth"] == {"api_token": MASK, "bearer_secret": None}
    assert out["hosts"] == ["redis://u:***@a/0", "plain"] and out["port"] == 9108
    assert config["cache"]["redis_url"] == "redis://:s3cret@h/0"  # the input is not changed


@pytest.mark.parametrize(
    ("key", "secret"),
    [("password", True), ("redis_password", True), ("API_TOKEN", True), ("client_secret", True),
     ("redis_url", False), ("max_bytes", False)],
)  # fmt: skip
def test_is_secret_key(key, secret):
    assert is_secret_key(key) is secret
