"""vlm_forward: the shared-prompt forward equals the plain per-sample HF forward (fp32 log-probs within
1e-5, gradients within 1e-4 relative) with left-padded prompts, different response lengths and image
sizes in one micro-batch; the vision tower runs once per unique prompt and the language model reads each
prompt once; frozen towers get no gradient."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from verl.models.family import FAMILIES
from verl.models.vlm_forward import encode_images, response_log_probs, vision_modules

ARCHS = sorted(FAMILIES)


def _png(seed: int, h: int = 56, w: int = 56) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module", params=ARCHS)
def arch_model(request, tiny_vlm_path):
    from verl.models.load import load_vlm

    torch.manual_seed(0)
    model, processor = load_vlm(tiny_vlm_path(request.param), dtype=torch.float32, device="cpu")
    model.eval()
    return request.param, model, processor


def make_batch(processor, n_samples: int = 3, R: int = 5, seed: int = 0):
    """Two prompts of different lengths (left padded) and image sizes, ``n_samples`` right-padded responses
    each (lengths 5, 3, 4 | 5, 5, 2)."""
    from verl.models.multimodal import batch_prompt_inputs, build_prompt_inputs, pad_id_of

    prompts = [[{"role": "user", "content": "<image>\nWhich digit is it?"}],
               [{"role": "user", "content": "Look: <image>\nName the digit shown in this picture, please."}]]
    sizes = [(56, 56), (112, 56)]  # different image-token counts per prompt
    per_prompt = [build_prompt_inputs(processor, p, [_png(i, *sizes[i])]) for i, p in enumerate(prompts)]
    rows = [per_prompt[i] for i in range(len(prompts)) for _ in range(n_samples)]
    coll = batch_prompt_inputs(processor, rows)
    b = len(rows)
    g = torch.Generator().manual_seed(seed)
    responses = torch.randint(20, 200, (b, R), generator=g)
    resp_mask = torch.ones(b, R, dtype=torch.long)
    for row, n_valid in {1: 3, 2: 4, 5: 2}.items():
        if row < b:
            resp_mask[row, n_valid:] = 0
    responses[resp_mask == 0] = pad_id_of(processor)
    input_ids = torch.cat([coll["input_ids"], responses], dim=1)
    attention_mask = torch.cat([coll["attention_mask"], resp_mask], dim=1)
    image_inputs = [{k: v for k, v in p.items() if k in ("pixel_values", "image_grid_thw")} for p in per_prompt]
    prompt_index = [i for i in range(len(prompts)) for _ in range(n_samples)]
    return input_ids, attention_mask, resp_mask, image_inputs, prompt_index


def naive_log_probs(arch, model, input_ids, attention_mask, image_inputs, prompt_index, R):
    """Plain HF forward with each sample's pixels repeated (what we avoid), positions as generation."""
    logits = naive_logits(arch, model, input_ids, attention_mask, image_inputs, prompt_index, R)
    return logits.log_softmax(-1).gather(-1, input_ids[:, -R:, None]).squeeze(-1)


def naive_logits(arch, model, input_ids, attention_mask, image_inputs, prompt_index, R):
    """The next-token logits ``[b, R, V]`` that predict each response token (plain forward, as above)."""
    kwargs = {"pixel_values": torch.cat([image_inputs[p]["pixel_values"] for p in prompt_index])}
    if not FAMILIES[arch].mrope:
        kwargs["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    else:
        kwargs["image_grid_thw"] = torch.cat([image_inputs[p]["image_grid_thw"] for p in prompt_index])
        kwargs["mm_token_type_ids"] = (input_ids == model.config.image_token_id).int()
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    if hasattr(model.model, "rope_deltas"):
        model.model.rope_deltas = None
    return out.logits[:, -R - 1:-1].float()


@pytest.mark.parametrize("share_prompt", [True, False])
def test_log_probs_match_plain_forward(arch_model, share_prompt):
    arch, model, processor = arch_model
    ids, att, rmask, imgs, pidx = make_batch(processor)
    R = rmask.shape[1]
    with torch.no_grad():
        lp, ent = response_log_probs(model, ids, att, R, imgs, pidx, calc_entropy=True, share_prompt=share_prompt)
        ref = naive_log_probs(arch, model, ids, att, imgs, pidx, R)
    assert lp.shape == (6, R) and ent.shape == (6, R)
    m = rmask.bool()
    assert (lp - ref).abs()[m].max() <= 1e-5, (lp - ref).abs()[m].max()
    # a distribution over a vocabulary of V tokens: 0 <= H <= ln V, and log-probs are <= 0
    assert (lp[m] <= 0).all() and (ent[m] >= 0).all() and (ent[m] <= np.log(model.config.text_config.vocab_size) + 1e-4).all()
    with torch.no_grad():  # temperature divides the logits
        lp_t, _ = response_log_probs(model, ids, att, R, imgs, pidx, temperature=2.0)
    assert not torch.allclose(lp_t[m], lp[m], atol=1e-3)


def test_self_certainty_from_the_same_forward(arch_model):
    """token_stat=self_certainty gives KL(uniform || next-token distribution) per response token."""
    from verl.algos.utils import self_certainty_from_logits

    arch, model, processor = arch_model
    ids, att, rmask, imgs, pidx = make_batch(processor)
    R = rmask.shape[1]
    with torch.no_grad():
        _, sc = response_log_probs(model, ids, att, R, imgs, pidx, calc_entropy=True, token_stat="self_certainty")
        logits = naive_logits(arch, model, ids, att, imgs, pidx, R)
    m = rmask.bool()
    assert (sc - self_certainty_from_logits(logits)).abs()[m].max() <= 1e-4
    assert (sc[m] >= -1e-6).all()  # a KL divergence


def test_language_model_reads_each_prompt_once(arch_model):
    """2 prompts x 3 samples: the decoder runs on 2 packed rows [prompt | 3 slots], not on 6 sequences."""
    from verl.models.vlm_forward import language_model

    arch, model, processor = arch_model
    ids, att, rmask, imgs, pidx = make_batch(processor, n_samples=3)
    shapes: list[tuple[int, ...]] = []
    h = language_model(model).register_forward_hook(
        lambda mod, args, kwargs, out: shapes.append(tuple(kwargs["inputs_embeds"].shape[:2])), with_kwargs=True)
    try:
        with torch.no_grad():
            response_log_probs(model, ids, att, rmask.shape[1], imgs, pidx)
            response_log_probs(model, ids, att, rmask.shape[1], imgs, pidx, share_prompt=False)
    finally:
        h.remove()
    longest_prompt = int(att[:, : ids.shape[1] - rmask.shape[1]].sum(-1).max())
    slot = rmask.shape[1] - 1  # the last response token is never an input
    assert shapes == [(2, longest_prompt + 3 * slot), (6, longest_prompt + slot)]


def test_vision_tower_runs_once_per_unique_prompt(arch_model):
    arch, model, processor = arch_model
    ids, att, rmask, imgs, pidx = make_batch(processor, n_samples=3)
    tower = vision_modules(model)["tower"]
    calls: list[int] = []
    h = tower.register_forward_hook(lambda mod, args, kwargs, out: calls.append(
        int((args[0] if args else kwargs.get("pixel_values", kwargs.get("hidden_states"))).shape[0])), with_kwargs=True)
    try:
        with torch.no_grad():
            response_log_probs(model, ids, att, rmask.shape[1], imgs, pidx)
    finally:
        h.remove()
    unique_rows = sum(int(p["pixel_values"].shape[0]) for p in imgs)
    assert calls == [unique_rows]  # one call, with the pixels of the 2 prompts (not of the 6 samples)


def test_gradients_match_naive_path(arch_model):
    arch, model, processor = arch_model
    ids, att, rmask, imgs, pidx = make_batch(processor)
    R = rmask.shape[1]
    w = torch.linspace(-1.0, 1.0, 6)[:, None] * rmask

    def grads(fn):
        model.zero_grad(set_to_none=True)
        (fn() * w).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    g_fast = grads(lambda: response_log_probs(model, ids, att, R, imgs, pidx)[0])
    g_naive = grads(lambda: naive_log_probs(arch, model, ids, att, imgs, pidx, R))
    model.zero_grad(set_to_none=True)
    assert g_fast.keys() == g_naive.keys()
    tower_ids = {id(p) for p in vision_modules(model)["tower"].parameters()}
    tower_names = {n for n, p in model.named_parameters() if id(p) in tower_ids}
    assert tower_names & g_fast.keys()  # the (trainable) tower did get gradients
    for k in g_naive:
        rel = (g_fast[k] - g_naive[k]).norm() / g_naive[k].norm().clamp(min=1e-12)
        assert rel <= 1e-4, (k, float(rel))


def test_frozen_tower_encodes_without_grad(arch_model):
    arch, model, processor = arch_model
    ids, att, rmask, imgs, pidx = make_batch(processor)
    vis = [p for m in vision_modules(model).values() for p in m.parameters()]
    for p in vis:
        p.requires_grad_(False)
    seen: list[bool] = []
    h = vision_modules(model)["tower"].register_forward_hook(
        lambda mod, args, out: seen.append(torch.is_grad_enabled()))
    try:
        lp, _ = response_log_probs(model, ids, att, rmask.shape[1], imgs, pidx)
        (lp * rmask).sum().backward()
    finally:
        h.remove()
        for p in vis:
            p.requires_grad_(True)
    assert seen == [False]
    assert all(p.grad is None for p in vis)
    assert model.lm_head.weight.grad is not None or model.get_input_embeddings().weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_bad_inputs_raise_clear_errors(arch_model):
    arch, model, processor = arch_model
    ids, att, rmask, imgs, pidx = make_batch(processor)
    R = rmask.shape[1]
    with torch.no_grad():
        with pytest.raises(ValueError, match="do not match"):  # prompt 0's rows get prompt 1's image count
            response_log_probs(model, ids, att, R, imgs, [1, 1, 1, 0, 0, 0])
        with pytest.raises(ValueError, match="different prompt tokens"):  # one index, two prompts
            response_log_probs(model, ids, att, R, imgs, [1, 0, 0, 1, 1, 1])
        with pytest.raises(ValueError, match="out of range"):
            response_log_probs(model, ids, att, R, imgs, [0, 0, 0, 1, 1, 2])
        with pytest.raises(ValueError, match="no images"):
            response_log_probs(model, ids, att, R, [None, None], pidx)


def test_image_token_sampled_in_response_is_text(arch_model):
    """A response may contain the image placeholder id: it is a text token, not an image slot."""
    arch, model, processor = arch_model
    ids, att, rmask, imgs, pidx = make_batch(processor)
    R = rmask.shape[1]
    ids = ids.clone()
    ids[0, -2] = model.config.image_token_id
    with torch.no_grad():
        lp, _ = response_log_probs(model, ids, att, R, imgs, pidx)
    assert torch.isfinite(lp).all()


def test_encode_images_shapes(arch_model):
    arch, model, processor = arch_model
    *_, imgs, _ = make_batch(processor)
    with torch.no_grad():
        one = encode_images(model, imgs[0]["pixel_values"], imgs[0].get("image_grid_thw"))
        grids = [p["image_grid_thw"] for p in imgs if "image_grid_thw" in p]
        both = encode_images(model, torch.cat([p["pixel_values"] for p in imgs]), torch.cat(grids) if grids else None)
    assert one.embeds.dim() == 2 and one.embeds.shape[1] == model.config.text_config.hidden_size
    assert torch.allclose(both.embeds[: one.embeds.shape[0]], one.embeds, atol=1e-5)
    assert (one.deepstack is not None) == FAMILIES[arch].deepstack
    for a, b in zip(one.deepstack or [], both.deepstack or [], strict=True):
        assert a.shape == one.embeds.shape and torch.allclose(b[: a.shape[0]], a, atol=1e-5)


def test_internvl3_5_qwen3_language_model(tiny_vlm_path):
    """InternVL3.5 (-HF) is the `internvl` family with a Qwen3 language model (q/k norms, explicit head_dim):
    the shared-prompt forward equals the per-sample forward there too."""
    import copy

    from transformers import InternVLForConditionalGeneration, Qwen3Config

    from verl.models.load import load_vlm

    base, processor = load_vlm(tiny_vlm_path("internvl"), dtype=torch.float32, device="cpu")
    cfg = copy.deepcopy(base.config)
    text = {k: v for k, v in base.config.text_config.to_dict().items() if k not in ("model_type", "architectures")}
    cfg.text_config = Qwen3Config(**text)
    torch.manual_seed(0)
    model = InternVLForConditionalGeneration(cfg).eval()
    assert type(model.model.language_model).__name__ == "Qwen3Model"
    ids, att, rmask, imgs, pidx = make_batch(processor)
    R = rmask.shape[1]
    with torch.no_grad():
        lp, _ = response_log_probs(model, ids, att, R, imgs, pidx)
        ref = naive_log_probs("internvl", model, ids, att, imgs, pidx, R)
    assert (lp - ref).abs()[rmask.bool()].max() <= 1e-5
