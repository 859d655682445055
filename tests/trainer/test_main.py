"""The command line: ``python -m verl.trainer.main`` as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ["--config-dir", str(ROOT / "recipes" / "ttrv" / "config"), "--config-name", "ttrv_cpu_tiny"]


def overrides(model: Path, data: Path, tmp: Path, *extra: str) -> list[str]:
    files = f"[{data / 'test_noise_open.json'}]"
    return [f"actor_rollout_ref.model.path={model}", f"data.train_files={files}", f"data.val_files={files}",
            "data.max_samples=4", "data.train_batch_size=2", "actor_rollout_ref.rollout.n_votes=2",
            "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.val_sample_n=1",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.rollout.name=hf",
            f"trainer.default_local_dir={tmp / 'ckpt'}", f"trainer.log_dir={tmp / 'logs'}",
            "trainer.logger=[console,jsonl]", "trainer.project_name=p", "trainer.experiment_name=t", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "VERL_DEBUG": ""}


@pytest.mark.slow
def test_local_backend_runs_without_ray(tiny_vlm_path, digits_dir, tmp_path):
    """trainer.backend=local: trains in one process; Ray is never imported and no Ray process starts."""
    args = [*CONFIG, *overrides(tiny_vlm_path("qwen2_5_vl"), digits_dir, tmp_path, "trainer.backend=local",
                                "trainer.n_gpus_per_node=1", "trainer.total_training_steps=2")]
    code = ("import sys, runpy; sys.argv = ['main', *sys.argv[1:]]; runpy.run_module('verl.trainer.main', "
            "run_name='__main__'); print('ray imported:', 'ray' in sys.modules)")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[str] = set()
    while proc.poll() is None:
        try:
            seen |= {c.name() for c in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.Error:
            pass
        time.sleep(0.2)
    out = proc.stdout.read()
    assert proc.returncode == 0, out[-3000:]
    assert "ray imported: False" in out
    assert not {n for n in seen if "ray" in n or n in ("gcs_server", "raylet")}, seen
    rows = [json.loads(line) for line in (tmp_path / "logs" / "p" / "t" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows if "actor/pg_loss" in r] == [1, 2]
