"""HTTPReasoner against a real OpenAI-compatible server started here (stdlib http.server, 127.0.0.1).

Server hooks, chosen by the last user message: ``SLOW_ONCE`` (first call sleeps past the client timeout),
``ALWAYS_SLOW``, ``FAIL500_ONCE`` (first call answers 500), ``BAD400`` (400 whose body echoes the
Authorization header, to check scrubbing). Replies are ``echo:<text>|seed=<seed>``, with ``#<i>`` appended for
choice i of a request with ``n`` > 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recipes.sophia.cache import ResponseCache, request_key
from recipes.sophia.reasoner_http import HTTPReasoner, ReasonRequest

SLOW_S = 0.6
TIMEOUT_S = 0.25


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.seen: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0
        self.auth: list[str] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": "not found"}})
        text = body["messages"][-1]["content"]
        st = self.state
        with st.lock:
            st.count += 1
            st.seen[text] += 1
            k = st.seen[text]
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
            st.auth.append(self.headers.get("Authorization", ""))
        try:
            if "ALWAYS_SLOW" in text or ("SLOW_ONCE" in text and k == 1):
                time.sleep(SLOW_S)
            time.sleep(st.delay)
        finally:
            with st.lock:
                st.in_flight -= 1  # before replying, so the max never counts a finished request
        if "FAIL500_ONCE" in text and k == 1:
            return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
        if "BAD400" in text:
            return self._send(400, {"error": {"message": f"bad request, you sent {self.headers.get('Authorization')}"}})
        n = int(body.get("n", 1))
        replies = [f"echo:{text}|seed={body.get('seed')}" + (f"#{i}" if n > 1 else "") for i in range(n)]
        self._send(200, {
            "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": i, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": r, "reasoning_content": "thinking"}}
                        for i, r in reversed(list(enumerate(replies)))],  # any order: the client sorts by index
            "usage": {"prompt_tokens": 3, "completion_tokens": 2 * n, "total_tokens": 3 + 2 * n},
        })


@pytest.fixture
def server():
    state = _State()
    handler = type("H", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()


def _req(rid: str, text: str, n: int = 1, seed: int | None = None) -> ReasonRequest:
    return ReasonRequest(rid, [{"role": "user", "content": text}], n=n, temperature=0.0, max_tokens=16, seed=seed)


def _client(server, tmp_path, **kw) -> HTTPReasoner:
    kw.setdefault("api_key_env", None)
    kw.setdefault("timeout_s", TIMEOUT_S)
    return HTTPReasoner(server.url, "teacher", cache_path=tmp_path / "cache.sqlite", **kw)


def test_basic_n_samples_and_order(server, tmp_path):
    out = _client(server, tmp_path).generate([_req("a", "hello", n=2, seed=10), _req("b", "world")])
    assert [(r.request_id, r.sample_index, r.text) for r in out] == [
        ("a", 0, "echo:hello|seed=10#0"), ("a", 1, "echo:hello|seed=10#1"), ("b", 0, "echo:world|seed=None")]
    assert all(r.completion_tokens == 2 and r.reasoning == "thinking" and not r.from_cache and r.error is None
               for r in out)
    assert server.count == 2  # the n=2 samples of "a" come from one request


def test_timeout_once_then_retry_succeeds(server, tmp_path):
    c = _client(server, tmp_path, max_retries=2)
    (r,) = c.generate([_req("a", "SLOW_ONCE")])
    assert r.error is None and r.text.startswith("echo:SLOW_ONCE")
    assert server.count == 2 and c.stats.retries == 1 and c.stats.failures == 0


def test_always_slow_gives_error_result_not_exception(server, tmp_path):
    c = _client(server, tmp_path, max_retries=1)
    slow, ok = c.generate([_req("slow", "ALWAYS_SLOW"), _req("ok", "fine")])
    assert slow.error and "Timeout" in slow.error and slow.text == ""
    assert ok.error is None and ok.text == "echo:fine|seed=None"
    assert c.stats.failures == 1 and c.stats.retries == 1 and server.seen["ALWAYS_SLOW"] == 2
    assert len(c.cache) == 1  # failures are not cached


def test_500_retried_but_400_not(server, tmp_path):
    c = _client(server, tmp_path, max_retries=3)
    r500, r400 = c.generate([_req("a", "FAIL500_ONCE"), _req("b", "BAD400")])
    assert r500.error is None and server.seen["FAIL500_ONCE"] == 2
    assert r400.error and "BadRequestError" in r400.error and server.seen["BAD400"] == 1
    assert c.stats.as_dict() == {"requests_sent": 3, "cache_hits": 0, "retries": 1, "failures": 1, "completed": 1}


def test_restart_reuses_cache(server, tmp_path):
    reqs = [_req("a", "p1", n=2, seed=0), _req("b", "p2")]
    first = _client(server, tmp_path).generate(reqs)
    assert server.count == 2
    with _client(server, tmp_path) as c1:
        c1.generate([_req("b", "p2")])  # already cached: nothing sent
    assert server.count == 2
    second_client = _client(server, tmp_path)  # a fresh process would see the same file
    second = second_client.generate(reqs + [_req("c", "p3")])
    assert server.count == 3 and second_client.stats.requests_sent == 1 and second_client.stats.cache_hits == 3
    assert [r.from_cache for r in second] == [True, True, True, False]
    assert [r.text for r in second[:3]] == [r.text for r in first]
    # the key covers sampling params and sample index
    m = [{"role": "user", "content": "x"}]
    keys = {request_key("m", m, {"t": 0.0}, 0), request_key("m", m, {"t": 1.0}, 0), request_key("m", m, {"t": 0.0}, 1)}
    assert len(keys) == 3 and len(ResponseCache(tmp_path / "cache.sqlite")) == 4


def test_bounded_concurrency(server, tmp_path):
    server.delay = 0.05
    c = _client(server, tmp_path, max_concurrency=3)
    out = c.generate([_req(str(i), f"q{i}") for i in range(12)])
    assert all(r.error is None for r in out) and server.count == 12
    assert 2 <= server.max_in_flight <= 3


def test_generate_inside_running_loop(server, tmp_path):
    async def main():
        return _client(server, tmp_path).generate([_req("a", "loop")])

    assert asyncio.run(main())[0].text == "echo:loop|seed=None"


def test_api_key_never_logged_or_shown(server, tmp_path, monkeypatch, caplog):
    secret = "sk-test-SECRET-4242"
    monkeypatch.setenv("MY_REASONER_KEY", secret)
    caplog.set_level(logging.DEBUG)
    c = _client(server, tmp_path, api_key_env="MY_REASONER_KEY", max_retries=1)
    out = c.generate([_req("a", "hi"), _req("b", "BAD400"), _req("c", "FAIL500_ONCE")])
    assert server.auth[0] == f"Bearer {secret}"  # the key is read from the env var and sent
    assert out[1].error and "***" in out[1].error  # the server echoed it back: scrubbed
    assert "failed" in caplog.text
    for text in (caplog.text, repr(c), str(c), repr(out), json.dumps(c.stats.as_dict())):
        assert secret not in text


def test_missing_key_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR"):
        HTTPReasoner("https://api.example.com/v1", "m", api_key_env="NO_SUCH_KEY_VAR")
    HTTPReasoner("http://127.0.0.1:1/v1", "m", api_key_env="NO_SUCH_KEY_VAR")  # local: no key needed
    with pytest.raises(ValueError, match="model"):
        HTTPReasoner("http://127.0.0.1:1/v1", "")


def test_connection_refused_is_an_error_result(tmp_path):
    c = HTTPReasoner("http://127.0.0.1:9/v1", "m", api_key_env=None, timeout_s=0.5, max_retries=1)
    (r,) = c.generate([_req("a", "x")])
    assert r.error and "Connection" in r.error and c.stats.failures == 1 and c.stats.retries == 1
