"""A planted pickle in a checkpoint never runs: resume and export refuse it with one line naming the file."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from verl.checkpoint import save_trainer_state, write_latest

ROOT = Path(__file__).resolve().parents[2]


class _Planted:
    """Unpickling this creates a folder: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _planted_checkpoint(root: Path, marker: Path, model: Path) -> Path:
    """``root/global_step_1``, marked latest, whose actor DCP metadata runs code when unpickled."""
    step = root / "global_step_1"
    (step / "actor" / "dcp").mkdir(parents=True)
    (step / "actor" / "dcp" / ".metadata").write_bytes(pickle.dumps(_Planted(marker)))
    save_trainer_state(step, {"step": 1, "model_path": str(model)})
    write_latest(root, 1)
    return step


def _one_error_line(proc: subprocess.CompletedProcess, metadata: Path) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {metadata}: not loaded"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "VERL_DEBUG": ""}


def test_export_refuses_a_planted_checkpoint_in_its_own_folder(tmp_path):
    marker = tmp_path / "code_ran"
    step = _planted_checkpoint(tmp_path / "checkpoints" / "p" / "t", marker, tmp_path / "base")
    proc = subprocess.run([sys.executable, "-m", "verl.trainer.export", str(step), str(tmp_path / "out")],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    _one_error_line(proc, step / "actor" / "dcp" / ".metadata")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_resume_refuses_a_planted_checkpoint_in_the_runs_own_folder(tiny_vlm_path, digits_dir, tmp_path):
    marker = tmp_path / "code_ran"
    step = _planted_checkpoint(tmp_path / "ckpt", marker, tiny_vlm_path("qwen2_5_vl"))
    files = f"[{digits_dir / 'test_noise_open.json'}]"
    args = ["--config-dir", str(ROOT / "recipes" / "ttrv" / "config"), "--config-name", "ttrv_cpu_tiny",
            f"actor_rollout_ref.model.path={tiny_vlm_path('qwen2_5_vl')}", f"data.train_files={files}",
            f"data.val_files={files}", "data.max_samples=2", "trainer.backend=local", "trainer.n_gpus_per_node=1",
            f"trainer.default_local_dir={tmp_path / 'ckpt'}", f"trainer.log_dir={tmp_path / 'logs'}"]
    proc = subprocess.run([sys.executable, "-m", "verl.trainer.main", *args], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    _one_error_line(proc, step / "actor" / "dcp" / ".metadata")
    assert not marker.exists()
