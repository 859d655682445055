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
        self.ema: dict[str, torch.Tensor] | None = None  # EMA of the trainable weights (update_ema), on first use
        self._actor_backup: dict[str, torch.Tensor] = {}

    @register(Dispatch.ONE_TO_ALL)
    def init_model(self) -> dict:
        """Join the process group, build the actor (and reference), start the rollout engine."""
        from verl.utils.memory_plan import vllm_rollout_for_free_memory
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
        # vLLM starts after the actor and reference: its memory share is what they left free (verl.utils.memory_plan)
        rollout_cfg = vllm_rollout_for_free_memory(arr.rollout, self.device, self.actor.module, arr.actor.fsdp.cpu_offload)
        self.rollout = make_rollout(rollout_cfg, arr.model, device=self.device, seed=cfg.trainer.seed + 1000 * self.rank)
        trainable, total = count_parameters(self.actor.module)
        return {"rank": self.rank, "rollout": type(self.rollout).__name__, "device": self.device,
                "trainable_params": trainable, "total_params": total}

    @register(Dispatch.DP_COMPUTE_PROTO)
    def generate_sequences(self, prompts: DataProto) -> DataProto:
        """Sample responses for this rank's share of prompts (``meta_info`` carries sampling settings;
        ``meta_info["weights"] == "ema"`` samples from the EMA of the actor's trainable weights instead)."""
        ema = prompts.meta_info.get("weights") == "ema"
        if ema:
            self._load_rollout_weights(self._ema_or_init())
        self.rollout.wake_up()
        try:
            return self.rollout.generate(prompts)
        finally:
            self.rollout.sleep()
            if ema:
                self._load_rollout_weights(None)

    @register(Dispatch.DP_COMPUTE_PROTO)
    def compute_log_prob(self, data: DataProto) -> DataProto:
        """Log-probs of the responses under the current actor (``old_log_probs``) and, from the same forward,
        the per-token entropy (``entropys``) or, when ``meta_info["token_stats"]`` asks, per-response means
        over the response tokens of ``token_entropy`` and / or ``self_certainty`` ([N] each)."""
        asked = list(data.meta_info.get("token_stats", []))
        unknown = sorted(set(asked) - {"token_entropy", "self_certainty"})
        if unknown:
            raise ValueError(f"compute_log_prob: unknown token_stats {unknown} (token_entropy, self_certainty)")
        stat = "self_certainty" if "self_certainty" in asked and "token_entropy" not in asked else "entropy"
        log_probs, per_token = self.actor.compute_log_prob(data, calc_entropy=True, token_stat=stat)
        tensors = {"old_log_probs": log_probs}
        if stat == "entropy":
            tensors["entropys"] = per_token
        if asked:
            from verl.algos.utils import masked_mean

            mean = masked_mean(per_token, data.batch["response_mask"].float(), dim=-1)
            tensors.update({name: mean for name in asked})  # one stat asked at a time (the method's)
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
    def update_ema(self, decay: float) -> None:
        """ema <- decay * ema + (1 - decay) * weights, over the actor's trainable parameters (this rank's shards;
        started from the weights before the first update)."""
        ema = self._ema_or_init()
        with torch.no_grad():
            for name, p in self.actor.module.named_parameters():
                if name in ema:
                    ema[name].mul_(decay).add_(p.detach(), alpha=1.0 - decay)

    def _ema_or_init(self) -> dict[str, torch.Tensor]:
        if self.ema is None:
            self.ema = {n: p.detach().clone() for n, p in self.actor.module.named_parameters() if p.requires_grad}
        return self.ema

    def _load_rollout_weights(self, ema: dict[str, torch.Tensor] | None) -> None:
        """The rollout engine gets the EMA weights (``ema``) or the actor's again (None)."""
        with torch.no_grad():
            params = dict(self.actor.module.named_parameters())
            if ema is not None:
                self._actor_backup = {n: params[n].detach().clone() for n in ema}
                for n, t in ema.items():
                    params[n].copy_(t)
            self.rollout.load_weights(self.actor.state_dict_for_sync())
            if ema is not None:
                for n, t in self._actor_backup.items():
                    params[n].copy_(t)
                self._actor_backup = {}

    @register(Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, step_dir: str) -> None:
        self.actor.save_checkpoint(os.path.join(step_dir, "actor"))

    @register(Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, step_dir: str) -> None:
        self.actor.load_checkpoint(os.path.join(step_dir, "actor"))
        self.ema = None  # an EMA teacher (not checkpointed) restarts from the loaded weights
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
