"""Serve a model folder over vLLM's OpenAI-compatible HTTP API, with this project's vLLM fixes applied.

    python -m verl.workers.rollout.vllm_server --model checkpoints/sophia/reasoner --port 8000 [vLLM args...]

Same arguments as ``vllm serve`` (they go to vLLM's own parser unchanged), with two differences: the
environment fixes of :mod:`verl.workers.rollout.vllm_compat` run first (the CPU build of vLLM cannot start
its server without them here), and the server binds to 127.0.0.1 unless ``--host`` is given. Use it for a
SOPHIA reasoner (``reason.backend=http``) or any OpenAI-compatible client.
"""

from __future__ import annotations

import sys

from verl.utils.torchvision_compat import ensure_torchvision_importable

# vLLM starts its engine core in a spawned child that re-imports this (main) module before anything else:
# the torchvision shim must therefore run at import here, not only in main().
ensure_torchvision_importable()

def server_argv(argv: list[str]) -> list[str]:
    """vLLM server arguments: ``argv`` plus ``--host 127.0.0.1`` when no host is given."""
    if not any(a == "--host" or a.startswith("--host=") for a in argv):
        argv = [*argv, "--host", "127.0.0.1"]
    return argv


def main(argv: list[str] | None = None) -> None:
    import torch

    from verl.workers.rollout.vllm_compat import import_vllm, prepare_vllm_env

    args = server_argv(list(sys.argv[1:] if argv is None else argv))
    prepare_vllm_env("cuda" if torch.cuda.is_available() else "cpu")
    import_vllm()
    from vllm.entrypoints.launchers.api_server.entry import main as serve

    sys.argv = ["vllm-serve", *args]
    serve()


if __name__ == "__main__":
    main()
