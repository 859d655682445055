"""Device selection and the matching ``torch.distributed`` backend."""

from __future__ import annotations

import torch

_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> str:
    """Map ``"auto"|"cpu"|"cuda"`` (also ``"cuda:N"``) to a concrete device string.

    ``auto`` picks ``cuda`` when available, else ``cpu``. Asking for CUDA without one raises ``RuntimeError``.
    """
    if not isinstance(device, str):
        raise ValueError(f"resolve_device: expected one of {_CHOICES}, got {device!r}")
    dev = device.strip().lower()
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cpu":
        return "cpu"
    if dev == "cuda" or dev.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"resolve_device: {device!r} requested but CUDA is not available")
        return dev
    raise ValueError(f"resolve_device: unknown device {device!r}; expected one of {_CHOICES} (or 'cuda:N')")


def dist_backend(device: str) -> str:
    """``torch.distributed`` backend for a resolved device: ``nccl`` for CUDA, ``gloo`` for CPU."""
    dev = device.strip().lower()
    if dev == "cpu":
        return "gloo"
    if dev == "cuda" or dev.startswith("cuda:"):
        return "nccl"
    raise ValueError(f"dist_backend: unknown device {device!r}; expected 'cpu' or 'cuda[:N]'")


def sum_over_ranks(value: float, device: torch.device | str, world_size: int) -> float:
    """``value`` summed over the ranks (``value`` itself on one rank); the tensor lives on ``device``."""
    if world_size == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def max_over_ranks(value: int, device: torch.device | str) -> int:
    """``value``'s maximum over the ranks; the tensor lives on ``device`` (NCCL serves only CUDA tensors)."""
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
