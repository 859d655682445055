"""Export refuses a checkpoint folder from elsewhere: its DCP metadata is a pickle."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class _Planted:
    """Unpickling this creates a folder: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_export_of_a_foreign_checkpoint_refuses_without_the_opt_in(tmp_path):
    step = tmp_path / "downloaded" / "global_step_1"
    (step / "actor").mkdir(parents=True)
    (step / "trainer_state.json").write_text(json.dumps({"step": 1, "model_path": str(tmp_path / "base")}))
    marker = tmp_path / "code_ran"
    (step / "actor" / ".metadata").write_bytes(pickle.dumps(_Planted(marker)))
    proc = subprocess.run([sys.executable, "-m", "verl.trainer.export", str(step), str(tmp_path / "out")],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "VERL_DEBUG": ""},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint ") and "--trust-checkpoint" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()
