"""Typed SOPHIA config: the shipped YAML loads, overrides apply, unknown keys and bad values fail by name."""

from __future__ import annotations

import pytest

from recipes.sophia.config import DEFAULT_CONFIG, load_sophia_config
from verl.config.loader import ConfigError


def test_default_yaml_and_overrides():
    cfg = load_sophia_config(DEFAULT_CONFIG, ["select.alpha=0.5", "reason.http.model=teacher", "update.epochs=2"])
    assert cfg.select.alpha == 0.5 and cfg.reason.http.model == "teacher" and cfg.update.epochs == 2
    assert cfg.run_path.as_posix() == "logs/sophia/cpu_tiny"
    assert cfg.update.freeze_vision_tower and cfg.reason.n == 8 and cfg.caption.k == 4


@pytest.mark.parametrize("override, key", [
    ("update.lrr=0.1", "update.lrr"),
    ("reason.http.bse_url=x", "reason.http.bse_url"),
    ("+selct.alpha=0.1", "selct"),
])
def test_unknown_override_key_is_named(override, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        load_sophia_config(DEFAULT_CONFIG, [override])


def test_unknown_yaml_key_is_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("select:\n  alpha: 0.5\n  keepn: 2\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'select.keepn'.*did you mean 'select.keep_n'"):
        load_sophia_config(p)


@pytest.mark.parametrize("override, match", [
    ("update.loss_agg_mode=sum", "update.loss_agg_mode"),
    ("reason.backend=grpc", "reason.backend"),
    ("select.alpha=1.0", "select.alpha"),
    ("reason.n=zero", "reason.n"),
    ("trainer.stages=[caption,train]", "trainer.stages"),
    ("reason.backend=http", "reason.http.model"),
])
def test_bad_values_fail(override, match):
    with pytest.raises(ConfigError, match=match):
        load_sophia_config(DEFAULT_CONFIG, [override])
