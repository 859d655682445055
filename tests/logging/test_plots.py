"""PNG plots from metrics.jsonl."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from verl.logging.plots import load_metrics, plot_compare, plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _full_run(path: Path, scale: float = 1.0) -> Path:
    rows = []
    for k in range(1, 5):
        rows.append({"step": k, "time": 100.0 + k, "critic/score/mean": 0.1 * k * scale,
                     "critic/score/min": 0.0, "critic/score/max": 1.0,
                     "train/label_accuracy": 0.5 + 0.1 * k, "actor/entropy": 2.0 - 0.3 * k,
                     "timing_s/gen": 1.0, "timing_s/update_actor": 0.5, "timing_s/step": 1.6})
        if k % 2 == 0:
            rows.append({"step": k, "val-core/digits/acc/mean@1": 0.4 * scale + 0.05 * k})
    return _write(path, rows)


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_SIGNATURE, path


def test_load_metrics_series(tmp_path):
    series = load_metrics(_full_run(tmp_path / "r" / "metrics.jsonl"))
    steps, values = series["val-core/digits/acc/mean@1"]
    assert steps == [2, 4] and values == pytest.approx([0.5, 0.6])
    assert series["actor/entropy"][0] == [1, 2, 3, 4]
    assert "time" not in series and "step" not in series


def test_load_metrics_resumed_run_keeps_newest(tmp_path):
    rows = [{"step": k, "a": float(k)} for k in (1, 2, 3)] + [{"step": k, "a": 10.0 * k} for k in (2, 3, 4)]
    assert load_metrics(_write(tmp_path / "m.jsonl", rows)) == {"a": ([1, 2, 3, 4], [1.0, 20.0, 30.0, 40.0])}


def test_plot_run_all_groups(tmp_path):
    paths = plot_run(_full_run(tmp_path / "r" / "metrics.jsonl"), tmp_path / "plots")
    assert [p.name for p in paths] == ["accuracy.png", "rewards.png", "entropy.png", "timing.png"]
    for p in paths:
        _assert_png(p)


def test_plot_run_skips_missing_groups(tmp_path):
    jsonl = _write(tmp_path / "m.jsonl", [{"step": 1, "timing_s/gen": 0.2, "note": "text", "nan": None},
                                          {"step": 2, "timing_s/gen": 0.3}])
    paths = plot_run(jsonl, tmp_path / "out")
    assert [p.name for p in paths] == ["timing.png"]
    _assert_png(paths[0])
    assert plot_run(_write(tmp_path / "empty.jsonl", [{"step": 1}]), tmp_path / "out2") == []


def test_bad_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "a": 1}\n{oops\n{"step": 3, "a": 2}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        load_metrics(bad)
    truncated = tmp_path / "trunc.jsonl"
    truncated.write_text('{"step": 1, "a": 1}\n{"step": 2, "a"')
    assert load_metrics(truncated) == {"a": ([1], [1.0])}
    nostep = _write(tmp_path / "nostep.jsonl", [{"a": 1}])
    with pytest.raises(ValueError, match=r"nostep\.jsonl:1.*step"):
        load_metrics(nostep)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_metrics(tmp_path / "missing.jsonl")


def test_plot_compare(tmp_path):
    a = _full_run(tmp_path / "a" / "metrics.jsonl")
    b = _full_run(tmp_path / "b" / "metrics.jsonl", scale=2.0)
    c = _write(tmp_path / "c.jsonl", [{"step": 1, "other": 1.0}])
    out = plot_compare({"base": a, "adapted": b, "other": c}, "critic/score/mean", tmp_path / "cmp" / "x.png")
    _assert_png(out)
    with pytest.raises(KeyError, match="no run has metric 'nope'"):
        plot_compare({"a": a}, "nope", tmp_path / "y.png")


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("plot_metrics_cli", ROOT / "scripts" / "plot_metrics.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    a = _full_run(tmp_path / "a" / "metrics.jsonl")
    assert cli.main([str(a), "--out", str(tmp_path / "cli")]) == 0
    assert len(capsys.readouterr().out.split()) == 4
    _assert_png(tmp_path / "cli" / "accuracy.png")
    assert cli.main(["--compare", f"a={a}", f"b={a}", "--key", "actor/entropy", "--out", str(tmp_path / "c.png")]) == 0
    _assert_png(tmp_path / "c.png")
    with pytest.raises(SystemExit):
        cli.main(["--compare", "nolabel", "--key", "k", "--out", str(tmp_path / "d.png")])
