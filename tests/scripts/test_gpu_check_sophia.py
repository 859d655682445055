"""scripts/gpu_check.sh --mode sophia in its CPU small mode, as the bare GPU machine runs it (no Ray, vLLM,
matplotlib, pandas, ...): one SOPHIA round at the Qwen2.5-VL-3B shape (2 layers, width 256) with the tiny local
reasoner, seconds per stage and peak memory in the summary."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.scripts.test_gpu_check import ROOT, bare_env


@pytest.mark.slow
def test_gpu_check_sophia_small_mode(tmp_path: Path):
    out = tmp_path / "summary.json"
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--mode", "sophia", "--device", "cpu",
                          "--layers", "2", "--small", "--skip-bench", "--work-dir", str(tmp_path / "work"),
                          "--json-out", str(out)], capture_output=True, text=True, env=bare_env(), timeout=600,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["mode"] == "sophia" and s["real_shape"]["layers"] == 2 and s["real_shape"]["published_layers"] == 36
    assert set(s["sophia_stages_s"]) == {"caption", "reason", "select", "evaluate_base", "update", "evaluate_sophia"}
    assert all(v > 0 for v in s["sophia_stages_s"].values())
    assert s["sophia_kept_fraction"] == 1.0 and s["sophia_update"]["steps"] == 1 and s["peak_host_rss_gib"] > 0
    assert not s["ray_imported"] and not s["vllm_imported"]
    assert "seconds per stage: caption" in res.stdout and "peak host memory" in res.stdout
