"""Typed SOPHIA config: the framework's sections plus SOPHIA's own, behind Hydra YAML (``config/*.yaml``).

    cfg = load_sophia_config("sophia_cpu_tiny", ["reason.n=4", "select.alpha=0.5"])

The root :class:`SophiaConfig` reuses :class:`~verl.config.schema.ActorRolloutRefConfig` (the policy VLM:
``model`` = loaders, freezing, LoRA, gradient checkpointing; ``actor`` = the update's optimizer, schedule,
token budget, loss aggregation, FSDP dtype; ``rollout`` = the caption / evaluation engine) and
:class:`~verl.config.schema.TrainerConfig` (backend, workers, device, seed, logger, checkpoints; ``total_epochs``
= passes over the kept trajectories, ``save_freq`` = update steps between checkpoints, ``val_before_train`` =
also evaluate the base model), and adds ``data``, ``caption``, ``reason``, ``select``, ``update``, ``eval``
and ``stages``. It is composed by :func:`verl.config.loader.load_config` (``schema=SophiaConfig``), so an
unknown key in a YAML file or an override fails naming the key, exactly as for TTRV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl.config.loader import ConfigError, check_loss_agg_mode, load_config
from verl.config.schema import CHOICES as VERL_CHOICES
from verl.config.schema import LOGGER_CHOICES, ActorRolloutRefConfig, TrainerConfig

CONFIG_DIR = Path(__file__).resolve().parent / "config"
DEFAULT_CONFIG_NAME = "sophia_cpu_tiny"


@dataclass
class DataCfg:
    dir: str = "data/sophia_pairs"  # folder that relative train / eval file paths are read from
    train_file: str = "sophia_train.json"  # questions SOPHIA collects trajectories for (gold answers needed)
    eval_file: str = "eval.json"  # held-out questions (VLM accuracy before / after)
    format: str = "auto"  # auto | json | parquet (verl.data.formats)
    image_root: str | None = None  # base folder of relative image paths (default: the file's folder)
    max_train: int = -1  # first questions only (-1: all)
    max_eval: int = -1


@dataclass
class CaptionCfg:
    prompt: str = "brief"  # key of prompts.CAPTION_PROMPTS (brief | detailed) or the prompt text
    k: int = 4  # captions per image
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 24
    batch_images: int = 32  # images per generate call (one call = the unit a kill can lose)


@dataclass
class HttpCfg:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    api_key_env: str | None = "OPENAI_API_KEY"
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 4


@dataclass
class ReasonCfg:
    backend: str = "local"  # local (HF text LM folder) | http (OpenAI-compatible endpoint)
    model_path: str = "checkpoints/sophia/reasoner"
    trust_remote_code: bool = False  # local backend: for the reasoner's model and tokenizer
    n: int = 8  # reasonings per caption
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 96
    batch_items: int = 64  # (question, caption) items per backend call
    http: HttpCfg = field(default_factory=HttpCfg)


@dataclass
class SelectCfg:
    alpha: float = 0.75  # keep a trajectory only if its caption reward is STRICTLY above alpha
    keep_n: int = 1  # shortest correct trajectories kept per question
    length_unit: str = "tokens"  # tokens (VLM tokenizer) | chars
    use_caption_reward: bool = True  # false: ablation "without caption reward" (any correct trajectory)
    pick: str = "shortest"  # shortest | random (ablation: a random eligible trajectory, seeded by trainer.seed)


@dataclass
class UpdateCfg:
    """What the update trains on; how (optimizer, batch, budget, dtype) is ``actor_rollout_ref.actor``."""

    target: str = "reasoning"  # reasoning (SOPHIA) | caption (baseline: SFT on the kept captions only)
    system_prompt: str = "long_reasoning"  # long_reasoning | none
    max_response_tokens: int = 96  # target tokens kept per trajectory (end-of-turn included)


@dataclass
class EvalCfg:
    max_new_tokens: int = 96  # below update.max_response_tokens, trained answers can be cut (preflight warns)
    batch: int = 64  # questions per generate call


def _policy_defaults() -> ActorRolloutRefConfig:
    arr = ActorRolloutRefConfig()
    arr.model.freeze_vision_tower = True  # the paper freezes the vision tower
    arr.actor.use_kl_loss = False  # reward-weighted NLL: no ratio, no KL, no reference
    arr.actor.policy_loss = "nll"
    arr.ref.enable = False
    return arr


@dataclass
class SophiaConfig:
    """Root: the policy (``actor_rollout_ref``), ``trainer``, and SOPHIA's sections."""

    data: DataCfg = field(default_factory=DataCfg)
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=_policy_defaults)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    caption: CaptionCfg = field(default_factory=CaptionCfg)
    reason: ReasonCfg = field(default_factory=ReasonCfg)
    select: SelectCfg = field(default_factory=SelectCfg)
    update: UpdateCfg = field(default_factory=UpdateCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    stages: list[str] = field(default_factory=lambda: ["caption", "reason", "reward", "select", "update", "evaluate"])
    entry_point: str = "recipes.sophia.main"  # the command that runs this config

    @property
    def run_path(self) -> Path:
        """The run folder: stage files, Tracker files, ``model/`` (``<log_dir>/<project>/<experiment>``)."""
        t = self.trainer
        return Path(t.log_dir) / t.project_name / t.experiment_name

    @property
    def model_path(self) -> str:
        """The policy VLM being improved (captioner and answerer)."""
        return self.actor_rollout_ref.model.path


STAGES = ("caption", "reason", "reward", "select", "update", "evaluate")
CHOICES: dict[str, tuple[str, ...]] = {
    **{k: v for k, v in VERL_CHOICES.items() if k.startswith(("actor_rollout_ref.", "trainer."))},
    "data.format": ("auto", "json", "parquet"),
    "reason.backend": ("local", "http"),
    "select.length_unit": ("tokens", "chars"),
    "select.pick": ("shortest", "random"),
    "update.target": ("reasoning", "caption"),
    "update.system_prompt": ("long_reasoning", "none"),
}
POSITIVE = ("caption.k", "reason.n", "select.keep_n", "trainer.total_epochs", "actor_rollout_ref.actor.ppo_mini_batch_size",
            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu", "caption.max_new_tokens", "reason.max_new_tokens",
            "caption.batch_images", "reason.batch_items", "eval.batch", "eval.max_new_tokens",
            "update.max_response_tokens", "trainer.n_gpus_per_node", "trainer.nnodes")


_NLL = "the update is reward-weighted NLL: no ratio, clipping, KL, entropy bonus or log-prob phase"
_SAMPLING = "captions and answers are sampled with caption.* and eval.*"
# Keys of the shared sections SOPHIA's round never reads (tests/recipes/sophia/test_dead_keys.py proves the list):
# a value other than the default fails at start-up naming the key, so no setting silently does nothing.
UNUSED_SHARED_KEYS: dict[str, str] = {
    **{f"actor_rollout_ref.actor.{k}": _NLL for k in (
        "policy_loss", "use_kl_loss", "kl_loss_coef", "kl_loss_type", "entropy_coeff", "clip_ratio_low",
        "clip_ratio_high", "clip_ratio_c", "skip_zero_adv_groups", "log_prob_max_token_len_per_gpu")},
    "actor_rollout_ref.actor.ppo_epochs": "passes over the kept trajectories are trainer.total_epochs",
    **{f"actor_rollout_ref.rollout.{k}": _SAMPLING for k in (
        "n", "n_votes", "temperature", "top_p", "top_k", "max_new_tokens", "val_sample_n")},
    "trainer.total_training_steps": "the update's steps follow from the kept trajectories and trainer.total_epochs",
    "trainer.test_freq": "SOPHIA evaluates once, after the update (trainer.val_before_train adds the base model)",
    **{f"trainer.guard.{k}": "the collapse guard watches TTRV's vote statistics; SOPHIA has no votes"
       for k in ("enable", "action", "window", "max_invalid_ratio", "min_entropy_ratio", "min_base_entropy",
                 "max_majority_ratio", "max_length_ratio", "min_length_ratio")},
}


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_unused_keys(cfg: SophiaConfig) -> None:
    """Refuse a shared-section key SOPHIA does not read (:data:`UNUSED_SHARED_KEYS`) set to a non-default value."""
    default = SophiaConfig()
    for key, why in UNUSED_SHARED_KEYS.items():
        if _get(cfg, key) != _get(default, key):
            raise ConfigError(f"{key}={_get(cfg, key)!r} does nothing in SOPHIA ({why}); remove it")


def finalize_sophia(cfg: SophiaConfig) -> SophiaConfig:
    """Check choices, ranges and consistency; fill derived values (device, checkpoint folder). Returns ``cfg``."""
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise ConfigError(f"{key}={_get(cfg, key)!r} is not allowed; choose one of {list(allowed)}")
    for name in cfg.trainer.logger:
        if name not in LOGGER_CHOICES:
            raise ConfigError(f"trainer.logger contains {name!r}; allowed: {list(LOGGER_CHOICES)}")
    actor = cfg.actor_rollout_ref.actor
    check_loss_agg_mode("actor_rollout_ref.actor.loss_agg_mode", actor.loss_agg_mode)
    if actor.use_kl_loss or cfg.actor_rollout_ref.ref.enable or actor.policy_loss != "nll":
        raise ConfigError("SOPHIA's update is reward-weighted NLL: keep actor_rollout_ref.actor.use_kl_loss=false, "
                          "actor_rollout_ref.actor.policy_loss=nll and actor_rollout_ref.ref.enable=false")
    check_unused_keys(cfg)
    bad = [s for s in cfg.stages if s not in STAGES]
    if bad:
        raise ConfigError(f"stages has unknown stage(s) {bad}; known: {list(STAGES)}")
    for key in POSITIVE:
        if _get(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {_get(cfg, key)}")
    alpha = cfg.select.alpha
    if not (isinstance(alpha, float | int) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ConfigError(f"select.alpha must be in [0, 1] (kept when R(c) > alpha), got {alpha}")
    if cfg.reason.backend == "http" and not cfg.reason.http.model:
        raise ConfigError("reason.backend=http needs reason.http.model (the served model name)")
    t = cfg.trainer
    if t.backend == "local" and (t.n_gpus_per_node * t.nnodes != 1 or t.ray_address):
        raise ConfigError(f"trainer.backend=local runs one worker in this process: it needs trainer.n_gpus_per_node=1 "
                          f"and trainer.nnodes=1 (got {t.n_gpus_per_node} x {t.nnodes}) and no trainer.ray_address")
    if t.resume_mode == "resume_path" and not t.resume_from_path:
        raise ConfigError("trainer.resume_mode=resume_path needs trainer.resume_from_path")
    if t.device == "auto":
        import torch

        t.device = "cuda" if torch.cuda.is_available() else "cpu"
    if t.default_local_dir is None:
        t.default_local_dir = str(cfg.run_path / "checkpoints")
    # The update's length is known once its trajectories are selected: the workers start with a one-step
    # schedule and the update stage rebuilds optimizer and schedule for its steps (``init_sft``).
    actor.optim.total_training_steps = max(actor.optim.total_training_steps, 1)
    return cfg


def load_sophia_config(config_name: str = DEFAULT_CONFIG_NAME, overrides: list[str] | None = None,
                       config_dir: str | Path = CONFIG_DIR) -> SophiaConfig:
    """Compose ``<config_dir>/<config_name>.yaml`` on the schema with ``key=value`` overrides; finalized."""
    return load_config(config_name, overrides, config_dir=config_dir, schema=SophiaConfig,
                       finalize_fn=finalize_sophia)
