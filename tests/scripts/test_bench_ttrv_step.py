"""scripts/bench_ttrv_step.py runs (tiny model) and ends with the speed-up line; shared and per-sample agree."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_ttrv_step.py"


@pytest.mark.slow
def test_bench_tiny_prints_the_speed_up_line(capsys):
    spec = importlib.util.spec_from_file_location("bench_ttrv_step", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--tiny", "--quick"])
    lines = capsys.readouterr().out.strip().splitlines()
    m = re.fullmatch(r"shared-prompt speed-up: ([\d.]+)× time, ([\d.]+)× peak memory", lines[-1])
    assert m, lines[-1]
    assert float(m.group(1)) == pytest.approx(out["time_x"], abs=0.05)
    assert out["max_diff"] <= 1e-3  # the same log-probs either way
    assert out["memory_x"] > 1.0  # allocation counting, not timing: the shared pass holds fewer activations
