"""Tracker backends, secret scrubbing and value sanitizing."""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import sys

import numpy as np
import pytest
import torch
import yaml

from verl.logging.tracker import REDACTED, Tracker, scrub_secrets, to_float

SECRET = "hf_abcdefghijklmnopqrstuvwxyz0123"

CONFIG = {
    "trainer": {"project_name": "p", "total_epochs": 2, "wandb_api_key": "s3cr3t-wandb"},
    "actor_rollout_ref": {"rollout": {"max_tokens": 32, "n": 4, "stop_tokens": ["<|im_end|>"]}},
    "data": {"image_key": "images", "tokenizer": {"path": "/m"}},
    "hub": {"hf_token": SECRET, "password": 1234, "note": SECRET},
    "ray": {"runtime_env": {"env_vars": {"HF_TOKEN": SECRET, "OMP_NUM_THREADS": "1"}}},
}


def test_scrub_secrets_rules_and_no_mutation():
    original = copy.deepcopy(CONFIG)
    out = scrub_secrets(CONFIG)
    assert CONFIG == original  # input untouched
    assert out["trainer"] == {"project_name": "p", "total_epochs": 2, "wandb_api_key": REDACTED}
    rollout = out["actor_rollout_ref"]["rollout"]
    assert rollout["max_tokens"] == 32 and rollout["n"] == 4  # numeric token counts are kept
    assert rollout["stop_tokens"] == REDACTED  # a list under a "token" key is treated as a secret
    assert out["data"] == {"image_key": "images", "tokenizer": {"path": "/m"}}
    assert out["hub"] == {"hf_token": REDACTED, "password": REDACTED, "note": REDACTED}
    assert out["ray"]["runtime_env"]["env_vars"] == {"HF_TOKEN": REDACTED, "OMP_NUM_THREADS": REDACTED}
    assert SECRET not in json.dumps(out) and "s3cr3t" not in json.dumps(out)


def test_to_float_accepts_scalars_rejects_rest():
    assert to_float(3) == 3.0 and to_float(True) == 1.0
    assert to_float(np.float32(0.5)) == 0.5 and to_float(torch.tensor(2.5)) == 2.5
    assert to_float(np.array([1.5])) == 1.5
    for bad in (float("nan"), float("inf"), "1.0", None, [1.0], torch.ones(2), np.str_("3")):
        assert to_float(bad) is None, bad


def test_unknown_backend_names_it_and_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"mlflowx.*console.*jsonl.*tensorboard.*wandb"):
        Tracker("p", "e", ["jsonl", "mlflowx"], log_dir=tmp_path)
    with pytest.raises(ValueError, match="experiment_name"):
        Tracker("p", "../x", ["jsonl"], log_dir=tmp_path)


def test_jsonl_lines_config_and_skips(tmp_path, caplog):
    tr = Tracker("proj", "exp", ["jsonl"], log_dir=tmp_path, config=CONFIG)
    kept = tr.log({"a": 1, "b": np.float64(0.25), "c": torch.tensor(3.0), "bad": float("nan"), "s": "x"}, step=1)
    assert kept == {"a": 1.0, "b": 0.25, "c": 3.0}
    tr.log({"a": 2, "bad": float("inf")}, step=np.int64(2))
    with caplog.at_level(logging.WARNING, logger="verl.tracker"):
        tr.finish()
    tr.finish()  # idempotent
    run = tmp_path / "proj" / "exp"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {k: v for k, v in rows[0].items() if k != "time"} == {"step": 1, "a": 1.0, "b": 0.25, "c": 3.0}
    assert rows[1]["a"] == 2.0 and "bad" not in rows[1] and isinstance(rows[1]["time"], float)
    assert tr.skipped == {"bad": 2, "s": 1}
    assert "skipped 3" in caplog.text
    cfg_json = json.loads((run / "config.json").read_text())
    assert cfg_json == yaml.safe_load((run / "config.yaml").read_text())
    assert cfg_json["hub"]["hf_token"] == REDACTED and cfg_json["trainer"]["total_epochs"] == 2
    for name in ("config.json", "config.yaml", "metrics.jsonl"):
        assert SECRET not in (run / name).read_text()
    with pytest.raises(RuntimeError, match="after finish"):
        tr.log({"a": 1}, step=3)


def test_jsonl_appends_on_resume(tmp_path):
    for step in (1, 2):
        with Tracker("p", "e", ["jsonl"], log_dir=tmp_path) as tr:
            tr.log({"x": step}, step=step)
    lines = (tmp_path / "p" / "e" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["x"] for line in lines] == [1.0, 2.0]


def test_rewind_drops_rows_after_the_resumed_step(tmp_path):
    with Tracker("p", "e", ["jsonl"], log_dir=tmp_path) as tr:
        for step in (0, 1, 2, 3):
            tr.log({"x": step}, step=step)
    with Tracker("p", "e", ["jsonl"], log_dir=tmp_path) as tr:  # resumed from the checkpoint of step 2
        assert tr.rewind(2) == 1
        tr.log({"x": 30}, step=3)
    rows = [json.loads(line) for line in (tmp_path / "p" / "e" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["x"]) for r in rows] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0)]
    with Tracker("p", "e", ["jsonl"], log_dir=tmp_path) as tr:  # a fresh start keeps nothing
        assert tr.rewind(-1) == 4
    assert (tmp_path / "p" / "e" / "metrics.jsonl").read_text() == ""


def test_console_line_and_progress(tmp_path, caplog):
    line = Tracker.format_line({"critic/score/mean": 0.5, "actor/pg_loss": -0.0125, "zzz": 1.0,
                                "val-core/digits/acc/mean@1": 0.75}, step=3)
    assert line == "step 3 | score=0.5 | pg_loss=-0.0125 | val-core/digits/acc/mean@1=0.75"
    tr = Tracker("p", "e", ["console"], log_dir=tmp_path)
    bar = tr.progress(total=4)  # stderr is no terminal here: no bar, the record lines say the step of 4
    with caplog.at_level(logging.INFO, logger="verl.tracker"):
        tr.log({"critic/score/mean": 0.25}, step=1)
        bar.update(1)
    assert "step 1/4 | score=0.25" in caplog.text
    assert bar.disable and bar.total == 4
    tr.finish()
    assert not (tmp_path / "p").exists()  # console writes no files
    quiet = Tracker("p", "e", ["jsonl"], log_dir=tmp_path)
    assert quiet.progress(total=2).disable
    quiet.finish()


BAR = re.compile(r"training: +\d+%\|")  # a tqdm bar of Tracker.progress
RECORD = re.compile(r"\d\d:\d\d:\d\d\S* [\w.]+: ")  # a log record: time, logger name


def records_inside_bar_lines(console: str) -> list[str]:
    """Console segments (between \\n and \\r, as a terminal draws them) holding a bar and a log record."""
    return [seg for line in console.split("\n") for seg in line.split("\r")
            if BAR.search(seg) and RECORD.search(seg)]


def test_log_records_never_inside_the_progress_bar_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # a terminal: the bar is drawn
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # the console handler of logging.basicConfig (capsys' stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        tr = Tracker("p", "e", ["console"], log_dir=tmp_path)
        bar = tr.progress(total=3)
        for step in (1, 2, 3):
            tr.log({"critic/score/mean": 0.25 * step}, step=step)
            logging.getLogger("verl.trainer").warning("a warning at step %d", step)
            bar.update(1)
        tr.finish()
        assert root.handlers[-1] is handler  # the console handler is restored when the bar ends
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert BAR.search(err) and "verl.tracker: step 2/3 | score=0.5" in err
    assert records_inside_bar_lines(err) == []
    visible = [line.split("\r")[-1].strip() for line in err.split("\n")]
    assert sum(line.endswith("a warning at step 2") for line in visible) == 1  # on its own line
    assert records_inside_bar_lines("\rtraining:  33%|###  | 1/3 [00:01<00:02]12:00:01,5 verl.tracker: step 1")


def test_summary_json(tmp_path):
    tr = Tracker("p", "e", ["jsonl"], log_dir=tmp_path)
    path = tr.summary({"base": {"acc": 0.5}, "adapted": {"acc": 0.75}, "delta": float("nan"), "api_key": "k"})
    tr.finish()
    assert path == tmp_path / "p" / "e" / "summary.json"
    data = json.loads(path.read_text())
    assert data == {"base": {"acc": 0.5}, "adapted": {"acc": 0.75}, "delta": None, "api_key": REDACTED}


def test_tensorboard_event_file(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tr = Tracker("p", "e", ["tensorboard"], log_dir=tmp_path, config=CONFIG)
    tr.log({"critic/score/mean": 0.5, "bad": math.nan}, step=1)
    tr.log({"critic/score/mean": 0.75}, step=2)
    tr.finish()
    tb_dir = tmp_path / "p" / "e" / "tensorboard"
    events = list(tb_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    scalars = acc.Scalars("critic/score/mean")
    assert [(s.step, s.value) for s in scalars] == [(1, 0.5), (2, 0.75)]
    assert "bad" not in acc.Tags()["scalars"]
    assert SECRET.encode() not in events[0].read_bytes()


def test_wandb_offline_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("SOME_PRIVATE_VALUE", "envleak-xyz123")
    tr = Tracker("p", "e", ["wandb"], log_dir=tmp_path, config=CONFIG)
    tr.log({"critic/score/mean": 0.5}, step=1)
    tr.summary({"acc": 0.9})
    tr.finish()
    wandb_dir = tmp_path / "p" / "e" / "wandb"
    runs = list(wandb_dir.glob("offline-run-*"))
    assert len(runs) == 1, list(wandb_dir.iterdir())
    files = [p for p in runs[0].rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
        assert b"s3cr3t-wandb" not in p.read_bytes(), p
        assert b"envleak-xyz123" not in p.read_bytes(), p  # no environment variables recorded
