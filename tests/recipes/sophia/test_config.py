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


def test_typed_verl_sections_carry_the_sophia_keys():
    from recipes.sophia.config import update_actor_config, vlm_model_config, vlm_rollout_config

    cfg = load_sophia_config(DEFAULT_CONFIG, [
        "caption.dtype=bfloat16", "caption.trust_remote_code=true", "caption.engine=vllm", "update.lr=0.5",
        "update.lr_scheduler_type=constant", "update.param_dtype=bfloat16", "update.micro_batch=3",
        "update.loss_agg_mode=seq-mean-token-sum-norm", "update.freeze_projector=true", "update.warmup_steps=2"])
    model = vlm_model_config(cfg, "elsewhere")
    assert (model.path, model.dtype, model.trust_remote_code, model.freeze_projector) == (
        "elsewhere", "bfloat16", True, True)
    assert vlm_model_config(cfg).path == cfg.caption.model_path and vlm_rollout_config(cfg).name == "vllm"
    actor = update_actor_config(cfg, total_steps=7)
    assert (actor.optim.lr, actor.optim.lr_scheduler_type, actor.optim.lr_warmup_steps,
            actor.optim.total_training_steps) == (0.5, "constant", 2, 7)
    assert (actor.fsdp.param_dtype, actor.ppo_micro_batch_size_per_gpu, actor.loss_agg_mode, actor.use_kl_loss) == (
        "bfloat16", 3, "seq-mean-token-sum-norm", False)


def test_local_reasoner_gets_trust_remote_code(monkeypatch):
    import recipes.sophia.reasoners as R

    seen = []
    monkeypatch.setattr(R, "LocalReasoner", lambda path, trust_remote_code: seen.append((path, trust_remote_code)))
    cfg = load_sophia_config(DEFAULT_CONFIG, ["reason.trust_remote_code=true"])
    R.make_reasoner(cfg.reason)
    assert seen == [(cfg.reason.model_path, True)]
