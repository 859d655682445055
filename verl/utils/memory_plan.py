"""Memory plan: what one GPU will hold during a run, from the model's shape and the trainer settings, before
anything is allocated.

Public API
----------
- ``model_counts(config) -> ModelCounts``: parameter counts of a transformers VLM config (built on the meta
  device: no weights, exact counts) plus the widths the estimates use.
- ``PlanSettings``: what the trainer will do (world size, compute dtype, reference, frozen vision, rollout engine
  and whether it sleeps outside generation, tokens per update / log-prob micro-batch, ...);
  ``settings_from_config(cfg)`` reads them from a finalized :class:`~verl.config.schema.RLConfig`.
- ``plan_memory(counts, settings, free_bytes) -> MemoryPlan``: bytes of each part and the peak of each phase
  (generation, log-prob, update) against ``free_bytes``; pure arithmetic.
- ``choose_settings(counts, settings, free_bytes, allow_freeze_vision=False) -> (MemoryPlan, changes)``: the
  configured settings when they fit, else, in this order until they do: the rollout engine asleep outside
  generation, fewer prompts per HF generate call, halved update / log-prob token budgets (not below
  ``MIN_TOKENS``), a frozen vision tower (only when allowed).
  ``plan.refusal()`` is the one line naming what does not fit when nothing does.
- ``vllm_memory_share(configured, free_bytes, total_bytes)``: the ``gpu_memory_utilization`` vLLM can be given
  after the actor and reference are built (its start-up check needs that share of the card to be free);
  ``vllm_rollout_for_free_memory(rollout, device, actor_module, cpu_offload)`` applies it to a rollout config
  (the hybrid worker calls it before starting vLLM).
- CLI: ``python -m verl.utils.memory_plan --model qwen2.5-vl-3b [--free-gib 79] [--config-dir D --config-name N]
  [--prompt-tokens P] [key=value ...]`` (``--model``: a :mod:`verl.models.real_shape` name at full depth, or a
  local model folder; default ``actor_rollout_ref.model.path``). Exit 2 with ``error: ...`` when it does not fit.

What is counted (per GPU, world size W): the actor's fp32 master weights (P·4/W), its fp32 gradients and
fused-AdamW moments (T·4/W and T·8/W for T trainable parameters; fused AdamW allocates no model-sized
temporary), the frozen reference stored in the compute dtype (P·2/W at bf16: it never trains, so storing it at
the dtype it computes in gives the same numbers), the rollout copy (HF engine: the whole model in the rollout
dtype; vLLM: ``gpu_memory_utilization`` of the card while awake), FSDP's gathered parameters (the root unit and
two layers in the compute dtype) and activations: with gradient checkpointing one hidden state per layer plus
one layer recomputed with its gradients, ``10·hidden + 4·intermediate`` values per token per layer, the logits
of the response rows in fp32 (value, copy and gradient), and the vision tower's blocks over the images' patches.
The estimate ignores the CUDA context (``free_bytes`` is measured after it) and keeps 5 % of the free memory
(at least 3 GiB) for what it leaves out: the allocator's fragmentation, cuBLAS / NCCL workspaces.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GiB = 2**30
MIN_HEADROOM_BYTES = 3 * GiB
MIN_TOKENS = 2048
CARD_80GB_FREE_BYTES = int(79.0 * GiB)  # an 80 GB H100 / A100 after its CUDA context
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelCounts:
    """Parameter counts and widths of one VLM."""

    total: int
    vision_tower: int  # vision tower parameters, projector excluded
    projector: int
    embedding: int  # input embedding (+ untied lm_head)
    text_layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int
    vision_layers: int
    vision_hidden: int
    vision_intermediate: int


@dataclass(frozen=True)
class PlanSettings:
    """What the trainer does, as far as memory goes (see the module docstring)."""

    world_size: int = 1
    param_dtype: str = "bfloat16"  # FSDP compute dtype, also the reference's storage dtype
    reference: bool = True
    freeze_vision_tower: bool = False
    freeze_projector: bool = False
    lora_rank: int = 0  # > 0: only adapters train (counted on the text layers' seven projections)
    cpu_offload: bool = False  # FSDP2 CPU offload: weights, gradients and optimizer state live on the CPU
    gradient_checkpointing: bool = True
    rollout: str = "hf"  # hf | vllm
    rollout_dtype: str = "bfloat16"
    rollout_sleeps: bool = False  # the rollout copy leaves the GPU outside generation
    gpu_memory_utilization: float = 0.65  # vLLM, share of the whole card while awake
    card_bytes: int = CARD_80GB_FREE_BYTES  # the card's total memory (vLLM's share is of this)
    update_tokens: int = 16384  # tokens in the largest update micro-batch (<= ppo_max_token_len_per_gpu)
    log_prob_tokens: int = 16384  # tokens in the largest log-prob micro-batch
    response_tokens: int = 16384  # response tokens (logit rows) in the largest update micro-batch
    image_patches: int = 0  # vision patches (before merging) at most in one micro-batch
    generation_prompts: int = 1  # prompts per HF generate call on one GPU (rollout.micro_batch_size or all)
    votes: int = 1  # samples per prompt generated
    prompt_tokens: int = 1024  # a prompt's tokens, image tokens included
    max_new_tokens: int = 1024


@dataclass
class MemoryPlan:
    """Bytes per part and per phase on one GPU, against the free memory."""

    counts: ModelCounts
    settings: PlanSettings
    free_bytes: int
    parts: dict[str, int] = field(default_factory=dict)
    phases: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.__getitem__)

    @property
    def peak_bytes(self) -> int:
        return self.phases[self.peak_phase]

    @property
    def headroom_bytes(self) -> int:
        """Kept free for what the estimate leaves out: 5 % of the free memory, at least 3 GiB."""
        return max(MIN_HEADROOM_BYTES, self.free_bytes // 20)

    @property
    def fits(self) -> bool:
        return self.peak_bytes + self.headroom_bytes <= self.free_bytes

    def refusal(self) -> str:
        """One line naming what does not fit."""
        biggest = sorted(self.parts.items(), key=lambda kv: -kv[1])[:3]
        return (f"memory plan: the {self.peak_phase} phase needs {self.peak_bytes / GiB:.1f} GiB + "
                f"{self.headroom_bytes / GiB:.1f} GiB headroom but {self.free_bytes / GiB:.1f} GiB is free (largest: "
                + ", ".join(f"{k} {v / GiB:.1f} GiB" for k, v in biggest) + ")")

    def lines(self) -> list[str]:
        """The plan as printable lines."""
        c, s = self.counts, self.settings
        out = [f"memory plan (per GPU, world size {s.world_size}): {c.total / 1e9:.3f} B parameters "
               f"({c.vision_tower / 1e9:.3f} B vision tower, {c.projector / 1e9:.3f} B projector), "
               f"{trainable_parameters(c, s) / 1e9:.3f} B trainable"]
        out += [f"  {name:<26s} {b / GiB:8.2f} GiB" for name, b in self.parts.items()]
        out += [f"  peak {name:<21s} {b / GiB:8.2f} GiB" for name, b in self.phases.items()]
        verdict = "fits" if self.fits else "does NOT fit"
        out.append(f"  {verdict}: peak {self.peak_bytes / GiB:.2f} GiB ({self.peak_phase}) + "
                   f"{self.headroom_bytes / GiB:.1f} GiB headroom vs {self.free_bytes / GiB:.2f} GiB free")
        out += [f"  - {n}" for n in self.notes]
        return out


def model_counts(config: Any) -> ModelCounts:
    """Counts of a transformers VLM config, from the model built on the meta device (no memory, no weights)."""
    from verl.utils.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torch

    from verl.models.load import model_class
    from verl.models.vlm_forward import vision_modules

    with torch.device("meta"):
        model = model_class(config.model_type)(config)
    mods = vision_modules(model)
    projector = sum(p.numel() for p in mods["projector"].parameters())
    vision = sum(p.numel() for p in mods["tower"].parameters())
    if any(p is q for p in mods["projector"].parameters() for q in mods["tower"].parameters()):
        vision -= projector  # Qwen: the merger lives inside the tower module
    text = config.get_text_config()
    vis = config.vision_config
    embedding = text.vocab_size * text.hidden_size * (1 if config.get_text_config().tie_word_embeddings else 2)
    vh = getattr(vis, "embed_dim", None) or vis.hidden_size
    vi = getattr(vis, "intermediate_size", None) or int(vh * getattr(vis, "mlp_ratio", 4))
    return ModelCounts(
        total=sum(p.numel() for p in model.parameters()), vision_tower=vision, projector=projector,
        embedding=embedding, text_layers=text.num_hidden_layers, hidden=text.hidden_size,
        intermediate=text.intermediate_size, kv_heads=text.num_key_value_heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
        vocab=text.vocab_size, vision_layers=getattr(vis, "depth", None) or vis.num_hidden_layers,
        vision_hidden=vh, vision_intermediate=vi)


def trainable_parameters(c: ModelCounts, s: PlanSettings) -> int:
    """Parameters the optimizer holds: all but the frozen vision parts, or the LoRA adapters."""
    if s.lora_rank > 0:
        kv = c.kv_heads * c.head_dim
        pairs = 2 * (c.hidden + c.hidden) + 2 * (c.hidden + kv) + 3 * (c.hidden + c.intermediate)
        return s.lora_rank * pairs * c.text_layers
    frozen = (c.vision_tower if s.freeze_vision_tower else 0) + (c.projector if s.freeze_projector else 0)
    return c.total - frozen


def plan_memory(c: ModelCounts, s: PlanSettings, free_bytes: int) -> MemoryPlan:
    """Bytes per part and per phase (pure arithmetic; see the module docstring)."""
    a = DTYPE_BYTES[s.param_dtype]
    w = s.world_size
    trainable = trainable_parameters(c, s)
    on_gpu = 0 if s.cpu_offload else 1
    parts: dict[str, int] = {
        "actor weights (fp32)": on_gpu * c.total * 4 // w,
        "gradients (fp32)": on_gpu * trainable * 4 // w,
        "AdamW moments (fp32)": on_gpu * trainable * 8 // w,
    }
    if s.reference:
        parts[f"reference ({s.param_dtype})"] = on_gpu * c.total * a // w
    if s.rollout == "vllm":
        rollout_awake = int(s.gpu_memory_utilization * s.card_bytes)
        parts["rollout (vLLM share)"] = rollout_awake
    else:
        rollout_awake = c.total * DTYPE_BYTES[s.rollout_dtype]
        parts[f"rollout copy ({s.rollout_dtype})"] = rollout_awake
    rollout_resident = 0 if s.rollout_sleeps else rollout_awake
    layer_params = (c.total - c.embedding - c.vision_tower - c.projector) // max(c.text_layers, 1)
    parts["FSDP gathered params"] = (c.embedding + c.projector + 2 * layer_params) * a
    per_layer = (10 * c.hidden + 4 * c.intermediate) * a  # bytes per token per layer
    vis_per_layer = (10 * c.vision_hidden + 4 * c.vision_intermediate) * a
    if s.gradient_checkpointing:
        text_act = c.text_layers * s.update_tokens * c.hidden * a + 2 * s.update_tokens * per_layer
        vis_act = s.image_patches * (c.vision_layers * c.vision_hidden * a + 2 * vis_per_layer)
    else:
        text_act = 2 * c.text_layers * s.update_tokens * per_layer
        vis_act = 2 * c.vision_layers * s.image_patches * vis_per_layer
    if s.freeze_vision_tower or s.lora_rank > 0:
        vis_act = s.image_patches * vis_per_layer  # a frozen tower keeps no activations for backward
    logits = min(s.response_tokens, s.update_tokens) * c.vocab * (a + 8)
    parts["update activations"] = text_act + vis_act + logits
    lp_logits = min(s.response_tokens, s.log_prob_tokens) * c.vocab * (a + 4)
    parts["log-prob activations"] = s.log_prob_tokens * per_layer + s.image_patches * vis_per_layer + lp_logits
    rows = s.generation_prompts * s.votes
    kv = (2 * c.text_layers * c.kv_heads * c.head_dim * DTYPE_BYTES[s.rollout_dtype]
          * rows * (s.prompt_tokens + s.max_new_tokens))
    # one layer's prefill activations, and each decoding step's logits (bf16, fp32 copy, probabilities)
    prefill = s.generation_prompts * s.prompt_tokens * per_layer + rows * c.vocab * 12
    if s.rollout == "hf":
        parts["generation KV + prefill"] = kv + prefill
    resident = (parts["actor weights (fp32)"] + parts["AdamW moments (fp32)"]
                + parts.get(f"reference ({s.param_dtype})", 0))
    gen_extra = parts.get("generation KV + prefill", 0)
    phases = {
        "generation": resident + rollout_awake + gen_extra,
        "log-prob": resident + rollout_resident + parts["FSDP gathered params"] + parts["log-prob activations"],
        "update": (resident + rollout_resident + parts["gradients (fp32)"] + parts["FSDP gathered params"]
                   + parts["update activations"]),
    }
    notes = ["actor: fp32 master weights, fused AdamW (no model-sized temporary in its step)"]
    if s.reference:
        notes.append(f"reference stored in {s.param_dtype}, the dtype it computes in (same log-probs)")
    notes.append("rollout copy asleep outside generation (off the device)" if s.rollout_sleeps
                 else "rollout copy resident on the device between generations")
    if s.freeze_vision_tower:
        notes.append("vision tower frozen")
    return MemoryPlan(c, s, int(free_bytes), parts, phases, notes)


def choose_settings(c: ModelCounts, s: PlanSettings, free_bytes: int,
                    allow_freeze_vision: bool = False) -> tuple[MemoryPlan, list[str]]:
    """The configured settings if they fit, else the cheapest changes that do (see the module docstring);
    when nothing fits, the plan of the last try (``plan.fits`` False) and the changes tried."""
    changes: list[str] = []
    plan = plan_memory(c, s, free_bytes)
    if plan.fits:
        return plan, changes
    if not s.rollout_sleeps:
        s = dataclasses.replace(s, rollout_sleeps=True)
        changes.append("rollout asleep outside generation")
        plan = plan_memory(c, s, free_bytes)
    while not plan.fits:
        if plan.peak_phase == "generation" and s.rollout == "hf" and s.generation_prompts > 1:
            s = dataclasses.replace(s, generation_prompts=s.generation_prompts // 2)
            changes.append(f"HF generation in calls of {s.generation_prompts} prompts")
        elif plan.peak_phase != "generation" and min(s.update_tokens, s.log_prob_tokens) // 2 >= MIN_TOKENS:
            s = dataclasses.replace(s, update_tokens=s.update_tokens // 2, log_prob_tokens=s.log_prob_tokens // 2,
                                    response_tokens=min(s.response_tokens, s.update_tokens // 2),
                                    image_patches=s.image_patches // 2)
            changes.append(f"micro-batch token budget {s.update_tokens}")
        else:
            break
        plan = plan_memory(c, s, free_bytes)
    if not plan.fits and allow_freeze_vision and not s.freeze_vision_tower:
        s = dataclasses.replace(s, freeze_vision_tower=True)
        changes.append("vision tower frozen")
        plan = plan_memory(c, s, free_bytes)
    return plan, changes


def vllm_memory_share(configured: float, free_bytes: int, total_bytes: int,
                      headroom_bytes: int = 2 * GiB) -> float:
    """``gpu_memory_utilization`` for a vLLM engine started after other weights are on the GPU: vLLM refuses
    to start unless ``share x total`` is free, so the share is ``min(configured, (free - headroom) / total)``.
    Raises ``ValueError`` when less than 5 % of the card would be left to it."""
    share = min(configured, (free_bytes - headroom_bytes) / total_bytes)
    if share < 0.05:
        raise ValueError(f"vLLM needs GPU memory but only {free_bytes / GiB:.1f} GiB of {total_bytes / GiB:.1f} GiB "
                         f"is free after the actor and reference were built")
    return share


def vllm_rollout_for_free_memory(rollout: Any, device: str, actor_module: Any, cpu_offload: bool,
                                 mem_get_info: Callable[[], tuple[int, int]] | None = None) -> Any:
    """``rollout`` (a ``RolloutConfig``) with ``gpu_memory_utilization`` lowered to what vLLM can have when it
    starts after the actor and reference: the free memory minus the AdamW moments the actor's first step will
    allocate (fp32, 8 bytes per local trainable element; none with ``cpu_offload``). Unchanged off CUDA or for
    the HF engine. ``mem_get_info``: ``torch.cuda.mem_get_info`` (after emptying the allocator's cache)."""
    from verl.workers.rollout import resolve_engine

    if not str(device).startswith("cuda") or resolve_engine(rollout.name) != "vllm":
        return rollout
    if mem_get_info is None:
        import torch

        torch.cuda.empty_cache()
        mem_get_info = torch.cuda.mem_get_info
    free, total = mem_get_info()
    moments = 0 if cpu_offload else 8 * sum(getattr(p, "to_local", lambda p=p: p)().numel()
                                            for p in actor_module.parameters() if p.requires_grad)
    share = vllm_memory_share(rollout.gpu_memory_utilization, free - moments, total)
    return dataclasses.replace(rollout, gpu_memory_utilization=share)


def settings_from_config(cfg: Any, prompt_tokens: int = 1024, image_patches_per_prompt: int = 0,
                         card_bytes: int = CARD_80GB_FREE_BYTES) -> PlanSettings:
    """:class:`PlanSettings` of a finalized ``RLConfig``; ``prompt_tokens`` / ``image_patches_per_prompt``:
    the typical prompt (image tokens included) and its vision patches."""
    from verl.workers.rollout import resolve_engine

    arr = cfg.actor_rollout_ref
    world = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
    response, n = cfg.data.max_response_length, arr.rollout.n
    votes = arr.rollout.n_votes or n
    prompts = max(1, -(-cfg.data.train_batch_size // world))  # per GPU
    shared = arr.actor.share_prompt
    update_all = prompts * ((prompt_tokens + n * response) if shared else n * (prompt_tokens + response))
    update = min(arr.actor.ppo_max_token_len_per_gpu, update_all)
    log_prob = min(arr.actor.log_prob_max_token_len_per_gpu, update_all)
    prompts_per_micro = max(1, min(prompts, round(prompts * update / update_all)))
    engine = resolve_engine(arr.rollout.name)
    return PlanSettings(
        world_size=world, param_dtype=arr.actor.fsdp.param_dtype,
        reference=bool(arr.ref.enable) and arr.model.lora_rank == 0,
        freeze_vision_tower=arr.model.freeze_vision_tower, freeze_projector=arr.model.freeze_projector,
        lora_rank=arr.model.lora_rank, cpu_offload=arr.actor.fsdp.cpu_offload,
        gradient_checkpointing=arr.model.enable_gradient_checkpointing, rollout=engine,
        rollout_dtype=arr.model.dtype if arr.model.dtype in DTYPE_BYTES else "bfloat16",
        rollout_sleeps=arr.rollout.free_cache_engine, gpu_memory_utilization=arr.rollout.gpu_memory_utilization,
        card_bytes=card_bytes, update_tokens=update, log_prob_tokens=log_prob,
        response_tokens=min(update, prompts_per_micro * n * response),
        image_patches=image_patches_per_prompt * prompts_per_micro,
        generation_prompts=min(prompts, arr.rollout.micro_batch_size or prompts), votes=votes,
        prompt_tokens=prompt_tokens, max_new_tokens=arr.rollout.max_new_tokens or response)


@functools.lru_cache(maxsize=8)
def counts_for(model: str) -> ModelCounts:
    """:func:`model_counts` of a real-shape name (full depth) or a local model folder."""
    from verl.models.real_shape import REAL_SHAPES

    if model in REAL_SHAPES:
        from verl.utils.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()
        from verl.models.real_shape import shape_config

        return model_counts(shape_config(model, full=True))
    from pathlib import Path

    if not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"--model {model!r}: neither a real-shape name ({', '.join(REAL_SHAPES)}) "
                                f"nor a folder with config.json")
    from verl.utils.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import AutoConfig

    return model_counts(AutoConfig.from_pretrained(model, trust_remote_code=False))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl.utils.memory_plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="real-shape name or model folder (default: the config's)")
    p.add_argument("--free-gib", type=float, default=CARD_80GB_FREE_BYTES / GiB,
                   help="free GPU memory (default: an 80 GB card after its CUDA context)")
    p.add_argument("--config-dir", default=None)
    p.add_argument("--config-name", default="ppo_trainer")
    p.add_argument("--prompt-tokens", type=int, default=1024, help="typical prompt length, image tokens included")
    p.add_argument("--image-patches", type=int, default=1024, help="vision patches per prompt (448 px: 1024)")
    p.add_argument("--allow-freeze-vision", action="store_true", help="the plan may freeze the vision tower")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = p.parse_args(argv)
    from verl.config.loader import ConfigError, load_config

    try:
        cfg = load_config(args.config_name, args.overrides, **({"config_dir": args.config_dir}
                                                                if args.config_dir else {}))
        counts = counts_for(args.model or cfg.actor_rollout_ref.model.path)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    free = int(args.free_gib * GiB)
    settings = settings_from_config(cfg, args.prompt_tokens, args.image_patches, card_bytes=free)
    plan, changes = choose_settings(counts, settings, free, args.allow_freeze_vision)
    print("\n".join(plan.lines()))
    if changes:
        print("  changed to fit: " + "; ".join(changes))
    if not plan.fits:
        print(f"error: {plan.refusal()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
