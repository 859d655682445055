"""The hybrid worker: actor (FSDP2), reference policy and rollout engine colocated in one process per rank.

The controller talks to a group of these through the methods marked with ``@register``; every
heavy object (model shards, optimizer, rollout engine, pixel tensors) stays inside the worker.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from verl.config.schema import RLConfig
from verl.protocol import DataProto
from verl.single_controller import Dispatch, Worker, register
from verl.utils.device import dist_backend, resolve_device
from verl.utils.seed import set_seed
from verl.workers.lora import adapters_disabled, count_parameters

logger = logging.getLogger("verl.workers")


class ActorRolloutRefWorker(Worker):
    """One rank of the actor/rollout/reference group."""

    def __init__(self, config: RLConfig) -> None:
        super().__init__()
        self.config = config
        self.device = resolve_device(config.trainer.device)
        self.actor = None
        self.ref = None
        self.rollout = None

    @register(Dispatch.ONE_TO_ALL)
    def init_model(self) -> dict:
        """Join the process group, build the actor (and reference), start the rollout engine."""
        from verl.workers.actor import FSDPActor
        from verl.workers.rollout import make_rollout

        cfg = self.config
        if self.device == "cpu":
            torch.set_num_threads(max(1, int(os.environ.get("VERL_CPU_THREADS_PER_WORKER", "1"))))
        self.init_distributed(dist_backend(self.device))
        set_seed(cfg.trainer.seed + self.rank)
        arr = cfg.actor_rollout_ref
        self.actor = FSDPActor(arr.model, arr.actor, device=self.device, role="actor")
        if arr.ref.enable and arr.model.lora_rank == 0:  # with LoRA the reference is the actor, adapters off
            self.ref = FSDPActor(arr.model, arr.actor, device=self.device, role="ref")
        self.rollout = make_rollout(arr.rollout, arr.model, device=self.device, seed=cfg.trainer.seed + 1000 * self.rank)
        trainable, total = count_parameters(self.actor.module)
        return {"rank": self.rank, "rollout": type(self.rollout).__name__, "device": self.device,
                "trainable_params": trainable, "total_params": total}

    @register(Dispatch.DP_COMPUTE_PROTO)
    def generate_sequences(self, prompts: DataProto) -> DataProto:
        """Sample responses for this rank's share of prompts (``meta_info`` carries sampling settings)."""
        self.rollout.wake_up()
        try:
            return self.rollout.generate(prompts)
        finally:
            self.rollout.sleep()

    @register(Dispatch.DP_COMPUTE_PROTO)
    def compute_log_prob(self, data: DataProto) -> DataProto:
        """Log-probs (and entropy) of the responses under the current actor: ``old_log_probs``."""
        log_probs, entropy = self.actor.compute_log_prob(data, calc_entropy=True)
        tensors = {"old_log_probs": log_probs}
        if entropy is not None:
            tensors["entropys"] = entropy
        return DataProto.from_dict(tensors=tensors)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def compute_ref_log_prob(self, data: DataProto) -> DataProto:
        """Log-probs of the responses under the frozen reference policy: ``ref_log_prob`` (with LoRA: the
        actor with its adapters switched off)."""
        if self.actor.lora:
            with adapters_disabled(self.actor.hf):
                log_probs, _ = self.actor.compute_log_prob(data, calc_entropy=False)
            return DataProto.from_dict(tensors={"ref_log_prob": log_probs})
        if self.ref is None:
            raise RuntimeError("compute_ref_log_prob called but the reference policy is disabled")
        log_probs, _ = self.ref.compute_log_prob(data, calc_entropy=False)
        return DataProto.from_dict(tensors={"ref_log_prob": log_probs})

    @register(Dispatch.DP_COMPUTE_PROTO)
    def update_actor(self, data: DataProto) -> dict[str, float]:
        """One PPO/GRPO update over this rank's share; returns the actor metrics."""
        return self.actor.update_policy(data)

    @register(Dispatch.ONE_TO_ALL)
    def init_sft(self, total_steps: int) -> None:
        """A fresh optimizer and LR schedule for an SFT update of ``total_steps`` steps (SOPHIA)."""
        self.actor.reset_optimizer(total_steps)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def sft_update(self, data: DataProto) -> dict[str, float]:
        """One optimizer step of reward-weighted NLL (weights: the ``sft_weights`` column) over the whole
        batch; every rank returns the same metrics."""
        return self.actor.sft_step(data, weights=data.batch["sft_weights"])

    @register(Dispatch.ONE_TO_ALL)
    def sync_weights(self) -> float:
        """Push the actor's full state dict into the rollout engine; returns seconds spent."""
        import time

        t0 = time.perf_counter()
        self.rollout.load_weights(self.actor.state_dict_for_sync())
        return time.perf_counter() - t0

    @register(Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, step_dir: str) -> None:
        self.actor.save_checkpoint(os.path.join(step_dir, "actor"))

    @register(Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, step_dir: str) -> None:
        self.actor.load_checkpoint(os.path.join(step_dir, "actor"))
        self.rollout.load_weights(self.actor.state_dict_for_sync())

    @register(Dispatch.ONE_TO_ALL)
    def export_hf(self, out_dir: str) -> None:
        self.actor.export_hf(out_dir)

    @register(Dispatch.ONE_TO_ALL)
    def param_checksum(self) -> float:
        """Sum of |parameters| of the full actor state dict (tests use it to see updates)."""
        total = 0.0
        for _, t in self.actor.state_dict_for_sync():
            total += float(t.detach().double().abs().sum())
        return total

    @register(Dispatch.ONE_TO_ALL)
    def full_state_dict(self) -> dict[str, np.ndarray]:
        """The actor's full parameters as numpy arrays (tests compare runs with it)."""
        return {k: t.detach().float().cpu().numpy().copy() for k, t in self.actor.state_dict_for_sync()}
