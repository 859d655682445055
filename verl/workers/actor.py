"""FSDP2 actor (and reference policy): response log-probs, PPO/GRPO update, SFT step, weights, checkpoints.

No Ray here: an ``FSDPActor`` lives in whatever process the caller set up, with ``torch.distributed``
already initialised (gloo on CPU, nccl on CUDA; world size 1 works). The HF model is wrapped in a small
root module whose ``forward`` runs the whole micro-batch computation (image encoding once per unique
prompt + language model, :mod:`verl.models.vlm_forward`), so FSDP2's root hooks cover every parameter.
Pixel tensors are built here from the ``images`` column, once per unique prompt (``uid``) per call.

Config keys read (``actor``): ppo_mini_batch_size (prompts), ppo_micro_batch_size_per_gpu,
log_prob_micro_batch_size_per_gpu, ppo_epochs, policy_loss ("vanilla" | "nll" | ...), clip_ratio_low,
clip_ratio_high, clip_ratio_c, loss_agg_mode, use_kl_loss, kl_loss_coef, kl_loss_type, entropy_coeff,
grad_clip, freeze_vision_tower, freeze_projector, optim.{lr, betas, weight_decay, lr_warmup_steps,
lr_warmup_steps_ratio, warmup_style|lr_scheduler_type, min_lr_ratio, num_cycles, total_training_steps}.
(``model``): path, trust_remote_code, enable_gradient_checkpointing, freeze_vision_tower, freeze_projector.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from verl.models.vlm_forward import response_log_probs
from verl.workers.fsdp_utils import (
    apply_fsdp2,
    cfg_get,
    freeze_vision,
    iter_full_tensors,
    lr_lambda_factory,
    np_rng_from_tensors,
    np_rng_to_tensors,
)

logger = logging.getLogger("verl.workers.actor")
_PREFIX = "hf."


class _PolicyModule(nn.Module):
    """FSDP root: one forward = response log-probs of a micro-batch (see module docstring)."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, input_ids, attention_mask, responses_len, image_inputs, prompt_index,
                temperature=1.0, calc_entropy=False, entropy_grad=True):
        return response_log_probs(self.hf, input_ids, attention_mask, responses_len, image_inputs,
                                  prompt_index, temperature=temperature, calc_entropy=calc_entropy,
                                  entropy_grad=entropy_grad)


def _column(data, key: str, where: str):
    if key in data.batch.keys():
        return data.batch[key]
    if key in data.non_tensor_batch:
        return data.non_tensor_batch[key]
    raise KeyError(f"{where}: the batch has no {key!r} (tensors: {sorted(data.batch.keys())}, "
                   f"non-tensors: {sorted(data.non_tensor_batch)})")


class FSDPActor:
    """Policy (``role="actor"``, with optimizer) or frozen reference policy (``role="ref"``)."""

    def __init__(self, model_config: Any, actor_config: Any, device: str = "cpu", role: str = "actor",
                 model_path: str | os.PathLike | None = None) -> None:
        import torch.distributed as dist

        from verl.models.load import load_vlm

        if role not in ("actor", "ref"):
            raise ValueError(f"role must be 'actor' or 'ref', got {role!r}")
        if isinstance(model_config, str | os.PathLike):
            model_path, model_config = model_config, None
        self.model_path = str(model_path or cfg_get(model_config, "path"))
        self.cfg, self.model_cfg, self.role = actor_config, model_config, role
        self.device = torch.device(device if device != "cuda" else f"cuda:{torch.cuda.current_device()}")
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        load_kwargs: dict[str, Any] = {"dtype": torch.float32, "device": str(self.device)}
        if cfg_get(model_config, "trust_remote_code", False):
            load_kwargs["trust_remote_code"] = True
        hf, self.processor = load_vlm(self.model_path, **load_kwargs)
        self.hf = hf
        if role == "ref":
            hf.requires_grad_(False)
        else:
            ft = bool(cfg_get(actor_config, "freeze_vision_tower", cfg_get(model_config, "freeze_vision_tower", False)))
            fp = bool(cfg_get(actor_config, "freeze_projector", cfg_get(model_config, "freeze_projector", False)))
            if ft or fp:
                frozen = freeze_vision(hf, ft, fp)
                logger.info("froze %d vision parameter tensors", len(frozen))
            if cfg_get(model_config, "enable_gradient_checkpointing", False):
                hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        hf.config.use_cache = False
        self.module = apply_fsdp2(_PolicyModule(hf), hf, str(self.device))
        self.optimizer = self.scheduler = None
        if role == "actor":
            self._build_optimizer()

    # ------------------------------------------------------------------ setup
    def _build_optimizer(self) -> None:
        optim = cfg_get(self.cfg, "optim", None)
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=float(cfg_get(optim, "lr", 1e-6)), betas=tuple(cfg_get(optim, "betas", (0.9, 0.999))),
            weight_decay=float(cfg_get(optim, "weight_decay", 0.01)))
        total = int(cfg_get(optim, "total_training_steps", -1) or -1)
        warmup = int(cfg_get(optim, "lr_warmup_steps", -1) or -1)
        if warmup < 0:
            warmup = int(float(cfg_get(optim, "lr_warmup_steps_ratio", 0.0)) * max(total, 0))
        style = cfg_get(optim, "warmup_style", None) or cfg_get(optim, "lr_scheduler_type", "constant")
        fn = lr_lambda_factory(str(style), warmup, total, float(cfg_get(optim, "min_lr_ratio", 0.0) or 0.0),
                               float(cfg_get(optim, "num_cycles", 0.5)))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, fn)

    # ------------------------------------------------------------------ forward
    def _image_inputs(self, data, rows: list[int], cache: dict) -> tuple[list, list[int]]:
        """Image tensors once per unique prompt among ``rows`` (keyed by uid; cached in ``cache``)."""
        from verl.models.multimodal import build_prompt_inputs

        ntb = data.non_tensor_batch
        uids = ntb.get("uid")
        if uids is None:
            uids = ntb.get("prompt_index")
        keys, index, inputs = {}, [], []
        for r in rows:
            key = uids[r] if uids is not None else f"row{r}"
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

    def _forward(self, data, rows: list[int], cache: dict, calc_entropy: bool, entropy_grad: bool = True):
        sel = torch.as_tensor(rows, dtype=torch.long)
        input_ids = _column(data, "input_ids", "actor")[sel].to(self.device)
        attn = _column(data, "attention_mask", "actor")[sel].to(self.device)
        R = int(_column(data, "responses", "actor").shape[1])
        image_inputs, pidx = self._image_inputs(data, rows, cache)
        temperature = float(data.meta_info.get("temperature", 1.0) or 1.0)
        return self.module(input_ids, attn, R, image_inputs, pidx, temperature=temperature,
                           calc_entropy=calc_entropy, entropy_grad=entropy_grad)

    @torch.no_grad()
    def compute_log_prob(self, data, calc_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs ``[N, R]`` (and entropy) of ``responses`` under the current weights (CPU float32)."""
        mb = int(cfg_get(self.cfg, "log_prob_micro_batch_size_per_gpu", None)
                 or cfg_get(self.cfg, "ppo_micro_batch_size_per_gpu", 8))
        self.module.eval()
        n, cache, lps, ents = len(data), {}, [], []
        for s in range(0, n, mb):
            lp, ent = self._forward(data, list(range(s, min(n, s + mb))), cache, calc_entropy)
            lps.append(lp.float().cpu())
            if ent is not None:
                ents.append(ent.float().cpu())
        return torch.cat(lps), (torch.cat(ents) if calc_entropy else None)

    # ------------------------------------------------------------------ update
    def _samples_per_prompt(self, data) -> int:
        """Global samples per prompt, from the uids of all ranks (the DP split may cut a group)."""
        import torch.distributed as dist

        uids = data.non_tensor_batch.get("uid")
        if uids is None:
            return 1
        local: dict[str, int] = {}
        for u in uids:
            local[str(u)] = local.get(str(u), 0) + 1
        gathered: list[dict] = [local]
        if self.world_size > 1:
            gathered = [None] * self.world_size
            dist.all_gather_object(gathered, local)
        total: dict[str, int] = {}
        for d in gathered:
            for k, v in d.items():
                total[k] = total.get(k, 0) + v
        return max(1, round(sum(total.values()) / len(total)))

    def _step(self) -> float:
        """Clip, then step unless the grad norm is not finite; returns the (pre-clip) grad norm."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        clip = float(cfg_get(self.cfg, "grad_clip", 1.0) or 0.0)
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

    def update_policy(self, data) -> dict[str, float]:
        """PPO/GRPO update; one optimizer step per mini-batch of ``ppo_mini_batch_size`` prompts."""
        from verl.algos.kl import kl_penalty
        from verl.algos.policy_loss import agg_loss, get_policy_loss

        if self.optimizer is None:
            raise RuntimeError("update_policy called on a reference policy (role='ref')")
        c = self.cfg
        n = len(data)
        mini = max(1, int(cfg_get(c, "ppo_mini_batch_size", 1)) * self._samples_per_prompt(data) // self.world_size)
        micro = int(cfg_get(c, "ppo_micro_batch_size_per_gpu", 4))
        pl = cfg_get(c, "policy_loss", "vanilla")
        loss_fn = get_policy_loss(pl if isinstance(pl, str) else cfg_get(pl, "loss_mode", "vanilla"))
        agg = str(cfg_get(c, "loss_agg_mode", "token-mean"))
        use_kl = bool(cfg_get(c, "use_kl_loss", False))
        kl_coef, kl_type = float(cfg_get(c, "kl_loss_coef", 0.0)), str(cfg_get(c, "kl_loss_type", "low_var_kl"))
        ent_coef = float(cfg_get(c, "entropy_coeff", 0.0))
        clip_kw = {"clip_ratio_low": float(cfg_get(c, "clip_ratio_low", None) or cfg_get(c, "clip_ratio", 0.2)),
                   "clip_ratio_high": float(cfg_get(c, "clip_ratio_high", None) or cfg_get(c, "clip_ratio", 0.2)),
                   "clip_ratio_c": float(cfg_get(c, "clip_ratio_c", 3.0))}
        if use_kl and "ref_log_prob" not in data.batch.keys():
            raise KeyError("use_kl_loss is set but the batch has no 'ref_log_prob'")
        old_lp, adv = _column(data, "old_log_probs", "update_policy"), _column(data, "advantages", "update_policy")
        rmask = _column(data, "response_mask", "update_policy")
        ref_lp = data.batch["ref_log_prob"] if use_kl else None
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.module.train()
        cache: dict = {}
        hist: dict[str, list[float]] = {}

        def rec(k: str, v) -> None:
            hist.setdefault(k, []).append(float(v))

        for _ in range(int(cfg_get(c, "ppo_epochs", 1))):
            for m0 in range(0, n, mini):
                mrows = list(range(m0, min(n, m0 + mini)))
                for u0 in range(0, len(mrows), micro):
                    rows = mrows[u0:u0 + micro]
                    sel = torch.as_tensor(rows)
                    lp, ent = self._forward(data, rows, cache, calc_entropy=True, entropy_grad=ent_coef != 0)
                    dev = lp.device
                    mask = rmask[sel].to(dev)
                    pg_loss, pm = loss_fn(old_log_prob=old_lp[sel].to(dev), log_prob=lp, advantages=adv[sel].to(dev),
                                          response_mask=mask, loss_agg_mode=agg, **clip_kw)
                    loss = pg_loss
                    ent_agg = agg_loss(ent, mask, agg)
                    if ent_coef != 0:
                        loss = loss - ent_coef * ent_agg
                    if use_kl:
                        kl = agg_loss(kl_penalty(lp, ref_lp[sel].to(dev), kl_type), mask, agg)
                        loss = loss + kl_coef * kl
                        rec("actor/kl_loss", kl.detach())
                        rec("actor/kl_coef", kl_coef)
                    (loss * (len(rows) / len(mrows))).backward()
                    rec("actor/pg_loss", pg_loss.detach())
                    rec("actor/entropy", ent_agg.detach())
                    for k, v in pm.items():
                        rec(f"actor/{k}", v.detach())
                rec("actor/grad_norm", self._step())
        self.scheduler.step()
        out = {k: float(np.mean(v)) for k, v in hist.items()}
        out["actor/lr"] = lr
        return out

    def sft_step(self, data, weights: torch.Tensor | None = None) -> dict[str, float]:
        """One optimizer step of (weighted) maximum likelihood on ``responses`` (SOPHIA)."""
        from verl.algos.policy_loss import weighted_nll_loss

        if self.optimizer is None:
            raise RuntimeError("sft_step called on a reference policy (role='ref')")
        n = len(data)
        w = torch.ones(n) if weights is None else torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        if w.numel() != n:
            raise ValueError(f"sft_step: {w.numel()} weights for {n} rows")
        micro = int(cfg_get(self.cfg, "ppo_micro_batch_size_per_gpu", 4))
        agg = str(cfg_get(self.cfg, "loss_agg_mode", "token-mean"))
        rmask = _column(data, "response_mask", "sft_step")
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.module.train()
        cache, losses = {}, []
        for s in range(0, n, micro):
            rows = list(range(s, min(n, s + micro)))
            sel = torch.as_tensor(rows)
            lp, _ = self._forward(data, rows, cache, calc_entropy=False)
            loss = weighted_nll_loss(lp, w[sel].to(lp.device), rmask[sel].to(lp.device), agg)
            (loss * (len(rows) / n)).backward()
            losses.append(float(loss.detach()))
        norm = self._step()
        self.scheduler.step()
        return {"actor/sft_loss": float(np.mean(losses)), "actor/grad_norm": norm, "actor/lr": lr}

    # ------------------------------------------------------------------ weights
    def state_dict_for_sync(self, checkpoint_names: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """Full (unsharded) tensors, streamed one parameter at a time on EVERY rank (consume it fully on
        all ranks). Names are ``model.state_dict()`` names of the HF model (what ``HFRollout`` and vLLM's
        Qwen2-VL / Qwen2.5-VL mappers accept); ``checkpoint_names=True`` maps them to the names
        ``save_pretrained`` writes (transformers' reverse key conversion; materialises the whole dict)."""
        it = iter_full_tensors(self.module, prefix=_PREFIX)
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
    def save_checkpoint(self, ckpt_dir: str | os.PathLike) -> None:
        """Sharded model + optimizer via DCP; scheduler + RNG per rank (``extra_state_rank{r}.pt``)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        path = Path(ckpt_dir)
        path.mkdir(parents=True, exist_ok=True)
        if self.optimizer is not None:
            msd, osd = get_state_dict(self.module, self.optimizer)
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

    def load_checkpoint(self, ckpt_dir: str | os.PathLike) -> None:
        """Inverse of :meth:`save_checkpoint` (same world size for the RNG / scheduler files)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        path = Path(ckpt_dir)
        if not (path / "dcp").is_dir():
            raise FileNotFoundError(f"no actor checkpoint under {path} (missing {path / 'dcp'})")
        if self.optimizer is not None:
            msd, osd = get_state_dict(self.module, self.optimizer)
            state = {"model": msd, "optim": osd}
            dcp.load(state, checkpoint_id=str(path / "dcp"))
            set_state_dict(self.module, self.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optim"])
        else:
            state = {"model": self.module.state_dict()}
            dcp.load(state, checkpoint_id=str(path / "dcp"))
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
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        path = Path(ckpt_dir)
        if not (path / "dcp").is_dir():
            raise FileNotFoundError(f"no actor checkpoint under {path} (missing {path / 'dcp'})")
        state = {"model": get_model_state_dict(self.module)}
        dcp.load(state, checkpoint_id=str(path / "dcp"))
        set_model_state_dict(self.module, state["model"])


class ReferencePolicy(FSDPActor):
    """Frozen reference policy: ``compute_log_prob`` gives ``ref_log_prob``; no optimizer."""

    def __init__(self, model_config: Any, actor_config: Any, device: str = "cpu",
                 model_path: str | os.PathLike | None = None) -> None:
        super().__init__(model_config, actor_config, device=device, role="ref", model_path=model_path)

