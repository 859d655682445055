"""Tiny offline VLMs: build, save, reload, forward + generate with an image, seed determinism, sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from verl.models.family import FAMILIES
from verl.models.tiny import build_tiny_vlm, build_tokenizer

ARCHS = sorted(FAMILIES)
EXPECTED_FILES = {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                  "tokenizer_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
                  "chat_template.jinja"}
PROMPT = ("Look at the given image and identify what digit it shows. Choose the correct answer from the options "
          "below and respond with only the corresponding option letter (A, B, C, or D). Options:\nA. 3\nB. 7")


def _image(size: int, seed: int = 0):
    from PIL import Image

    arr = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    return Image.fromarray(arr)


def _messages(text: str = PROMPT) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module", params=ARCHS)
def loaded(request, tiny_vlm_path):
    from verl.models.load import load_vlm

    model, processor = load_vlm(tiny_vlm_path(request.param))
    return request.param, model.eval(), processor


def test_folder_is_a_plain_hf_folder(tiny_vlm_path):
    for arch in ARCHS:
        folder = tiny_vlm_path(arch)
        names = {p.name for p in folder.iterdir()}
        assert EXPECTED_FILES <= names, (arch, EXPECTED_FILES - names)
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["model_type"] == arch
        video = json.loads((folder / "video_preprocessor_config.json").read_text())
        assert video["video_processor_type"].endswith("VideoProcessor")


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_specials_and_roundtrip(arch):
    tok = build_tokenizer(arch)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.padding_side == "left"
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    if arch == "internvl":
        specials += ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    ids = [tok.convert_tokens_to_ids(t) for t in specials]
    assert ids == list(range(len(specials)))  # specials come first, in this order
    text = "Answer: \\boxed{7} (B) sum 3 + 4 = 7"
    assert tok.decode(tok(text)["input_ids"]) == text
    # one special token stays one token inside running text
    assert tok("a<|image_pad|>b")["input_ids"].count(ids[5]) == 1
    assert 700 <= len(tok) <= 2048


def test_config_consistent_with_tokenizer(loaded):
    arch, model, processor = loaded
    tok = processor.tokenizer
    cfg = model.config
    assert cfg.get_text_config().vocab_size >= len(tok)
    if arch == "internvl":
        assert cfg.image_token_id == tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    else:
        assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
        assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
        text = cfg.get_text_config()
        assert sum(text.rope_parameters["mrope_section"]) == text.head_dim // 2
    assert processor.image_token_id == cfg.image_token_id


def test_param_count_sane(loaded):
    _, model, _ = loaded
    n = sum(p.numel() for p in model.parameters())
    assert 300_000 <= n <= 2_000_000, n


@pytest.mark.parametrize("size", [56, 112])
def test_forward_and_generate_with_image(loaded, size):
    arch, model, processor = loaded
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    inputs = processor(images=[_image(size)], text=[text], return_tensors="pt")
    n_img = int((inputs["input_ids"] == model.config.image_token_id).sum())
    # Qwen: min_pixels 112*112 -> 8x8 patches of 14 px, merged 2x2 -> 16; InternVL: one 112 px tile -> 8x8/4 = 16
    assert n_img == 16
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], model.config.get_text_config().vocab_size)
    assert torch.isfinite(out.logits).all()
    gen = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] > inputs["input_ids"].shape[1]
    assert isinstance(processor.batch_decode(gen[:, inputs["input_ids"].shape[1]:])[0], str)


def test_image_changes_logits(loaded):
    """The image really reaches the language model: two different images give different logits."""
    _, model, processor = loaded
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    with torch.no_grad():
        a = model(**processor(images=[_image(56, 0)], text=[text], return_tensors="pt")).logits[0, -1]
        b = model(**processor(images=[_image(56, 1)], text=[text], return_tensors="pt")).logits[0, -1]
    assert not torch.allclose(a, b)


def test_seed_determinism(tmp_path, arch: str = "qwen2_vl"):  # seeding is family-independent
    a = load_file(build_tiny_vlm(arch, tmp_path / "a", seed=3, hidden_size=32, vision_hidden=32,
                                 intermediate_size=64) / "model.safetensors")
    b = load_file(build_tiny_vlm(arch, tmp_path / "b", seed=3, hidden_size=32, vision_hidden=32,
                                 intermediate_size=64) / "model.safetensors")
    c = load_file(build_tiny_vlm(arch, tmp_path / "c", seed=4, hidden_size=32, vision_hidden=32,
                                 intermediate_size=64) / "model.safetensors")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_build_does_not_touch_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_vlm("qwen2_vl", tmp_path / "m", seed=0, hidden_size=32, vision_hidden=32, intermediate_size=64)
    assert torch.equal(torch.rand(3), expected)


def test_bad_arch_and_override(tmp_path):
    with pytest.raises(ValueError, match="llava"):
        build_tiny_vlm("llava", tmp_path)
    with pytest.raises(ValueError, match="hidden_sise"):
        build_tiny_vlm("qwen2_vl", tmp_path, hidden_sise=3)


def test_cli(tmp_path, capsys):
    from verl.models.tiny import main

    main(["--arch", "qwen2_vl", "--out", str(tmp_path / "cli"), "--seed", "1"])
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    assert str(tmp_path / "cli") in capsys.readouterr().out
