"""Load a supported VLM and its processor from a LOCAL Hugging Face folder (never downloads).

Public API
----------
- ``load_vlm(path, *, dtype=torch.float32, device="cpu", trust_remote_code=False, attn_implementation="sdpa")
  -> (model, processor)``: model class picked from ``config.model_type`` by the family registry
  (:data:`verl.models.family.FAMILIES`).
- ``load_processor(path, trust_remote_code=False) -> ProcessorMixin``: the torchvision-free image-only processor
  of :mod:`verl.models.processors` (PIL image processor + tokenizer + the folder's chat template).
- ``read_model_type(path) -> str``; ``check_model_folder(path, need_weights=True) -> str`` (model_type).
- ``model_class(model_type)``: the ``*ForConditionalGeneration`` class of a supported ``model_type``.

Loading applies :func:`verl.utils.torchvision_compat.ensure_torchvision_importable` first (transformers' VLM
modules import torchvision, whose PyPI build cannot load beside the CPU torch here).

Errors: missing folder / config.json / weights / tokenizer files -> ``FileNotFoundError`` naming the folder
and what is missing; unsupported ``model_type`` -> ``ValueError`` naming folder, model_type and the supported list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from verl.models.family import FAMILIES, family_of
from verl.utils.torchvision_compat import ensure_torchvision_importable

if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin

def model_class(model_type: str) -> type[PreTrainedModel]:
    """The ``*ForConditionalGeneration`` class of a supported ``model_type``."""
    return family_of(model_type).model_cls()


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")


def _folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist (or is not a directory)")
    return folder


def read_model_type(path: str | Path) -> str:
    """``model_type`` from ``<path>/config.json``."""
    folder = _folder(path)
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"model folder {str(folder)!r} has no config.json")
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg}: invalid JSON ({e})") from e
    if not model_type:
        raise ValueError(f"{cfg}: no 'model_type' key")
    return str(model_type)


def check_model_folder(path: str | Path, need_weights: bool = True) -> str:
    """Validate a model folder (config, supported type, weights, tokenizer); return its model_type."""
    folder = _folder(path)
    model_type = read_model_type(folder)
    if model_type not in FAMILIES:
        raise ValueError(
            f"model folder {str(folder)!r}: unsupported model_type {model_type!r} (supported: {', '.join(FAMILIES)})"
        )
    if need_weights and not any((folder / f).is_file() for f in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"model folder {str(folder)!r} has no weights (expected one of: {', '.join(_WEIGHT_FILES)})"
        )
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"model folder {str(folder)!r} has no tokenizer files (expected one of: {', '.join(_TOKENIZER_FILES)})"
        )
    return model_type


def load_processor(path: str | Path, trust_remote_code: bool = False) -> ProcessorMixin:
    """The image-only (PIL, no video processor) processor of a local model folder."""
    ensure_torchvision_importable()
    from verl.models.processors import processor_class_for

    model_type = check_model_folder(path, need_weights=False)
    cls = processor_class_for(model_type)
    return cls.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)


def load_vlm(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    attn_implementation: str | None = "sdpa",
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load ``(model, processor)`` from a local folder; the model is on ``device`` in ``dtype``."""
    model_type = check_model_folder(path)
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True, "trust_remote_code": trust_remote_code}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = model_class(model_type).from_pretrained(str(path), **kwargs)
    model = model.to(device)
    processor = load_processor(path, trust_remote_code=trust_remote_code)
    return model, processor
