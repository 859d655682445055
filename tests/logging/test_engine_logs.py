"""Engine loggers (Ray, vLLM) write to the run folder's engine.log, not to the console."""

from __future__ import annotations

import logging

import pytest

from verl.logging.engine_logs import ENGINE_LOGGERS, route_engine_logs


@pytest.fixture
def restore_loggers(monkeypatch):
    monkeypatch.setenv("VLLM_CONFIGURE_LOGGING", "unset")  # so that teardown restores the original
    monkeypatch.delenv("VLLM_CONFIGURE_LOGGING")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).level)
             for n in ENGINE_LOGGERS}
    yield
    for name, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
            h.close()
        for h in handlers:
            lg.addHandler(h)
        lg.propagate, lg.level = propagate, level


def test_engine_messages_go_to_the_file_only(tmp_path, capsys, restore_loggers):
    import os

    console = logging.StreamHandler()
    logging.getLogger("vllm").addHandler(console)  # what vLLM / Ray install on import
    path = route_engine_logs(tmp_path / "run")
    logging.getLogger("vllm.worker").warning("RotaryEmbedding: Failed to load weights")
    logging.getLogger("ray._private.worker").info("Started a local Ray instance.")
    logging.getLogger("verl.trainer").warning("a warning for the user")
    text = path.read_text()
    assert "RotaryEmbedding" in text and "Started a local Ray instance" in text and "for the user" not in text
    captured = capsys.readouterr()
    assert "RotaryEmbedding" not in captured.err + captured.out
    assert console not in logging.getLogger("vllm").handlers
    assert os.environ["VLLM_CONFIGURE_LOGGING"] == "0"  # vLLM installs no console handler of its own
