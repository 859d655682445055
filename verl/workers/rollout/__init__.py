"""Rollout engines behind one interface: ``make_rollout("auto" | "vllm" | "hf", ...)``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from verl.workers.rollout.base import RolloutEngine, SamplingSpec

__all__ = ["RolloutEngine", "SamplingSpec", "make_rollout", "sampling_defaults"]


def __getattr__(name: str):  # lazy, so that `python -m verl.workers.rollout.vllm_compat` stays light
    if name in ("RolloutEngine", "SamplingSpec"):
        from verl.workers.rollout import base

        return getattr(base, name)
    raise AttributeError(name)

_CFG_KEYS = {  # SamplingSpec field -> accepted config attribute names (first found wins)
    "n": ("n",),
    "temperature": ("temperature",),
    "top_p": ("top_p",),
    "top_k": ("top_k",),
    "max_new_tokens": ("max_new_tokens", "response_length", "max_tokens"),
    "do_sample": ("do_sample",),
}


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def sampling_defaults(rollout_config: Any = None, **overrides: Any) -> SamplingSpec:
    """A :class:`SamplingSpec` from a rollout config section (dataclass, dict or None) plus overrides."""
    from verl.workers.rollout.base import SamplingSpec

    values: dict[str, Any] = {}
    for field, names in _CFG_KEYS.items():
        for name in names:
            val = _get(rollout_config, name)
            if val is not None:
                values[field] = val
                break
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SamplingSpec.from_meta(values)


def make_rollout(
    name: str,
    model_path: str | Path | None = None,
    model: Any = None,
    processor: Any = None,
    *,
    rollout_config: Any = None,
    model_config: Any = None,
    device: str | None = None,
    seed: int = 0,
    **kw: Any,
) -> RolloutEngine:
    """Build a rollout engine. ``"auto"`` picks vLLM when it is installed, else the HF engine.

    ``rollout_config`` / ``model_config`` may be config sections (attributes or dict keys such as ``n``,
    ``temperature``, ``top_p``, ``top_k``, ``response_length``, ``gpu_memory_utilization``,
    ``max_model_len``, ``max_num_seqs``, ``enforce_eager``, ``dtype``, ``micro_batch_size``); extra
    keyword arguments go to the engine's constructor.
    """
    from verl.workers.rollout import vllm_compat

    name = (name or "auto").lower()
    if name not in ("auto", "vllm", "hf"):
        raise ValueError(f"unknown rollout engine {name!r}: expected 'auto', 'vllm' or 'hf'")
    if name == "auto":
        name = "vllm" if vllm_compat.vllm_available() else "hf"
    defaults = kw.pop("defaults", None) or sampling_defaults(rollout_config)
    path = model_path if model_path is not None else _get(model_config, "path")
    dtype = kw.pop("dtype", None) or _get(rollout_config, "dtype") or _get(model_config, "dtype")
    if name == "vllm":
        if path is None:
            raise ValueError("make_rollout('vllm') needs model_path (vLLM loads the model folder itself)")
        from verl.workers.rollout.vllm_rollout import VLLMRollout

        for key in ("gpu_memory_utilization", "max_model_len", "max_num_seqs", "enforce_eager"):
            val = _get(rollout_config, key)
            if val is not None:
                kw.setdefault(key, val)
        if dtype in ("fp32", "float32", "torch.float32"):
            dtype = "float32"
        elif dtype in ("bf16", "bfloat16", "torch.bfloat16"):
            dtype = "bfloat16"
        return VLLMRollout(path, processor=processor, defaults=defaults, device=device, dtype=dtype,
                           seed=seed, **kw)
    from verl.workers.rollout.hf import HFRollout

    if model is None:
        if path is None:
            raise ValueError("make_rollout('hf') needs a model or a model_path")
        from verl.models.load import load_vlm

        load_kw: dict[str, Any] = {"device": device or "cpu"}
        if dtype is not None:
            load_kw["dtype"] = dtype
        model, loaded_proc = load_vlm(path, **load_kw)
        processor = processor or loaded_proc
    elif processor is None:
        from verl.models.load import load_processor

        if path is None:
            raise ValueError("make_rollout('hf') with a model but no processor needs model_path")
        processor = load_processor(path)
    mbs = kw.pop("micro_batch_size", None) or _get(rollout_config, "micro_batch_size")
    return HFRollout(model, processor, defaults=defaults, seed=seed, micro_batch_size=mbs, **kw)
