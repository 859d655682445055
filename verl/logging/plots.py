"""PNG plots of a run's ``metrics.jsonl`` (matplotlib, Agg canvas; no pyplot global state)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

Series = dict[str, tuple[list[int], list[float]]]

_REWARD_KEYS = ("critic/score/mean",)


def load_metrics(jsonl_path: str | Path) -> Series:
    """Read a metrics.jsonl into ``{key: (steps, values)}`` (numeric, finite values only).

    Steps of a key that go backwards (a run resumed from an earlier checkpoint and appending to the same
    file) replace the earlier entries from that step on, so each series is strictly increasing.

    A malformed line raises ``ValueError`` naming the file and line, except a truncated last line
    (a run killed mid-write), which is skipped with a warning.
    """
    path = Path(jsonl_path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    series: Series = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == len(lines):
                logger.warning("%s:%d: skipping truncated last line (%s)", path, lineno, err)
                continue
            raise ValueError(f"{path}:{lineno}: not valid JSON ({err})") from None
        if not isinstance(row, dict) or "step" not in row:
            raise ValueError(f"{path}:{lineno}: expected a JSON object with a 'step' field")
        step = row["step"]
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"{path}:{lineno}: 'step' must be an integer, got {step!r}")
        for key, value in row.items():
            if key in ("step", "time") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                continue
            steps, values = series.setdefault(key, ([], []))
            while steps and steps[-1] >= step:  # a resumed run re-logs steps after its checkpoint: keep the newest
                steps.pop()
                values.pop()
            steps.append(step)
            values.append(float(value))
    return series


def _groups(series: Series) -> dict[str, list[str]]:
    keys = sorted(series)
    return {
        "accuracy": [k for k in keys if "acc" in k.lower() and not k.startswith("timing_s/")],
        "rewards": [k for k in _REWARD_KEYS if k in series],
        "entropy": [k for k in keys if "entropy" in k.lower()],
        "timing": [k for k in keys if k.startswith("timing_s/")],
    }


def _new_figure(title: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _plot_lines(ax: object, series: Series, keys: list[str]) -> None:
    for key in keys:
        steps, values = series[key]
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=key)
    ax.legend(fontsize=7, loc="best")


def _plot_rewards(ax: object, series: Series, keys: list[str]) -> None:
    for key in keys:
        steps, values = series[key]
        (line,) = ax.plot(steps, values, label=key)
        lo_key, hi_key = key.replace("/mean", "/min"), key.replace("/mean", "/max")
        if lo_key in series and hi_key in series and series[lo_key][0] == steps == series[hi_key][0]:
            ax.fill_between(steps, series[lo_key][1], series[hi_key][1], alpha=0.15, color=line.get_color())
    ax.legend(fontsize=7, loc="best")


def _plot_timing(ax: object, series: Series, keys: list[str]) -> None:
    """Phases stacked (when logged at the same steps), ``timing_s/step`` (the total) as a line on top."""
    total = "timing_s/step"
    phases = [k for k in keys if k != total]
    if phases and all(series[k][0] == series[phases[0]][0] for k in phases):
        steps = series[phases[0]][0]
        ax.stackplot(steps, *[series[k][1] for k in phases], labels=phases, alpha=0.7)
    else:
        _plot_lines(ax, series, phases)
    if total in series:
        ax.plot(*series[total], color="black", linewidth=1.5, label=total)
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7, loc="upper left")


_PLOTTERS: dict[str, Callable[[object, Series, list[str]], None]] = {
    "accuracy": _plot_lines,
    "rewards": _plot_rewards,
    "entropy": _plot_lines,
    "timing": _plot_timing,
}


def plot_run(jsonl_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Plot accuracy, rewards, entropy and timing of one run into ``out_dir/<group>.png``.

    Groups with no matching metric are skipped; returns the paths written (possibly empty).
    """
    series = load_metrics(jsonl_path)
    out = Path(out_dir)
    written: list[Path] = []
    for group, keys in _groups(series).items():
        if not keys:
            logger.info("plot_run: no %s metrics in %s; skipped", group, jsonl_path)
            continue
        fig, ax = _new_figure(f"{group} ({Path(jsonl_path).parent.name})")
        _PLOTTERS[group](ax, series, keys)
        written.append(_save(fig, out / f"{group}.png"))
    return written


def plot_compare(runs: Mapping[str, str | Path], key: str, out_png: str | Path,
                 keys: Mapping[str, str] | None = None) -> Path:
    """Overlay metric ``key`` of several runs (``{label: metrics.jsonl}``) in one PNG.

    ``keys`` optionally names a different metric per run label (e.g. each run's own split); ``key`` is
    then only the axis label.

    Runs lacking ``key`` are skipped with a warning; if none has it, ``KeyError`` names the key and the
    keys that do exist.
    """
    if not runs:
        raise ValueError("plot_compare: no runs given")
    fig, ax = _new_figure(key)
    available: set[str] = set()
    plotted = 0
    for label, path in runs.items():
        series = load_metrics(path)
        run_key = (keys or {}).get(label, key)
        if run_key not in series:
            logger.warning("plot_compare: run %r (%s) has no metric %r; skipped", label, path, run_key)
            available.update(series)
            continue
        ax.plot(*series[run_key], marker=".", label=str(label))
        plotted += 1
    if not plotted:
        raise KeyError(f"plot_compare: no run has metric {key!r}; available: {sorted(available)}")
    ax.set_ylabel(key)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, Path(out_png))
