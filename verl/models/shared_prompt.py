"""Shared-prompt attention: a prompt's N responses read one pass over that prompt.

A packed row holds one prompt followed by ``S`` response slots of ``T`` tokens each::

    [ prompt (Lp tokens, left padded) | slot 0 (T) | slot 1 (T) | ... | slot S-1 (T) ]

Prompt tokens attend causally among themselves. The tokens of slot ``s`` attend to the prompt's valid
tokens and causally to the earlier tokens of slot ``s`` only, so each slot sees exactly what it would
see in its own ``[prompt | response]`` sequence, while the prompt's hidden states, keys and values are
computed once (and, in training, the gradients of all slots accumulate into that one prompt pass).

The layout travels to every attention call as the keyword argument ``shared_prompt`` of the language
model's forward (transformers hands extra keyword arguments down to the attention functions, also under
gradient checkpointing), next to an all-ones 2D ``attention_mask``, for which transformers builds no mask;
:func:`shared_prompt_attention` is registered as the attention implementation ``verl_shared_prompt`` of the
language model. Without ``shared_prompt`` it falls through to sdpa, so the model still works as a plain sdpa
model (generation, plain forwards).

Cost: the prompt part is one sdpa call over ``[U, Lp]``; the slots use an explicit (small) attention
``[U, kv_heads, S, groups, T, Lp + T]`` that reads the prompt's keys/values without copying them
per slot (grouped-query heads are never expanded).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ATTN_NAME = "verl_shared_prompt"


@dataclass(eq=False)
class SharedPromptMask:
    """Layout of packed rows ``[prompt | S slots of T tokens]`` (see the module docstring)."""

    prompt_len: int  # Lp
    slots: int  # S
    slot_len: int  # T
    prompt_mask: torch.Tensor  # [U, 1, Lp, Lp] bool, True = attend (causal, valid keys, diagonal)
    prompt_keys: torch.Tensor  # [U, Lp] bool: valid prompt tokens (what slot tokens read)

    @classmethod
    def build(cls, prompt_attention: torch.Tensor, slots: int, slot_len: int) -> SharedPromptMask:
        """From the prompts' ``[U, Lp]`` attention mask (left padding = 0)."""
        keys = prompt_attention.bool()
        lp = keys.shape[1]
        causal = torch.ones(lp, lp, dtype=torch.bool, device=keys.device).tril()
        eye = torch.eye(lp, dtype=torch.bool, device=keys.device)
        # padding queries attend to themselves only (finite, unused); valid queries as in a plain causal pass
        mask = (causal[None] & keys[:, None, :]) | eye[None]
        return cls(lp, int(slots), int(slot_len), mask[:, None], keys)


def shared_prompt_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask, dropout: float = 0.0, scaling: float | None = None,
                            shared_prompt: SharedPromptMask | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Attention over packed shared-prompt rows laid out by ``shared_prompt``; ``query [U, H, L, d]``,
    ``key/value [U, KVH, L, d]``.

    Returns ``([U, L, H, d], None)`` like transformers' attention functions.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if shared_prompt is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    m = shared_prompt
    lp, S, T = m.prompt_len, m.slots, m.slot_len
    U, H, L, d = query.shape
    kvh = key.shape[1]
    g = H // kvh
    if L != lp + S * T:
        raise RuntimeError(f"shared-prompt attention: sequence of {L} tokens, layout says {lp} + {S} x {T}")
    scale = d ** -0.5 if scaling is None else scaling
    out_p, _ = sdpa_attention_forward(module, query[:, :, :lp], key[:, :, :lp], value[:, :, :lp], m.prompt_mask,
                                      dropout=dropout, scaling=scale, is_causal=False)
    if S * T == 0:
        return out_p, None
    # slot queries grouped by their KV head: [U, kvh, S, g, T, d] (head h reads KV head h // g)
    qr = query[:, :, lp:].reshape(U, kvh, g, S, T, d).permute(0, 1, 3, 2, 4, 5)
    kp, vp = key[:, :, :lp], value[:, :, :lp]  # [U, kvh, Lp, d]
    kr = key[:, :, lp:].reshape(U, kvh, S, T, d)
    vr = value[:, :, lp:].reshape(U, kvh, S, T, d)
    s_p = (qr.reshape(U, kvh, S * g * T, d) @ kp.transpose(-1, -2)).view(U, kvh, S, g, T, lp) * scale
    s_r = (qr.reshape(U, kvh, S, g * T, d) @ kr.transpose(-1, -2)).view(U, kvh, S, g, T, T) * scale
    neg = torch.finfo(s_p.dtype).min
    s_p = s_p.masked_fill(~m.prompt_keys[:, None, None, None, None, :], neg)
    causal = torch.ones(T, T, dtype=torch.bool, device=query.device).tril()
    s_r = s_r.masked_fill(~causal, neg)
    probs = torch.softmax(torch.cat([s_p, s_r], dim=-1), dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout > 0.0:
        probs = nn.functional.dropout(probs, p=dropout, training=True)
    p_p, p_r = probs[..., :lp], probs[..., lp:]
    o = (p_p.reshape(U, kvh, S * g * T, lp) @ vp).view(U, kvh, S, g, T, d)
    o = o + (p_r.reshape(U, kvh, S, g * T, T) @ vr).view(U, kvh, S, g, T, d)
    out_r = o.permute(0, 2, 4, 1, 3, 5).reshape(U, S * T, H, d)  # [U, S*T, H, d], heads in kvh-major order
    return torch.cat([out_p, out_r], dim=1), None


def enable_shared_prompt_attention(language_model: nn.Module) -> None:
    """Register the implementation (once) and make ``language_model`` use it (idempotent).

    Only the language model switches; the vision tower keeps its own attention.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if ATTN_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTN_NAME, shared_prompt_attention)
        AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    cfg = language_model.config
    if cfg._attn_implementation != ATTN_NAME:
        if cfg._attn_implementation not in ("sdpa", "eager", None):
            raise ValueError(f"shared-prompt attention replaces sdpa/eager attention, not "
                             f"{cfg._attn_implementation!r} (load the model with attn_implementation='sdpa')")
        cfg._attn_implementation = ATTN_NAME
