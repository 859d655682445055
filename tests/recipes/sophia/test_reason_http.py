"""The reason stage over a real localhost OpenAI-compatible server: a killed run loses only in-flight requests
(finished ones come back from the SQLite cache), and a failed request is retried on the next run only."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recipes.sophia.config import load_sophia_config
from recipes.sophia.reasoners import make_reasoner
from recipes.sophia.stages import Question, reason_stage


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: dict

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        text = body["messages"][-1]["content"]
        with self.state["lock"]:
            self.state["count"] += 1
            fail = "FAILONCE" in text and body["seed"] not in self.state["failed"]
            if fail:
                self.state["failed"].add(body["seed"])
        if fail:
            obj, code = {"error": {"message": "overloaded"}}, 503
        else:
            obj, code = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": i, "finish_reason": "stop", "message": {
                             "role": "assistant", "content": f"Reasoning {i} with seed {body['seed']}. \\boxed{{7}}"}}
                                     for i in range(body.get("n", 1))]}, 200
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    state = {"lock": threading.Lock(), "count": 0, "failed": set()}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Handler,), {"state": state}))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_http_reason_stage_resumes_from_cache(server, tmp_path):
    n = 2
    cfg = load_sophia_config(overrides=[
        "reason.backend=http", "reason.http.model=teacher", f"reason.http.base_url={server['url']}",
        "reason.http.api_key_env=null", "reason.http.max_retries=0", "reason.http.timeout_s=5", f"reason.n={n}",
        "reason.batch_items=2"])
    qs = [Question(f"q{i}", [{"role": "user", "content": "<image> \n What is 3 + 4?"}], [f"img{i}.png"],
                   "What is 3 + 4?", "7", {}, (f"img{i}.png",)) for i in range(2)]
    captions = {q.image_key: [{"caption_id": f"{q.image_key}#c{j}", "text": f"Digits 3 and 4, view {j}."}
                              for j in range(2)] for q in qs}
    captions[qs[1].image_key][1]["text"] = "Digits 3 and 4. FAILONCE"
    run = tmp_path / "run"
    run.mkdir()

    def backend():
        return make_reasoner(cfg.reason, run / "reasoner_cache.sqlite", seed=cfg.trainer.seed)

    out = reason_stage(cfg, qs, captions, run, backend)
    # 4 items, one request each for their 2 samples (n=2); the FAILONCE item's request fails (503, no
    # retries) -> it stays pending
    assert server["count"] == 4 and out["failed"] == 1 and len(out["rows"]) == 3
    assert all("\\boxed{7}" in t for r in out["rows"] for t in r["reasonings"])
    out = reason_stage(cfg, qs, captions, run, backend)
    assert server["count"] == 5 and out["failed"] == 0 and len(out["rows"]) == 4  # only the failed request
    rows = (run / "reasonings.jsonl").read_text()

    # kill simulation: the stage output is lost entirely; every response is still in the request cache
    (run / "reasonings.jsonl").unlink()
    out = reason_stage(cfg, qs, captions, run, backend)
    assert server["count"] == 5 and out["calls"] == 0 and len(out["rows"]) == 4
    assert sorted(rows.splitlines()) == sorted((run / "reasonings.jsonl").read_text().splitlines())
