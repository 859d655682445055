"""FSDP2 actor (and reference policy): response log-probs, PPO/GRPO update, SFT step, weights, checkpoints.

No Ray here: an ``FSDPActor`` lives in whatever process the caller set up, with ``torch.distributed``
already initialised (gloo on CPU, nccl on CUDA; world size 1 works). The HF model is wrapped in a small
root module whose ``forward`` runs the whole micro-batch computation (image encoding once per unique
prompt, one language-model pass per unique prompt shared by its samples; :mod:`verl.models.vlm_forward`),
so FSDP2's root hooks cover every parameter. Pixel tensors are built here from the ``images`` column,
once per unique prompt (``uid``) per call.

Micro-batches are sized by tokens (``ppo_max_token_len_per_gpu`` / ``log_prob_max_token_len_per_gpu``, a shared
prompt counted once); every rank runs the same number of them (FSDP's collectives; zero-weight padding).

Update: groups whose advantages are all zero skip forward and backward (``skip_zero_adv_groups``); the
loss keeps its normalization with them present (their policy-gradient share is exactly zero; their KL /
entropy terms are dropped: with KL coefficient 0.001 a small approximation). Exactly on-policy
(:func:`old_log_prob_in_update`), no ``old_log_probs``: the update's own forward, detached. Typed config.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule

from verl.config.schema import ActorConfig, ModelConfig
from verl.models.vlm_forward import response_log_probs
from verl.utils.device import max_over_ranks, sum_over_ranks
from verl.utils.safe_dcp import load_dcp
from verl.workers.fsdp_utils import (
    apply_fsdp2,
    build_lr_scheduler,
    freeze_vision,
    iter_full_tensors,
    np_rng_from_tensors,
    np_rng_to_tensors,
)
from verl.workers.lora import apply_lora, lora_enabled, lora_scale, merge_lora, save_adapter, write_meta
from verl.workers.micro_batch import agg_share, batch_column, token_micro_batches

logger = logging.getLogger("verl.workers.actor")
_PREFIX = "hf."


def old_log_prob_in_update(actor: ActorConfig, prompts_per_step: int) -> bool:
    """True when the update is exactly on-policy (``ppo_epochs`` 1, one mini-batch per step): the trainer
    then skips the separate old-log-prob pass and the update takes them from its own forward."""
    return actor.ppo_epochs == 1 and actor.ppo_mini_batch_size >= prompts_per_step


class _PolicyModule(nn.Module):
    """FSDP root: one forward = response log-probs of a micro-batch (see module docstring)."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, input_ids, attention_mask, responses_len, image_inputs, prompt_index,
                temperature=1.0, calc_entropy=False, entropy_grad=True, share_prompt=True, token_stat="entropy"):
        return response_log_probs(self.hf, input_ids, attention_mask, responses_len, image_inputs,
                                  prompt_index, temperature=temperature, calc_entropy=calc_entropy,
                                  entropy_grad=entropy_grad, share_prompt=share_prompt, token_stat=token_stat)


class FSDPActor:
    """Policy (``role="actor"``, with optimizer) or frozen reference policy (``role="ref"``)."""

    def __init__(self, model_config: ModelConfig | str | os.PathLike, actor_config: ActorConfig | None,
                 device: str = "cpu", role: str = "actor") -> None:
        import torch.distributed as dist

        from verl.models.load import load_vlm

        if role not in ("actor", "ref"):
            raise ValueError(f"role must be 'actor' or 'ref', got {role!r}")
        if isinstance(model_config, str | os.PathLike):  # a bare model folder (export, tools)
            model_config = ModelConfig(path=str(model_config))
        self.cfg = actor_config if actor_config is not None else ActorConfig()
        self.model_cfg, self.role = model_config, role
        self.model_path = str(model_config.path)
        self.device = torch.device(device if device != "cuda" else f"cuda:{torch.cuda.current_device()}")
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        hf, self.processor = load_vlm(self.model_path, dtype=torch.float32, device=str(self.device),
                                      trust_remote_code=model_config.trust_remote_code,
                                      attn_implementation=model_config.attn_implementation)
        self.hf = hf
        self.lora = role == "actor" and lora_enabled(model_config)  # adapters only; the base stays frozen
        if self.lora:
            apply_lora(hf, model_config)
        if role == "ref":  # frozen: stored in the dtype it computes in (same log-probs, half the bytes at bf16)
            hf.requires_grad_(False)
            for p in hf.parameters():
                p.data = p.data.to(getattr(torch, self.cfg.fsdp.param_dtype))
        else:
            if model_config.freeze_vision_tower or model_config.freeze_projector:
                frozen = freeze_vision(hf, model_config.freeze_vision_tower, model_config.freeze_projector)
                logger.info("froze %d vision parameter tensors", len(frozen))
            if model_config.enable_gradient_checkpointing:
                hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        hf.config.use_cache = False
        self.module = apply_fsdp2(_PolicyModule(hf), hf, str(self.device), self.cfg.fsdp)
        self.optimizer = self.scheduler = None
        if role == "actor":
            self._build_optimizer()

    # ------------------------------------------------------------------ setup
    def _build_optimizer(self) -> None:
        optim = self.cfg.optim
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas),  # fused: no model-sized
                                           weight_decay=optim.weight_decay, fused=True)  # temporary in step()
        self.scheduler = build_lr_scheduler(self.optimizer, optim)

    # ------------------------------------------------------------------ forward
    @staticmethod
    def _prompt_keys(data) -> list:
        """Per row, the key of its prompt: ``uid`` (else ``prompt_index``, else the row itself)."""
        ntb = data.non_tensor_batch
        uids = ntb.get("uid")
        if uids is None:
            uids = ntb.get("prompt_index")
        return [f"row{r}" for r in range(len(data))] if uids is None else list(uids)

    def _image_inputs(self, data, rows: list[int], cache: dict) -> tuple[list, list[int]]:
        """Image tensors once per unique prompt among ``rows`` (keyed by uid; cached in ``cache``)."""
        from verl.models.multimodal import build_prompt_inputs

        ntb = data.non_tensor_batch
        pkeys = self._prompt_keys(data)
        keys, index, inputs = {}, [], []
        for r in rows:
            key = pkeys[r]
            if key not in keys:
                if key not in cache:
                    images = ntb["images"][r] if "images" in ntb else None
                    if images is None or len(images) == 0:
                        cache[key] = None
                    else:
                        if "prompt" not in ntb:
                            raise KeyError("the batch has images but no 'prompt' column to build pixels from")
                        try:
                            built = build_prompt_inputs(self.processor, ntb["prompt"][r], images)
                        except Exception as exc:
                            raise ValueError(f"building image inputs for row {r} (uid {key}): {exc}") from exc
                        cache[key] = {k: v for k, v in built.items() if k in ("pixel_values", "image_grid_thw")}
                keys[key] = len(inputs)
                inputs.append(cache[key])
            index.append(keys[key])
        return inputs, index

    def _forward(self, data, rows: list[int], cache: dict, calc_entropy: bool, entropy_grad: bool = True,
                 token_stat: str = "entropy"):
        sel = torch.as_tensor(rows, dtype=torch.long)
        input_ids = batch_column(data, "input_ids", "actor")[sel].to(self.device)
        attn = batch_column(data, "attention_mask", "actor")[sel].to(self.device)
        R = int(batch_column(data, "responses", "actor").shape[1])
        image_inputs, pidx = self._image_inputs(data, rows, cache)
        temperature = float(data.meta_info.get("temperature", 1.0) or 1.0)
        return self.module(input_ids, attn, R, image_inputs, pidx, temperature=temperature,
                           calc_entropy=calc_entropy, entropy_grad=entropy_grad, share_prompt=self.cfg.share_prompt,
                           token_stat=token_stat)

    def _micro_batches(self, data, rows: list[int], max_tokens: int) -> list[list[int]]:
        """Token-budget micro-batches of ``rows``, the same count on every rank (a zero-weight ``None``
        entry pads a rank that has fewer)."""
        attn = batch_column(data, "attention_mask", "actor")
        R = int(batch_column(data, "responses", "actor").shape[1])
        plen = attn[:, :-R].sum(-1).tolist()
        rlen = attn[:, -R:].sum(-1).tolist()
        mbs: list = token_micro_batches(rows, self._prompt_keys(data), plen, rlen, max_tokens,
                                        self.cfg.ppo_micro_batch_size_per_gpu, self.cfg.share_prompt)
        if self.world_size > 1:
            mbs += [None] * (max_over_ranks(len(mbs), self.device) - len(mbs))
        return mbs

    @torch.no_grad()
    def compute_log_prob(self, data, calc_entropy: bool = False,
                         token_stat: str = "entropy") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs ``[N, R]`` of ``responses`` and the per-token ``token_stat`` (entropy | self_certainty)."""
        self.module.eval()
        n = len(data)
        R = int(batch_column(data, "responses", "actor").shape[1])
        lps, ents = torch.zeros(n, R), (torch.zeros(n, R) if calc_entropy else None)
        cache: dict = {}
        for rows in self._micro_batches(data, list(range(n)), self.cfg.log_prob_max_token_len_per_gpu):
            lp, ent = self._forward(data, rows or [0], cache, calc_entropy, token_stat=token_stat)
            if rows is not None:  # None: a pass that only keeps this rank in step with the others
                lps[rows] = lp.float().cpu()
                if calc_entropy:
                    ents[rows] = ent.float().cpu()
        return lps, ents

    # ------------------------------------------------------------------ update
    def _samples_per_prompt(self, data) -> int:
        """Global samples per prompt, from the uids of all ranks (the DP split may cut a group)."""
        import torch.distributed as dist

        uids = data.non_tensor_batch.get("uid")
        if uids is None:
            return 1
        gathered: list = [Counter(str(u) for u in uids)]
        if self.world_size > 1:
            local, gathered = gathered[0], [None] * self.world_size
            dist.all_gather_object(gathered, local)
        total = sum(gathered, Counter())
        return max(1, round(sum(total.values()) / len(total)))

    def _step(self) -> float:
        """Clip, then step unless the grad norm is not finite; returns the (pre-clip) grad norm.

        Parameters without a gradient (every group of the step skipped) get zeros, so the optimizer
        moves as it would with the zero-advantage groups present."""
        for m in self.module.modules():  # a no-grad forward (old / ref log-probs) leaves the root, and with
            if isinstance(m, FSDPModule):  # reshard_after_forward=false every unit, unsharded: reshard so that
                m.reshard()  # zeros_like below gives sharded grads (not a Tensor / DTensor mix)
        params = [p for p in self.module.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        clip = self.cfg.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=clip if clip > 0 else float("inf"))
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        norm = float(norm)
        if math.isfinite(norm):
            self.optimizer.step()
        else:
            logger.warning("grad norm is %s: skipping this optimizer step", norm)
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def _zero_signal_rows(self, data, adv: torch.Tensor, rmask: torch.Tensor) -> tuple[set[int], float]:
        """Rows of this rank's groups whose advantages are all zero, and the fraction of groups skipped."""
        groups: dict = {}
        for r, k in enumerate(self._prompt_keys(data)):
            groups.setdefault(k, []).append(r)
        if not self.cfg.skip_zero_adv_groups or not groups:
            return set(), 0.0
        signal = (adv * rmask).abs().sum(-1) > 0
        skipped = [rows for rows in groups.values() if not bool(signal[rows].any())]
        return {r for rows in skipped for r in rows}, len(skipped) / len(groups)

    def update_policy(self, data) -> dict[str, float]:
        """PPO/GRPO update; one optimizer step per mini-batch of ``ppo_mini_batch_size`` prompts. A
        ``rollout_is_weights`` column (:mod:`verl.algos.rollout_correction`) multiplies each token's policy loss."""
        from verl.algos.kl import kl_penalty
        from verl.algos.policy_loss import agg_loss, get_policy_loss

        if self.optimizer is None:
            raise RuntimeError("update_policy called on a reference policy (role='ref')")
        c = self.cfg
        n = len(data)
        mini = max(1, c.ppo_mini_batch_size * self._samples_per_prompt(data) // self.world_size)
        starts = list(range(0, n, mini))
        fused = "old_log_probs" not in data.batch.keys()
        if fused and (c.ppo_epochs != 1 or len(starts) != 1):
            raise KeyError(f"update_policy: the batch has no 'old_log_probs' and the update is not exactly on-policy "
                           f"(ppo_epochs={c.ppo_epochs}, {len(starts)} mini-batches); compute them first")
        loss_fn = get_policy_loss(c.policy_loss)
        agg = c.loss_agg_mode
        clip_kw = {"clip_ratio_low": c.clip_ratio_low, "clip_ratio_high": c.clip_ratio_high,
                   "clip_ratio_c": c.clip_ratio_c}
        if c.use_kl_loss and "ref_log_prob" not in data.batch.keys():
            raise KeyError("use_kl_loss is set but the batch has no 'ref_log_prob'")
        adv, rmask = batch_column(data, "advantages", "update_policy"), batch_column(data, "response_mask", "update_policy")
        old_lp = None if fused else data.batch["old_log_probs"]
        is_weights = data.batch["rollout_is_weights"] if "rollout_is_weights" in data.batch.keys() else None
        ref_lp = data.batch["ref_log_prob"] if c.use_kl_loss else None
        skip, skipped_frac = self._zero_signal_rows(data, adv, rmask)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.module.train()
        cache: dict = {}
        hist: dict[str, list[float]] = {}

        def rec(k: str, v) -> None:
            hist.setdefault(k, []).append(float(v))

        for _ in range(c.ppo_epochs):
            for m0 in starts:
                mrows = list(range(m0, min(n, m0 + mini)))
                norm = max(agg_share(agg, rmask[mrows]), 1.0)
                sums: dict[str, float] = {}
                active = [r for r in mrows if r not in skip]
                for rows in self._micro_batches(data, active, c.ppo_max_token_len_per_gpu):
                    sel = torch.as_tensor(rows or mrows[:1])
                    lp, ent = self._forward(data, sel.tolist(), cache, calc_entropy=True,
                                            entropy_grad=c.entropy_coeff != 0)
                    dev = lp.device
                    mask = rmask[sel].to(dev)
                    w = 0.0 if rows is None else agg_share(agg, mask) / norm
                    old = lp.detach() if fused else old_lp[sel].to(dev)
                    pg_loss, pm = loss_fn(old_log_prob=old, log_prob=lp, advantages=adv[sel].to(dev),
                                          response_mask=mask, loss_agg_mode=agg, **clip_kw,
                                          rollout_is_weights=None if is_weights is None else is_weights[sel].to(dev))
                    loss = pg_loss
                    ent_agg = agg_loss(ent, mask, agg)
                    if c.entropy_coeff != 0:
                        loss = loss - c.entropy_coeff * ent_agg
                    terms = {"actor/pg_loss": pg_loss, "actor/entropy": ent_agg, "weight": 1.0}
                    if c.use_kl_loss:
                        kl = agg_loss(kl_penalty(lp, ref_lp[sel].to(dev), c.kl_loss_type), mask, agg)
                        loss = loss + c.kl_loss_coef * kl
                        terms["actor/kl_loss"] = kl
                    (loss * w).backward()
                    terms.update({f"actor/{k}": v for k, v in pm.items()})
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + w * float(v.detach() if torch.is_tensor(v) else v)
                # losses: the mini-batch aggregate (skipped rows add zero); other metrics: mean over computed rows
                done = sums.pop("weight", 0.0)
                losses = ("actor/pg_loss", "actor/kl_loss") if c.use_kl_loss else ("actor/pg_loss",)
                for k in losses:
                    rec(k, sums.pop(k, 0.0))
                for k, v in sums.items() if done > 0 else ():
                    rec(k, v / done)
                if c.use_kl_loss:
                    rec("actor/kl_coef", c.kl_loss_coef)
                rec("actor/grad_norm", self._step())
        self.scheduler.step()
        out = {k: float(np.mean(v)) for k, v in hist.items()}
        out["actor/lr"] = lr
        out["actor/skipped_group_frac"] = skipped_frac
        return out

    def sft_step(self, data, weights: torch.Tensor | None = None) -> dict[str, float]:
        """One optimizer step of ``agg(-w * log p(response))`` over ``data`` (this rank's rows): SOPHIA's update and
        the tiny models' pretraining (no ratio, no KL, no reference). On W ranks it equals the one-rank step on the
        whole batch: the normalizer (tokens for ``token-mean``, non-empty rows for the sequence modes) is summed over
        ranks and each rank's loss scaled by W, since FSDP averages gradients; rows with an empty
        ``response_mask`` (padding to a multiple of W) add nothing."""
        from verl.algos.policy_loss import weighted_nll_loss

        if self.optimizer is None:
            raise RuntimeError("sft_step called on a reference policy (role='ref')")
        n, ws, agg = len(data), self.world_size, self.cfg.loss_agg_mode
        w = torch.ones(n) if weights is None else torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        if w.numel() != n:
            raise ValueError(f"sft_step: {w.numel()} weights for {n} rows")
        rmask = batch_column(data, "response_mask", "sft_step")
        live = float(rmask.sum()) if agg == "token-mean" else float((rmask.sum(-1) > 0).sum())
        norm = 1.0 if agg == "seq-sum" else max(sum_over_ranks(live, self.device, ws), 1.0)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.module.train()
        cache, total = {}, 0.0
        for rows in self._micro_batches(data, list(range(n)), self.cfg.ppo_max_token_len_per_gpu):
            sel = torch.as_tensor(rows or [0])  # None: a pass that only keeps this rank in step with the others
            lp, _ = self._forward(data, sel.tolist(), cache, calc_entropy=False)
            mask = rmask[sel].to(lp.device)
            scale = 0.0 if rows is None else agg_share(agg, mask) / norm
            loss = weighted_nll_loss(lp, w[sel].to(lp.device), mask, agg) * scale
            (loss * ws).backward()
            total += float(loss.detach())
        grad_norm = self._step()
        self.scheduler.step()
        return {"actor/sft_loss": sum_over_ranks(total, self.device, ws), "actor/grad_norm": grad_norm, "actor/lr": lr}

    def reset_optimizer(self, total_steps: int) -> None:
        """A fresh optimizer and schedule over ``total_steps`` (an update sized after its rollouts: SOPHIA's)."""
        optim = dataclasses.replace(self.cfg.optim, total_training_steps=int(total_steps))
        self.cfg = dataclasses.replace(self.cfg, optim=optim)
        self._build_optimizer()

    # ------------------------------------------------------------------ weights
    def state_dict_for_sync(self, checkpoint_names: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """Full (unsharded) tensors, streamed one parameter at a time on EVERY rank (consume it fully on
        all ranks). Names are ``model.state_dict()`` names of the HF model (what ``HFRollout`` and vLLM's
        Qwen2-VL / Qwen2.5-VL mappers accept); ``checkpoint_names=True`` maps them to the names
        ``save_pretrained`` writes (transformers' reverse key conversion; materialises the whole dict)."""
        it = iter_full_tensors(self.module, prefix=_PREFIX)
        if self.lora:  # merged weights under the base model's names
            it = merge_lora(it, lora_scale(self.model_cfg))
        if not checkpoint_names:
            yield from it
            return
        from transformers.core_model_loading import revert_weight_conversion

        yield from revert_weight_conversion(self.hf, dict(it)).items()

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Full CPU state dict on rank 0 (empty elsewhere), HF model names."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k[len(_PREFIX):] if k.startswith(_PREFIX) else k: v for k, v in sd.items()}

    def export_hf(self, out_dir: str | os.PathLike) -> None:
        """Rank 0 writes a plain HF folder (safetensors + config + processor/tokenizer files of the source)."""
        import shutil

        import torch.distributed as dist

        sd = self.full_state_dict()
        if self.rank == 0:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            if self.lora:  # <out>/adapter (peft) beside the merged model in <out>
                save_adapter(out / "adapter", self.hf, sd.items(), self.model_cfg, self.model_path)
                sd = dict(merge_lora(sd.items(), lora_scale(self.model_cfg)))
            src = Path(self.model_path)
            if src.is_dir():  # processor, tokenizer, chat template, generation config, exactly as the source
                for f in src.iterdir():
                    if f.is_file() and not (f.suffix in (".safetensors", ".bin", ".pt")
                                            or f.name.endswith(".index.json")):
                        shutil.copy2(f, out / f.name)
            elif self.processor is not None:
                self.processor.save_pretrained(out)
            with torch.device("meta"):
                fresh = type(self.hf)(self.hf.config)
            fresh.load_state_dict(sd, assign=True, strict=True)
            fresh.tie_weights()
            fresh.generation_config = self.hf.generation_config
            fresh.save_pretrained(out, safe_serialization=True)
        if dist.is_initialized():
            dist.barrier()

    # ------------------------------------------------------------------ checkpoints
    def _ckpt_options(self):
        """With LoRA a checkpoint holds only the trainable tensors (the adapters); the base is ``model.path``."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(ignore_frozen_params=self.lora, strict=not self.lora)

    def save_checkpoint(self, ckpt_dir: str | os.PathLike) -> None:
        """Sharded model + optimizer via DCP; scheduler + RNG per rank (``extra_state_rank{r}.pt``)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        path = Path(ckpt_dir)
        path.mkdir(parents=True, exist_ok=True)
        if self.optimizer is not None:
            msd, osd = get_state_dict(self.module, self.optimizer, options=self._ckpt_options())
            state = {"model": msd, "optim": osd}
        else:
            state = {"model": self.module.state_dict()}
        dcp.save(state, checkpoint_id=str(path / "dcp"))
        extra = {"rng_cpu": torch.get_rng_state(), "rng_np": np_rng_to_tensors(), "rank": self.rank,
                 "world_size": self.world_size}
        if torch.cuda.is_available():
            extra["rng_cuda"] = torch.cuda.get_rng_state()
        if self.scheduler is not None:
            extra["scheduler"] = self.scheduler.state_dict()
        torch.save(extra, path / f"extra_state_rank{self.rank}.pt")
        if self.lora and self.rank == 0:
            write_meta(path, self.model_cfg)

    def load_checkpoint(self, ckpt_dir: str | os.PathLike) -> None:
        """Inverse of :meth:`save_checkpoint` (same world size for the RNG / scheduler files)."""
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        path = Path(ckpt_dir)
        if not (path / "dcp").is_dir():
            raise FileNotFoundError(f"no actor checkpoint under {path} (missing {path / 'dcp'})")
        if self.optimizer is not None:
            msd, osd = get_state_dict(self.module, self.optimizer, options=self._ckpt_options())
            state = {"model": msd, "optim": osd}
            load_dcp(state, path / "dcp")
            set_state_dict(self.module, self.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optim"], options=self._ckpt_options())
        else:
            state = {"model": self.module.state_dict()}
            load_dcp(state, path / "dcp")
            self.module.load_state_dict(state["model"])
        extra_file = path / f"extra_state_rank{self.rank}.pt"
        if not extra_file.is_file():
            raise FileNotFoundError(f"{extra_file} missing (checkpoint saved at another world size?)")
        extra = torch.load(extra_file, weights_only=True)
        torch.set_rng_state(extra["rng_cpu"])
        np_rng_from_tensors(extra["rng_np"])
        if "rng_cuda" in extra and torch.cuda.is_available():
            torch.cuda.set_rng_state(extra["rng_cuda"])
        if self.scheduler is not None and "scheduler" in extra:
            self.scheduler.load_state_dict(extra["scheduler"])


    def load_model_weights(self, ckpt_dir: str | os.PathLike) -> None:
        """Only the model weights of a :meth:`save_checkpoint` folder (any world size: DCP reshards)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        path = Path(ckpt_dir)
        if not (path / "dcp").is_dir():
            raise FileNotFoundError(f"no actor checkpoint under {path} (missing {path / 'dcp'})")
        state = {"model": get_model_state_dict(self.module, options=self._ckpt_options())}
        load_dcp(state, path / "dcp")
        set_model_state_dict(self.module, state["model"], options=self._ckpt_options())
