"""Off-policy reasoner over an OpenAI-compatible chat-completions server (vLLM, SGLang, hosted APIs).

* n samples of one request are sent as n separate requests with ``n=1`` and sample index i (servers
  differ in ``n`` support); with a seed, sample i uses ``seed + i``;
* bounded concurrency (``asyncio.Semaphore``), a per-attempt timeout (``timeout_s``) and the openai client's
  own retries (``max_retries``) with its back-off (0.5 s doubling up to 8 s, with jitter; ``Retry-After``
  honoured) on timeouts, connection errors, 408, 409, 429 and 5xx, never on other 4xx; a request that still
  fails yields a result with ``error`` set, the batch goes on;
* every success is committed to the on-disk cache (``cache.ResponseCache``) before it is returned, so a
  restart re-sends only what never completed;
* the API key comes only from the environment variable named by ``api_key_env`` (``None`` -> "EMPTY", what
  local servers accept; an unset variable is accepted for a localhost ``base_url`` only) and is scrubbed
  from every repr, log line and error message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from recipes.sophia.cache import CachedResponse, ResponseCache, request_key

logger = logging.getLogger(__name__)

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclass(frozen=True)
class ReasonRequest:
    request_id: str
    messages: list[dict[str, Any]]
    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 4096
    seed: int | None = None


@dataclass
class ReasonResult:
    request_id: str
    sample_index: int
    text: str = ""
    reasoning: str | None = None  # the server's separate reasoning field (``reasoning_content``), if any
    completion_tokens: int | None = None
    finish_reason: str | None = None
    from_cache: bool = False
    error: str | None = None


@dataclass
class ReasonerStats:
    requests_sent: int = 0  # HTTP attempts, retries included
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    completed: int = 0  # successful responses received from the server

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Job:
    request: ReasonRequest
    sample_index: int
    params: dict[str, Any] = field(default_factory=dict)
    key: str = ""


class HTTPReasoner:
    """Chat-completions client with a cache, bounded concurrency and retries; see the module doc."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000/v1", model: str = "", *,
                 api_key_env: str | None = "OPENAI_API_KEY", max_concurrency: int = 8, timeout_s: float = 60.0,
                 max_retries: int = 4, cache_path: str | Path | None = None):
        if not model:
            raise ValueError("HTTPReasoner: `model` (the served model name) is required")
        if max_concurrency < 1 or timeout_s <= 0 or max_retries < 0:
            raise ValueError(f"HTTPReasoner: bad limits max_concurrency={max_concurrency} timeout_s={timeout_s} "
                             f"max_retries={max_retries}")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.api_key_env = api_key_env
        self.max_concurrency, self.timeout_s = max_concurrency, float(timeout_s)
        self.max_retries = max_retries
        self.__api_key = self._read_key(api_key_env, self.base_url)
        self.cache = ResponseCache(cache_path) if cache_path is not None else None
        self.stats = ReasonerStats()

    @staticmethod
    def _read_key(env: str | None, base_url: str) -> str:
        if env is None:
            return "EMPTY"
        key = os.environ.get(env)
        if key:
            return key
        if (urlparse(base_url).hostname or "") in _LOCAL_HOSTS:
            return "EMPTY"
        raise ValueError(f"HTTPReasoner: environment variable {env!r} (the API key for {base_url}) is not set; "
                         "set it, or pass api_key_env=None for a server that needs no key")

    def _scrub(self, text: str) -> str:
        key = self.__api_key
        return text.replace(key, "***") if key and key != "EMPTY" else text

    def __repr__(self) -> str:
        return (f"HTTPReasoner(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
                f"max_concurrency={self.max_concurrency}, timeout_s={self.timeout_s}, cache={self.cache!r})")

    __str__ = __repr__

    def close(self) -> None:
        """Close the cache (the HTTP client lives only inside each ``generate`` call)."""
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> HTTPReasoner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API
    def generate(self, requests: Sequence[ReasonRequest]) -> list[ReasonResult]:
        """Results for every (request, sample index), in request order then sample order. Never raises for
        a failed request (its result has ``error`` set)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests))
        box: dict[str, Any] = {}  # called from inside an event loop: run ours in a helper thread

        def _run() -> None:
            try:
                box["out"] = asyncio.run(self.agenerate(requests))
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                box["err"] = e

        t = threading.Thread(target=_run, name="HTTPReasoner")
        t.start()
        t.join()
        if "err" in box:
            raise box["err"]
        return box["out"]

    async def agenerate(self, requests: Sequence[ReasonRequest]) -> list[ReasonResult]:
        import openai

        jobs = self._expand(requests)
        results: list[ReasonResult | None] = [None] * len(jobs)
        pending: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            hit = self.cache.get(job.key) if self.cache is not None else None
            if hit is not None:
                self.stats.cache_hits += 1
                results[i] = self._result(job, hit, from_cache=True)
            else:
                pending.setdefault(job.key, []).append(i)  # identical requests in one batch are sent once
        if pending:
            sem = asyncio.Semaphore(self.max_concurrency)
            sent_before = self.stats.requests_sent
            client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self.__api_key, max_retries=self.max_retries, timeout=self.timeout_s,
                http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [self._count_attempt]}))
            try:
                outs = await asyncio.gather(*(self._one(client, sem, jobs[idx[0]]) for idx in pending.values()))
            finally:
                await client.close()
            self.stats.retries += self.stats.requests_sent - sent_before - len(pending)
            for idx, out in zip(pending.values(), outs):
                for i in idx:
                    results[i] = ReasonResult(**{**asdict(out), "request_id": jobs[i].request.request_id,
                                                 "sample_index": jobs[i].sample_index})
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ internals
    def _expand(self, requests: Sequence[ReasonRequest]) -> list[_Job]:
        jobs = []
        for r in requests:
            if r.n < 1:
                raise ValueError(f"reason request {r.request_id!r}: n must be >= 1, got {r.n}")
            if not r.messages:
                raise ValueError(f"reason request {r.request_id!r}: messages are empty")
            for s in range(r.n):
                params = {"temperature": r.temperature, "top_p": r.top_p, "max_tokens": r.max_tokens,
                          "seed": None if r.seed is None else int(r.seed) + s}
                jobs.append(_Job(r, s, params, request_key(self.model, r.messages, params, s)))
        return jobs

    @staticmethod
    def _result(job: _Job, resp: CachedResponse, from_cache: bool) -> ReasonResult:
        return ReasonResult(job.request.request_id, job.sample_index, resp.text, resp.reasoning,
                            resp.completion_tokens, resp.finish_reason, from_cache=from_cache)

    async def _count_attempt(self, request: Any) -> None:
        self.stats.requests_sent += 1  # every HTTP attempt, the client's retries included

    async def _one(self, client: Any, sem: asyncio.Semaphore, job: _Job) -> ReasonResult:
        kwargs = {k: v for k, v in job.params.items() if v is not None}
        try:
            async with sem:
                resp = await client.chat.completions.create(model=self.model, messages=job.request.messages, n=1,
                                                            **kwargs)
            cached = self._parse(resp)
        except Exception as e:  # noqa: BLE001 - the client has retried what is retryable; never propagates
            err = self._scrub(f"{type(e).__name__}: {e}")[:500]
            self.stats.failures += 1
            logger.warning("reasoner request %s#%d failed: %s", job.request.request_id, job.sample_index, err[:300])
            return ReasonResult(job.request.request_id, job.sample_index, error=err or "unknown error")
        self.stats.completed += 1
        if self.cache is not None:
            self.cache.put(job.key, cached)
        return self._result(job, cached, from_cache=False)

    @staticmethod
    def _parse(resp: Any) -> CachedResponse:
        if not getattr(resp, "choices", None):
            raise ValueError("response has no choices")
        choice = resp.choices[0]
        msg = choice.message
        extra = getattr(msg, "model_extra", None) or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        usage = getattr(resp, "usage", None)
        tokens = getattr(usage, "completion_tokens", None) if usage is not None else None
        return CachedResponse(msg.content or "", reasoning, tokens, getattr(choice, "finish_reason", None))
