"""Tiny randomly initialised VLMs (~1M parameters) built fully offline, saved as ordinary HF folders.

Public API
----------
- ``build_tiny_vlm(arch, out_dir, seed=0, **overrides) -> Path``: builds and saves a tiny ``arch`` model
  (any ``model_type`` of the family registry :data:`verl.models.family.FAMILIES`: ``qwen2_vl``,
  ``qwen2_5_vl``, ``qwen3_vl``, ``internvl``) into ``out_dir`` and returns that folder. The same seed
  gives identical weights. The folder holds config.json, model.safetensors, generation_config.json,
  tokenizer files, preprocessor_config.json, video_preprocessor_config.json and the chat template, and
  loads with :func:`verl.models.load.load_vlm` (and with vLLM / stock transformers) like a real checkpoint.
- ``build_tokenizer(arch) -> PreTrainedTokenizerFast``: the offline byte-level BPE tokenizer.
- CLI: ``python -m verl.models.tiny --arch qwen2_5_vl --out DIR --seed 0``.

The family's registry entry supplies the config class and vision-tower layout, the chat template (the
published one), the tokenizer's vision tokens and the image processor; this module only picks tiny sizes.

Overrides (keyword arguments): ``hidden_size`` (128), ``num_layers`` (2), ``num_heads`` (4), ``num_kv_heads`` (2),
``intermediate_size`` (256), ``vision_hidden`` (64), ``vision_layers`` (2), ``patch_size`` (the family's
published patch: 14, Qwen3-VL 16), ``vocab_size`` (1024, BPE target; the model vocab is rounded up to cover
every token), ``min_pixels`` / ``max_pixels`` for Qwen (default (8 * patch * ... )^2 so that an image is 16..64
tokens: 112^2 / 224^2 at patch 14), ``image_size`` (112, InternVL tile; 16 tokens per tile) and
``max_patches`` (4, InternVL tiles).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from verl.models.family import FAMILIES, ImageShape, ModelFamily, VisionShape, family_of

QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]

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

    family = family_of(arch)
    specials = QWEN_SPECIAL_TOKENS + [t for t in family.tokenizer_tokens.values() if t not in QWEN_SPECIAL_TOKENS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left",
        extra_special_tokens=dict(family.tokenizer_tokens), model_max_length=4096,
    )


_DEFAULTS: dict[str, Any] = {
    "hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256,
    "vision_hidden": 64, "vision_layers": 2, "patch_size": None, "vocab_size": 1024,
    "min_pixels": None, "max_pixels": None, "image_size": 112, "max_patches": 4,
}


def _config(family: ModelFamily, o: dict[str, Any], vocab: int, tok) -> Any:
    """The tiny config of ``family`` (sizes from ``o``, token ids from ``tok``)."""
    text = {
        "vocab_size": vocab, "hidden_size": o["hidden_size"], "intermediate_size": o["intermediate_size"],
        "num_hidden_layers": o["num_layers"], "num_attention_heads": o["num_heads"],
        "num_key_value_heads": o["num_kv_heads"], "max_position_embeddings": 4096,
        "bos_token_id": tok.convert_tokens_to_ids("<|endoftext|>"), "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id, "head_dim": o["hidden_size"] // o["num_heads"],
        "rope_theta": 10000.0,
    }
    vh = o["vision_hidden"]
    vision = VisionShape(hidden=vh, layers=o["vision_layers"], heads=max(1, vh // 16), intermediate=2 * vh,
                         patch=o["patch_size"], out_hidden=o["hidden_size"], image_size=o["image_size"])
    ids = {key: tok.convert_tokens_to_ids(t) for key, t in family.config_token_ids.items()}
    top: dict[str, Any] = {"tie_word_embeddings": False}
    if "image_seq_length" in family.processor_kwargs:  # InternVL: pixel shuffle (ratio 0.5) merges 2x2 patches
        top.update(image_seq_length=(o["image_size"] // o["patch_size"]) ** 2 // 4, downsample_ratio=0.5)
    return family.build_config(text, vision, ids, **top)


def _image_shape(o: dict[str, Any]) -> ImageShape:
    return ImageShape(patch=o["patch_size"], min_pixels=o["min_pixels"], max_pixels=o["max_pixels"],
                      tile=o["image_size"], max_tiles=o["max_patches"], crop_to_patches=True)


def build_tiny_vlm(arch: str, out_dir: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Build a tiny random ``arch`` VLM with its tokenizer / processor and save it into ``out_dir``."""
    from verl.utils.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # before transformers' image processors import torchvision
    from transformers import GenerationConfig

    from verl.models.processors import processor_class_for, write_video_preprocessor_config

    family = family_of(arch)
    unknown = sorted(set(overrides) - set(_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown build_tiny_vlm overrides {unknown} (known: {sorted(_DEFAULTS)})")
    o = {**_DEFAULTS, **overrides}
    o["patch_size"] = o["patch_size"] or family.default_patch
    o["min_pixels"] = o["min_pixels"] or (8 * o["patch_size"]) ** 2  # 16 image tokens (merge 2)
    o["max_pixels"] = o["max_pixels"] or (16 * o["patch_size"]) ** 2  # 64 image tokens
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = build_tokenizer(arch, vocab_size=o["vocab_size"])
    vocab = ((len(tok) + 63) // 64) * 64  # cover every token incl. specials, rounded for tidy shapes
    config = _config(family, o, vocab, tok)

    fork_devices: list = []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = family.model_cls()(config)
    model = model.to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=config.get_text_config().bos_token_id,
        do_sample=False, max_new_tokens=32,
    )
    model.save_pretrained(out, safe_serialization=True)

    kwargs: dict[str, Any] = {key: getattr(config, key) for key in family.processor_kwargs}
    processor = processor_class_for(arch)(image_processor=family.image_processor(_image_shape(o)), tokenizer=tok,
                                          chat_template=family.chat_template, **kwargs)
    processor.save_pretrained(out)
    if not (out / "video_preprocessor_config.json").is_file():
        write_video_preprocessor_config(out, arch, processor.image_processor)
    (out / "tiny_vlm.json").write_text(json.dumps({"arch": arch, "seed": seed, **o}, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: build one tiny VLM folder."""
    p = argparse.ArgumentParser(description="Build a tiny offline VLM folder.")
    p.add_argument("--arch", default="qwen2_5_vl", choices=sorted(FAMILIES))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    path = build_tiny_vlm(args.arch, args.out, seed=args.seed)
    print(path)


if __name__ == "__main__":
    main()
