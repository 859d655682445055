"""Shared fixtures. Everything is offline: tiny models and digits data are built on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from verl.utils.torchvision_compat import ensure_torchvision_importable

# test modules import transformers' VLM classes directly: make torchvision importable first
ensure_torchvision_importable()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_TTRV_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ttrv_format"


@pytest.fixture(scope="session")
def tiny_vlm_path(tmp_path_factory):
    """Factory: `tiny_vlm_path(arch)` -> folder of a tiny offline VLM, built once per session."""
    from verl.models.tiny import build_tiny_vlm

    cache: dict[str, Path] = {}

    def _get(arch: str = "qwen2_5_vl") -> Path:
        if arch not in cache:
            out = tmp_path_factory.mktemp(f"tiny_{arch}")
            cache[arch] = Path(build_tiny_vlm(arch, out, seed=0))
        return cache[arch]

    return _get


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """The embedded digits tasks in TTRV format, built once per session (small sizes)."""
    from verl.data.digits import build_digits_dataset

    out = tmp_path_factory.mktemp("digits")
    build_digits_dataset(out, seed=0)
    return out


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance shared by the session (dashboard off, bound to localhost)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1", "HF_HUB_OFFLINE": "1",
                                      "TOKENIZERS_PARALLELISM": "false"}},
        )
    yield ray
    ray.shutdown()
