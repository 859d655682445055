"""Off-policy reasoner backends of the reason stage: a local HF text LM, or any OpenAI-compatible endpoint.

Both take :class:`ReasonItem` s (question text + one caption, never the image or the gold answer) and
return ``n`` reasoning texts per item, or ``None`` for an item whose samples did not all arrive (the
stage leaves it pending; a re-run retries it). ``calls`` counts the model requests actually made
(local: one per sample generated; HTTP: HTTP attempts, cache hits excluded) for the resumability tests.

* :class:`LocalReasoner`: a causal LM folder (``recipes.sophia.pretrain_reasoner``) prompted with the
  plain ``LOCAL_TEMPLATE`` ("Visual information: ...\\nQuestion: ...\\nAnswer:"), sampled with
  ``model.generate`` under a forked RNG seeded with the call's seed.
* :class:`HTTPReasonerBackend`: ``reasoner_http.HTTPReasoner`` (bounded concurrency, timeouts, retries,
  SQLite request cache) with the chat prompt of ``prompts.build_reasoning_messages``; all N samples of an
  item in one request (``n=N``, seed ``item_seed(seed, key)``), so a resumed run re-sends identical (cached)
  requests.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from recipes.sophia.prompts import build_reasoning_messages

if TYPE_CHECKING:
    from recipes.sophia.config import ReasonCfg

logger = logging.getLogger(__name__)

LOCAL_TEMPLATE = "Visual information: {caption}\nQuestion: {question}\nAnswer:"


@dataclass(frozen=True)
class ReasonItem:
    """One reasoning request: ``key`` = "<question uid>|<caption id>"."""

    key: str
    question: str
    caption: str


@dataclass(frozen=True)
class Sampling:
    n: int = 8
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0


class ReasonerBackend(Protocol):
    calls: int

    def reason(self, items: Sequence[ReasonItem], sampling: Sampling) -> list[list[str] | None]: ...


def item_seed(base: int, key: str) -> int:
    """A stable per-item seed."""
    return (int(base) * 1_000_003 + zlib.crc32(key.encode())) % (2**31 - 1)


def local_prompt(caption: str, question: str) -> str:
    """The local tiny reasoner's prompt (what ``pretrain_reasoner`` trains on)."""
    return LOCAL_TEMPLATE.format(caption=caption.strip(), question=question.strip())


class LocalReasoner:
    """A causal text LM folder (``AutoModelForCausalLM`` + tokenizer) sampled on CPU."""

    def __init__(self, model_path: str | Path, *, trust_remote_code: bool, device: str = "cpu"):
        from verl.utils.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # before transformers may import torchvision / torchaudio
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32, local_files_only=True,
                                                          trust_remote_code=trust_remote_code).to(device).eval()
        # not AutoTokenizer: it turns the saved byte-level BPE into a Qwen2Tokenizer whose pre-tokenizer splits
        # text differently from the tokenizer the model was trained with
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_path), local_files_only=True,
                                                                 trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        self.device = device
        self.calls = 0

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[str]]:
        """``sampling.n`` continuations per prompt (greedy when the temperature is 0)."""
        tok = self.tokenizer
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        greedy = sampling.temperature <= 0
        kwargs: dict[str, Any] = {"do_sample": not greedy, "max_new_tokens": sampling.max_new_tokens,
                                  "num_return_sequences": sampling.n, "pad_token_id": tok.pad_token_id,
                                  "eos_token_id": tok.eos_token_id}
        if not greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sampling.seed)
            out = self.model.generate(**enc, **kwargs)
        self.calls += len(prompts) * sampling.n
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [[t.strip() for t in texts[i * sampling.n:(i + 1) * sampling.n]] for i in range(len(prompts))]

    def reason(self, items: Sequence[ReasonItem], sampling: Sampling) -> list[list[str] | None]:
        return list(self.generate([local_prompt(it.caption, it.question) for it in items], sampling))


class HTTPReasonerBackend:
    """Adapter from :class:`ReasonItem` s to ``HTTPReasoner`` requests (one request with ``n`` samples per item)."""

    def __init__(self, client: Any, seed: int = 0):
        self.client, self.seed = client, seed
        self._sent0 = client.stats.requests_sent

    @property
    def calls(self) -> int:
        return self.client.stats.requests_sent - self._sent0

    def reason(self, items: Sequence[ReasonItem], sampling: Sampling) -> list[list[str] | None]:
        from recipes.sophia.reasoner_http import ReasonRequest

        # per-item seeds (not per call): a resumed run sends byte-identical requests, so the cache hits
        reqs = [ReasonRequest(it.key, build_reasoning_messages(it.question, it.caption), n=sampling.n,
                              temperature=sampling.temperature, top_p=sampling.top_p,
                              max_tokens=sampling.max_new_tokens, seed=item_seed(self.seed, it.key))
                for it in items]
        by_id: dict[str, list[Any]] = {it.key: [None] * sampling.n for it in items}
        for res in self.client.generate(reqs):
            by_id[res.request_id][res.sample_index] = None if res.error else res.text
        out: list[list[str] | None] = []
        for it in items:
            texts = by_id[it.key]
            out.append(None if any(t is None for t in texts) else [str(t) for t in texts])
        return out

    def close(self) -> None:
        self.client.close()


def make_reasoner(reason: ReasonCfg, cache_path: str | Path | None = None, seed: int = 0,
                  device: str = "cpu") -> LocalReasoner | HTTPReasonerBackend:
    """``reason.backend`` "local" (``reason.model_path``, ``reason.trust_remote_code``, on ``device``; the
    pipeline builds it inside the reasoner's workers, :mod:`recipes.sophia.reasoner_group`) or "http"
    (``reason.http``: base_url, model, api_key_env, limits)."""
    backend, http = reason.backend, reason.http
    if backend == "local":
        return LocalReasoner(reason.model_path, trust_remote_code=reason.trust_remote_code, device=device)
    if backend == "http":
        from recipes.sophia.reasoner_http import HTTPReasoner

        client = HTTPReasoner(http.base_url, http.model, api_key_env=http.api_key_env,
                              max_concurrency=http.max_concurrency, timeout_s=http.timeout_s,
                              max_retries=http.max_retries, cache_path=cache_path)
        return HTTPReasonerBackend(client, seed)
    raise ValueError(f"unknown reasoner backend {backend!r}; known: local, http")
