"""Running a grid of TTRV training runs: one :class:`Run` per config preset plus overrides, executed (or
reused when its summary and overrides are on disk) one by one or in parallel processes. Shared by
:mod:`recipes.ttrv.experiments` and :mod:`recipes.ttrv.estimator_grid`."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from verl.config.loader import load_config

logger = logging.getLogger("recipes.ttrv.experiments")

CONFIG_DIR = str(Path(__file__).resolve().parent / "config")
SHIFTS = ("noise", "blur", "rotate", "invert", "occlude")


@dataclass
class Run:
    """One training run: a config preset plus overrides, and the split it is reported under."""

    name: str
    preset: str
    overrides: list[str]
    group: str  # table row
    split: str  # split whose validation metrics are reported
    epochs: int | None = None  # None: the preset's own (protocols b and c), else trainer.total_epochs
    model: str | None = None  # None: the variant's base model


def split_file(data: Path, split: str) -> str:
    return str(data / f"{split}_open.json")


def execute(run: Run, out: Path) -> dict:
    """Run (or reuse) one training run; returns its summary (base/adapted/delta metrics)."""
    from verl.trainer.main import run as train

    folder = out / "runs" / run.name
    done, spec_file = folder / "summary.json", out / "runs" / f"{run.name}.overrides.json"
    overrides = [*run.overrides, f"trainer.log_dir={out}", "trainer.project_name=runs",
                 f"trainer.experiment_name={run.name}", f"trainer.default_local_dir={out / 'ckpt' / run.name}"]
    if run.epochs is not None:
        overrides.append(f"trainer.total_epochs={run.epochs}")
    spec = json.dumps({"preset": run.preset, "overrides": overrides})
    if done.is_file() and spec_file.is_file() and spec_file.read_text() == spec:
        return json.loads(done.read_text())
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted run, or one made with other settings, starts over
    cfg = load_config(run.preset, overrides, config_dir=CONFIG_DIR)
    logger.info("run %s (%s)", run.name, " ".join(run.overrides))
    summary = train(cfg)
    shutil.rmtree(out / "ckpt" / run.name, ignore_errors=True)
    spec_file.write_text(spec)
    return summary


def _execute_one(args: tuple[Run, Path]) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return execute(*args)


def execute_all(runs: list[Run], out: Path, jobs: int) -> dict[str, dict]:
    """Every run's summary; ``jobs`` > 1 runs that many at once (separate processes, each one worker)."""
    if jobs <= 1:
        return {r.name: execute(r, out) for r in runs}
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
        summaries = pool.map(_execute_one, [(r, out) for r in runs], chunksize=1)
    return {r.name: s for r, s in zip(runs, summaries)}
