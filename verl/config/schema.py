"""Typed config: dataclass schemas behind the Hydra YAML (verl key names).

The root :class:`RLConfig` is registered in Hydra's ``ConfigStore`` as ``ppo_trainer_schema``; YAML files
pull it in through their defaults list (``defaults: [ppo_trainer_schema, _self_]``), so a misspelled key in
a YAML file or a command-line override fails at composition with an error naming the key.

Choice-valued keys are plain ``str`` here (OmegaConf has no ``Literal``); :data:`CHOICES` lists their
allowed values and :func:`verl.config.loader.finalize` checks them. ``None`` means "derived in
``finalize``" where a field's comment says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

SCHEMA_NAME = "ppo_trainer_schema"


# ---------------------------------------------------------------- data
@dataclass
class DataConfig:
    train_files: list[str] = field(default_factory=lambda: ["data/digits/test_noise_open.json"])
    val_files: list[str] = field(default_factory=lambda: ["data/digits/test_noise_open.json"])
    format: str = "auto"  # auto | json | parquet
    image_root: str | None = None  # base folder for relative image paths of JSON records
    max_prompt_length: int = 1024  # tokens, image tokens included
    max_response_length: int = 1024
    train_batch_size: int = 8  # prompts per step
    val_batch_size: int = 64  # prompts per validation generate call
    shuffle: bool = True
    seed: int = 1
    on_invalid: str = "error"  # error | skip
    system_prompt: str | None = None
    max_samples: int = -1  # -1 = all (first records of each file list)
    train_subset: int = -1  # > 0: adapt on this many adaptation prompts drawn at random with data.seed


# ---------------------------------------------------------------- actor / rollout / reference
@dataclass
class ModelConfig:
    path: str = "checkpoints/tiny_base/qwen2_5_vl"
    trust_remote_code: bool = False
    dtype: str = "bfloat16"  # rollout engine dtype: float32 | bfloat16 | auto (the actor keeps fp32 master weights)
    enable_gradient_checkpointing: bool = True
    freeze_vision_tower: bool = False
    freeze_projector: bool = False
    attn_implementation: str = "sdpa"  # transformers attention backend of the actor and the HF engine
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank instead of all weights (verl/workers/lora.py)
    lora_alpha: float = 16.0  # LoRA scale = lora_alpha / lora_rank
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])  # language-model Linear names
    lora_vision_tower: bool = False  # also adapt every Linear of the vision tower
    lora_projector: bool = False  # also adapt every Linear of the projector


@dataclass
class OptimConfig:
    lr: float = 5e-7
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lr_warmup_steps_ratio: float = 0.0
    lr_warmup_steps: int = -1  # >= 0 overrides the ratio
    lr_scheduler_type: str = "constant"  # constant | cosine (transformers' schedulers, linear warm-up)
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    num_cycles: float = 0.5
    total_training_steps: int = -1  # filled by derive_total_steps (for the schedule)


@dataclass
class FSDPConfig:
    param_dtype: str = "bfloat16"  # compute dtype of the sharded parameters: float32 | bfloat16
    reduce_dtype: str = "float32"  # gradient reduce-scatter dtype: float32 | bfloat16
    reshard_after_forward: bool = True  # free the gathered parameters after forward (re-gather for backward)
    cpu_offload: bool = False  # keep parameters, gradients and optimizer state on the CPU (FSDP2 offload policy)


@dataclass
class ActorConfig:
    optim: OptimConfig = field(default_factory=OptimConfig)
    grad_clip: float = 1.0
    ppo_mini_batch_size: int = 1  # prompts per optimizer step (x rollout.n samples)
    ppo_max_token_len_per_gpu: int = 16384  # tokens per update forward/backward (a shared prompt counted once)
    log_prob_max_token_len_per_gpu: int = 16384  # tokens per old / reference log-prob forward
    ppo_micro_batch_size_per_gpu: int | None = None  # optional cap on samples per micro-batch (None: tokens only)
    share_prompt: bool = True  # a prompt's samples read one prompt pass (False: one per sample; same numbers)
    skip_zero_adv_groups: bool = True  # groups with all-zero advantages skip forward/backward in the update
    ppo_epochs: int = 1
    policy_loss: str = "vanilla"  # registry key of verl.algos.policy_loss (vanilla | nll)
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float = 3.0  # dual-clip bound
    loss_agg_mode: str = "token-mean"  # one of verl.algos.policy_loss.AGG_MODES
    use_kl_loss: bool = True
    kl_loss_coef: float = 0.001
    kl_loss_type: str = "low_var_kl"
    entropy_coeff: float = 0.0
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)


@dataclass
class RolloutConfig:
    name: str = "auto"  # auto (vllm if importable) | vllm | hf
    n: int = 16  # samples per prompt used for the update
    n_votes: int | None = 32  # samples per prompt that vote; None -> n; must be >= n
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int | None = None  # None -> data.max_response_length
    gpu_memory_utilization: float = 0.65  # vLLM on CUDA (on CPU the KV cache is VLLM_CPU_KVCACHE_SPACE GiB)
    tensor_parallel_size: int = 1  # vLLM on CUDA: GPUs per engine
    enforce_eager: bool = False  # vLLM: no CUDA graphs / compilation
    free_cache_engine: bool = True  # CUDA: rollout asleep outside generation (vLLM sleep mode; HF: weights to CPU)
    max_model_len: int | None = None  # None -> max_prompt_length + max_new_tokens
    max_num_seqs: int | None = None  # vLLM scheduler cap; None = engine default
    micro_batch_size: int | None = None  # HF engine: prompts per generate call; None = all
    val_sample_n: int = 8  # N of mean@N / maj@N validation (greedy is always run; 1 disables sampled validation)


@dataclass
class RefConfig:
    enable: bool | None = None  # None -> actor.use_kl_loss (reads the actor's log_prob_max_token_len_per_gpu)


@dataclass
class ActorRolloutRefConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    ref: RefConfig = field(default_factory=RefConfig)


# ---------------------------------------------------------------- algorithm / reward / trainer
@dataclass
class RolloutCorrectionConfig:
    """verl's ``algorithm.rollout_correction`` (verl/algos/rollout_correction.py; docs/rollout_correction.md).
    Off by default: the levels are null. On, the trainer computes old log-probs in a separate pass."""

    rollout_is: str | None = None  # null | token | sequence: truncated importance weights pi_old / pi_rollout
    rollout_is_threshold: float = 2.0  # upper truncation of the importance weights
    rollout_rs: str | None = None  # null | token | sequence | geometric: reject units whose ratio leaves the bounds
    rollout_rs_threshold: float | None = None  # rejection upper bound; null -> rollout_is_threshold
    rollout_rs_threshold_lower: float | None = None  # rejection lower bound; null -> 1 / upper


@dataclass
class AlgorithmConfig:
    adv_estimator: str = "grpo"  # registry key of verl.algos.advantage (grpo | drgrpo | grpo_batch | ...)
    method: str = "grpo"  # verl.trainer.method: registered name or "package.module:Class" (score/metrics/train_rows)
    method_kwargs: dict[str, Any] = field(default_factory=dict)  # the method's own settings, checked by it at start-up
    norm_adv_by_std_in_grpo: bool = True
    epsilon: float = 1e-6
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)


@dataclass
class RewardConfig:
    """What scores the samples. ``name`` and ``kwargs`` are read by the method (``algorithm.method``): a recipe's
    method looks ``name`` up in its own reward registry (recipes/ttrv: docs/rewards.md) and passes ``kwargs``
    to it unchanged; the generic ``grpo`` method scores with ``custom_reward_function`` (also given ``kwargs``)."""

    name: str = ""  # a reward of the method's registry ("" = none: custom_reward_function)
    kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of that reward, checked at start-up
    custom_reward_function: str | None = None  # "path/to/file.py:function" (a group reward, docs/rewards.md)


@dataclass
class GuardConfig:
    """Label-free collapse guard (verl/trainer/guards.py): window stats of the adaptation rollouts vs the base."""

    enable: bool = True
    action: str = "warn"  # warn | stop | rollback (to the last checkpoint saved while passing, then stop)
    window: int = 4  # training steps pooled per check
    max_invalid_ratio: float = 0.5  # trips above this when also above the base's
    min_entropy_ratio: float = 0.1  # trips when answer entropy across items < this x the base's
    min_base_entropy: float = 0.1  # nats; the entropy check needs a base above this
    max_majority_ratio: float | None = None  # None = not checked
    max_length_ratio: float | None = None  # mean response length vs the base's; None = not checked
    min_length_ratio: float | None = None


@dataclass
class TrainerConfig:
    project_name: str = "verl"
    experiment_name: str = "run"
    total_epochs: int = 2
    total_training_steps: int | None = None  # None -> ceil(prompts / train_batch_size) * total_epochs
    n_gpus_per_node: int = 1  # with device=cpu: number of CPU workers per node
    nnodes: int = 1
    device: str = "auto"  # auto (cuda if available on the driver) | cpu | cuda
    logger: list[str] = field(default_factory=lambda: ["console", "jsonl"])
    log_dir: str = "logs"
    save_freq: int = -1  # steps between checkpoints (plus one at the end); <= 0: none
    test_freq: int = -1  # steps between validations; <= 0: only before and after training
    val_before_train: bool = True
    default_local_dir: str | None = None  # None -> checkpoints/<project_name>/<experiment_name>
    resume_mode: str = "auto"  # auto | disable | resume_path
    resume_from_path: str | None = None
    backend: str = "ray"  # ray (one Ray actor per worker) | local (one worker in this process, no Ray)
    ray_address: str | None = None  # None -> start a Ray instance on this node, bound to 127.0.0.1
    ray_num_cpus: int | None = None
    ray_dashboard_host: str = "127.0.0.1"
    include_dashboard: bool = False
    seed: int = 1
    max_actor_ckpt_to_keep: int | None = None  # None = keep all
    guard: GuardConfig = field(default_factory=GuardConfig)


@dataclass
class RLConfig:
    """Root config: ``data``, ``actor_rollout_ref``, ``algorithm``, ``reward``, ``trainer``, ``entry_point``."""

    data: DataConfig = field(default_factory=DataConfig)
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=ActorRolloutRefConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # the module whose `python -m` runs this config; verl.trainer.main names it and stops when it is another
    entry_point: str = "verl.trainer.main"


# Allowed values of choice-valued keys (dotted path -> choices); checked by loader.finalize. Registry-valued
# keys (adv_estimator, policy_loss, method, loss_agg_mode; reward.name by the method) are checked against the lists next to their code.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("auto", "json", "parquet"),
    "data.on_invalid": ("error", "skip"),
    "actor_rollout_ref.model.dtype": ("float32", "bfloat16", "auto"),
    "actor_rollout_ref.actor.optim.lr_scheduler_type": ("constant", "cosine"),
    "actor_rollout_ref.actor.kl_loss_type": ("low_var_kl", "k1", "k2", "k3", "kl", "abs", "mse"),
    "actor_rollout_ref.actor.fsdp.param_dtype": ("float32", "bfloat16"),
    "actor_rollout_ref.actor.fsdp.reduce_dtype": ("float32", "bfloat16"),
    "actor_rollout_ref.rollout.name": ("auto", "vllm", "hf"),
    "trainer.device": ("auto", "cpu", "cuda"),
    "trainer.resume_mode": ("auto", "disable", "resume_path"),
    "trainer.backend": ("ray", "local"),
    "trainer.guard.action": ("warn", "stop", "rollback"),
}
LOGGER_CHOICES = ("console", "jsonl", "tensorboard", "wandb")


def register_configs(schema: type = RLConfig) -> None:
    """Store the root schema in Hydra's ConfigStore (idempotent); a recipe may pass a subclass that adds
    its own sections (``recipes/ttrv/online.py``) or its own root made of the framework's sections and its
    own (``recipes/sophia/config.py``)."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=schema)


register_configs()
