"""Chat prompt + image references -> model inputs. The ONE place where prompts become token ids / pixels.

Images travel as paths or encoded bytes; they are decoded here, on the worker that needs the pixels.
Prompts may be verl-style chat messages whose string contents carry ``<image>`` placeholders, messages
with structured content parts (``{"type": "image"}`` / ``{"type": "text", "text": ...}``) or a plain
string (one user turn).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from verl.data.images import content_parts, load_image

# Keys returned by the processor that are per-token (aligned with input_ids) rather than per-image.
_PER_TOKEN_KEYS = ("mm_token_type_ids", "token_type_ids")


def _as_list(x: Any) -> list:
    """Parquet / numpy round trips turn lists into arrays: normalise to a plain list."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    return list(x)


def to_chat_messages(prompt: Any) -> list[dict]:
    """Normalise a prompt (str, verl-style messages with ``<image>`` in strings, or structured
    messages) into messages whose content is a list of ``{"type": "image"|"text"}`` parts."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": content_parts(prompt)}]
    messages = []
    for i, msg in enumerate(_as_list(prompt)):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise ValueError(f"prompt message {i} must be a dict with 'role' and 'content', got {msg!r:.200}")
        content = msg["content"]
        try:
            parts = content_parts(content if isinstance(content, str) else _as_list(content))
        except ValueError as e:
            raise ValueError(f"prompt message {i}: {e}") from None
        messages.append({"role": msg["role"], "content": parts})
    return messages


def count_images(messages: list[dict]) -> int:
    """Number of image parts in normalised messages."""
    return sum(1 for m in messages for p in m["content"] if isinstance(p, dict) and p.get("type") == "image")


def prompt_text(processor, messages: Any) -> str:
    """The chat-templated prompt (generation prompt appended) with *unexpanded* image placeholders."""
    msgs = to_chat_messages(messages)
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def build_prompt_inputs(processor, messages: Any, images: Sequence[Any] | None) -> dict[str, torch.Tensor]:
    """Model inputs for one prompt: ``input_ids`` (1D, image tokens expanded) plus the processor's
    image tensors (``pixel_values`` and ``image_grid_thw`` for Qwen2-VL / Qwen2.5-VL, ``pixel_values``
    for InternVL) and any per-token extras such as ``mm_token_type_ids`` (1D)."""
    msgs = to_chat_messages(messages)
    images = [] if images is None else _as_list(images)
    n_ph = count_images(msgs)
    if n_ph != len(images):
        raise ValueError(f"prompt has {n_ph} image placeholder(s) but {len(images)} image(s) were given")
    text = prompt_text(processor, msgs)
    pil = [load_image(ref) for ref in images]
    kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
    if pil:
        kwargs["images"] = pil
    out = processor(**kwargs)
    result: dict[str, torch.Tensor] = {"input_ids": out["input_ids"][0].long()}
    for key, val in out.items():
        if key in ("input_ids", "attention_mask") or not isinstance(val, torch.Tensor):
            continue
        result[key] = val[0] if key in _PER_TOKEN_KEYS else val
    return result


def pad_id_of(processor) -> int:
    """Pad token id of a processor's tokenizer (eos when no pad token is defined)."""
    tok = getattr(processor, "tokenizer", processor)
    pid = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pid is None:
        raise ValueError("tokenizer has neither a pad nor an eos token")
    return int(pid)


def batch_prompt_inputs(processor, items: Sequence[dict[str, torch.Tensor]], pad_id: int | None = None) -> dict:
    """Collate outputs of :func:`build_prompt_inputs`: ``input_ids`` / ``attention_mask`` / per-token
    extras left padded to [B, P]; image tensors concatenated along dim 0 (prompt order)."""
    if not items:
        raise ValueError("batch_prompt_inputs got no prompts")
    pad = pad_id_of(processor) if pad_id is None else pad_id
    plen = max(int(it["input_ids"].numel()) for it in items)
    b = len(items)
    ids = torch.full((b, plen), pad, dtype=torch.long)
    mask = torch.zeros((b, plen), dtype=torch.long)
    out: dict[str, Any] = {}
    for i, it in enumerate(items):
        n = int(it["input_ids"].numel())
        ids[i, plen - n:] = it["input_ids"]
        mask[i, plen - n:] = 1
    out["input_ids"], out["attention_mask"] = ids, mask
    keys = sorted({k for it in items for k in it if k != "input_ids"})
    for key in keys:
        vals = [it.get(key) for it in items]
        if key in _PER_TOKEN_KEYS:
            t = torch.zeros((b, plen), dtype=next(v for v in vals if v is not None).dtype)
            for i, v in enumerate(vals):
                if v is not None:
                    t[i, plen - v.numel():] = v
            out[key] = t
        else:
            present = [v for v in vals if v is not None]
            out[key] = torch.cat(present, dim=0) if present else None
    return out
