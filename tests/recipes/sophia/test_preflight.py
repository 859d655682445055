"""Bad input fails before any caption is generated: one `error: ...` line naming it, exit status 2."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recipes.sophia.main import main
from recipes.sophia.pairs import build_pairs_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sophia_preflight") / "data"
    build_pairs_dataset(out, seed=0, sizes={"caption_train": 1, "sophia_train": 3, "eval": 2, "dev": 1})
    return out


@pytest.fixture(scope="module")
def models_server():
    """An OpenAI-compatible stand-in that lists one model at GET /v1/models."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps({"object": "list", "data": [{"id": "served-teacher"}]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def run_main(tmp_path, data, model, capsys, *overrides):
    capsys.readouterr()  # drop what building the tiny model printed
    rc = main([f"data.dir={data}", f"actor_rollout_ref.model.path={model}", f"trainer.log_dir={tmp_path / 'logs'}",
               f"reason.model_path={model}", "trainer.logger=[jsonl]", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert not (tmp_path / "logs").exists()  # nothing started, no caption generated
    return rc, err


def test_record_without_gold_answer(tmp_path, data, tiny_vlm_path, capsys):
    rows = json.loads((data / "sophia_train.json").read_text())
    rows[1]["answer"] = None
    for r in rows:
        r["image_path"] = str(data / r["image_path"])
    (tmp_path / "train.json").write_text(json.dumps(rows))
    rc, err = run_main(tmp_path, data, tiny_vlm_path(), capsys, f"data.train_file={tmp_path / 'train.json'}")
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and rows[1]["id"] in err[0]
    assert "gold answer" in err[0]


def test_missing_image(tmp_path, data, tiny_vlm_path, capsys):
    rows = json.loads((data / "eval.json").read_text())
    rows[0]["image_path"] = str(tmp_path / "nowhere.png")
    for r in rows[1:]:
        r["image_path"] = str(data / r["image_path"])
    (tmp_path / "eval.json").write_text(json.dumps(rows))
    rc, err = run_main(tmp_path, data, tiny_vlm_path(), capsys, f"data.eval_file={tmp_path / 'eval.json'}")
    assert rc == 2 and len(err) == 1 and "nowhere.png" in err[0] and rows[0]["id"] in err[0]


def test_unreachable_reasoner(tmp_path, data, tiny_vlm_path, capsys):
    rc, err = run_main(tmp_path, data, tiny_vlm_path(), capsys, "reason.backend=http", "reason.http.model=t",
                       "reason.http.base_url=http://127.0.0.1:9/v1", "reason.http.api_key_env=null")
    assert rc == 2 and len(err) == 1 and "reason.http.base_url" in err[0] and "127.0.0.1:9" in err[0]


def test_model_the_server_does_not_serve(tmp_path, data, tiny_vlm_path, capsys, models_server):
    rc, err = run_main(tmp_path, data, tiny_vlm_path(), capsys, "reason.backend=http", "reason.http.model=qwq",
                       f"reason.http.base_url={models_server}", "reason.http.api_key_env=null")
    assert rc == 2 and len(err) == 1 and "reason.http.model" in err[0] and "served-teacher" in err[0]


@pytest.mark.parametrize("alpha", ["1.5", "-0.25"])
def test_alpha_outside_unit_interval(tmp_path, data, tiny_vlm_path, capsys, alpha):
    rc, err = run_main(tmp_path, data, tiny_vlm_path(), capsys, f"select.alpha={alpha}")
    assert rc == 2 and len(err) == 1 and "select.alpha" in err[0]


def test_good_input_passes(data, tiny_vlm_path, models_server):
    from recipes.sophia.config import load_sophia_config
    from recipes.sophia.preflight import preflight

    cfg = load_sophia_config(overrides=[f"data.dir={data}", f"actor_rollout_ref.model.path={tiny_vlm_path()}",
                                        "reason.backend=http", "reason.http.model=served-teacher",
                                        f"reason.http.base_url={models_server}", "reason.http.api_key_env=null"])
    preflight(cfg)  # no error
