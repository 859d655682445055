"""Image-only VLM processors: the stock Qwen2-VL / Qwen2.5-VL / Qwen3-VL / InternVL processors without the
video processor (which needs torchvision) and always with the PIL image processor.

Public API
----------
- ``Qwen2VLImageProcessorOnly``, ``Qwen2_5_VLImageProcessorOnly``, ``Qwen3VLImageProcessorOnly`` (when
  transformers has Qwen3-VL), ``InternVLImageProcessorOnly``: ``ProcessorMixin`` subclasses of the stock
  processors whose only sub-processors are ``image_processor`` (PIL backend) and ``tokenizer``.
- ``IMAGE_ONLY_PROCESSORS``: ``{model_type: processor class}``.
- ``processor_class_for(model_type)``: that class, or ``ValueError`` listing the supported types.
- ``write_video_preprocessor_config(folder, model_type)``: writes the standard ``video_preprocessor_config.json``
  as JSON (no torchvision needed), so stock loaders (vLLM uses the stock ``AutoProcessor``) find one.

Why: the stock processors insist on a video processor (torchvision backend), and ``AutoImageProcessor`` picks
the torchvision ("fast") image processor whenever torchvision is importable; fast and PIL outputs differ by up
to ~0.015 after resizing. Rollout and training must use the same one: these classes always load the PIL one.

Folders saved by these classes stay *stock* folders: ``save_pretrained`` writes the stock processor class
name (so vLLM and plain transformers read them) plus a standard video preprocessor config. The classes are
registered with ``AutoProcessor`` (by config class and by name) so ``AutoProcessor`` resolves them too.

Note: ``transformers.image_utils`` itself imports torchvision whenever it is importable, so importing any
transformers processor loads torchvision in this environment; these classes just never *need* it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from verl.utils.torchvision_compat import ensure_torchvision_importable

# The classes below are built from transformers' processing modules, which import torchvision (broken beside
# the CPU torch here) whenever it is installed: make it importable first.
ensure_torchvision_importable()

from transformers import AutoProcessor, AutoTokenizer, ProcessorMixin  # noqa: E402
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil  # noqa: E402
from transformers.models.internvl.configuration_internvl import InternVLConfig  # noqa: E402
from transformers.models.internvl.processing_internvl import InternVLProcessor  # noqa: E402
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLConfig  # noqa: E402
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor  # noqa: E402
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLConfig  # noqa: E402
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil  # noqa: E402
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor  # noqa: E402

# Files a processor's save_pretrained may write that carry a ``processor_class`` entry.
_CONFIG_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def _set_processor_class(path: Path, name: str) -> None:
    data = json.loads(path.read_text())
    data["processor_class"] = name
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class _ImageOnlyMixin:
    """Shared loading / saving logic; mixed in before the stock processor class."""

    image_processor_pil_class: type = Qwen2VLImageProcessorPil
    stock_processor_name: str = ""
    model_type: str = ""

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """Load the PIL image processor and the tokenizer only (never a video processor)."""
        kwargs.pop("subfolder", None)
        for key in ("use_fast", "backend"):
            kwargs.pop(key, None)
        image_processor = cls.image_processor_pil_class.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return [image_processor, tokenizer]

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> list[str]:
        """Save as a stock folder: stock processor class name + a standard video preprocessor config."""
        files = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)  # type: ignore[misc]
        folder = Path(save_directory)
        if not (folder / "preprocessor_config.json").is_file():  # real releases ship it; stock loaders read it
            files = [*files, *self.image_processor.save_pretrained(folder)]
            _set_processor_class(folder / "preprocessor_config.json", self.stock_processor_name)
        for name in _CONFIG_FILES:
            path = folder / name
            if not path.is_file():
                continue
            if json.loads(path.read_text()).get("processor_class") == type(self).__name__:
                _set_processor_class(path, self.stock_processor_name)
        if not (folder / "video_preprocessor_config.json").is_file():
            write_video_preprocessor_config(folder, self.model_type, image_processor=self.image_processor)
        return files


class Qwen2VLImageProcessorOnly(_ImageOnlyMixin, Qwen2VLProcessor):
    """Qwen2-VL processor with a PIL image processor and no video processor."""

    stock_processor_name = "Qwen2VLProcessor"
    model_type = "qwen2_vl"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        Qwen2VLProcessor.__init__(self, image_processor, tokenizer, None, chat_template=chat_template)


class Qwen2_5_VLImageProcessorOnly(_ImageOnlyMixin, Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor with a PIL image processor and no video processor."""

    stock_processor_name = "Qwen2_5_VLProcessor"
    model_type = "qwen2_5_vl"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        Qwen2_5_VLProcessor.__init__(self, image_processor, tokenizer, None, chat_template=chat_template)


class InternVLImageProcessorOnly(_ImageOnlyMixin, InternVLProcessor):
    """InternVL (HF format) processor with the PIL GOT-OCR2 image processor and no video processor."""

    image_processor_pil_class = GotOcr2ImageProcessorPil
    stock_processor_name = "InternVLProcessor"
    model_type = "internvl"

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None,
                 **kwargs):
        InternVLProcessor.__init__(self, image_processor, tokenizer, None, image_seq_length=image_seq_length,
                                   chat_template=chat_template)


IMAGE_ONLY_PROCESSORS: dict[str, type[ProcessorMixin]] = {
    "qwen2_vl": Qwen2VLImageProcessorOnly,
    "qwen2_5_vl": Qwen2_5_VLImageProcessorOnly,
    "internvl": InternVLImageProcessorOnly,
}
_REGISTRATIONS: list[tuple[type, type]] = [
    (Qwen2VLConfig, Qwen2VLImageProcessorOnly),
    (Qwen2_5_VLConfig, Qwen2_5_VLImageProcessorOnly),
    (InternVLConfig, InternVLImageProcessorOnly),
]

try:  # Qwen3-VL exists in recent transformers only
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLConfig
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    class Qwen3VLImageProcessorOnly(_ImageOnlyMixin, Qwen3VLProcessor):
        """Qwen3-VL processor with a PIL image processor and no video processor."""

        stock_processor_name = "Qwen3VLProcessor"
        model_type = "qwen3_vl"

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            Qwen3VLProcessor.__init__(self, image_processor, tokenizer, None, chat_template=chat_template)

    IMAGE_ONLY_PROCESSORS["qwen3_vl"] = Qwen3VLImageProcessorOnly
    _REGISTRATIONS.append((Qwen3VLConfig, Qwen3VLImageProcessorOnly))
except ImportError:  # pragma: no cover - depends on the installed transformers
    pass

for _config_cls, _proc_cls in _REGISTRATIONS:
    # exist_ok: the stock mapping already has these config classes; folders naming the stock processor
    # class keep resolving to it, only name lookups of ours and the config fallback reach these classes.
    AutoProcessor.register(_config_cls, _proc_cls, exist_ok=True)


def processor_class_for(model_type: str) -> type[ProcessorMixin]:
    """The image-only processor class for a ``config.model_type``."""
    try:
        return IMAGE_ONLY_PROCESSORS[model_type]
    except KeyError:
        raise ValueError(
            f"no image-only processor for model_type {model_type!r} "
            f"(supported: {', '.join(sorted(IMAGE_ONLY_PROCESSORS))})"
        ) from None


def _video_config(model_type: str, image_processor: Any | None) -> dict[str, Any]:
    """Standard video preprocessor config of the stock release for ``model_type``."""
    mean = list(getattr(image_processor, "image_mean", None) or [0.48145466, 0.4578275, 0.40821073])
    std = list(getattr(image_processor, "image_std", None) or [0.26862954, 0.26130258, 0.27577711])
    if model_type == "internvl":
        size = dict(getattr(image_processor, "size", None) or {"height": 448, "width": 448})
        return {
            "video_processor_type": "InternVLVideoProcessor", "processor_class": "InternVLProcessor",
            "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
            "rescale_factor": 1 / 255, "resample": 3, "image_mean": mean, "image_std": std,
            "size": size, "initial_shift": True,
        }
    if model_type not in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        raise ValueError(f"no standard video preprocessor config for model_type {model_type!r}")
    patch = int(getattr(image_processor, "patch_size", 14))
    merge = int(getattr(image_processor, "merge_size", 2))
    size = dict(getattr(image_processor, "size", None) or {})
    min_pixels = int(size.get("shortest_edge", 56 * 56))
    max_pixels = int(size.get("longest_edge", 28 * 28 * 1280))
    stock = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor"}
    video_cls = "Qwen3VLVideoProcessor" if model_type == "qwen3_vl" else "Qwen2VLVideoProcessor"
    return {
        "video_processor_type": video_cls, "processor_class": stock[model_type],
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "rescale_factor": 1 / 255, "resample": 3, "image_mean": mean, "image_std": std,
        "patch_size": patch, "temporal_patch_size": int(getattr(image_processor, "temporal_patch_size", 2)),
        "merge_size": merge, "min_pixels": min_pixels, "max_pixels": max_pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
    }


def write_video_preprocessor_config(folder: str | Path, model_type: str, image_processor: Any | None = None) -> Path:
    """Write ``video_preprocessor_config.json`` (standard, as real releases ship it) into ``folder``."""
    path = Path(folder) / "video_preprocessor_config.json"
    path.write_text(json.dumps(_video_config(model_type, image_processor), indent=2, sort_keys=True) + "\n")
    return path
