"""Off-policy reasoner over an OpenAI-compatible chat-completions server (vLLM, SGLang, hosted APIs).

* the n samples of one request are asked for in ONE chat-completions call with ``n=n`` (the server shares the
  prompt's prefill and KV cache across them); each sample is cached under its own key (request + index), and
  a request is sent again only when one of its samples is missing;
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
    """One request: its sampling params and the cache key of each of its ``n`` samples."""

    request: ReasonRequest
    params: dict[str, Any] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)


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
        results: list[list[ReasonResult]] = [[] for _ in jobs]
        pending: dict[tuple[str, ...], list[int]] = {}
        for i, job in enumerate(jobs):
            hits = [self.cache.get(k) if self.cache is not None else None for k in job.keys]
            if all(h is not None for h in hits):
                self.stats.cache_hits += len(hits)
                results[i] = [self._result(job, s, h, from_cache=True) for s, h in enumerate(hits)]
            else:
                pending.setdefault(tuple(job.keys), []).append(i)  # identical requests in one batch are sent once
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
                    results[i] = [ReasonResult(**{**asdict(r), "request_id": jobs[i].request.request_id}) for r in out]
        return [r for rs in results for r in rs]

    # ------------------------------------------------------------------ internals
    def _expand(self, requests: Sequence[ReasonRequest]) -> list[_Job]:
        jobs = []
        for r in requests:
            if r.n < 1:
                raise ValueError(f"reason request {r.request_id!r}: n must be >= 1, got {r.n}")
            if not r.messages:
                raise ValueError(f"reason request {r.request_id!r}: messages are empty")
            params = {"temperature": r.temperature, "top_p": r.top_p, "max_tokens": r.max_tokens,
                      "seed": None if r.seed is None else int(r.seed), "n": r.n}
            jobs.append(_Job(r, params, [request_key(self.model, r.messages, params, s) for s in range(r.n)]))
        return jobs

    @staticmethod
    def _result(job: _Job, index: int, resp: CachedResponse, from_cache: bool) -> ReasonResult:
        return ReasonResult(job.request.request_id, index, resp.text, resp.reasoning, resp.completion_tokens,
                            resp.finish_reason, from_cache=from_cache)

    async def _count_attempt(self, request: Any) -> None:
        self.stats.requests_sent += 1  # every HTTP attempt, the client's retries included

    async def _one(self, client: Any, sem: asyncio.Semaphore, job: _Job) -> list[ReasonResult]:
        """All ``n`` samples of one request in one call; a failure gives ``n`` results with ``error`` set."""
        kwargs = {k: v for k, v in job.params.items() if v is not None}
        n = job.request.n
        try:
            async with sem:
                resp = await client.chat.completions.create(model=self.model, messages=job.request.messages, **kwargs)
            samples = self._parse(resp, n)
        except Exception as e:  # noqa: BLE001 - the client has retried what is retryable; never propagates
            err = self._scrub(f"{type(e).__name__}: {e}")[:500]
            self.stats.failures += 1
            logger.warning("reasoner request %s (n=%d) failed: %s", job.request.request_id, n, err[:300])
            return [ReasonResult(job.request.request_id, s, error=err or "unknown error") for s in range(n)]
        self.stats.completed += 1
        if self.cache is not None:
            for key, cached in zip(job.keys, samples):
                self.cache.put(key, cached)
        return [self._result(job, s, cached, from_cache=False) for s, cached in enumerate(samples)]

    @staticmethod
    def _parse(resp: Any, n: int) -> list[CachedResponse]:
        """The ``n`` choices in index order (``completion_tokens``: the response's total split evenly)."""
        choices = sorted(getattr(resp, "choices", None) or [], key=lambda c: c.index)
        if len(choices) != n:
            raise ValueError(f"response has {len(choices)} choices, asked for n={n}")
        usage = getattr(resp, "usage", None)
        tokens = getattr(usage, "completion_tokens", None) if usage is not None else None
        out = []
        for choice in choices:
            msg = choice.message
            extra = getattr(msg, "model_extra", None) or {}
            reasoning = extra.get("reasoning_content") or extra.get("reasoning")
            out.append(CachedResponse(msg.content or "", reasoning, None if tokens is None else tokens // n,
                                      getattr(choice, "finish_reason", None)))
        return out
