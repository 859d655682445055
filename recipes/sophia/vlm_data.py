"""VLM training batches and the world-size-1 FSDP actor used by the SOPHIA recipe (pretraining and update).

A training row is (prompt messages, image refs, target text): the prompt is chat-templated with the
generation prompt by :func:`verl.models.multimodal.build_prompt_inputs` (exactly what the rollout feeds the
model at evaluation), the target is tokenized and followed by the end-of-turn token. Rows become a
rollout-shaped ``DataProto`` (left-padded ``prompts``, right-padded ``responses``, ``input_ids`` /
``attention_mask`` / ``response_mask`` plus the ``prompt`` / ``images`` / ``uid`` columns) that
``verl.workers.actor.FSDPActor.sft_step`` consumes.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from verl.models.multimodal import build_prompt_inputs, pad_id_of
from verl.protocol import DataProto

if TYPE_CHECKING:
    from verl.config.schema import ActorConfig, ModelConfig
    from verl.workers.actor import FSDPActor


@dataclass
class SFTRow:
    """One supervised row: ``uid`` keys the (prompt, images) pair (rows sharing it share image tensors)."""

    uid: str
    prompt: list[dict[str, Any]]
    images: list[Any]
    target: str
    extra: dict[str, Any] = field(default_factory=dict)


def split_training_sample(sample: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """``prompts.build_training_sample`` output -> (prompt messages without the answer, answer text)."""
    msgs = list(sample["messages"])
    if not msgs or msgs[-1].get("role") != "assistant":
        raise ValueError("training sample: the last message must be the assistant answer")
    return msgs[:-1], str(msgs[-1]["content"])


def sft_dataproto(processor: Any, rows: Sequence[SFTRow], max_response_tokens: int | None = None,
                  prompt_cache: dict | None = None) -> DataProto:
    """Rows -> the ``DataProto`` an actor's ``sft_step`` trains on (targets truncated to
    ``max_response_tokens`` incl. the end-of-turn token; ``prompt_cache`` memoizes prompt token ids)."""
    if not rows:
        raise ValueError("sft_dataproto: no rows")
    tok = getattr(processor, "tokenizer", processor)
    end = tok.eos_token or "<|im_end|>"
    pad = pad_id_of(processor)
    cache = {} if prompt_cache is None else prompt_cache
    prompts, targets = [], []
    for r in rows:
        if r.uid not in cache:
            cache[r.uid] = build_prompt_inputs(processor, r.prompt, r.images)["input_ids"]
        prompts.append(cache[r.uid])
        ids = tok(r.target + end, add_special_tokens=False)["input_ids"]
        if max_response_tokens is not None:
            ids = ids[:max_response_tokens]
        targets.append(torch.tensor(ids, dtype=torch.long))
    b, P, R = len(rows), max(len(p) for p in prompts), max(len(t) for t in targets)
    prompt_t = torch.full((b, P), pad, dtype=torch.long)
    prompt_m = torch.zeros((b, P), dtype=torch.long)
    resp_t = torch.full((b, R), pad, dtype=torch.long)
    resp_m = torch.zeros((b, R), dtype=torch.long)
    for i, (p, t) in enumerate(zip(prompts, targets)):
        prompt_t[i, P - len(p):], prompt_m[i, P - len(p):] = p, 1
        resp_t[i, :len(t)], resp_m[i, :len(t)] = t, 1
    tensors = {"prompts": prompt_t, "responses": resp_t, "response_mask": resp_m,
               "input_ids": torch.cat([prompt_t, resp_t], 1), "attention_mask": torch.cat([prompt_m, resp_m], 1)}
    non = {"prompt": [r.prompt for r in rows], "images": [list(r.images) for r in rows],
           "uid": [r.uid for r in rows]}
    return DataProto.from_dict(tensors, non, {"temperature": 1.0})


def ensure_process_group() -> None:
    """A gloo process group of world size 1 (FSDPActor needs one) unless one exists already."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def make_actor(model: ModelConfig, actor: ActorConfig) -> FSDPActor:
    """A world-size-1 ``FSDPActor`` on CPU (master weights float32; compute dtype ``actor.fsdp.param_dtype``)."""
    from verl.workers.actor import FSDPActor

    ensure_process_group()
    return FSDPActor(model, actor, device="cpu")
