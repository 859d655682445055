"""Start the worker group ``trainer.backend`` names: one in-process worker (``local``) or Ray actors (``ray``)."""

from __future__ import annotations

from typing import Any

from verl.config.schema import TrainerConfig
from verl.single_controller.dispatch import WorkerGroup


def start_worker_group(trainer: TrainerConfig, worker_cls: type, init_kwargs: dict[str, Any],
                       log_dir: str | None = None) -> WorkerGroup:
    """``trainer.n_gpus_per_node x trainer.nnodes`` workers of ``worker_cls`` (one GPU each on CUDA, else one
    CPU); ``local``: rank 0 of 1 in this process. Ray must be initialised already for ``ray``; each Ray
    worker writes its output to ``<log_dir>/worker_<rank>.log``."""
    if trainer.backend == "local":
        from verl.single_controller.local import LocalWorkerGroup

        return LocalWorkerGroup(worker_cls, init_kwargs=init_kwargs)
    from verl.single_controller.worker_group import RayWorkerGroup, ResourcePool, ResourcePoolSpec

    spec = ResourcePoolSpec(n_workers=trainer.n_gpus_per_node * trainer.nnodes, num_cpus_per_worker=1.0,
                            num_gpus_per_worker=1.0 if trainer.device == "cuda" else 0.0, nnodes=trainer.nnodes)
    return RayWorkerGroup(worker_cls, ResourcePool(spec), init_kwargs=init_kwargs,
                          loopback=trainer.ray_address is None, log_dir=log_dir)
