"""Typed SOPHIA config: dataclass schema + YAML (``recipes/sophia/config/*.yaml``) + dotted overrides.

    cfg = load_sophia_config("recipes/sophia/config/sophia_cpu_tiny.yaml", ["reason.n=4", "select.alpha=0.5"])

The YAML and every override are merged onto the structured schema in OmegaConf struct mode, so an unknown
key (in the file or on the command line) raises :class:`verl.config.loader.ConfigError` naming the full
key and the valid keys beside it; a value of the wrong type fails the same way. Choice-valued keys are
checked against ``CHOICES``.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from verl.config.loader import ConfigError, check_loss_agg_mode
from verl.config.schema import ActorConfig, FSDPConfig, ModelConfig, OptimConfig, RolloutConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent / "config" / "sophia_cpu_tiny.yaml"


@dataclass
class DataCfg:
    dir: str = "data/sophia_pairs"
    train_file: str = "sophia_train.json"  # questions SOPHIA collects trajectories for
    eval_file: str = "eval.json"  # held-out questions (VLM accuracy before / after)
    max_train: int = -1  # first questions only (-1: all)
    max_eval: int = -1


@dataclass
class CaptionCfg:
    model_path: str = "checkpoints/sophia/captioner"  # the VLM being improved (captioner and policy)
    engine: str = "hf"  # hf | vllm (caption and evaluation engine)
    dtype: str = "float32"  # engine dtype of the VLM: float32 | bfloat16 | auto
    trust_remote_code: bool = False  # for the VLM's loaders and engines
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
    target: str = "reasoning"  # reasoning (SOPHIA) | caption (baseline: SFT on the kept captions only)
    system_prompt: str = "long_reasoning"  # long_reasoning | none
    lr: float = 1e-3
    lr_scheduler_type: str = "cosine"  # constant | cosine
    min_lr_ratio: float = 0.25  # cosine to lr/4 (paper)
    warmup_steps: int = 0
    weight_decay: float = 0.05
    epochs: int = 6
    batch_size: int = 16
    micro_batch: int = 16
    loss_agg_mode: str = "token-mean"  # one of verl.algos.policy_loss.AGG_MODES
    param_dtype: str = "float32"  # FSDP2 compute dtype of the update: float32 | bfloat16
    gradient_checkpointing: bool = False
    freeze_vision_tower: bool = True
    freeze_projector: bool = False
    max_response_tokens: int = 96
    seed: int = 0


@dataclass
class EvalCfg:
    max_new_tokens: int = 72
    batch: int = 64
    base: bool = True  # also evaluate the model before the update


@dataclass
class TrainerCfg:
    project_name: str = "sophia"
    experiment_name: str = "cpu_tiny"
    log_dir: str = "logs"
    run_dir: str | None = None  # None -> <log_dir>/<project_name>/<experiment_name>
    logger: list[str] = field(default_factory=lambda: ["console", "jsonl"])
    seed: int = 0
    threads: int = 2
    stages: list[str] = field(default_factory=lambda: ["caption", "reason", "reward", "select", "update", "evaluate"])


@dataclass
class SophiaConfig:
    data: DataCfg = field(default_factory=DataCfg)
    caption: CaptionCfg = field(default_factory=CaptionCfg)
    reason: ReasonCfg = field(default_factory=ReasonCfg)
    select: SelectCfg = field(default_factory=SelectCfg)
    update: UpdateCfg = field(default_factory=UpdateCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    trainer: TrainerCfg = field(default_factory=TrainerCfg)

    @property
    def run_path(self) -> Path:
        t = self.trainer
        return Path(t.run_dir) if t.run_dir else Path(t.log_dir) / t.project_name / t.experiment_name


STAGES = ("caption", "reason", "reward", "select", "update", "evaluate")
CHOICES: dict[str, tuple[str, ...]] = {
    "caption.engine": ("hf", "vllm"),
    "caption.dtype": ("float32", "bfloat16", "auto"),
    "reason.backend": ("local", "http"),
    "select.length_unit": ("tokens", "chars"),
    "select.pick": ("shortest", "random"),
    "update.target": ("reasoning", "caption"),
    "update.system_prompt": ("long_reasoning", "none"),
    "update.lr_scheduler_type": ("constant", "cosine"),
    "update.param_dtype": ("float32", "bfloat16"),
}


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _unknown(err: OmegaConfBaseException, origin: str) -> ConfigError:
    key = getattr(err, "full_key", None) or ""
    parent, _, leaf = key.rpartition(".")
    node: Any = SophiaConfig
    for part in parent.split(".") if parent else []:
        types = {f.name: f.type for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        node = globals().get(str(types.get(part, "")), None)
    valid = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
    if key and leaf not in valid and valid:
        hint = difflib.get_close_matches(leaf, valid, n=1)
        msg = f"unknown config key '{key}' ({origin})"
        if hint:
            msg += f"; did you mean '{(parent + '.' if parent else '') + hint[0]}'?"
        return ConfigError(msg + f" Valid keys under '{parent or '<root>'}': {', '.join(valid)}")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ConfigError(f"invalid config value{f' for {key!r}' if key else ''} ({origin}): {first}")


def validate(cfg: SophiaConfig) -> SophiaConfig:
    """Check choices and ranges; returns ``cfg``."""
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise ConfigError(f"{key}={_get(cfg, key)!r} is not allowed; choose one of {list(allowed)}")
    check_loss_agg_mode("update.loss_agg_mode", cfg.update.loss_agg_mode)
    bad = [s for s in cfg.trainer.stages if s not in STAGES]
    if bad:
        raise ConfigError(f"trainer.stages has unknown stage(s) {bad}; known: {list(STAGES)}")
    for key in ("caption.k", "reason.n", "select.keep_n", "update.epochs", "update.batch_size", "update.micro_batch",
                "caption.max_new_tokens", "reason.max_new_tokens", "caption.batch_images", "reason.batch_items"):
        if _get(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {_get(cfg, key)}")
    if not 0.0 <= cfg.select.alpha < 1.0:
        raise ConfigError(f"select.alpha must be in [0, 1) (strict '>' test), got {cfg.select.alpha}")
    if cfg.reason.backend == "http" and not cfg.reason.http.model:
        raise ConfigError("reason.backend=http needs reason.http.model (the served model name)")
    return cfg


def load_sophia_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SophiaConfig:
    """Schema <- YAML file (default ``sophia_cpu_tiny.yaml``) <- ``key=value`` overrides; validated."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    base = OmegaConf.structured(SophiaConfig)
    OmegaConf.set_struct(base, True)
    try:
        merged = OmegaConf.merge(base, OmegaConf.load(path))
    except OmegaConfBaseException as e:
        raise _unknown(e, f"in {path}") from e
    for o in overrides or []:
        if "=" not in o:
            raise ConfigError(f"override {o!r} must look like key=value")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([o.lstrip("+")]))
        except OmegaConfBaseException as e:
            raise _unknown(e, f"override {o!r}") from e
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise _unknown(e, "conversion") from e
    assert isinstance(obj, SophiaConfig)
    return validate(obj)


def to_dict(cfg: SophiaConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------- typed verl configs of the VLM
def vlm_model_config(cfg: SophiaConfig, path: str | Path | None = None) -> ModelConfig:
    """The VLM (``caption.model_path`` unless ``path``) as a verl model section: loaders, engines, update."""
    u = cfg.update
    return ModelConfig(path=str(path or cfg.caption.model_path), dtype=cfg.caption.dtype,
                       trust_remote_code=cfg.caption.trust_remote_code,
                       enable_gradient_checkpointing=u.gradient_checkpointing,
                       freeze_vision_tower=u.freeze_vision_tower, freeze_projector=u.freeze_projector)


def vlm_rollout_config(cfg: SophiaConfig) -> RolloutConfig:
    """The caption / evaluation engine (``caption.engine``); sampling comes with each generate call."""
    return RolloutConfig(name=cfg.caption.engine)


def update_actor_config(cfg: SophiaConfig, total_steps: int) -> ActorConfig:
    """The update stage's actor: reward-weighted NLL (``sft_step``), no KL, ``total_steps`` optimizer steps."""
    u = cfg.update
    optim = OptimConfig(lr=u.lr, weight_decay=u.weight_decay, lr_warmup_steps=u.warmup_steps,
                        lr_scheduler_type=u.lr_scheduler_type, min_lr_ratio=u.min_lr_ratio,
                        total_training_steps=total_steps)
    return ActorConfig(optim=optim, ppo_micro_batch_size_per_gpu=u.micro_batch, loss_agg_mode=u.loss_agg_mode,
                       use_kl_loss=False, fsdp=FSDPConfig(param_dtype=u.param_dtype))
