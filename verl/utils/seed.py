"""Seeding and RNG-state capture for reproducible runs and checkpoints.

``rng_state()`` returns a JSON-serializable dict (plain ints / lists / strings), so it can be stored
in ``trainer_state.json`` without pickle.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and all CUDA devices)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"set_seed: seed must be an int, got {type(seed).__name__}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _tensor_to_list(t: torch.Tensor) -> list[int]:
    return t.to(torch.uint8).tolist()


def _list_to_tensor(v: list[int]) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.uint8)


def rng_state() -> dict[str, Any]:
    """Capture the RNG state of python ``random``, NumPy, torch CPU and CUDA (if available) as JSON-able data."""
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": list(py_internal), "gauss": py_gauss},
        "numpy": {
            "kind": str(np_kind),
            "keys": np.asarray(np_keys).astype(np.int64).tolist(),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": _tensor_to_list(torch.get_rng_state()),
        "cuda": [],
    }
    if torch.cuda.is_available():
        state["cuda"] = [_tensor_to_list(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a state produced by :func:`rng_state`. CUDA states are restored only when CUDA is available
    and the device count matches; missing sections raise ``KeyError`` naming the section."""
    for section in ("python", "numpy", "torch"):
        if section not in state:
            raise KeyError(f"set_rng_state: missing section {section!r} (have {sorted(state)})")
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (npst["kind"], np.asarray(npst["keys"], dtype=np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    torch.set_rng_state(_list_to_tensor(state["torch"]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_list_to_tensor(s) for s in cuda])
