"""Random-weight folders shaped like the published Qwen2-VL-2B / Qwen2.5-VL-3B / Qwen3-VL-2B / Qwen3-VL-4B /
InternVL3-2B-hf checkpoints.

Public API
----------
- ``build_real_shape(model, out_dir, *, layers=None, vision_layers=None, full=False, hidden=None,
  vision_hidden=None, seed=0, dtype=torch.bfloat16, device="cpu") -> Path``: writes config.json (the published
  values, depth reduced unless ``full``), random weights as sharded safetensors with
  ``model.safetensors.index.json``, generation_config.json, the real tokenizer (:mod:`verl.models.qwen_tokenizer`),
  chat template, preprocessor / processor / video preprocessor configs and ``real_shape.json`` (what was reduced).
- ``REAL_SHAPES``: ``{name: RealShape}`` for ``qwen2-vl-2b``, ``qwen2.5-vl-3b``, ``qwen3-vl-2b``, ``qwen3-vl-4b``,
  ``internvl3-2b``. The family's registry entry (:mod:`verl.models.family`) builds the config and supplies the
  chat template, tokenizer family and processor classes.
- ``shape_config(model, ...) -> PretrainedConfig``: the config alone (no weights).
- CLI: ``python -m verl.models.real_shape --model qwen2.5-vl-3b --out DIR [--layers L --vision-layers V]
  [--hidden H --vision-hidden VH] [--full]``.

Reductions. Depth: ``layers`` / ``vision_layers`` (default 2 / 2; ``full`` keeps the published depth); Qwen2.5-VL
keeps the published full-attention vision blocks, Qwen3-VL its DeepStack blocks ([5, 11, 17]), that still
exist, or the last block when none does. Width (``hidden`` / ``vision_hidden``, default published): the width
per head stays (text 128, Qwen3-VL-4B 80 with head_dim 128; vision 80 / 64), so the mrope sections stay valid;
heads = width / width-per-head, KV heads keep the published query-per-KV ratio where the head count allows (at
least one), intermediate sizes scale with the width. The vocabulary, tokenizer, special-token ids, chat
template, image processor (patch 14 / Qwen3-VL 16, merge 2, min/max pixels; InternVL 448 tiles) never change.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from verl.models.family import ImageShape, VisionShape, family_of

QWEN_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
QWEN_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 3136, 12845056
_QWEN_GENERATION = {"bos_token_id": 151643, "pad_token_id": 151643, "eos_token_id": [151645, 151643],
                    "do_sample": True}


@dataclass(frozen=True)
class RealShape:
    """The published shape of one checkpoint (text and vision towers); family-specific config keys in the
    ``*_extra`` dicts; ``layer_indexes``: vision config keys holding block indexes, kept where they still exist
    when the tower is made shallower (else the last block)."""

    arch: str  # config.model_type (a registry family)
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    max_positions: int
    tie_word_embeddings: bool
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    vision_heads: int
    image: ImageShape
    generation: dict[str, Any]
    rope_theta: float = 1000000.0
    head_dim: int | None = None  # explicit where it is not hidden / heads (Qwen3)
    vision_patch: int = 14
    layer_indexes: tuple[str, ...] = ()
    text_extra: dict[str, Any] = field(default_factory=dict)
    vision_extra: dict[str, Any] = field(default_factory=dict)
    top_extra: dict[str, Any] = field(default_factory=dict)


_QWEN2_TEXT = {"sliding_window": 32768, "use_sliding_window": False}
_QWEN_IMAGE = ImageShape(patch=14, min_pixels=QWEN_MIN_PIXELS, max_pixels=QWEN_MAX_PIXELS, mean=QWEN_IMAGE_MEAN,
                         std=QWEN_IMAGE_STD, resample=3)
_QWEN3_IMAGE = ImageShape(patch=16, min_pixels=65536, max_pixels=16777216, mean=[0.5] * 3, std=[0.5] * 3,
                          resample=3)
_QWEN3_VISION = {"hidden_act": "gelu_pytorch_tanh", "num_position_embeddings": 2304, "in_channels": 3,
                 "deepstack_visual_indexes": [5, 11, 17]}
_QWEN3_GENERATION = {**_QWEN_GENERATION, "top_k": 20, "top_p": 0.8, "temperature": 0.7, "repetition_penalty": 1.0}

REAL_SHAPES: dict[str, RealShape] = {
    "qwen2-vl-2b": RealShape(
        "qwen2_vl", 1536, 8960, 28, 12, 2, 151936, 32768, True, 1280, 5120, 32, 16, _QWEN_IMAGE,
        {**_QWEN_GENERATION, "repetition_penalty": 1.0, "temperature": 0.01, "top_p": 0.001, "top_k": 1},
        text_extra={**_QWEN2_TEXT, "max_window_layers": 28},
        vision_extra={"in_channels": 3, "hidden_act": "quick_gelu"}),
    "qwen2.5-vl-3b": RealShape(
        "qwen2_5_vl", 2048, 11008, 36, 16, 2, 151936, 128000, True, 1280, 3420, 32, 16, _QWEN_IMAGE,
        {**_QWEN_GENERATION, "repetition_penalty": 1.05, "temperature": 0.1, "top_p": 0.001, "top_k": 1},
        layer_indexes=("fullatt_block_indexes",), text_extra={**_QWEN2_TEXT, "max_window_layers": 70},
        vision_extra={"in_channels": 3, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
                      "tokens_per_second": 2, "hidden_act": "silu"}),
    "qwen3-vl-2b": RealShape(
        "qwen3_vl", 2048, 6144, 28, 16, 8, 151936, 262144, True, 1024, 4096, 24, 16, _QWEN3_IMAGE,
        _QWEN3_GENERATION, rope_theta=5000000.0, head_dim=128, vision_patch=16,
        layer_indexes=("deepstack_visual_indexes",), vision_extra=_QWEN3_VISION),
    "qwen3-vl-4b": RealShape(
        "qwen3_vl", 2560, 9728, 36, 32, 8, 151936, 262144, True, 1024, 4096, 24, 16, _QWEN3_IMAGE,
        _QWEN3_GENERATION, rope_theta=5000000.0, head_dim=128, vision_patch=16,
        layer_indexes=("deepstack_visual_indexes",), vision_extra=_QWEN3_VISION),
    "internvl3-2b": RealShape(
        "internvl", 1536, 8960, 28, 12, 2, 151674, 32768, False, 1024, 4096, 24, 16,
        ImageShape(patch=14, tile=448, max_tiles=12, crop_to_patches=False, resample=3),
        {"bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": 151643},
        text_extra={**_QWEN2_TEXT, "max_window_layers": 70},
        vision_extra={"attention_bias": True, "use_qk_norm": False, "norm_type": "layer_norm", "hidden_act": "gelu",
                      "layer_norm_eps": 1e-6, "layer_scale_init_value": 0.1,
                      "use_absolute_position_embeddings": True, "use_mean_pooling": True, "attention_dropout": 0.0,
                      "projection_dropout": 0.0},
        top_extra={"image_seq_length": 256, "downsample_ratio": 0.5, "projector_hidden_act": "gelu",
                   "vision_feature_layer": -1, "vision_feature_select_strategy": "default"}),
}


def _width(hidden: int, heads: int, kv_heads: int, intermediate: int, new: int | None, what: str):
    """(hidden, heads, kv_heads, intermediate) at width ``new`` with the published width per head."""
    if new is None or new == hidden:
        return hidden, heads, kv_heads, intermediate
    per_head = hidden // heads
    if new % per_head or new <= 0:
        raise ValueError(f"{what}={new} must be a positive multiple of {per_head} (width per head)")
    n = new // per_head
    group = heads // kv_heads
    kv = n // group if n % group == 0 and n >= group else 1
    return new, n, kv, int(round(intermediate * new / hidden))


def shape_config(model: str, *, layers: int | None = None, vision_layers: int | None = None, full: bool = False,
                 hidden: int | None = None, vision_hidden: int | None = None):
    """The transformers config of ``model`` at the requested depth / width."""
    if model not in REAL_SHAPES:
        raise ValueError(f"unknown real-shape model {model!r} (supported: {', '.join(REAL_SHAPES)})")
    s = REAL_SHAPES[model]
    n_layers = s.layers if full and layers is None else (layers or 2)
    n_vlayers = s.vision_layers if full and vision_layers is None else (vision_layers or 2)
    h, heads, kv, inter = _width(s.hidden, s.heads, s.kv_heads, s.intermediate, hidden, "hidden")
    vh, vheads, _, vinter = _width(s.vision_hidden, s.vision_heads, s.vision_heads, s.vision_intermediate,
                                   vision_hidden, "vision_hidden")
    text = {
        "vocab_size": s.vocab, "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": n_layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "hidden_act": "silu",
        "max_position_embeddings": s.max_positions, "rms_norm_eps": 1e-6, "use_cache": True,
        "attention_dropout": 0.0, "initializer_range": 0.02, "bos_token_id": 151643, "eos_token_id": 151645,
        "tie_word_embeddings": s.tie_word_embeddings, "rope_theta": s.rope_theta, **s.text_extra,
    }
    if s.head_dim:
        text["head_dim"] = s.head_dim
    extra = dict(s.vision_extra)
    for key in s.layer_indexes:
        extra[key] = [i for i in extra[key] if i < n_vlayers] or [n_vlayers - 1]
    vision = VisionShape(hidden=vh, layers=n_vlayers, heads=vheads, intermediate=vinter, patch=s.vision_patch,
                         out_hidden=h, extra=extra)
    family = family_of(s.arch)
    # the published token ids of the Qwen vocabulary (the tokenizer of verl.models.qwen_tokenizer has them)
    ids = {key: _PUBLISHED_IDS[token] for key, token in family.config_token_ids.items()}
    return family.build_config(text, vision, ids, tie_word_embeddings=s.tie_word_embeddings, **s.top_extra)


_PUBLISHED_IDS = {"<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|image_pad|>": 151655,
                  "<|video_pad|>": 151656, "<IMG_CONTEXT>": 151667}


def build_real_shape(model: str, out_dir: str | Path, *, layers: int | None = None, vision_layers: int | None = None,
                     full: bool = False, hidden: int | None = None, vision_hidden: int | None = None, seed: int = 0,
                     dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> Path:
    """Write a random-weight folder shaped like the published ``model`` checkpoint into ``out_dir``."""
    from transformers import GenerationConfig

    from verl.models.processors import processor_class_for
    from verl.models.qwen_tokenizer import build_qwen_tokenizer

    config = shape_config(model, layers=layers, vision_layers=vision_layers, full=full, hidden=hidden,
                          vision_hidden=vision_hidden)
    s = REAL_SHAPES[model]
    family = family_of(s.arch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        net = family.model_cls()(config)
    net = net.to(dtype).eval()
    net.generation_config = GenerationConfig(**s.generation)
    n_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    # at least two shards, as the releases ship (the 3B: 2 x ~4 GB)
    net.save_pretrained(out, safe_serialization=True, max_shard_size=max(n_bytes // 2 + 1, 1 << 20))
    del net

    tok = build_qwen_tokenizer(family.tokenizer_family, family.chat_template)
    kwargs: dict[str, Any] = {key: getattr(config, key) for key in family.processor_kwargs}
    processor = processor_class_for(s.arch)(image_processor=family.image_processor(s.image), tokenizer=tok,
                                            chat_template=family.chat_template, **kwargs)
    processor.save_pretrained(out)
    text = config.get_text_config()
    vis = config.vision_config
    record = {"model": model, "seed": seed, "dtype": str(dtype).removeprefix("torch."), "full": full,
              "layers": text.num_hidden_layers, "published_layers": s.layers,
              "vision_layers": getattr(vis, "depth", None) or vis.num_hidden_layers,
              "published_vision_layers": s.vision_layers, "hidden": text.hidden_size, "published_hidden": s.hidden,
              "vision_hidden": getattr(vis, "embed_dim", None) or vis.hidden_size,
              "published_vision_hidden": s.vision_hidden, "parameters_bytes": n_bytes}
    (out / "real_shape.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: write one real-shaped folder."""
    p = argparse.ArgumentParser(description="Write a random-weight folder shaped like a published VLM checkpoint.")
    p.add_argument("--model", required=True, choices=sorted(REAL_SHAPES))
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=None, help="text layers (default 2; published with --full)")
    p.add_argument("--vision-layers", type=int, default=None, help="vision layers (default 2; published with --full)")
    p.add_argument("--full", action="store_true", help="published depth")
    p.add_argument("--hidden", type=int, default=None, help="text width (multiple of 128; default published)")
    p.add_argument("--vision-hidden", type=int, default=None, help="vision width (default published)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--device", default="cpu", help="where the random weights are initialised (cpu, cuda)")
    a = p.parse_args(argv)
    path = build_real_shape(a.model, a.out, layers=a.layers, vision_layers=a.vision_layers, full=a.full,
                            hidden=a.hidden, vision_hidden=a.vision_hidden, seed=a.seed,
                            dtype=getattr(torch, a.dtype), device=a.device)
    print(path)


if __name__ == "__main__":
    main()
