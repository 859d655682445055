"""scripts/gpu_check.sh in its CPU smoke mode: the local-backend TTRV steps at the Qwen2.5-VL-3B shape
(2 layers, width 256 / vision 160, 2 prompts x 4 votes) run without importing Ray or vLLM and report every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_cpu_smoke_mode(tmp_path):
    out = tmp_path / "summary.json"
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--layers", "2", "--small",
                          "--skip-bench", "--work-dir", str(tmp_path / "work"), "--json-out", str(out)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads(out.read_text())
    assert [st["step"] for st in s["steps"]] == [1, 2]
    assert s["real_shape"]["layers"] == 2 and s["real_shape"]["published_layers"] == 36
    assert not s["ray_imported"] and not s["vllm_imported"]
    assert "ray" not in s["third_party_modules"] and "torch" in s["third_party_modules"]
    for st in s["steps"]:
        assert st["step_s"] >= st["update_actor_s"] > 0 and st["gen_s"] > 0 and st["ref_s"] > 0
        # 2 prompts x 4 votes, each prompt 16 image tokens (112 px) + text, 8 new tokens
        assert st["tokens"] > 8 * 8 and st["tokens_per_s_per_gpu"] == pytest.approx(st["tokens"] / st["step_s"])
        assert st["tokens_all_votes"] >= st["tokens"]  # all generated votes (here n_votes = n: equal)
        assert 0 < st["mfu_actor_measured_peak"]
    assert "tokens/s/GPU" in res.stdout and "actor MFU" in res.stdout and "shared-prompt: skipped" in res.stdout
