"""The rollout interface shared by the vLLM and Hugging Face engines, and the output builder both use.

Input ``DataProto`` (B rows): non-tensor ``prompt`` (chat messages, ``<image>`` placeholders allowed),
``images`` (list of paths / bytes per row, optional), ``uid`` and any other keys (carried through);
``meta_info`` holds sampling settings (see :class:`SamplingSpec`).

Output ``DataProto`` (B*n rows, interleaved: the n samples of prompt 0, then of prompt 1, ...):

- ``prompts`` [B*n, P] left padded with the pad id; ``responses`` [B*n, R] right padded (R = max_new_tokens)
- ``input_ids`` = cat(prompts, responses); ``attention_mask`` = cat(prompt mask, response mask)
- ``response_mask`` [B*n, R]: 1 for generated tokens including the final eos, 0 after
- ``rollout_log_probs`` [B*n, R] float32 (0 where masked): log-prob of each sampled token under the
  distribution it was sampled from: ``log_softmax(logits / T)``, restricted to and renormalised over the
  top-k / top-p support when those filters are active (vLLM's ``processed_logprobs``). With top_p=1 and
  top_k off, as in TTRV, this is exactly ``log_softmax(raw_logits / T)``, what an actor computes with
  the same temperature. Greedy decoding reports ``log_softmax(raw_logits)`` (T = 1).
- non-tensor ``response_text`` (decoded without special tokens), ``prompt_index`` (source row) and every
  input non-tensor key repeated n times. ``meta_info`` is the input's, plus ``rollout_engine``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from verl.protocol import DataProto, object_array


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling settings of one ``generate`` call. ``greedy`` when do_sample is False or temperature <= 0."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or negative: disabled
    max_new_tokens: int = 64
    do_sample: bool = True
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return (not self.do_sample) or self.temperature <= 0.0

    def validate(self) -> SamplingSpec:
        if self.n < 1:
            raise ValueError(f"sampling n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        return self

    @classmethod
    def from_meta(cls, meta_info: dict | None, defaults: SamplingSpec | None = None) -> SamplingSpec:
        """Defaults overridden by ``meta_info`` keys ``n``, ``temperature``, ``top_p``, ``top_k``,
        ``max_new_tokens`` (aliases ``response_length``, ``max_tokens``), ``do_sample``, ``seed``."""
        spec = defaults or cls()
        meta = dict(meta_info or {})
        for alias in ("response_length", "max_tokens"):
            if alias in meta and "max_new_tokens" not in meta:
                meta["max_new_tokens"] = meta[alias]
        casts = {"n": int, "temperature": float, "top_p": float, "top_k": int, "max_new_tokens": int,
                 "do_sample": bool}
        upd: dict[str, Any] = {k: f(meta[k]) for k, f in casts.items() if meta.get(k) is not None}
        if "seed" in meta:
            upd["seed"] = None if meta["seed"] is None else int(meta["seed"])
        return replace(spec, **upd).validate()


class RolloutEngine(ABC):
    """One interface, two engines (vLLM, Hugging Face)."""

    @abstractmethod
    def generate(self, prompts: DataProto) -> DataProto:
        """Sample ``n`` responses per prompt row; see the module docstring for the output layout."""

    @abstractmethod
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the engine's weights with the trainer's full (unsharded) state dict."""

    def sleep(self) -> None:
        """Release accelerator memory between rollouts (no-op where meaningless)."""
        return None

    def wake_up(self) -> None:
        """Undo :meth:`sleep` (no-op where meaningless)."""
        return None


def prompt_rows(prompts: DataProto) -> tuple[list[Any], list[list[Any]]]:
    """The ``prompt`` and ``images`` columns of a rollout input, with a clear error when missing."""
    ntb = prompts.non_tensor_batch
    if "prompt" not in ntb:
        raise KeyError(f"rollout input needs non_tensor_batch['prompt']; got keys {sorted(ntb)}")
    msgs = list(ntb["prompt"])
    if "images" in ntb:
        imgs = [[] if v is None else list(v) for v in ntb["images"]]
    else:
        imgs = [[] for _ in msgs]
    return msgs, imgs


def assemble_output(
    prompts: DataProto,
    prompt_ids: Sequence[torch.Tensor],
    responses: Sequence[Sequence[int]],
    log_probs: Sequence[Sequence[float]],
    *,
    n: int,
    max_new_tokens: int,
    pad_id: int,
    tokenizer,
    engine: str,
) -> DataProto:
    """Build the rollout output from per-prompt ids (B) and per-sample token ids / log-probs (B*n,
    interleaved). Shared by both engines so that their outputs have the same structure."""
    b = len(prompt_ids)
    if len(responses) != b * n or len(log_probs) != b * n:
        raise ValueError(f"{engine}: expected {b * n} responses, got {len(responses)} / {len(log_probs)}")
    plen = max(int(p.numel()) for p in prompt_ids)
    prompt_t = torch.full((b, plen), pad_id, dtype=torch.long)
    prompt_m = torch.zeros((b, plen), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        prompt_t[i, plen - p.numel():] = p
        prompt_m[i, plen - p.numel():] = 1
    resp_t = torch.full((b * n, max_new_tokens), pad_id, dtype=torch.long)
    resp_m = torch.zeros((b * n, max_new_tokens), dtype=torch.long)
    lp_t = torch.zeros((b * n, max_new_tokens), dtype=torch.float32)
    for j, (toks, lps) in enumerate(zip(responses, log_probs)):
        toks, lps = list(toks)[:max_new_tokens], list(lps)[:max_new_tokens]
        if len(toks) != len(lps):
            raise ValueError(f"{engine}: sample {j} has {len(toks)} tokens but {len(lps)} log-probs")
        k = len(toks)
        resp_t[j, :k] = torch.tensor(toks, dtype=torch.long)
        resp_m[j, :k] = 1
        lp_t[j, :k] = torch.tensor(lps, dtype=torch.float32)
    prompt_t = prompt_t.repeat_interleave(n, dim=0)
    prompt_m = prompt_m.repeat_interleave(n, dim=0)
    tensors = {
        "prompts": prompt_t,
        "responses": resp_t,
        "input_ids": torch.cat([prompt_t, resp_t], dim=1),
        "attention_mask": torch.cat([prompt_m, resp_m], dim=1),
        "response_mask": resp_m,
        "rollout_log_probs": lp_t,
    }
    texts = tokenizer.batch_decode([list(r)[:max_new_tokens] for r in responses], skip_special_tokens=True)
    non_tensors: dict[str, np.ndarray] = {}
    for key, col in prompts.non_tensor_batch.items():
        non_tensors[key] = _repeat_objects(col, n)
    non_tensors["response_text"] = object_array(texts)
    non_tensors["prompt_index"] = np.repeat(np.arange(b, dtype=np.int64), n)
    meta = dict(prompts.meta_info or {})
    meta["rollout_engine"] = engine
    return DataProto.from_dict(tensors, non_tensors, meta)


def _repeat_objects(col: np.ndarray, n: int) -> np.ndarray:
    col = np.asarray(col) if not isinstance(col, np.ndarray) else col
    if col.dtype != object:
        return np.repeat(col, n, axis=0)
    return object_array([v for v in col for _ in range(n)])
