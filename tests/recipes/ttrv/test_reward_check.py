"""Reward-composition check of the TTRV recipe: the published entropy term under per-group advantages is flagged."""

import logging
from pathlib import Path

from recipes.ttrv.estimators import build_estimator
from recipes.ttrv.reward_check import reward_composition_warnings
from verl.config.schema import AlgorithmConfig, RewardConfig

CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "recipes" / "ttrv" / "config")


def ttrv(**kwargs):
    return build_estimator(RewardConfig(name="ttrv", kwargs=kwargs))


def test_constant_terms():
    assert ttrv().constant_terms() == []  # the default per-sample form survives per-group normalization
    assert ttrv(entropy_form="paper").constant_terms() == [
        "entropy term (reward.kwargs.entropy_coef=0.75, reward.kwargs.entropy_form=paper)"]
    assert ttrv(entropy_form="normalized", entropy_coef=0.5).constant_terms()
    assert ttrv(entropy_form="per_sample").constant_terms() == []
    assert ttrv(entropy_coef=0.0).constant_terms() == []


def test_warning_names_the_term_and_the_fix():
    (msg,) = reward_composition_warnings(ttrv(entropy_form="paper"), AlgorithmConfig())
    assert "entropy term" in msg and "adv_estimator=grpo" in msg
    assert "entropy_form=per_sample" in msg and "adv_estimator=batch_norm" in msg
    assert reward_composition_warnings(ttrv(entropy_form="per_sample"), AlgorithmConfig()) == []
    assert reward_composition_warnings(ttrv(entropy_form="normalized"), AlgorithmConfig(adv_estimator="batch_norm")) == []


def test_method_warns_at_start_up(caplog, tmp_path):
    from recipes.ttrv.method import TTRVMethod
    from verl.config.loader import load_config

    cfg = load_config("ttrv", [f"trainer.default_local_dir={tmp_path / 'ckpt'}", "++reward.kwargs.entropy_form=paper"],
                      config_dir=CONFIG_DIR)
    with caplog.at_level(logging.WARNING, logger="recipes.ttrv"):
        TTRVMethod(cfg)
    assert any("entropy term" in r.message and "cannot change training" in r.message for r in caplog.records)
