"""The policy VLM on the framework's worker group: its rollout engine captions and answers, its FSDP2 actor
takes the update (reward-weighted NLL), its checkpoints go through the framework's checkpoint layout.

``trainer.backend=local`` runs one worker in this process; ``ray`` starts ``trainer.n_gpus_per_node x
trainer.nnodes`` Ray workers (one GPU each on CUDA): generate calls split the prompts across them, an update
step splits the trajectories and all-reduces the gradients (FSDP2), so every worker takes the same step.
Nothing here names a device: ``trainer.device`` does (``auto``: CUDA where present).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from recipes.sophia.config import SophiaConfig
from verl.protocol import DataProto

logger = logging.getLogger(__name__)


def pad_for_workers(data: DataProto, world_size: int) -> DataProto:
    """Pad an SFT batch to a multiple of ``world_size`` with rows that train nothing (empty response mask,
    weight 0), so that the data-parallel split never duplicates a trajectory."""
    padded, pad = data.pad_to_divisor(world_size)
    if pad:
        padded.batch["response_mask"] = padded.batch["response_mask"].clone()
        padded.batch["response_mask"][-pad:] = 0
        padded.batch["sft_weights"] = padded.batch["sft_weights"].clone()
        padded.batch["sft_weights"][-pad:] = 0.0
    return padded


class PolicyGroup:
    """The worker group of :class:`verl.workers.hybrid.ActorRolloutRefWorker` built from ``cfg`` (policy =
    ``actor_rollout_ref``). ``weights`` names what the rollout engine holds: ``"base"`` or ``"updated"``."""

    def __init__(self, cfg: SophiaConfig, log_dir: Path) -> None:
        from verl.single_controller.start import start_worker_group
        from verl.trainer.main import init_ray, worker_env
        from verl.workers.hybrid import ActorRolloutRefWorker

        t = cfg.trainer
        self.started_ray = False
        if t.backend == "local":
            for key, value in worker_env().items():
                os.environ.setdefault(key, value)
        else:
            self.started_ray = init_ray(cfg)
        self.wg = start_worker_group(t, ActorRolloutRefWorker, {"config": cfg}, log_dir=str(log_dir))
        self.info = self.wg.init_model()
        self.world_size = self.wg.world_size
        self.weights = "base"
        logger.info("policy workers ready: %s", self.info)

    def generate(self, data: DataProto) -> DataProto:
        """Rollout of ``data`` (prompts split across the workers; sampling settings in ``meta_info``)."""
        return self.wg.generate_sequences(data)

    def init_update(self, total_steps: int) -> None:
        self.wg.init_sft(total_steps)

    def update(self, data: DataProto, weights: torch.Tensor) -> dict[str, float]:
        """One optimizer step of reward-weighted NLL on the whole batch (split across the workers)."""
        data.batch["sft_weights"] = torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        return self.wg.sft_update(pad_for_workers(data, self.world_size))[0]

    def save(self, folder: Path) -> None:
        self.wg.save_checkpoint(str(folder))

    def load(self, folder: Path) -> None:
        """Actor, optimizer and schedule of a checkpoint step folder; the engine gets its weights."""
        self.wg.load_checkpoint(str(folder))
        self.weights = "updated"

    def sync(self) -> None:
        """The engine takes the actor's current weights."""
        self.wg.sync_weights()
        self.weights = "updated"

    def export(self, out_dir: Path) -> None:
        self.wg.export_hf(str(out_dir))

    def close(self) -> None:
        self.wg.shutdown()
        if self.started_ray:
            import ray

            ray.shutdown()


class LazyPolicy:
    """Starts the :class:`PolicyGroup` on first use (a finished run starts no worker); ``factory`` replaces it
    in tests."""

    def __init__(self, factory: Any) -> None:
        self._factory, self._group = factory, None

    @property
    def started(self) -> bool:
        return self._group is not None

    def get(self) -> Any:
        if self._group is None:
            self._group = self._factory()
        return self._group

    def close(self) -> None:
        if self._group is not None and hasattr(self._group, "close"):
            self._group.close()
        self._group = None
