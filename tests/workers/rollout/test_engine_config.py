"""Every engine key of the schema reaches the engine: vLLM's constructor arguments, the HF engine's loader."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from verl.config.schema import ModelConfig, RolloutConfig
from verl.models.family import FAMILIES
from verl.workers.rollout import make_rollout


@pytest.fixture()
def fake_vllm(monkeypatch):
    """``vllm.LLM`` / ``SamplingParams`` stand-ins that record the engine's keyword arguments."""
    from verl.workers.rollout import vllm_compat

    seen: dict = {}

    class LLM:
        def __init__(self, **kwargs):
            seen.update(kwargs)

    archs = [f.vllm_architecture for f in FAMILIES.values()]
    monkeypatch.setattr(vllm_compat, "prepare_vllm_env", lambda *a, **k: None)
    monkeypatch.setattr(vllm_compat, "import_vllm", lambda: types.SimpleNamespace(
        LLM=LLM, SamplingParams=dict, ModelRegistry=types.SimpleNamespace(get_supported_archs=lambda: archs)))
    return seen


@pytest.fixture(scope="module")
def tiny(load_tiny):
    return load_tiny("qwen2_5_vl")


def _vllm_kwargs(fake_vllm, tiny, device: str, rollout: RolloutConfig, model: ModelConfig | None = None) -> dict:
    fake_vllm.clear()
    make_rollout(rollout, model or ModelConfig(path=str(tiny[0])), device=device, seed=3, processor=tiny[2])
    return dict(fake_vllm)


def test_defaults_reach_vllm(fake_vllm, tiny):
    kw = _vllm_kwargs(fake_vllm, tiny, "cuda", RolloutConfig(name="vllm"))
    r, m = RolloutConfig(), ModelConfig()
    assert (kw["tensor_parallel_size"], kw["gpu_memory_utilization"], kw["enforce_eager"]) == (
        r.tensor_parallel_size, r.gpu_memory_utilization, r.enforce_eager)
    assert (kw["dtype"], kw["trust_remote_code"], kw["enable_sleep_mode"], kw["seed"]) == (
        m.dtype, m.trust_remote_code, r.free_cache_engine, 3)
    assert "max_model_len" not in kw and "max_num_seqs" not in kw  # None: vLLM's own choice


@pytest.mark.parametrize(("key", "value", "kwarg"), [
    ("tensor_parallel_size", 4, "tensor_parallel_size"),
    ("gpu_memory_utilization", 0.3, "gpu_memory_utilization"),
    ("enforce_eager", True, "enforce_eager"),
    ("free_cache_engine", False, "enable_sleep_mode"),
    ("max_model_len", 777, "max_model_len"),
    ("max_num_seqs", 5, "max_num_seqs"),
])
def test_each_rollout_key_changes_what_vllm_receives(fake_vllm, tiny, key, value, kwarg):
    base = _vllm_kwargs(fake_vllm, tiny, "cuda", RolloutConfig(name="vllm"))
    kw = _vllm_kwargs(fake_vllm, tiny, "cuda", dataclasses.replace(RolloutConfig(name="vllm"), **{key: value}))
    assert kw[kwarg] == value and base.get(kwarg) != value


@pytest.mark.parametrize(("key", "value"), [("dtype", "float32"), ("trust_remote_code", True)])
def test_each_model_key_changes_what_vllm_receives(fake_vllm, tiny, key, value):
    model = dataclasses.replace(ModelConfig(path=str(tiny[0])), **{key: value})
    assert _vllm_kwargs(fake_vllm, tiny, "cuda", RolloutConfig(name="vllm"), model)[key] == value


def test_vllm_on_cpu_has_no_sleep_mode_or_gpu_memory_share(fake_vllm, tiny):
    kw = _vllm_kwargs(fake_vllm, tiny, "cpu", RolloutConfig(name="vllm", free_cache_engine=True))
    assert kw["enable_sleep_mode"] is False and "gpu_memory_utilization" not in kw


def test_vllm_loads_the_processor_with_trust_remote_code(fake_vllm, tiny, monkeypatch):
    import verl.models.load as load

    calls = []
    monkeypatch.setattr(load, "load_processor", lambda path, trust_remote_code: calls.append(trust_remote_code)
                        or tiny[2])
    make_rollout(RolloutConfig(name="vllm"), ModelConfig(path=str(tiny[0]), trust_remote_code=True), device="cpu",
                 seed=0)
    assert calls == [True]


def test_hf_engine_loads_with_the_model_keys(tiny, monkeypatch):
    import verl.models.load as load

    real, calls = load.load_vlm, []

    def spy(path, **kw):
        calls.append(kw)
        return real(path, **kw)

    monkeypatch.setattr(load, "load_vlm", spy)
    model = ModelConfig(path=str(tiny[0]), dtype="bfloat16", trust_remote_code=True, attn_implementation="eager")
    eng = make_rollout(RolloutConfig(name="hf", micro_batch_size=3), model, device="cpu", seed=0)
    assert calls == [{"dtype": "bfloat16", "device": "cpu", "trust_remote_code": True, "attn_implementation": "eager"}]
    assert next(eng.model.parameters()).dtype == torch.bfloat16
    assert eng.model.config._attn_implementation == "eager" and eng.micro_batch_size == 3
