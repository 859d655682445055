"""Random-weight folders shaped like the published Qwen2-VL-2B / Qwen2.5-VL-3B / InternVL3-2B-hf checkpoints.

Public API
----------
- ``build_real_shape(model, out_dir, *, layers=None, vision_layers=None, full=False, hidden=None,
  vision_hidden=None, seed=0, dtype=torch.bfloat16, device="cpu") -> Path``: writes config.json (the published
  values, depth reduced unless ``full``), random weights as sharded safetensors with
  ``model.safetensors.index.json``, generation_config.json, the real tokenizer (:mod:`verl.models.qwen_tokenizer`),
  chat template, preprocessor / processor / video preprocessor configs and ``real_shape.json`` (what was reduced).
- ``REAL_SHAPES``: ``{name: RealShape}`` for ``qwen2-vl-2b``, ``qwen2.5-vl-3b``, ``internvl3-2b``.
- ``shape_config(model, ...) -> PretrainedConfig``: the config alone (no weights).
- CLI: ``python -m verl.models.real_shape --model qwen2.5-vl-3b --out DIR [--layers L --vision-layers V]
  [--hidden H --vision-hidden VH] [--full]``.

Reductions. Depth: ``layers`` / ``vision_layers`` (default 2 / 2; ``full`` keeps the published depth); Qwen2.5-VL
keeps the published full-attention vision blocks that still exist, or the last block when none does. Width
(``hidden`` / ``vision_hidden``, default published): the head dimension stays (128 text, 80 / 64 vision), so
the mrope sections [16, 24, 24] stay valid; heads = width / head_dim, KV heads keep the published query-per-KV
ratio where the head count allows (at least one), intermediate sizes scale with the width. The vocabulary,
tokenizer, special-token ids, chat template, image processor (patch 14, merge 2, min/max pixels; InternVL 448
tiles) never change.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

QWEN_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
QWEN_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 3136, 12845056


@dataclass(frozen=True)
class RealShape:
    """The published shape of one checkpoint (text and vision towers)."""

    arch: str  # config.model_type
    tokenizer_family: str
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
    fullatt_block_indexes: tuple[int, ...] = ()
    extra_text: dict[str, Any] = field(default_factory=dict)


REAL_SHAPES: dict[str, RealShape] = {
    "qwen2-vl-2b": RealShape("qwen2_vl", "qwen2-vl", 1536, 8960, 28, 12, 2, 151936, 32768, True,
                             1280, 5120, 32, 16, extra_text={"max_window_layers": 28}),
    "qwen2.5-vl-3b": RealShape("qwen2_5_vl", "qwen2.5-vl", 2048, 11008, 36, 16, 2, 151936, 128000, True,
                               1280, 3420, 32, 16, fullatt_block_indexes=(7, 15, 23, 31),
                               extra_text={"max_window_layers": 70}),
    "internvl3-2b": RealShape("internvl", "internvl3", 1536, 8960, 28, 12, 2, 151674, 32768, False,
                              1024, 4096, 24, 16, extra_text={"max_window_layers": 70}),
}
MRoPE_SECTION = [16, 24, 24]


def _width(hidden: int, heads: int, kv_heads: int, intermediate: int, new: int | None, what: str):
    """(hidden, heads, kv_heads, intermediate) at width ``new`` with the published head dimension."""
    if new is None or new == hidden:
        return hidden, heads, kv_heads, intermediate
    head_dim = hidden // heads
    if new % head_dim or new <= 0:
        raise ValueError(f"{what}={new} must be a positive multiple of the head dimension {head_dim}")
    n = new // head_dim
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
        "sliding_window": 32768, "use_sliding_window": False, "attention_dropout": 0.0, "initializer_range": 0.02,
        "bos_token_id": 151643, "eos_token_id": 151645, "tie_word_embeddings": s.tie_word_embeddings,
        **s.extra_text,
    }
    if s.arch == "internvl":
        from transformers import InternVLConfig

        text.update(model_type="qwen2", rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
        vision = {"hidden_size": vh, "num_hidden_layers": n_vlayers, "num_attention_heads": vheads,
                  "intermediate_size": vinter, "image_size": [448, 448], "patch_size": [14, 14],
                  "attention_bias": True, "use_qk_norm": False, "norm_type": "layer_norm", "hidden_act": "gelu",
                  "layer_norm_eps": 1e-6, "layer_scale_init_value": 0.1, "use_absolute_position_embeddings": True,
                  "use_mean_pooling": True, "attention_dropout": 0.0, "projection_dropout": 0.0}
        return InternVLConfig(vision_config=vision, text_config=text, image_token_id=151667, image_seq_length=256,
                              downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
                              vision_feature_select_strategy="default", tie_word_embeddings=s.tie_word_embeddings)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": list(MRoPE_SECTION)}
    ids = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
           "vision_end_token_id": 151653}
    if s.arch == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = {"depth": n_vlayers, "embed_dim": vh, "hidden_size": h, "mlp_ratio": s.vision_intermediate // s.vision_hidden,
                  "num_heads": vheads, "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2,
                  "temporal_patch_size": 2, "hidden_act": "quick_gelu"}
        return Qwen2VLConfig(text_config=text, vision_config=vision, **ids, tie_word_embeddings=s.tie_word_embeddings)
    from transformers import Qwen2_5_VLConfig

    fullatt = [i for i in s.fullatt_block_indexes if i < n_vlayers] or [n_vlayers - 1]
    vision = {"depth": n_vlayers, "hidden_size": vh, "intermediate_size": vinter, "num_heads": vheads,
              "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
              "window_size": 112, "out_hidden_size": h, "fullatt_block_indexes": fullatt, "tokens_per_second": 2,
              "hidden_act": "silu"}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids, tie_word_embeddings=s.tie_word_embeddings)


def _image_processor(arch: str):
    if arch == "internvl":
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        return GotOcr2ImageProcessorPil(size={"height": 448, "width": 448}, crop_to_patches=False, min_patches=1,
                                        max_patches=12, image_mean=[0.485, 0.456, 0.406],
                                        image_std=[0.229, 0.224, 0.225], resample=3)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(size={"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS},
                                    patch_size=14, temporal_patch_size=2, merge_size=2, image_mean=QWEN_IMAGE_MEAN,
                                    image_std=QWEN_IMAGE_STD, resample=3)


def _generation_config(arch: str):
    from transformers import GenerationConfig

    if arch == "internvl":
        return GenerationConfig(bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
    published = {"qwen2_vl": (1.0, 0.01), "qwen2_5_vl": (1.05, 0.1)}[arch]
    return GenerationConfig(bos_token_id=151643, pad_token_id=151643, eos_token_id=[151645, 151643], do_sample=True,
                            repetition_penalty=published[0], temperature=published[1], top_p=0.001, top_k=1)


def build_real_shape(model: str, out_dir: str | Path, *, layers: int | None = None, vision_layers: int | None = None,
                     full: bool = False, hidden: int | None = None, vision_hidden: int | None = None, seed: int = 0,
                     dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> Path:
    """Write a random-weight folder shaped like the published ``model`` checkpoint into ``out_dir``."""
    from verl.models.load import model_class
    from verl.models.processors import processor_class_for
    from verl.models.qwen_tokenizer import (
        INTERNVL3_HF_CHAT_TEMPLATE,
        QWEN2_VL_CHAT_TEMPLATE,
        build_qwen_tokenizer,
    )

    config = shape_config(model, layers=layers, vision_layers=vision_layers, full=full, hidden=hidden,
                          vision_hidden=vision_hidden)
    s = REAL_SHAPES[model]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        net = model_class(s.arch)(config)
    net = net.to(dtype).eval()
    net.generation_config = _generation_config(s.arch)
    n_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    # at least two shards, as the releases ship (the 3B: 2 x ~4 GB)
    net.save_pretrained(out, safe_serialization=True, max_shard_size=max(n_bytes // 2 + 1, 1 << 20))
    del net

    template = INTERNVL3_HF_CHAT_TEMPLATE if s.arch == "internvl" else QWEN2_VL_CHAT_TEMPLATE
    tok = build_qwen_tokenizer(s.tokenizer_family, template)
    kwargs: dict[str, Any] = {"chat_template": template}
    if s.arch == "internvl":
        kwargs["image_seq_length"] = config.image_seq_length
    processor = processor_class_for(s.arch)(image_processor=_image_processor(s.arch), tokenizer=tok, **kwargs)
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
