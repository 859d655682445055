"""FSDP2 helpers for the actor: config access, freezing, sharding, LR schedules, full-parameter streaming."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

_MISSING = object()


def cfg_get(cfg: Any, name: str, default: Any = _MISSING) -> Any:
    """``cfg.name`` for dataclasses / OmegaConf / namespaces, ``cfg[name]`` for dicts, else ``default``."""
    if cfg is None:
        val = _MISSING
    elif isinstance(cfg, dict):
        val = cfg.get(name, _MISSING)
    else:
        val = getattr(cfg, name, _MISSING)
    if val is _MISSING:
        if default is _MISSING:
            raise KeyError(f"config key {name!r} is missing from {type(cfg).__name__}")
        return default
    return val


def freeze_vision(model: nn.Module, freeze_tower: bool, freeze_projector: bool) -> list[str]:
    """Set ``requires_grad=False`` on the vision tower (projector excluded) and/or the projector.

    Returns the names of the frozen parameters.
    """
    from verl.models.vlm_forward import vision_modules

    mods = vision_modules(model)
    projector_ids = {id(p) for p in mods["projector"].parameters()}
    frozen = []
    names = {id(p): n for n, p in model.named_parameters()}
    for m in (mods["tower"], mods["projector"]):
        for p in m.parameters():
            is_proj = id(p) in projector_ids
            if (is_proj and freeze_projector) or (not is_proj and freeze_tower):
                if p.requires_grad:
                    p.requires_grad_(False)
                    frozen.append(names.get(id(p), "?"))
    return frozen


def shard_units(model: nn.Module) -> list[nn.Module]:
    """Modules to wrap as their own FSDP2 units: every instance of a class in ``_no_split_modules``
    (decoder layers and vision blocks) found on the HF (sub)models."""
    classes: set[str] = set()
    for m in model.modules():
        classes.update(getattr(m, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in classes]


def apply_fsdp2(root: nn.Module, hf_model: nn.Module, device: str) -> nn.Module:
    """``fully_shard`` each decoder layer / vision block, then the root.

    CUDA: bf16 compute parameters, fp32 gradient reduction (fp32 master weights). CPU: fp32 throughout.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_initialized():
        raise RuntimeError("FSDPActor needs torch.distributed initialised (gloo on CPU, nccl on CUDA)")
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    if device_type == "cuda":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        mp = MixedPrecisionPolicy()
    for unit in shard_units(hf_model):
        fully_shard(unit, mesh=mesh, mp_policy=mp)
    fully_shard(root, mesh=mesh, mp_policy=mp)
    return root


def lr_lambda_factory(style: str, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0,
                      num_cycles: float = 0.5):
    """Multiplier of the base LR at optimizer step ``s`` (``LambdaLR``).

    Linear warmup from 0 over ``warmup_steps``; then ``constant`` (1.0) or ``cosine`` from 1 down to
    ``min_lr_ratio`` at ``total_steps`` (``num_cycles=0.5`` = half a cosine wave).
    """
    if style not in ("constant", "cosine"):
        raise ValueError(f"unknown LR schedule {style!r}; known: constant, cosine")
    if style == "cosine" and total_steps <= 0:
        raise ValueError("cosine LR schedule needs optim.total_training_steps > 0")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")

    def fn(step: int) -> float:
        if step < warmup_steps:
            return float(step) / float(max(1, warmup_steps))
        if style == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / float(max(1, total_steps - warmup_steps)))
        cos = 0.5 * (1.0 + math.cos(math.pi * 2.0 * num_cycles * progress))
        return min_lr_ratio + (1.0 - min_lr_ratio) * cos

    return fn


def iter_full_tensors(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Stream ``(name, full tensor)`` over ``module.state_dict()``, gathering one DTensor at a time.

    A collective per parameter: every rank must consume the whole iterator. ``prefix`` is stripped
    from the names. Tied parameters appear under each of their names.
    """
    from torch.distributed.tensor import DTensor

    for name, val in module.state_dict().items():
        if prefix and name.startswith(prefix):
            name = name[len(prefix):]
        full = val.full_tensor() if isinstance(val, DTensor) else val
        yield name, full.detach()


def np_rng_to_tensors() -> dict:
    """NumPy's global RNG state as tensors/primitives (loadable with ``torch.load(weights_only=True)``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def np_rng_from_tensors(d: dict) -> None:
    """Inverse of :func:`np_rng_to_tensors`."""
    np.random.set_state((d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"]))
