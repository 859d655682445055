"""LoRA adaptation with peft (``actor_rollout_ref.model.lora_rank > 0``; 0 = full fine-tuning).

- :func:`apply_lora` injects LoRA layers in place (``peft.inject_adapter_in_model``, so module and
  parameter names stay the HF model's, plus ``.base_layer`` / ``.lora_A.default`` / ``.lora_B.default``)
  into the Linear layers named by ``target_modules`` inside the language model, optionally every Linear
  of the vision tower (``lora_vision_tower``) and of the projector (``lora_projector``), and freezes
  everything else.  ``lora_B`` starts at zero, so the adapted model starts as the base.
- The reference policy is the same model with the adapters switched off (:func:`adapters_disabled`):
  no second copy of the weights.
- The rollout engine and exports get merged weights under the base model's names
  (:func:`merge_lora`: ``W + alpha / r * B @ A``), so HF, vLLM and ``transformers`` need no LoRA support.
- :func:`save_adapter` writes a peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``)
  that ``peft.PeftModel.from_pretrained(base, folder)`` loads.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from verl.config.schema import ModelConfig

ADAPTER = "default"
META_FILE = "lora.json"  # in a LoRA checkpoint's actor folder: the settings needed to rebuild the model
_META_KEYS = ("lora_rank", "lora_alpha", "target_modules", "lora_vision_tower", "lora_projector")
_LORA_A, _LORA_B, _BASE = f".lora_A.{ADAPTER}.weight", f".lora_B.{ADAPTER}.weight", ".base_layer."


def lora_enabled(cfg: ModelConfig) -> bool:
    return cfg.lora_rank > 0


def lora_scale(cfg: ModelConfig) -> float:
    return cfg.lora_alpha / cfg.lora_rank


def target_names(hf: nn.Module, cfg: ModelConfig) -> list[str]:
    """Qualified names of the Linear layers that get adapters (see the module docstring)."""
    from verl.models.vlm_forward import vision_modules

    mods = vision_modules(hf)
    tower_ids = {id(m) for m in mods["tower"].modules()}
    proj_ids = {id(m) for m in mods["projector"].modules()}
    lm = hf.get_output_embeddings()
    out = []
    for name, m in hf.named_modules():
        if not isinstance(m, nn.Linear) or m is lm:
            continue
        if id(m) in proj_ids:
            keep = cfg.lora_projector
        elif id(m) in tower_ids:
            keep = cfg.lora_vision_tower
        else:
            keep = name.rsplit(".", 1)[-1] in cfg.target_modules
        if keep:
            out.append(name)
    if not out:
        raise ValueError(f"actor_rollout_ref.model.target_modules={list(cfg.target_modules)} matches no Linear "
                         f"layer of the language model of {type(hf).__name__}")
    return out


def lora_config(cfg: ModelConfig, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, bias="none",
                      target_modules=targets)


def adapted_layers(hf: nn.Module) -> list[str]:
    """Qualified names of the layers that carry an adapter (after :func:`apply_lora`)."""
    return [n[: -len(".lora_A")] for n, _ in hf.named_modules() if n.endswith(".lora_A")]


def apply_lora(hf: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Inject the adapters into ``hf`` in place and freeze every other parameter; returns ``hf``."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(lora_config(cfg, target_names(hf, cfg)), hf, adapter_name=ADAPTER)
    for name, p in hf.named_parameters():
        p.requires_grad_(is_lora_param(name))
    return hf


def is_lora_param(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts (LoRA tensors count once, base weights once)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as the base model (every LoRA layer bypassed) inside the block."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield
    finally:
        for m in layers:
            m.enable_adapters(True)


def merge_lora(named: Iterable[tuple[str, torch.Tensor]], scale: float) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of the adapted model under the base model's names: ``x.base_layer.weight`` + its
    ``lora_A`` / ``lora_B`` -> ``x.weight = W + scale * B @ A``; ``x.base_layer.bias`` -> ``x.bias``.
    Streams: holds only the pieces of layers whose parts have not all arrived yet."""
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in named:
        if name.endswith(_LORA_A) or name.endswith(_LORA_B) or name.endswith(_BASE + "weight"):
            for suffix, part in ((_LORA_A, "A"), (_LORA_B, "B"), (_BASE + "weight", "W")):
                if name.endswith(suffix):
                    layer = name[: -len(suffix)]
                    pending.setdefault(layer, {})[part] = t
            parts = pending[layer]
            if len(parts) == 3:
                del pending[layer]
                w = parts["W"]
                delta = (parts["B"].to(torch.float32) @ parts["A"].to(torch.float32)) * scale
                yield f"{layer}.weight", (w.to(torch.float32) + delta).to(w.dtype)
        elif _BASE in name:
            yield name.replace(_BASE, "."), t
        else:
            yield name, t
    if pending:
        raise ValueError(f"LoRA layers with missing parts: {sorted(pending)[:3]}")


def adapter_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The LoRA tensors under peft's file names (``base_model.model.<layer>.lora_A.weight``)."""
    return {"base_model.model." + n.replace(f".{ADAPTER}.weight", ".weight"): t.contiguous()
            for n, t in named if is_lora_param(n)}


def save_adapter(out_dir: str | Path, hf: nn.Module, named: Iterable[tuple[str, torch.Tensor]], cfg: ModelConfig,
                 base_path: str) -> Path:
    """Write a peft adapter folder for ``base_path`` from the adapted model's full tensors."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conf = lora_config(cfg, adapted_layers(hf))
    conf.base_model_name_or_path = str(base_path)
    conf.save_pretrained(str(out))
    save_file(adapter_tensors(named), str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out


def write_meta(ckpt_dir: str | Path, cfg: ModelConfig) -> None:
    """Record the LoRA settings beside an adapters-only checkpoint (export rebuilds the model from them)."""
    meta = {k: getattr(cfg, k) for k in _META_KEYS}
    meta["target_modules"] = list(meta["target_modules"])
    (Path(ckpt_dir) / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")


def model_config_for(ckpt_dir: str | Path, base_path: str) -> ModelConfig:
    """``ModelConfig`` of the model a checkpoint's actor folder holds: LoRA settings from its meta file, if any."""
    meta_file = Path(ckpt_dir) / META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    unknown = set(meta) - set(_META_KEYS)
    if unknown:
        raise ValueError(f"{meta_file}: unknown keys {sorted(unknown)}")
    return ModelConfig(path=str(base_path), **meta)
