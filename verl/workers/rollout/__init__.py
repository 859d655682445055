"""Rollout engines behind one interface: ``make_rollout(rollout_config, model_config, ...)``.

``rollout.name`` picks the engine: ``vllm``, ``hf``, or ``auto`` (vLLM when it is installed, else HF). Engine
settings come from the typed config sections (:class:`~verl.config.schema.RolloutConfig`,
:class:`~verl.config.schema.ModelConfig`); sampling settings come with every ``generate`` call
(``meta_info``, see :class:`~verl.workers.rollout.base.SamplingSpec`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from verl.config.schema import ModelConfig, RolloutConfig
    from verl.workers.rollout.base import RolloutEngine, SamplingSpec

__all__ = ["ENGINES", "RolloutEngine", "SamplingSpec", "make_rollout", "resolve_engine"]

ENGINES = ("auto", "vllm", "hf")


def __getattr__(name: str):  # lazy, so that `python -m verl.workers.rollout.vllm_compat` stays light
    if name in ("RolloutEngine", "SamplingSpec"):
        from verl.workers.rollout import base

        return getattr(base, name)
    raise AttributeError(name)


def resolve_engine(name: str) -> str:
    """``auto`` -> ``vllm`` when vLLM is installed, else ``hf``; other names are checked and returned."""
    from verl.workers.rollout import vllm_compat

    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}: expected one of {', '.join(ENGINES)}")
    if name == "auto":
        return "vllm" if vllm_compat.vllm_available() else "hf"
    return name


def make_rollout(rollout: RolloutConfig, model: ModelConfig, *, device: str, seed: int,
                 hf_model: Any = None, processor: Any = None) -> RolloutEngine:
    """Build the engine ``rollout.name`` for the model folder ``model.path`` on ``device``.

    ``hf_model`` / ``processor``: already loaded objects to reuse (HF engine: the model; both engines: the
    processor); otherwise they are loaded from ``model.path`` with ``model.dtype`` and
    ``model.trust_remote_code``.
    """
    name = resolve_engine(rollout.name)
    if name == "vllm":
        from verl.workers.rollout.vllm_rollout import VLLMRollout

        return VLLMRollout(model, rollout, processor=processor, device=device, seed=seed)
    from verl.models.load import load_processor, load_vlm
    from verl.workers.rollout.hf import HFRollout

    if hf_model is None:
        hf_model, loaded = load_vlm(model.path, dtype=model.dtype, device=device,
                                    trust_remote_code=model.trust_remote_code,
                                    attn_implementation=model.attn_implementation)
        processor = processor or loaded
    elif processor is None:
        processor = load_processor(model.path, trust_remote_code=model.trust_remote_code)
    return HFRollout(hf_model, processor, seed=seed, micro_batch_size=rollout.micro_batch_size,
                     offload=rollout.free_cache_engine)
