"""The model-family registry: everything that differs between the supported VLM families, in one table.

Public API
----------
- ``FAMILIES``: ``{config.model_type: ModelFamily}``, the supported families (only those whose transformers
  module is installed).
- ``family_of(model_type_or_model) -> ModelFamily``: the entry of a ``model_type`` string or of a model
  (its ``config.model_type``); ``ValueError`` naming the supported types otherwise.
- ``ModelFamily``: per family the transformers classes (model, config, stock processor, PIL image
  processor, stock video processor), the tokenizer's vision tokens, the vision tower / projector locations,
  the position-id function (1D or 3D mrope), the image-feature function (with DeepStack features where the
  family has them), the config builder used by :mod:`verl.models.tiny` and :mod:`verl.models.real_shape`,
  the published chat template and vLLM's architecture name.
- ``ImageFeatures``: what a family's image encoder returns (``embeds`` plus per-layer ``deepstack``).
- ``VisionShape`` / ``ImageShape``: family-neutral vision-tower and image-processor settings.

Adding a family = one ``ModelFamily`` entry here plus a tiny fixture (``python -m verl.models.tiny --arch
<model_type>`` builds it from this entry); the tests parametrised over ``FAMILIES`` pick it up. This module
never imports transformers at import time (the torchvision shim must run first): classes are named, then
resolved by :func:`resolve`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from verl.models.chat_templates import (
    INTERNVL3_HF_CHAT_TEMPLATE,
    QWEN2_VL_CHAT_TEMPLATE,
    QWEN3_VL_CHAT_TEMPLATE,
)


@dataclass(frozen=True)
class ImageFeatures:
    """Image features in image order: ``embeds [n_tokens, hidden]``; ``deepstack``: one ``[n_tokens, hidden]``
    tensor per language layer that adds them (DeepStack, Qwen3-VL), else ``None``."""

    embeds: torch.Tensor
    deepstack: list[torch.Tensor] | None = None


@dataclass(frozen=True)
class VisionShape:
    """A vision tower's shape in family-neutral terms; ``extra`` holds family-specific config keys."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    patch: int
    out_hidden: int
    image_size: int = 448  # InternVL tile size
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageShape:
    """Image-processor settings: Qwen's min/max pixels or InternVL's tiles; ``None`` = the class default."""

    patch: int
    min_pixels: int = 3136
    max_pixels: int = 12845056
    tile: int = 448
    max_tiles: int = 12
    crop_to_patches: bool = False
    mean: list[float] | None = None
    std: list[float] | None = None
    resample: int | None = None


def resolve(name: str) -> Any:
    """``"module:attr"`` or a top-level transformers name -> the object (imports transformers lazily)."""
    from verl.utils.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    module, _, attr = name.rpartition(":")
    return getattr(importlib.import_module(module or "transformers"), attr)


# ------------------------------------------------------------------ position ids
def plain_positions(inner: nn.Module, ids: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor,
                    grid: torch.Tensor | None) -> torch.Tensor:
    """1D positions ``[b, L]`` as generation computes them for left-padded rows (pads at 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def mrope_positions(inner: nn.Module, ids: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor,
                    grid: torch.Tensor | None) -> torch.Tensor:
    """3D mrope positions ``[3, b, L]`` from the model's own ``get_rope_index``; ``image_mask`` marks the
    placeholders that receive image features (an image id sampled in a response is text)."""
    if grid is None:  # text only: plain positions on all three axes
        return plain_positions(inner, ids, mask, image_mask, grid)[None].expand(3, -1, -1).contiguous()
    pos, _ = inner.get_rope_index(ids, mm_token_type_ids=image_mask.to(torch.int), image_grid_thw=grid,
                                  attention_mask=mask)
    return pos


# ------------------------------------------------------------------ image features
def _cat(feats: Any) -> torch.Tensor:
    return torch.cat(list(feats), dim=0) if isinstance(feats, list | tuple) else feats


def qwen_image_features(inner: nn.Module, pixels: torch.Tensor, grid: torch.Tensor | None) -> ImageFeatures:
    """Qwen-VL families: the merged patch features (and DeepStack features where the tower makes them)."""
    if grid is None:
        raise ValueError(f"{type(inner).__name__}: image features need image_grid_thw")
    out = inner.get_image_features(pixels, grid, return_dict=True)
    deep = getattr(out, "deepstack_features", None)
    return ImageFeatures(_cat(out.pooler_output), [_cat(f) for f in deep] if deep else None)


def internvl_image_features(inner: nn.Module, pixels: torch.Tensor, grid: torch.Tensor | None) -> ImageFeatures:
    """InternVL: projected, pixel-shuffled tile features flattened to ``[tiles * tokens, hidden]``."""
    feats = inner.get_image_features(pixel_values=pixels, return_dict=True).pooler_output
    return ImageFeatures(feats.reshape(-1, feats.shape[-1]))


# ------------------------------------------------------------------ config pieces
def _qwen_mrope(head_dim: int, theta: float) -> dict[str, Any]:
    """Qwen2-VL / Qwen2.5-VL: contiguous sections [t, h, w] (head_dim 128 -> the published [16, 24, 24])."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return {"rope_type": "default", "rope_theta": theta, "mrope_section": [t, h, half - t - h]}


def _qwen3_mrope(head_dim: int, theta: float) -> dict[str, Any]:
    """Qwen3-VL: interleaved sections (head_dim 128 -> the published [24, 20, 20])."""
    half = head_dim // 2
    hw = half * 5 // 16
    return {"rope_type": "default", "rope_theta": theta, "mrope_section": [half - 2 * hw, hw, hw],
            "mrope_interleaved": True}


def _plain_rope(head_dim: int, theta: float) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": theta}


def _qwen2_vl_vision(v: VisionShape) -> dict[str, Any]:
    return {"depth": v.layers, "embed_dim": v.hidden, "hidden_size": v.out_hidden,
            "mlp_ratio": v.intermediate // v.hidden, "num_heads": v.heads, "patch_size": v.patch,
            "spatial_merge_size": 2, "temporal_patch_size": 2, **v.extra}


def _qwen2_5_vl_vision(v: VisionShape) -> dict[str, Any]:
    return {"depth": v.layers, "hidden_size": v.hidden, "intermediate_size": v.intermediate, "num_heads": v.heads,
            "patch_size": v.patch, "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": v.out_hidden,
            "window_size": v.patch * 8, "fullatt_block_indexes": [v.layers - 1], **v.extra}


def _qwen3_vl_vision(v: VisionShape) -> dict[str, Any]:
    return {"depth": v.layers, "hidden_size": v.hidden, "intermediate_size": v.intermediate, "num_heads": v.heads,
            "patch_size": v.patch, "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": v.out_hidden,
            "deepstack_visual_indexes": list(range(v.layers)), **v.extra}


def _internvl_vision(v: VisionShape) -> dict[str, Any]:
    return {"hidden_size": v.hidden, "num_hidden_layers": v.layers, "num_attention_heads": v.heads,
            "intermediate_size": v.intermediate, "image_size": [v.image_size, v.image_size],
            "patch_size": [v.patch, v.patch], **v.extra}


def _qwen_image_processor(s: ImageShape) -> Any:
    cls = resolve("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl:Qwen2VLImageProcessorPil")
    opt = {k: v for k, v in (("image_mean", s.mean), ("image_std", s.std), ("resample", s.resample)) if v is not None}
    return cls(size={"shortest_edge": s.min_pixels, "longest_edge": s.max_pixels}, patch_size=s.patch,
               temporal_patch_size=2, merge_size=2, **opt)


def _internvl_image_processor(s: ImageShape) -> Any:
    cls = resolve("transformers.models.got_ocr2.image_processing_pil_got_ocr2:GotOcr2ImageProcessorPil")
    opt = {k: v for k, v in (("resample", s.resample),) if v is not None}
    return cls(size={"height": s.tile, "width": s.tile}, crop_to_patches=s.crop_to_patches, min_patches=1,
               max_patches=s.max_tiles, image_mean=s.mean or [0.485, 0.456, 0.406],
               image_std=s.std or [0.229, 0.224, 0.225], **opt)


_QWEN_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"}
_INTERNVL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                    "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
_QWEN_CONFIG_IDS = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
                    "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}


@dataclass(frozen=True)
class ModelFamily:
    """One supported VLM family (see the module docstring)."""

    model_type: str  # config.model_type
    model_class: str  # transformers *ForConditionalGeneration
    config_class: str
    stock_processor: str  # the processor class saved folders name (vLLM / plain transformers load it)
    image_processor_pil: str  # "module:Class" of the PIL image processor the project always uses
    video_processor: str  # stock video processor named in video_preprocessor_config.json
    vllm_architecture: str
    chat_template: str  # the published one
    tokenizer_family: str  # verl.models.qwen_tokenizer family of the real vocabulary
    tokenizer_tokens: dict[str, str]  # the tokenizer's named vision tokens (extra_special_tokens)
    config_token_ids: dict[str, str]  # config key -> token whose id it holds (image_token_id, vision_start...)
    tower: str  # attribute of the inner *Model holding the vision encoder
    projectors: tuple[str, ...]  # dotted paths (from the inner *Model) of the projector module(s)
    positions: Callable[..., torch.Tensor]
    image_features: Callable[..., ImageFeatures]
    rope_parameters: Callable[[int, float], dict[str, Any]]
    vision_config: Callable[[VisionShape], dict[str, Any]]
    image_processor: Callable[[ImageShape], Any]
    default_patch: int  # published vision patch size
    processor_kwargs: tuple[str, ...] = ()  # extra constructor arguments of the stock processor
    text_model_type: str | None = None  # text_config.model_type where the config needs one
    deepstack: bool = False

    @property
    def mrope(self) -> bool:
        """3D (multimodal) rotary positions."""
        return self.positions is mrope_positions

    def model_cls(self) -> type:
        return resolve(self.model_class)

    def build_config(self, text: dict[str, Any], vision: VisionShape, token_ids: dict[str, int],
                     **top: Any) -> Any:
        """The transformers config: ``text`` (text_config kwargs; ``rope_parameters`` added from
        ``rope_theta``), the tower from ``vision``, ``token_ids`` (config key -> id) and top-level ``top``."""
        text = dict(text)
        head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
        text["rope_parameters"] = self.rope_parameters(head_dim, float(text.pop("rope_theta", 1000000.0)))
        if self.text_model_type:
            text["model_type"] = self.text_model_type
        return resolve(self.config_class)(text_config=text, vision_config=self.vision_config(vision), **token_ids,
                                          **top)


_REGISTRY: tuple[ModelFamily, ...] = (
    ModelFamily(
        "qwen2_vl", "Qwen2VLForConditionalGeneration", "Qwen2VLConfig", "Qwen2VLProcessor",
        "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl:Qwen2VLImageProcessorPil",
        "Qwen2VLVideoProcessor", "Qwen2VLForConditionalGeneration", QWEN2_VL_CHAT_TEMPLATE, "qwen2-vl",
        _QWEN_TOKENS, _QWEN_CONFIG_IDS, "visual", ("visual.merger",), mrope_positions, qwen_image_features,
        _qwen_mrope, _qwen2_vl_vision, _qwen_image_processor, default_patch=14,
    ),
    ModelFamily(
        "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLConfig", "Qwen2_5_VLProcessor",
        "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl:Qwen2VLImageProcessorPil",
        "Qwen2VLVideoProcessor", "Qwen2_5_VLForConditionalGeneration", QWEN2_VL_CHAT_TEMPLATE, "qwen2.5-vl",
        _QWEN_TOKENS, _QWEN_CONFIG_IDS, "visual", ("visual.merger",), mrope_positions, qwen_image_features,
        _qwen_mrope, _qwen2_5_vl_vision, _qwen_image_processor, default_patch=14,
    ),
    ModelFamily(
        "qwen3_vl", "Qwen3VLForConditionalGeneration", "Qwen3VLConfig", "Qwen3VLProcessor",
        "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl:Qwen2VLImageProcessorPil",
        "Qwen3VLVideoProcessor", "Qwen3VLForConditionalGeneration", QWEN3_VL_CHAT_TEMPLATE, "qwen3-vl",
        _QWEN_TOKENS, _QWEN_CONFIG_IDS, "visual", ("visual.merger", "visual.deepstack_merger_list"),
        mrope_positions, qwen_image_features, _qwen3_mrope, _qwen3_vl_vision, _qwen_image_processor,
        default_patch=16, deepstack=True,
    ),
    ModelFamily(
        "internvl", "InternVLForConditionalGeneration", "InternVLConfig", "InternVLProcessor",
        "transformers.models.got_ocr2.image_processing_pil_got_ocr2:GotOcr2ImageProcessorPil",
        "InternVLVideoProcessor", "InternVLForConditionalGeneration", INTERNVL3_HF_CHAT_TEMPLATE, "internvl3",
        _INTERNVL_TOKENS, {"image_token_id": "<IMG_CONTEXT>"}, "vision_tower", ("multi_modal_projector",),
        plain_positions, internvl_image_features, _plain_rope, _internvl_vision, _internvl_image_processor,
        default_patch=14, processor_kwargs=("image_seq_length",), text_model_type="qwen2",
    ),
)


def _installed(model_type: str) -> bool:
    """Whether transformers ships ``model_type`` (found WITHOUT importing transformers)."""
    spec = importlib.util.find_spec("transformers")
    return bool(spec and spec.origin and (Path(spec.origin).parent / "models" / model_type).is_dir())


FAMILIES: dict[str, ModelFamily] = {f.model_type: f for f in _REGISTRY if _installed(f.model_type)}


def family_of(model_or_type: str | nn.Module | Any) -> ModelFamily:
    """The registry entry of a ``model_type``, a model or a config (``.config.model_type`` / ``.model_type``)."""
    if isinstance(model_or_type, str):
        model_type: Any = model_or_type
    else:
        cfg = getattr(model_or_type, "config", model_or_type)
        model_type = getattr(cfg, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported model_type {model_type!r} (supported: {', '.join(FAMILIES)})")
    return FAMILIES[model_type]


def image_token_id(config: Any) -> int:
    """Id of the image placeholder token that image features replace (``config.image_token_id``)."""
    tid = getattr(config, "image_token_id", None)
    if tid is None:
        raise ValueError(f"{type(config).__name__}: config has no image_token_id")
    return int(tid)


def vision_parts(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """``(vision tower, [projector modules])`` of a ``*ForConditionalGeneration``; for the Qwen families the
    projectors (patch mergers) live inside the tower module."""
    fam = family_of(model)
    inner = getattr(model, "model", None)
    if inner is None:
        raise ValueError(f"{type(model).__name__} has no inner `.model`; expected a *ForConditionalGeneration")
    tower = getattr(inner, fam.tower)
    projectors = []
    for path in fam.projectors:
        mod: Any = inner
        for part in path.split("."):
            mod = getattr(mod, part)
        projectors.append(mod)
    return tower, projectors
