"""scripts/gpu_check.sh in its CPU smoke mode, as the bare GPU machine runs it: the local-backend TTRV steps at the
Qwen2.5-VL-3B shape (2 layers, width 256 / vision 160, 2 prompts x 4 votes) with every installed module that
machine lacks made unimportable (bare_machine/sitecustomize.py; scripts/gpu_rehearsal.sh is the full rehearsal
in a fresh venv), reporting every figure; the blocker's own test; the summary written per part."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BARE = Path(__file__).resolve().parent / "bare_machine"


def bare_env() -> dict[str, str]:
    """The environment of a subprocess that sees only the bare GPU machine's installed modules."""
    return {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": f"{BARE}{os.pathsep}{ROOT}"}


@pytest.mark.slow
def test_gpu_check_cpu_smoke_mode(tmp_path):
    out = tmp_path / "summary.json"
    env = bare_env()
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--layers", "2", "--small",
                          "--skip-bench", "--work-dir", str(tmp_path / "work"), "--json-out", str(out)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads(out.read_text())
    assert [st["step"] for st in s["steps"]] == [1, 2]
    assert s["real_shape"]["layers"] == 2 and s["real_shape"]["published_layers"] == 36
    assert not s["ray_imported"] and not s["vllm_imported"]
    assert "ray" not in s["third_party_modules"] and "torch" in s["third_party_modules"]
    assert not {"torchdata", "datasets", "pandas", "torchvision", "vllm"} & set(s["third_party_modules"])
    for st in s["steps"]:
        assert st["step_s"] >= st["update_actor_s"] > 0 and st["gen_s"] > 0 and st["ref_s"] > 0
        # 2 prompts x 4 votes, each prompt 16 image tokens (112 px) + text, 8 new tokens
        assert st["tokens"] > 8 * 8 and st["tokens_per_s_per_gpu"] == pytest.approx(st["tokens"] / st["step_s"])
        assert st["tokens_all_votes"] >= st["tokens"]  # all generated votes (here n_votes = n: equal)
        assert 0 < st["mfu_actor_measured_peak"]
    assert "tokens/s/GPU" in res.stdout and "actor MFU" in res.stdout and "shared-prompt: skipped" in res.stdout
    # the memory plan is printed before anything is allocated (before the model folder is written)
    assert res.stdout.index("memory plan (per GPU") < res.stdout.index("step 1:")
    assert s["memory_plan"]["fits"] and s["memory_plan"]["parts_gib"]["AdamW moments (fp32)"] > 0


def test_bare_machine_blocker_fails_an_import_the_machine_cannot_satisfy():
    """What the smoke test relies on: under the blocker the check's path imports, and a module installed here
    but not on the bare machine (pandas, a requirement of the CPU stack) fails the run when imported."""
    code = "import verl.trainer.fit, verl.utils.memory_plan; print('path imports'); import pandas"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=bare_env(), cwd=ROOT,
                         timeout=300)
    assert "path imports" in res.stdout, res.stderr[-2000:]
    assert res.returncode != 0 and "ModuleNotFoundError: import of pandas halted" in res.stderr
    res = subprocess.run([sys.executable, "-c", "import pandas"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr  # without the blocker it is installed here


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_summary_is_rewritten_per_part_and_the_benchmark_gets_what_remains(tmp_path, monkeypatch):
    gc = _gpu_check()
    summary = gc.Summary(str(tmp_path / "s.json"))
    summary["memory_plan"] = {"fits": True}
    summary.save()
    assert json.loads((tmp_path / "s.json").read_text()) == {"memory_plan": {"fits": True}}
    summary["steps"] = [1]
    summary.save()
    assert json.loads((tmp_path / "s.json").read_text())["steps"] == [1]
    monkeypatch.delenv("GPU_CHECK_DEADLINE", raising=False)
    assert gc.seconds_left() is None
    monkeypatch.setenv("GPU_CHECK_DEADLINE", str(time.time() + 100))
    assert 80 < gc.seconds_left() <= 85  # 100 s minus the 15 s margin
    args = gc.parse_args(["--device", "cpu", "--small"])
    monkeypatch.setenv("GPU_CHECK_DEADLINE", str(time.time() + 20))
    assert gc.run_bench(args).endswith(" s left of the outer time limit)")  # 20 - 15 s margin < 30 s
    seen = {}

    def fake_run(cmd, capture_output, text, timeout):
        seen["timeout"] = timeout
        return subprocess.CompletedProcess(cmd, 0, "shared-prompt speed-up: 8.0× time, 4.0× peak memory\n", "")

    monkeypatch.setattr(gc.subprocess, "run", fake_run)
    monkeypatch.setenv("GPU_CHECK_DEADLINE", str(time.time() + 300))
    assert gc.run_bench(args) == "shared-prompt speed-up: 8.0× time, 4.0× peak memory"
    assert 280 < seen["timeout"] <= 285
