"""The worker class run in the driver process: world size 1, the same dispatch, no Ray.

For single-device runs, debugging with a breakpoint, tests that are not about Ray, and machines
without Ray. Importing this module does not import Ray.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from verl.single_controller.dispatch import WorkerGroup
from verl.single_controller.worker import loopback_env


class LocalWorkerGroup(WorkerGroup):
    """One instance of ``worker_cls`` (rank 0 of 1) in this process, driven like a Ray worker group."""

    def __init__(self, worker_cls: type, init_kwargs: dict[str, Any] | None = None,
                 env_vars: dict[str, str] | None = None) -> None:
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", **(env_vars or {})})
        for key, value in loopback_env().items():
            os.environ.setdefault(key, value)
        worker = worker_cls(**(init_kwargs or {}))
        worker.set_rendezvous(worker.rendezvous(loopback=True))
        self.workers = [worker]
        super().__init__(worker_cls, world_size=1)

    def _call(self, method: str, calls: list[tuple[tuple, dict]]) -> list[Any]:
        return [getattr(w, method)(*args, **kwargs) for w, (args, kwargs) in zip(self.workers, calls)]

    def shutdown(self) -> None:
        """Drop the worker (model, optimizer, engine) and leave the process group."""
        self.workers = []
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
