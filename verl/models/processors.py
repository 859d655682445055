"""Image-only VLM processors: the stock processor of every registered family (:mod:`verl.models.family`) without
the video processor (which needs torchvision) and always with the PIL image processor.

Public API
----------
- ``IMAGE_ONLY_PROCESSORS``: ``{model_type: processor class}``, one ``<Stock>ImageProcessorOnly`` class per family
  (e.g. ``Qwen2_5_VLImageProcessorOnly``): a ``ProcessorMixin`` subclass of the stock processor whose only
  sub-processors are ``image_processor`` (PIL backend) and ``tokenizer``.
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

import inspect
import json
from pathlib import Path
from typing import Any

from verl.models.family import FAMILIES, ModelFamily, family_of, resolve
from verl.utils.torchvision_compat import ensure_torchvision_importable

# The classes below are built from transformers' processing modules, which import torchvision (broken beside
# the CPU torch here) whenever it is installed: make it importable first.
ensure_torchvision_importable()

from transformers import AutoProcessor, AutoTokenizer, ProcessorMixin  # noqa: E402

# Files a processor's save_pretrained may write that carry a ``processor_class`` entry.
_CONFIG_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def _set_processor_class(path: Path, name: str) -> None:
    data = json.loads(path.read_text())
    data["processor_class"] = name
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class _ImageOnlyMixin:
    """Shared loading / saving logic; mixed in before the stock processor class."""

    image_processor_pil_class: type
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


def _image_only_class(family: ModelFamily) -> type[ProcessorMixin]:
    """``<Stock>ImageProcessorOnly``: the family's stock processor with a PIL image processor, no video one."""
    stock = resolve(family.stock_processor)

    # transformers passes saved processor settings (e.g. InternVL's image_seq_length) only to parameters that
    # __init__ names positionally: generate one whose parameters are the stock ones minus the video processor.
    stock_params = inspect.signature(stock.__init__).parameters
    defaults = {k: stock_params[k].default for k in family.processor_kwargs}
    args = "".join(f", {k}=_defaults[{k!r}]" for k in family.processor_kwargs)
    passed = "".join(f", {k}={k}" for k in family.processor_kwargs)
    namespace: dict[str, Any] = {"_stock": stock, "_defaults": defaults}
    exec(f"def __init__(self, image_processor=None, tokenizer=None, chat_template=None{args}, **kwargs):\n"
         f"    _stock.__init__(self, image_processor, tokenizer, None, chat_template=chat_template{passed})\n",
         namespace)
    __init__ = namespace["__init__"]

    name = family.stock_processor.removesuffix("Processor") + "ImageProcessorOnly"
    attrs = {"__init__": __init__, "__module__": __name__, "__qualname__": name,
             "__doc__": f"{family.stock_processor} with a PIL image processor and no video processor.",
             "image_processor_pil_class": resolve(family.image_processor_pil),
             "stock_processor_name": family.stock_processor, "model_type": family.model_type}
    return type(name, (_ImageOnlyMixin, stock), attrs)


IMAGE_ONLY_PROCESSORS: dict[str, type[ProcessorMixin]] = {t: _image_only_class(f) for t, f in FAMILIES.items()}
for _model_type, _cls in IMAGE_ONLY_PROCESSORS.items():
    globals()[_cls.__name__] = _cls  # importable by name (pickling, AutoProcessor lookups by class name)
    # exist_ok: the stock mapping already has these config classes; folders naming the stock processor
    # class keep resolving to it, only name lookups of ours and the config fallback reach these classes.
    AutoProcessor.register(resolve(FAMILIES[_model_type].config_class), _cls, exist_ok=True)


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
    """Standard video preprocessor config of the stock release for ``model_type`` (shaped after its image
    processor: InternVL's tile size, or Qwen's patch / merge / min-max pixels)."""
    family = family_of(model_type)
    mean = list(getattr(image_processor, "image_mean", None) or [0.48145466, 0.4578275, 0.40821073])
    std = list(getattr(image_processor, "image_std", None) or [0.26862954, 0.26130258, 0.27577711])
    common = {"video_processor_type": family.video_processor, "processor_class": family.stock_processor,
              "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
              "rescale_factor": 1 / 255, "resample": 3, "image_mean": mean, "image_std": std}
    size = dict(getattr(image_processor, "size", None) or {})
    if "height" in size:  # tile-based (InternVL)
        return {**common, "size": size, "initial_shift": True}
    min_pixels = int(size.get("shortest_edge", 56 * 56))
    max_pixels = int(size.get("longest_edge", 28 * 28 * 1280))
    return {**common, "patch_size": int(getattr(image_processor, "patch_size", family.default_patch)),
            "temporal_patch_size": int(getattr(image_processor, "temporal_patch_size", 2)),
            "merge_size": int(getattr(image_processor, "merge_size", 2)), "min_pixels": min_pixels,
            "max_pixels": max_pixels, "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}


def write_video_preprocessor_config(folder: str | Path, model_type: str, image_processor: Any | None = None) -> Path:
    """Write ``video_preprocessor_config.json`` (standard, as real releases ship it) into ``folder``."""
    path = Path(folder) / "video_preprocessor_config.json"
    path.write_text(json.dumps(_video_config(model_type, image_processor), indent=2, sort_keys=True) + "\n")
    return path
