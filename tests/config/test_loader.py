"""Typed config: composition, unknown keys, overrides, choices, derived values, recipe YAMLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from verl.config.loader import (
    ConfigError,
    declared_entry_point,
    derive_total_steps,
    finalize,
    load_config,
    to_yaml,
)
from verl.config.schema import RLConfig

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "ttrv" / "config"


# ---------------------------------------------------------------- unknown keys
def test_unknown_key_in_override_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.trian_files'.*did you mean 'data\.train_files'"):
        load_config(overrides=["data.trian_files=[a.json]"])


def test_appended_unknown_key_is_rejected_too():
    # Hydra lets `+key=value` into a struct dataclass node; the loader must not.
    with pytest.raises(ConfigError, match=r"unknown config key 'actor_rollout_ref\.rollout\.nvotes'"):
        load_config(overrides=["+actor_rollout_ref.rollout.nvotes=4"])


def test_unknown_key_in_yaml_names_it(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "defaults:\n  - ppo_trainer_schema\n  - _self_\nactor_rollout_ref:\n  actor:\n    optim:\n      lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'actor_rollout_ref\.actor\.optim\.lrr'.*mine"):
        load_config("mine", config_dir=tmp_path)


def test_yaml_inheriting_ppo_trainer_from_other_dir(tmp_path):
    (tmp_path / "child.yaml").write_text("defaults:\n  - ppo_trainer\n  - _self_\ntrainer:\n  total_epochs: 5\n")
    cfg = load_config("child", ["trainer.seed=3"], config_dir=tmp_path)
    assert cfg.trainer.total_epochs == 5 and cfg.trainer.seed == 3
    assert cfg.actor_rollout_ref.rollout.n_votes == 32  # inherited framework default


def test_declared_entry_point_is_read_through_the_defaults_list(tmp_path):
    (tmp_path / "base.yaml").write_text("defaults:\n  - ppo_trainer\n  - _self_\n")
    (tmp_path / "own.yaml").write_text("defaults:\n  - base\n  - _self_\nentry_point: pkg.own\nextra:\n  k: 1\n")
    (tmp_path / "child.yaml").write_text("defaults:\n  - own\n  - _self_\n")
    assert declared_entry_point("base", tmp_path) is None
    assert declared_entry_point("own", tmp_path) == declared_entry_point("child.yaml", tmp_path) == "pkg.own"
    assert declared_entry_point("missing", tmp_path) is None
    assert declared_entry_point("protocol_e_online", RECIPES) == "recipes.ttrv.online"
    assert load_config("base", config_dir=tmp_path).entry_point == "verl.trainer.main"


def test_yaml_without_schema_is_refused(tmp_path):
    (tmp_path / "plain.yaml").write_text("data:\n  seed: 1\n")
    with pytest.raises(ConfigError, match="does not use the schema"):
        load_config("plain", config_dir=tmp_path)


def test_missing_config_file_lists_available(tmp_path):
    (tmp_path / "a.yaml").write_text("x: 1\n")
    with pytest.raises(ConfigError, match=r"no config 'nope\.yaml'.*\['a'\]"):
        load_config("nope", config_dir=tmp_path)


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"actor_rollout_ref\.rollout\.n"):
        load_config(overrides=["actor_rollout_ref.rollout.n=many"])


# ---------------------------------------------------------------- overrides and choices
def test_dotted_overrides_apply():
    cfg = load_config(overrides=["data.train_files=[x.json,y.json]", "actor_rollout_ref.rollout.n=32",
                                 "trainer.total_epochs=3", "actor_rollout_ref.actor.optim.lr=1e-5",
                                 "+reward.kwargs.entropy_form=per_sample", "trainer.device=cpu"])
    assert isinstance(cfg, RLConfig)
    assert cfg.data.train_files == ["x.json", "y.json"]
    assert cfg.actor_rollout_ref.rollout.n == 32 and cfg.actor_rollout_ref.rollout.n_votes == 32
    assert cfg.trainer.total_epochs == 3 and cfg.actor_rollout_ref.actor.optim.lr == 1e-5
    assert cfg.reward.kwargs == {"entropy_form": "per_sample"}


@pytest.mark.parametrize("override, key", [
    ("actor_rollout_ref.actor.loss_agg_mode=token_mean", "actor_rollout_ref.actor.loss_agg_mode"),
    ("actor_rollout_ref.rollout.name=sglang", "actor_rollout_ref.rollout.name"),
    ("data.format=csv", "data.format"),
])
def test_bad_choice_names_key_and_allowed_values(override, key):
    with pytest.raises(ConfigError, match=rf"{key.replace('.', r'[.]')}=.* not allowed; choose one of \["):
        load_config(overrides=[override])


def test_bad_logger_and_unregistered_estimator():
    with pytest.raises(ConfigError, match="trainer.logger contains 'mlflow'"):
        load_config(overrides=["trainer.logger=[console,mlflow]"])
    with pytest.raises(ConfigError, match="algorithm.adv_estimator='ppo' is not registered"):
        load_config(overrides=["algorithm.adv_estimator=ppo"])


def test_consistency_errors():
    with pytest.raises(ConfigError, match=r"ppo_mini_batch_size \(16 prompts\) > data.train_batch_size \(8"):
        load_config(overrides=["actor_rollout_ref.actor.ppo_mini_batch_size=16"])
    with pytest.raises(ConfigError, match=r"n_votes \(8\) must be >= actor_rollout_ref.rollout.n \(16\)"):
        load_config(overrides=["actor_rollout_ref.rollout.n_votes=8"])
    with pytest.raises(ConfigError, match="use_kl_loss=true needs the reference"):
        load_config(overrides=["actor_rollout_ref.ref.enable=false"])
    with pytest.raises(ConfigError, match="data.max_response_length must be positive"):
        load_config(overrides=["data.max_response_length=0"])
    with pytest.raises(ConfigError, match="custom_reward_function: file not found"):
        load_config(overrides=["reward.custom_reward_function=/no/such/file.py:fn"])


# ---------------------------------------------------------------- derived values
def test_derived_values():
    cfg = load_config(overrides=["data.max_response_length=77", "data.max_prompt_length=100",
                                 "trainer.project_name=p", "trainer.experiment_name=e",
                                 "actor_rollout_ref.rollout.n_votes=null", "actor_rollout_ref.rollout.n=6",
                                 "trainer.device=cpu"])
    r = cfg.actor_rollout_ref.rollout
    assert r.max_new_tokens == 77 and r.max_model_len == 177 and r.n_votes == 6
    assert cfg.actor_rollout_ref.ref.enable is True
    assert cfg.trainer.default_local_dir == str(Path("checkpoints") / "p" / "e")
    no_kl = load_config(overrides=["actor_rollout_ref.actor.use_kl_loss=false", "trainer.device=auto"])
    assert no_kl.actor_rollout_ref.ref.enable is False and no_kl.trainer.device in ("cpu", "cuda")


def test_finalize_is_idempotent_and_explicit_values_win():
    cfg = load_config(overrides=["actor_rollout_ref.rollout.max_new_tokens=5", "trainer.default_local_dir=/ck"])
    again = finalize(cfg)
    assert again.actor_rollout_ref.rollout.max_new_tokens == 5 and again.trainer.default_local_dir == "/ck"


def test_derive_total_steps():
    cfg = load_config(overrides=["data.train_batch_size=4", "trainer.total_epochs=2"])
    assert derive_total_steps(cfg, 10) == 6  # ceil(10 / 4) = 3 steps per epoch
    assert cfg.trainer.total_training_steps == 6 and cfg.actor_rollout_ref.actor.optim.total_training_steps == 6
    fixed = load_config(overrides=["trainer.total_training_steps=2"])
    assert derive_total_steps(fixed, 1000) == 2
    with pytest.raises(ConfigError, match="no adaptation prompts"):
        derive_total_steps(fixed, 0)


# ---------------------------------------------------------------- recipes, yaml, hydra entry
def test_ttrv_recipe_has_paper_hyperparameters():
    cfg = load_config("ttrv", config_dir=RECIPES)
    a, r = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert (r.n_votes, r.n, r.temperature, r.top_p) == (32, 16, 1.0, 1.0)
    assert (a.optim.lr, a.optim.weight_decay, a.optim.lr_scheduler_type) == (5e-7, 0.01, "cosine")
    assert (a.kl_loss_type, a.kl_loss_coef, a.use_kl_loss, a.entropy_coeff) == ("low_var_kl", 0.001, True, 0.0)
    assert (a.clip_ratio_low, a.clip_ratio_high, a.clip_ratio_c, a.loss_agg_mode) == (0.2, 0.2, 3.0, "token-mean")
    assert (a.ppo_mini_batch_size, a.ppo_epochs, a.grad_clip) == (1, 1, 1.0)
    assert cfg.trainer.total_epochs == 2 and cfg.data.max_response_length == 1024 and r.max_new_tokens == 1024
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.reward.name == "ttrv" and cfg.reward.kwargs == {}


def test_ttrv_cpu_tiny_recipe_and_override():
    cfg = load_config("ttrv_cpu_tiny", ["trainer.total_epochs=1"], config_dir=RECIPES)
    r = cfg.actor_rollout_ref.rollout
    assert (r.n_votes, r.n, r.max_new_tokens) == (32, 16, 10) and cfg.reward.kwargs == {}
    assert cfg.trainer.device == "cpu" and cfg.trainer.n_gpus_per_node == 2 and cfg.trainer.total_epochs == 1
    assert cfg.actor_rollout_ref.actor.optim.lr == 3e-5  # chosen on dev (recipes/ttrv/experiments.py)
    assert cfg.actor_rollout_ref.actor.kl_loss_type == "low_var_kl"  # inherited from ttrv.yaml


def test_to_yaml_round_trips_values():
    text = to_yaml(load_config(overrides=["actor_rollout_ref.rollout.n=4", "actor_rollout_ref.rollout.n_votes=12"]))
    assert "n_votes: 12" in text and "actor_rollout_ref:" in text and "hydra" not in text


def test_framework_yaml_holds_no_defaults():
    # defaults live in the schema only: ppo_trainer.yaml is the schema plus Hydra settings
    from omegaconf import OmegaConf

    from verl.config.loader import DEFAULT_CONFIG_DIR

    assert set(OmegaConf.load(DEFAULT_CONFIG_DIR / "ppo_trainer.yaml")) == {"defaults", "hydra"}
    assert to_yaml(load_config(overrides=["trainer.device=cpu"])) == to_yaml(
        finalize(RLConfig(trainer=RLConfig().trainer.__class__(device="cpu"))))


# ---------------------------------------------------------------- one list of choices, no dead keys
def test_loss_agg_modes_are_the_aggregation_codes_list():
    from verl.algos.policy_loss import AGG_MODES

    cfg = load_config(overrides=["actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm"])  # Dr.GRPO
    assert cfg.actor_rollout_ref.actor.loss_agg_mode == "seq-mean-token-sum-norm"
    with pytest.raises(ConfigError, match="choose one of " + str(list(AGG_MODES)).replace("[", r"\[")):
        load_config(overrides=["actor_rollout_ref.actor.loss_agg_mode=mean"])


@pytest.mark.parametrize("key", ["actor_rollout_ref.actor.strategy=fsdp2", "actor_rollout_ref.rollout.seed=0",
                                 "actor_rollout_ref.rollout.val_kwargs.n=1"])
def test_deleted_keys_are_unknown(key):
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(overrides=[key])


def test_tensor_parallel_needs_vllm_on_cuda():
    with pytest.raises(ConfigError, match="tensor_parallel_size=2 needs the vLLM engine on CUDA"):
        load_config(overrides=["actor_rollout_ref.rollout.tensor_parallel_size=2", "trainer.device=cpu"])
