"""The command lines' error policy: one `error:` line and exit 2 for bad input and RunError, 1 for a dead
worker, 130 for Ctrl-C, the traceback with VERL_DEBUG=1."""

from __future__ import annotations

import pytest

from verl.single_controller.dispatch import WorkerDiedError
from verl.utils.cli import RunError, run_command


def raising(err: BaseException):
    def fn():
        raise err
    return fn


@pytest.mark.parametrize("setup, status, line", [
    (raising(ValueError("data.train_files: /x.json does not exist")), 2, "error: data.train_files: /x.json does not exist"),
    (raising(FileNotFoundError("model folder /m not found")), 2, "error: model folder /m not found"),
    (lambda: raising(RunError("update: the filter kept none of the 6 questions")), 2,
     "error: update: the filter kept none of the 6 questions"),
    (lambda: raising(WorkerDiedError(1, "update_actor", "SIGKILL", "w.log")), 1,
     "error: worker rank 1 died during update_actor: SIGKILL (log: w.log)"),
    (lambda: raising(KeyboardInterrupt()), 130, "interrupted: workers stopped"),
    (lambda: None, 0, None),
    (lambda: (lambda: None), 0, None),
])
def test_exit_status_and_one_line(setup, status, line, capsys, monkeypatch):
    monkeypatch.delenv("VERL_DEBUG", raising=False)
    assert run_command(setup) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ([line] if line else [])


def test_a_value_error_during_the_run_is_a_bug_not_bad_input(monkeypatch):
    monkeypatch.delenv("VERL_DEBUG", raising=False)
    with pytest.raises(ValueError, match="shape mismatch"):
        run_command(lambda: raising(ValueError("shape mismatch")))


def test_debug_re_raises(monkeypatch):
    monkeypatch.setenv("VERL_DEBUG", "1")
    with pytest.raises(RunError, match="kept none"):
        run_command(lambda: raising(RunError("kept none")))


def test_no_weight_loading_bars(monkeypatch):
    from transformers.utils import logging as hf_logging

    from verl.utils.cli import setup_logging

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    hf_logging.enable_progress_bar()
    try:
        setup_logging()
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
