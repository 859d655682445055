"""FSDP2 helpers for the actor: freezing, sharding, LR schedules, full-parameter streaming."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from verl.config.schema import FSDPConfig, OptimConfig


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


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def apply_fsdp2(root: nn.Module, hf_model: nn.Module, device: str, fsdp: FSDPConfig) -> nn.Module:
    """``fully_shard`` each decoder layer / vision block, then the root, with the policies of ``fsdp``:
    ``param_dtype`` / ``reduce_dtype`` (mixed precision; the sharded master weights stay float32),
    ``reshard_after_forward`` and ``cpu_offload`` (FSDP2's ``CPUOffloadPolicy``; pinned memory on CUDA)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    if not dist.is_initialized():
        raise RuntimeError("FSDPActor needs torch.distributed initialised (gloo on CPU, nccl on CUDA)")
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    kwargs = {
        "mesh": mesh,
        "mp_policy": MixedPrecisionPolicy(param_dtype=_DTYPES[fsdp.param_dtype], reduce_dtype=_DTYPES[fsdp.reduce_dtype]),
        "reshard_after_forward": fsdp.reshard_after_forward,
        "offload_policy": CPUOffloadPolicy(pin_memory=device_type == "cuda") if fsdp.cpu_offload else OffloadPolicy(),
    }
    for unit in shard_units(hf_model):
        fully_shard(unit, **kwargs)
    fully_shard(root, **kwargs)
    return root


_SCHEDULERS = {"constant": "constant_with_warmup", "cosine": "cosine_with_min_lr"}


def warmup_steps(optim: OptimConfig) -> int:
    """``optim.lr_warmup_steps`` when >= 0, else ``lr_warmup_steps_ratio`` x ``total_training_steps``."""
    if optim.lr_warmup_steps >= 0:
        return optim.lr_warmup_steps
    return int(optim.lr_warmup_steps_ratio * max(optim.total_training_steps, 0))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' scheduler for ``optim.lr_scheduler_type``: linear warm-up from 0, then ``constant``
    or ``cosine`` (``num_cycles``, floor ``min_lr_ratio`` x lr at ``total_training_steps``). One
    ``step()`` per optimizer step; its ``state_dict`` resumes it exactly."""
    from transformers import get_scheduler

    if optim.lr_scheduler_type not in _SCHEDULERS:
        raise ValueError(f"unknown LR schedule {optim.lr_scheduler_type!r}; known: {', '.join(_SCHEDULERS)}")
    if optim.lr_scheduler_type == "cosine":
        if optim.total_training_steps <= 0:
            raise ValueError("cosine LR schedule needs optim.total_training_steps > 0")
        if not 0.0 <= optim.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {optim.min_lr_ratio}")
        return get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=warmup_steps(optim),
                             num_training_steps=optim.total_training_steps,
                             scheduler_specific_kwargs={"num_cycles": optim.num_cycles,
                                                        "min_lr_rate": optim.min_lr_ratio})
    return get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup_steps(optim))


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
