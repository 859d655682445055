"""Tiny randomly initialised VLMs (~1M parameters) built fully offline, saved as ordinary HF folders.

Public API
----------
- ``build_tiny_vlm(arch, out_dir, seed=0, **overrides) -> Path``: builds and saves a tiny ``arch`` model
  (``"qwen2_vl"``, ``"qwen2_5_vl"``, ``"internvl"``) into ``out_dir`` and returns that folder. The same seed
  gives identical weights. The folder holds config.json, model.safetensors, generation_config.json,
  tokenizer files, preprocessor_config.json, video_preprocessor_config.json and the chat template, and
  loads with :func:`verl.models.load.load_vlm` (and with vLLM / stock transformers) like a real checkpoint.
- ``build_tokenizer(arch) -> PreTrainedTokenizerFast``: the offline byte-level BPE tokenizer.
- ``DEFAULT_TINY_ARCHS``: the supported arch names.
- CLI: ``python -m verl.models.tiny --arch qwen2_5_vl --out DIR --seed 0``.

Overrides (keyword arguments): ``hidden_size`` (128), ``num_layers`` (2), ``num_heads`` (4), ``num_kv_heads`` (2),
``intermediate_size`` (256), ``vision_hidden`` (64), ``vision_layers`` (2), ``patch_size`` (14),
``vocab_size`` (1024, BPE target; the model vocab is rounded up to cover every token),
``min_pixels`` (112*112) / ``max_pixels`` (224*224) for Qwen (an image is 16..64 tokens),
``image_size`` (112, InternVL tile; 16 tokens per tile) and ``max_patches`` (4, InternVL tiles).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

DEFAULT_TINY_ARCHS: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "internvl")

QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]
INTERNVL_EXTRA_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]

QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# HF-format InternVL template: one <IMG_CONTEXT> per image; the processor expands it to <img>...</img>.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are InternVL, a multimodal assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS_LINES = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
    "<|im_start|>assistant\n",
    "You are InternVL, a multimodal assistant.",
    "Look at the given image and identify what digit it shows. Choose the correct answer from the options below "
    "and respond with only the corresponding option letter (A, B, C, or D). Options:\nA. 3\nB. 7\nC. 1\nD. 9",
    "Options:\nA. 0\nB. 2\nC. 4\nD. 5\nE. 6\nF. 8",
    "A. No\nB. Yes. A:33 (B) Answer: The answer is C. Answer with the option's letter from the given choices.",
    "Describe the image in detail. Describe everything you see: shapes, strokes, colors, background, position.",
    "What is the sum of the two digits? Which digit is larger? Which number is smaller? Compute the difference.",
    "plus minus times divided by equals sum product total count how many more less than greater than larger",
    "Let me think step by step. First, the image shows a handwritten digit. Therefore the final answer is",
    "Put your final answer within \\boxed{}. So the answer is \\boxed{7}. \\boxed{A} \\boxed{12}",
    "zero one two three four five six seven eight nine ten eleven twelve twenty hundred",
    "Question: Hint: Please answer the question and provide the correct option letter at the end.",
    "the a an of in on is it this that with and or not for to be are was what which who where when why how",
    "image picture photo visual information caption question reasoning solution problem number digit letter",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 + - * / = ( ) [ ] { } . , : ; ? ! ' \" % $ # @ & _ ^ ~",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz True False yes no correct wrong",
    "There is a white stroke on a black background. The digit is written in the center of the picture. "
    "The top part is curved, the bottom part is straight, and there is a loop on the left side.",
    "Based on the visual information, solve the problem. You cannot see the image but the description tells "
    "you what it shows. Answer the question as if you see the image yourself, then give the final answer.",
    "If the first digit is 4 and the second digit is 8, their sum is 12, their product is 32, "
    "and the larger one is 8. Odd even multiply add subtract half double square result value.",
    "Please reason carefully. Consider each option: option A, option B, option C, option D, option E. "
    "Select the best option. The correct option letter is B. I think the answer should be D.",
]


def _corpus() -> list[str]:
    lines = list(_CORPUS_LINES)
    for a in range(10):
        lines.append(f"{a} + {9 - a} = 9. {a} * 2 = {2 * a}. The digit {a} is shown. Answer: {chr(65 + a % 4)}")
    return lines * 4


def build_tokenizer(arch: str, vocab_size: int = 1024):
    """Offline byte-level BPE tokenizer (trained in milliseconds) wrapped in ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = QWEN_SPECIAL_TOKENS + (INTERNVL_EXTRA_TOKENS if arch == "internvl" else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if arch == "internvl":
        extra = {"start_image_token": "<img>", "end_image_token": "</img>",
                 "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
    else:
        extra = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                 "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left",
        extra_special_tokens=extra, model_max_length=4096,
    )


_DEFAULTS: dict[str, Any] = {
    "hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256,
    "vision_hidden": 64, "vision_layers": 2, "patch_size": 14, "vocab_size": 1024,
    "min_pixels": 112 * 112, "max_pixels": 224 * 224, "image_size": 112, "max_patches": 4,
}


def _text_kwargs(o: dict[str, Any], vocab: int, tok) -> dict[str, Any]:
    head_dim = o["hidden_size"] // o["num_heads"]
    return {
        "vocab_size": vocab, "hidden_size": o["hidden_size"], "intermediate_size": o["intermediate_size"],
        "num_hidden_layers": o["num_layers"], "num_attention_heads": o["num_heads"],
        "num_key_value_heads": o["num_kv_heads"], "max_position_embeddings": 4096,
        "bos_token_id": tok.convert_tokens_to_ids("<|endoftext|>"), "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id, "head_dim": head_dim, "max_window_layers": o["num_layers"],
    }


def _mrope_section(head_dim: int) -> list[int]:
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def _qwen_config(arch: str, o: dict[str, Any], vocab: int, tok):
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    text = _text_kwargs(o, vocab, tok)
    head_dim = text["head_dim"]
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                               "mrope_section": _mrope_section(head_dim)}
    vh, vheads = o["vision_hidden"], max(1, o["vision_hidden"] // 16)
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = {"depth": o["vision_layers"], "embed_dim": vh, "hidden_size": o["hidden_size"], "mlp_ratio": 2,
                  "num_heads": vheads, "patch_size": o["patch_size"], "spatial_merge_size": 2,
                  "temporal_patch_size": 2}
        return Qwen2VLConfig(text_config=text, vision_config=vision, **ids, tie_word_embeddings=False)
    from transformers import Qwen2_5_VLConfig

    vision = {"depth": o["vision_layers"], "hidden_size": vh, "intermediate_size": 2 * vh, "num_heads": vheads,
              "patch_size": o["patch_size"], "spatial_merge_size": 2, "temporal_patch_size": 2,
              "window_size": o["patch_size"] * 2 * 4, "out_hidden_size": o["hidden_size"],
              "fullatt_block_indexes": [o["vision_layers"] - 1]}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids, tie_word_embeddings=False)


def _internvl_config(o: dict[str, Any], vocab: int, tok):
    from transformers import InternVLConfig

    text = _text_kwargs(o, vocab, tok)
    text["model_type"] = "qwen2"
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    vh, size, patch = o["vision_hidden"], o["image_size"], o["patch_size"]
    vision = {"hidden_size": vh, "num_hidden_layers": o["vision_layers"], "num_attention_heads": max(1, vh // 16),
              "intermediate_size": 2 * vh, "image_size": [size, size], "patch_size": [patch, patch]}
    seq = (size // patch) ** 2 // 4  # downsample_ratio 0.5 -> pixel shuffle merges 2x2
    return InternVLConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(
        "<IMG_CONTEXT>"), image_seq_length=seq, downsample_ratio=0.5, tie_word_embeddings=False)


def _image_processor(arch: str, o: dict[str, Any]):
    if arch == "internvl":
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        size = o["image_size"]
        return GotOcr2ImageProcessorPil(size={"height": size, "width": size}, crop_to_patches=True,
                                        min_patches=1, max_patches=o["max_patches"],
                                        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": o["min_pixels"], "longest_edge": o["max_pixels"]},
        patch_size=o["patch_size"], temporal_patch_size=2, merge_size=2,
    )


def build_tiny_vlm(arch: str, out_dir: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Build a tiny random ``arch`` VLM with its tokenizer / processor and save it into ``out_dir``."""
    from verl.utils.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # before transformers' image processors import torchvision
    from transformers import GenerationConfig

    from verl.models.load import model_class
    from verl.models.processors import processor_class_for, write_video_preprocessor_config

    if arch not in DEFAULT_TINY_ARCHS:
        raise ValueError(f"unknown tiny arch {arch!r} (supported: {', '.join(DEFAULT_TINY_ARCHS)})")
    unknown = sorted(set(overrides) - set(_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown build_tiny_vlm overrides {unknown} (known: {sorted(_DEFAULTS)})")
    o = {**_DEFAULTS, **overrides}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = build_tokenizer(arch, vocab_size=o["vocab_size"])
    vocab = ((len(tok) + 63) // 64) * 64  # cover every token incl. specials, rounded for tidy shapes
    config = _internvl_config(o, vocab, tok) if arch == "internvl" else _qwen_config(arch, o, vocab, tok)

    fork_devices: list = []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = model_class(arch)(config)
    model = model.to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=config.get_text_config().bos_token_id,
        do_sample=False, max_new_tokens=32,
    )
    model.save_pretrained(out, safe_serialization=True)

    template = INTERNVL_CHAT_TEMPLATE if arch == "internvl" else QWEN_CHAT_TEMPLATE
    proc_cls = processor_class_for(arch)
    kwargs: dict[str, Any] = {"chat_template": template}
    if arch == "internvl":
        kwargs["image_seq_length"] = config.image_seq_length
    processor = proc_cls(image_processor=_image_processor(arch, o), tokenizer=tok, **kwargs)
    processor.save_pretrained(out)
    if not (out / "video_preprocessor_config.json").is_file():
        write_video_preprocessor_config(out, arch, processor.image_processor)
    (out / "tiny_vlm.json").write_text(json.dumps({"arch": arch, "seed": seed, **o}, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: build one tiny VLM folder."""
    p = argparse.ArgumentParser(description="Build a tiny offline VLM folder.")
    p.add_argument("--arch", default="qwen2_5_vl", choices=DEFAULT_TINY_ARCHS)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    path = build_tiny_vlm(args.arch, args.out, seed=args.seed)
    print(path)


if __name__ == "__main__":
    main()
