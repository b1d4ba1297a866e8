"""The run configuration: YAML + dot-lists, validated before any work."""

from __future__ import annotations

import pytest

from training.cli import main
from training.config import CONFIG_DIR, load_config


def test_defaults_and_overrides():
    cfg = load_config(
        ["trainer.max_epochs=7", "cache.max_bytes=2GiB", "data.train.cache.tiers.tensor=off"]
    )
    assert cfg.trainer.max_epochs == 7
    assert cfg.cache.max_bytes == 2 * 1024**3
    assert cfg.cache_for("train").tier_mode("tensor").value == "off"
    assert cfg.cache_for("val").tier_mode("tensor").value == "auto"
    assert cfg.data.root == "data/synthetic"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cache.max_bytes=lots", "cache.max_bytes: expected a size such as 4GiB"),
        ("cache.polcy=lru", "cache.polcy: unknown key"),
        ("trainer.max_epochs=zero", "trainer.max_epochs"),
        ("data.val.cache.policy=fifo", "data.val.cache.policy"),
        ("model.backbone=vgg", "model.backbone"),
        ("noequals", "expected key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        load_config([override])


def test_every_preset_validates():
    presets = sorted(CONFIG_DIR.glob("*/*.yaml"))
    assert presets
    for preset in presets:
        load_config([], config_files=[preset])


def test_bad_yaml_file_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cache: [unclosed\n")
    with pytest.raises(ValueError, match=r"bad\.yaml"):
        load_config([], config_files=[bad])


def test_show_config_prints_resolved_and_fails_cleanly(capsys):
    assert main(["show-config", "cache.policy=lru"]) == 0
    assert "policy: lru" in capsys.readouterr().out
    assert main(["show-config", "cache.max_bytes=lots"]) == 2
    assert "cache.max_bytes: expected a size such as 4GiB" in capsys.readouterr().err


def test_one_error_is_one_line_naming_the_key_never_the_section():
    with pytest.raises(ValueError) as err:
        load_config(["cache.store=redis"])
    message = str(err.value)
    assert message == (
        "invalid configuration: cache.redis_url: store 'redis' needs redis_url "
        "(redis://host:port/db)"
    )
    with pytest.raises(ValueError) as err:
        load_config(["data.val.cache.store=disk"])
    assert str(err.value).startswith("invalid configuration: data.val.cache.disk_dir: ")
    # A URL with the wrong scheme: only the scheme is echoed (the rest may hold a password).
    with pytest.raises(ValueError) as err:
        load_config(["cache.store=redis", "cache.redis_url=http://u:hunter2@host/0"])
    assert "cache.redis_url" in str(err.value) and "hunter2" not in str(err.value)
    # A whole section given as a value is not printed back.
    with pytest.raises(ValueError) as err:
        load_config(["cache={store: redis, redis_url: 'redis://:hunter2@h/0', policy: nope}"])
    assert "hunter2" not in str(err.value) and "cache.policy" in str(err.value)
    # Several errors: one line each.
    with pytest.raises(ValueError) as err:
        load_config(["cache.max_bytes=lots", "trainer.max_epochs=x"])
    assert str(err.value).count("\n") == 2


def test_max_pixels_default_and_validation():
    assert load_config([]).data.max_pixels == 100_000_000
    assert load_config(["data.max_pixels=null"]).data.max_pixels is None
    with pytest.raises(ValueError, match=r"data\.max_pixels"):
        load_config(["data.max_pixels=0"])
