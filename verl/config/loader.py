"""Compose, check and finalize the typed config.

Two ways in, same result (a finalized :class:`~verl.config.schema.RLConfig` dataclass):

- programmatic / tests / argparse-style mains::

      cfg = load_config("ttrv", ["actor_rollout_ref.rollout.n=8"], config_dir="recipes/ttrv/config")

- a Hydra entry point (``--config-dir`` / ``--config-name`` / overrides come from the command line)::

      from verl.config.loader import DEFAULT_CONFIG_DIR, from_hydra

      @hydra.main(config_path=str(DEFAULT_CONFIG_DIR), config_name="ppo_trainer", version_base=None)
      def main(hydra_cfg: DictConfig) -> None:
          cfg = from_hydra(hydra_cfg)  # unknown-key check + OmegaConf.to_object + finalize
          run(cfg)

``finalize`` computes derived values once, on the driver; workers receive the finished dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from verl.config import schema
from verl.config.schema import CHOICES, LOGGER_CHOICES, SCHEMA_NAME, RLConfig, register_configs

__all__ = ["DEFAULT_CONFIG_DIR", "ConfigError", "declared_entry_point", "derive_total_steps", "finalize",
           "from_hydra", "load_config", "to_yaml"]

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A config that cannot be used: unknown key, bad value, inconsistent settings."""


# ---------------------------------------------------------------- composition
def _field_names(obj_type: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj_type)] if dataclasses.is_dataclass(obj_type) else []


def _unknown_key_message(full_key: str, obj_type: Any, origin: str) -> str:
    parent, _, key = full_key.rpartition(".")
    valid = _field_names(obj_type)
    hint = difflib.get_close_matches(key, valid, n=1)
    msg = f"unknown config key '{full_key}' ({origin})"
    if hint:
        msg += f"; did you mean '{(parent + '.' if parent else '') + hint[0]}'?"
    if valid:
        msg += f" Valid keys under '{parent or '<root>'}': {', '.join(valid)}"
    return msg


def _check_unknown_keys(node: Any, path: str = "") -> None:
    """Reject keys the schema does not define (``+key=value`` overrides slip past Hydra's struct mode)."""
    if not isinstance(node, DictConfig):
        return
    obj_type = OmegaConf.get_type(node)
    valid = set(_field_names(obj_type))
    for key in node.keys():
        full = f"{path}.{key}" if path else str(key)
        if valid and key not in valid:
            raise ConfigError(_unknown_key_message(full, obj_type, "added by an override or a YAML file"))
        _check_unknown_keys(node._get_node(key), full)


def _explain(err: Exception, config_name: str, config_dir: Path, root: type = RLConfig) -> ConfigError:
    """Turn Hydra / OmegaConf composition errors into one message naming the key and the config."""
    cause = err
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    where = f"config '{config_name}' in {config_dir}: {first}"
    full_key = getattr(cause, "full_key", None)
    if isinstance(cause, OmegaConfBaseException) and full_key and type(cause).__name__ in (
            "ConfigAttributeError", "ConfigKeyError"):
        return ConfigError(_unknown_key_message(full_key, getattr(cause, "object_type", None), where))
    # Errors raised while merging a YAML file carry the OmegaConf details only in the message text.
    m_key = re.search(r"Key '[^']+' not in '(\w+)'", str(err))
    m_full = re.search(r"full_key: (\S+)", str(err))
    if m_key and m_full:
        import sys

        owner = getattr(schema, m_key.group(1), None) or getattr(sys.modules.get(root.__module__), m_key.group(1), None)
        return ConfigError(_unknown_key_message(m_full.group(1), owner, where))
    text = str(err) if cause is err else f"{err}\n{cause}"
    return ConfigError(f"cannot compose config '{config_name}' in {config_dir}: {text}")


def from_hydra(hydra_cfg: DictConfig, schema: type = RLConfig, finalize_fn: Callable[[Any], Any] | None = None) -> Any:
    """Composed Hydra config -> finalized dataclass (rejects unknown keys; drops the ``hydra`` node).

    ``schema``: the expected root dataclass; ``finalize_fn``: its finalizer (default :func:`finalize`)."""
    if "hydra" in hydra_cfg:
        hydra_cfg = hydra_cfg.copy()
        with open_dict(hydra_cfg):
            del hydra_cfg["hydra"]
    _check_unknown_keys(hydra_cfg)
    try:
        obj = OmegaConf.to_object(hydra_cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {e}") from e
    if not isinstance(obj, schema):
        raise ConfigError(f"config does not use the schema {schema.__name__}: its defaults list must start with "
                          f"'{SCHEMA_NAME}' or a config that does (got {type(obj).__name__})")
    return (finalize_fn or finalize)(obj)


def _searchpath_override(primary_yaml: Path) -> str:
    try:
        own = OmegaConf.select(OmegaConf.load(primary_yaml), "hydra.searchpath", default=None) or []
    except Exception:  # a broken YAML: let Hydra report it with its own message
        own = []
    paths = [str(p) for p in own]
    if not {"pkg://verl.config", DEFAULT_CONFIG_DIR.as_uri()} & set(paths):
        paths.append(DEFAULT_CONFIG_DIR.as_uri())
    return "hydra.searchpath=[" + ",".join(f"'{p}'" for p in paths) + "]"


def load_config(config_name: str = "ppo_trainer", overrides: list[str] | None = None,
                config_dir: str | Path | None = None, schema: type = RLConfig,
                finalize_fn: Callable[[Any], Any] | None = None) -> Any:
    """Compose ``<config_dir>/<config_name>.yaml`` (default dir: ``verl/config``) with dotted overrides.

    The YAML's defaults list pulls in the schema from the ConfigStore; an unknown key or a value of the
    wrong type raises :class:`ConfigError` naming it. Returns the finalized dataclass. ``schema``: the root
    dataclass for this call only: a subclass of :class:`RLConfig` with extra sections, or a recipe's own
    root that reuses the framework's sections (then ``finalize_fn`` validates it; default :func:`finalize`).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    register_configs(schema)
    cdir = Path(config_dir).expanduser().resolve() if config_dir is not None else DEFAULT_CONFIG_DIR
    if not cdir.is_dir():
        raise ConfigError(f"config_dir {cdir} is not a folder")
    name = config_name[:-5] if config_name.endswith(".yaml") else config_name
    if not (cdir / f"{name}.yaml").is_file():
        found = sorted(p.stem for p in cdir.glob("*.yaml"))
        raise ConfigError(f"no config '{name}.yaml' in {cdir}; found: {found}")
    overrides = list(overrides or [])
    if cdir != DEFAULT_CONFIG_DIR and not any(o.lstrip("+~").startswith("hydra.searchpath") for o in overrides):
        # Hydra honours hydra.searchpath only in the primary config; add verl/config so that recipe YAMLs
        # at any depth can inherit `ppo_trainer` (keeping the primary YAML's own search path entries).
        overrides.append(_searchpath_override(cdir / f"{name}.yaml"))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(cdir), version_base=None):
            composed = compose(config_name=name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise _explain(e, name, cdir, schema) from e
    finally:
        GlobalHydra.instance().clear()
        register_configs()
    return from_hydra(composed, schema, finalize_fn)


def declared_entry_point(config_name: str, config_dir: str | Path | None = None) -> str | None:
    """The ``entry_point`` a YAML sets, itself or through the YAML files of its defaults list (the last one
    wins), read without composing: a recipe config with its own sections names its command even where the
    root schema cannot compose it. None when no file sets it or a file cannot be read."""
    cdir = Path(config_dir).expanduser().resolve() if config_dir is not None else DEFAULT_CONFIG_DIR
    path = cdir / f"{config_name.removesuffix('.yaml')}.yaml"
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # missing or broken: load_config reports it with its own message
        return None
    if not isinstance(raw, dict):
        return None
    if isinstance(raw.get("entry_point"), str):
        return raw["entry_point"]
    for parent in reversed([d for d in raw.get("defaults") or [] if isinstance(d, str) and d != "_self_"]):
        found = declared_entry_point(parent, cdir)
        if found is not None:
            return found
    return None


def to_yaml(cfg: RLConfig) -> str:
    """The resolved config as YAML (for logs and trackers)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


# ---------------------------------------------------------------- derived values and validation
def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check_choices(cfg: RLConfig) -> None:
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {list(allowed)}")
    for name in cfg.trainer.logger:
        if name not in LOGGER_CHOICES:
            raise ConfigError(f"trainer.logger contains {name!r}; allowed: {list(LOGGER_CHOICES)}")


def _check_registry(key: str, value: str, module: str, getter: str) -> None:
    """Check a registry key (advantage estimator, policy loss) against the registry itself."""
    import importlib

    mod = importlib.import_module(module)
    try:
        getattr(mod, getter)(value)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{key}={value!r} is not registered: {e}") from e


def _check_method_config(cfg: RLConfig) -> None:
    """The method's own start-up check of the sections it reads (``check_config(cfg)``, e.g. ``reward.name`` and
    ``reward.kwargs`` of a recipe's reward registry), if the method class has one; errors become ConfigError."""
    from verl.trainer.method import method_class

    check = getattr(method_class(cfg.algorithm.method), "check_config", None)
    if check is None:
        return
    try:
        check(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)) from e


def check_loss_agg_mode(key: str, value: str) -> None:
    """``value`` must be one of the aggregation modes of :mod:`verl.algos.policy_loss` (the one list)."""
    from verl.algos.policy_loss import AGG_MODES

    if value not in AGG_MODES:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {list(AGG_MODES)}")


def _positive(cfg: RLConfig, *keys: str) -> None:
    for key in keys:
        v = _get(cfg, key)
        if v is not None and v <= 0:
            raise ConfigError(f"{key} must be positive, got {v}")


def finalize(cfg: RLConfig) -> RLConfig:
    """Validate and fill derived values (in place; returns ``cfg``). Idempotent; run once on the driver."""
    if not isinstance(cfg, RLConfig):
        raise ConfigError(f"finalize expects an RLConfig, got {type(cfg).__name__}")
    _check_choices(cfg)
    d, arr, t = cfg.data, cfg.actor_rollout_ref, cfg.trainer
    actor, rollout = arr.actor, arr.rollout
    _positive(cfg, "data.max_prompt_length", "data.max_response_length", "data.train_batch_size",
              "data.val_batch_size", "actor_rollout_ref.actor.ppo_mini_batch_size",
              "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "actor_rollout_ref.actor.ppo_epochs",
              "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
              "actor_rollout_ref.actor.log_prob_max_token_len_per_gpu", "actor_rollout_ref.rollout.n",
              "actor_rollout_ref.rollout.n_votes", "actor_rollout_ref.rollout.max_new_tokens",
              "actor_rollout_ref.rollout.tensor_parallel_size", "actor_rollout_ref.rollout.val_sample_n",
              "trainer.total_epochs", "trainer.total_training_steps",
              "trainer.n_gpus_per_node", "trainer.nnodes")
    if not d.train_files:
        raise ConfigError("data.train_files is empty")
    if actor.ppo_mini_batch_size > d.train_batch_size:
        raise ConfigError(f"actor_rollout_ref.actor.ppo_mini_batch_size ({actor.ppo_mini_batch_size} prompts) "
                          f"> data.train_batch_size ({d.train_batch_size} prompts)")
    if d.train_batch_size % actor.ppo_mini_batch_size:
        raise ConfigError(f"data.train_batch_size ({d.train_batch_size}) must be a multiple of "
                          f"actor_rollout_ref.actor.ppo_mini_batch_size ({actor.ppo_mini_batch_size})")
    if not 0.0 < rollout.gpu_memory_utilization <= 1.0:
        raise ConfigError(f"actor_rollout_ref.rollout.gpu_memory_utilization must be in (0, 1], "
                          f"got {rollout.gpu_memory_utilization}")
    if not 0.0 <= actor.optim.lr_warmup_steps_ratio <= 1.0:
        raise ConfigError(f"actor_rollout_ref.actor.optim.lr_warmup_steps_ratio must be in [0, 1], "
                          f"got {actor.optim.lr_warmup_steps_ratio}")
    if len(actor.optim.betas) != 2:
        raise ConfigError(f"actor_rollout_ref.actor.optim.betas needs 2 values, got {list(actor.optim.betas)}")
    _check_registry("algorithm.adv_estimator", cfg.algorithm.adv_estimator, "verl.algos.advantage",
                    "get_adv_estimator")
    _check_registry("actor_rollout_ref.actor.policy_loss", actor.policy_loss, "verl.algos.policy_loss",
                    "get_policy_loss")
    check_loss_agg_mode("actor_rollout_ref.actor.loss_agg_mode", actor.loss_agg_mode)
    _check_registry("algorithm.method", cfg.algorithm.method, "verl.trainer.method", "method_class")
    _check_method_config(cfg)
    from verl.algos.rollout_correction import check_correction

    try:
        check_correction(cfg.algorithm.rollout_correction)
    except ValueError as e:
        raise ConfigError(str(e)) from None

    # rollout budget: n_votes vote, n of them train
    if rollout.n_votes is None:
        rollout.n_votes = rollout.n
    if rollout.n_votes < rollout.n:
        raise ConfigError(f"actor_rollout_ref.rollout.n_votes ({rollout.n_votes}) must be >= "
                          f"actor_rollout_ref.rollout.n ({rollout.n}): the update uses a subset of the votes")
    if rollout.max_new_tokens is None:
        rollout.max_new_tokens = d.max_response_length
    if rollout.max_model_len is None:
        rollout.max_model_len = d.max_prompt_length + rollout.max_new_tokens

    # reference policy
    if arr.ref.enable is None:
        arr.ref.enable = actor.use_kl_loss
    elif actor.use_kl_loss and not arr.ref.enable:
        raise ConfigError("actor_rollout_ref.actor.use_kl_loss=true needs the reference policy, "
                          "but actor_rollout_ref.ref.enable=false")

    # reward
    spec = cfg.reward.custom_reward_function
    if spec:
        path, sep, fn = spec.rpartition(":")
        if not sep or not path.endswith(".py") or not fn:
            raise ConfigError(f"reward.custom_reward_function={spec!r} must look like 'path/to/file.py:function'")
        if not Path(path).expanduser().is_file():
            raise ConfigError(f"reward.custom_reward_function: file not found: {path}")

    # trainer
    if t.device == "auto":
        import torch

        t.device = "cuda" if torch.cuda.is_available() else "cpu"
    if rollout.tensor_parallel_size > 1 and (rollout.name == "hf" or t.device == "cpu"):
        raise ConfigError(f"actor_rollout_ref.rollout.tensor_parallel_size={rollout.tensor_parallel_size} needs the "
                          f"vLLM engine on CUDA (rollout.name={rollout.name!r}, trainer.device={t.device!r})")
    if t.default_local_dir is None:
        t.default_local_dir = str(Path("checkpoints") / t.project_name / t.experiment_name)
    if t.backend == "local" and (t.n_gpus_per_node * t.nnodes != 1 or t.ray_address):
        raise ConfigError(f"trainer.backend=local runs one worker in this process: it needs "
                          f"trainer.n_gpus_per_node=1 and trainer.nnodes=1 (got {t.n_gpus_per_node} x {t.nnodes}) "
                          "and no trainer.ray_address")
    if t.resume_mode == "resume_path" and not t.resume_from_path:
        raise ConfigError("trainer.resume_mode=resume_path needs trainer.resume_from_path")
    if t.total_training_steps is not None:
        actor.optim.total_training_steps = t.total_training_steps
    return cfg


def derive_total_steps(cfg: RLConfig, num_prompts: int) -> int:
    """Training steps for ``num_prompts`` adaptation prompts: ``trainer.total_training_steps`` if set, else
    ``ceil(num_prompts / data.train_batch_size) * trainer.total_epochs`` (the last batch of an epoch may be
    short). Writes the result into ``trainer.total_training_steps`` and ``actor.optim.total_training_steps``.
    """
    if num_prompts <= 0:
        raise ConfigError(f"no adaptation prompts (num_prompts={num_prompts}); check data.train_files")
    steps = cfg.trainer.total_training_steps
    if steps is None:
        steps = math.ceil(num_prompts / cfg.data.train_batch_size) * cfg.trainer.total_epochs
    cfg.trainer.total_training_steps = steps
    cfg.actor_rollout_ref.actor.optim.total_training_steps = steps
    return steps
