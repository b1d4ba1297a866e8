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
