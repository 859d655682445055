"""Micro-batches sized by tokens, a shared prompt counted once (pure Python; no torch).

A micro-batch's cost is what its packed forward (:func:`verl.models.vlm_forward.response_log_probs`)
holds: ``U`` packed rows of ``longest prompt + S x longest response`` tokens, with ``U`` prompts and at
most ``S`` samples of one prompt in it. Without prompt sharing every row is its own prompt.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


def packed_tokens(groups: dict[Hashable, int], longest_prompt: int, longest_response: int) -> int:
    """Tokens of one packed forward: ``U * (longest_prompt + S * longest_response)``."""
    if not groups:
        return 0
    return len(groups) * (longest_prompt + max(groups.values()) * longest_response)


def token_micro_batches(rows: Sequence[int], keys: Sequence[Hashable], prompt_len: Sequence[int],
                        response_len: Sequence[int], max_tokens: int, max_samples: int | None = None,
                        share_prompt: bool = True) -> list[list[int]]:
    """Split ``rows`` into micro-batches of at most ``max_tokens`` packed tokens (and ``max_samples`` rows).

    ``keys[r]`` is row ``r``'s prompt (rows with one key share a prompt pass), ``prompt_len[r]`` /
    ``response_len[r]`` its unpadded lengths (indexed by row id). Rows are taken prompt by prompt (in order
    of first appearance), greedily; a row that alone exceeds the budget gets a micro-batch of its own.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if max_samples is not None and max_samples <= 0:
        raise ValueError(f"max_samples must be positive or None, got {max_samples}")
    order: dict[Hashable, list[int]] = {}
    for r in rows:
        order.setdefault(keys[r] if share_prompt else ("row", r), []).append(r)
    out: list[list[int]] = []
    cur: list[int] = []
    counts: dict[Hashable, int] = {}
    lp = lr = 0
    for key, members in order.items():
        for r in members:
            c2 = dict(counts)
            c2[key] = c2.get(key, 0) + 1
            lp2, lr2 = max(lp, int(prompt_len[r])), max(lr, int(response_len[r]))
            too_many = max_samples is not None and len(cur) >= max_samples
            if cur and (too_many or packed_tokens(c2, lp2, lr2) > max_tokens):
                out.append(cur)
                cur, c2 = [], {key: 1}
                lp2, lr2 = int(prompt_len[r]), int(response_len[r])
            cur.append(r)
            counts, lp, lr = c2, lp2, lr2
    if cur:
        out.append(cur)
    return out


def batch_column(data, key: str, where: str):
    """``data``'s tensor or non-tensor column ``key``; a missing one names ``where`` and what the batch has."""
    if key in data.batch.keys():
        return data.batch[key]
    if key in data.non_tensor_batch:
        return data.non_tensor_batch[key]
    raise KeyError(f"{where}: the batch has no {key!r} (tensors: {sorted(data.batch.keys())}, "
                   f"non-tensors: {sorted(data.non_tensor_batch)})")


def agg_share(mode: str, mask: torch.Tensor) -> float:
    """What a set of rows adds to the normalizer of ``agg_loss(mode)`` (tokens, rows, or 1 for seq-sum)."""
    if mode == "token-mean":
        return float(mask.sum())
    if mode == "seq-sum":
        return 1.0
    return float(mask.shape[0])
