"""Reward-composition check: the published entropy term under per-group advantages is flagged."""

import logging

import pytest

from verl.config.schema import AlgorithmConfig, RewardConfig
from verl.trainer.reward_check import cancels_group_constants, constant_terms, reward_composition_warnings


@pytest.mark.parametrize("name,norm,cancels", [
    ("grpo", True, True), ("grpo", False, True), ("drgrpo", True, True),
    ("grpo_batch", True, True),   # per-group centering; the batch std only rescales
    ("batch_norm", True, False),
])
def test_estimator_probe(name, norm, cancels):
    assert cancels_group_constants(AlgorithmConfig(adv_estimator=name, norm_adv_by_std_in_grpo=norm)) is cancels


def test_constant_terms():
    assert constant_terms(RewardConfig(entropy_form="paper")) == [
        "entropy term (reward.entropy_coef=0.75, reward.entropy_form=paper)"]
    assert constant_terms(RewardConfig(entropy_form="normalized", entropy_coef=0.5))
    assert constant_terms(RewardConfig(entropy_form="per_sample")) == []
    assert constant_terms(RewardConfig(entropy_coef=0.0)) == []


def test_warning_names_the_term_and_the_fix():
    (msg,) = reward_composition_warnings(RewardConfig(), AlgorithmConfig())
    assert "entropy term" in msg and "adv_estimator=grpo" in msg
    assert "entropy_form=per_sample" in msg and "adv_estimator=batch_norm" in msg
    assert reward_composition_warnings(RewardConfig(entropy_form="per_sample"), AlgorithmConfig()) == []
    assert reward_composition_warnings(RewardConfig(), AlgorithmConfig(adv_estimator="batch_norm")) == []


def test_trainer_warns_at_start_up(caplog, tmp_path):
    from verl.config.loader import finalize
    from verl.config.schema import RLConfig
    from verl.data.formats import Record
    from verl.logging.tracker import Tracker
    from verl.trainer.fit import Trainer

    cfg = RLConfig()
    cfg.trainer.default_local_dir = str(tmp_path / "ckpt")
    cfg.trainer.total_training_steps = 1
    cfg = finalize(cfg)
    with caplog.at_level(logging.WARNING, logger="verl.trainer"):
        record = Record(uid="f:0", index=0, data_source="d", prompt=[{"role": "user", "content": "2+2?"}])
        Trainer(cfg, [record], [], Tracker("p", "e", [], log_dir=tmp_path))
    assert any("entropy term" in r.message and "cannot change training" in r.message for r in caplog.records)
