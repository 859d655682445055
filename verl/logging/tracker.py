"""Experiment tracking: one ``Tracker`` fanning metrics out to console, JSONL, tensorboard and wandb.

Files of a run live in ``<log_dir>/<project>/<experiment>/``: ``metrics.jsonl`` (one JSON object per
``log`` call), ``config.yaml`` / ``config.json`` (scrubbed of secrets), ``summary.json``,
``tensorboard/`` and ``wandb/``. Heavy backends (tensorboard, wandb) are imported only when selected.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from verl.logging.secrets import REDACTED, scrub_secrets

__all__ = ["KNOWN_BACKENDS", "REDACTED", "Tracker", "scrub_secrets", "to_float"]

logger = logging.getLogger("verl.tracker")

KNOWN_BACKENDS = ("console", "jsonl", "tensorboard", "wandb")

# Shown on the console line, in this order, under these short names (when present).
_CONSOLE_KEYS = {
    "critic/score/mean": "score",
    "train/label_accuracy": "label_acc",
    "train/reward_accuracy": "reward_acc",
    "train/majority_ratio": "maj_ratio",
    "actor/pg_loss": "pg_loss",
    "actor/kl_loss": "kl",
    "actor/entropy": "entropy",
    "actor/grad_norm": "grad_norm",
    "response_length/mean": "resp_len",
    "timing_s/step": "t_step",
}


def to_float(value: Any) -> float | None:
    """``value`` as a finite float, or None if it is non-numeric or not finite.

    Accepts python numbers and bools, numpy scalars and single-element torch / numpy arrays.
    """
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        out = float(value)
    else:
        item = getattr(value, "item", None)
        if not callable(item):
            return None
        try:
            raw = item()  # numpy scalar or one-element array / tensor; raises for larger ones
        except (TypeError, ValueError, RuntimeError):
            return None
        if not isinstance(raw, bool | int | float):
            return None
        out = float(raw)
    return out if math.isfinite(out) else None


def _config_to_dict(config: Any) -> dict[str, Any]:
    """Plain dict from a dict, a dataclass or an OmegaConf container (imported only if given one)."""
    if config is None:
        return {}
    if type(config).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"Tracker: config must be a dict, dataclass or OmegaConf config, got {type(config).__name__}")


def _json_safe(obj: Any) -> Any:
    """Make ``obj`` JSON-serializable: non-finite floats -> None, numpy/torch scalars -> python, others -> str."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    f = to_float(obj)
    if f is not None:
        return f
    return str(obj)


def _has_console_handler(lg: logging.Logger) -> bool:
    return any(isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr) for h in lg.handlers)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class Tracker:
    """Log scalar metrics to several backends at once.

    Args:
        project_name / experiment_name: name the run folder ``<log_dir>/<project>/<experiment>``.
        backends: subset of ``("console", "jsonl", "tensorboard", "wandb")``.
        log_dir: root of all run folders.
        config: run configuration (dict / dataclass / OmegaConf); secrets are scrubbed before it is
            written to ``config.yaml``/``config.json`` (jsonl), tensorboard text or wandb.
    """

    def __init__(
        self,
        project_name: str,
        experiment_name: str,
        backends: list[str] | tuple[str, ...] | str = ("console",),
        log_dir: str | os.PathLike = "logs",
        config: Any = None,
    ) -> None:
        for what, name in (("project_name", project_name), ("experiment_name", experiment_name)):
            if not name or not isinstance(name, str) or "/" in name or "\\" in name or name in (".", ".."):
                raise ValueError(f"Tracker: {what} must be a non-empty folder name without '/', got {name!r}")
        if isinstance(backends, str):
            backends = [backends]
        unknown = [b for b in backends if b not in KNOWN_BACKENDS]
        if unknown:
            raise ValueError(f"Tracker: unknown logging backend(s) {unknown}; known backends: {list(KNOWN_BACKENDS)}")
        self.project_name = project_name
        self.experiment_name = experiment_name
        self.backends = list(dict.fromkeys(backends))
        self.run_dir = Path(log_dir) / project_name / experiment_name
        self.config = scrub_secrets(_json_safe(_config_to_dict(config)))
        self.skipped: Counter[str] = Counter()
        self._bar: Any = None
        self._console_redirect = ExitStack()  # log records go through tqdm.write while a bar is shown
        self._jsonl = None
        self._tb = None
        self._wandb_run = None
        self._finished = False

        if "console" in self.backends:
            self._setup_console()
        if "jsonl" in self.backends:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_config()
            self._jsonl = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        if "tensorboard" in self.backends:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            if self.config:
                self._tb.add_text("config", "```\n" + json.dumps(self.config, indent=2) + "\n```", 0)
        if "wandb" in self.backends:
            self._wandb_run = self._init_wandb()

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _setup_console() -> None:
        """Make sure INFO lines reach stderr even if the application configured no logging."""
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
            logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)

    def _write_config(self) -> None:
        import yaml

        _atomic_write(self.run_dir / "config.json", json.dumps(self.config, indent=2, sort_keys=False) + "\n")
        _atomic_write(self.run_dir / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))

    def _init_wandb(self) -> Any:
        import wandb

        mode = os.environ.get("WANDB_MODE")
        if not mode and not os.environ.get("WANDB_API_KEY"):
            mode = "offline"  # no credentials: never block on an interactive login
            logger.info("wandb: WANDB_MODE unset and no WANDB_API_KEY; logging offline")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(
            x_disable_meta=True,  # no command line, environment, host or git metadata
            x_disable_stats=True,
            x_disable_machine_info=True,
            disable_code=True,
            disable_git=True,
            save_code=False,
            console="off",
            silent=True,
        )
        return wandb.init(
            project=self.project_name,
            name=self.experiment_name,
            dir=str(self.run_dir),
            config=self.config,
            mode=mode,
            settings=settings,
            reinit="create_new",
        )

    # ------------------------------------------------------------------ logging
    def _clean(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        clean: dict[str, float] = {}
        for key, value in metrics.items():
            f = to_float(value)
            if f is None:
                if self.skipped[key] == 0:
                    logger.warning("Tracker: skipping metric %r with non-finite / non-numeric value %r "
                                   "(further skips of this key are only counted)", key, value)
                self.skipped[key] += 1
                continue
            clean[str(key)] = f
        return clean

    def log(self, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
        """Log ``metrics`` at ``step`` to every backend; returns the metrics that were kept."""
        if self._finished:
            raise RuntimeError("Tracker.log called after finish()")
        if isinstance(step, bool) or not isinstance(step, int):
            try:
                step = int(step)  # numpy / torch integers
            except (TypeError, ValueError):
                raise TypeError(f"Tracker.log: step must be an int, got {step!r}") from None
        clean = self._clean(metrics)
        if "console" in self.backends:
            logger.info(self.format_line(clean, step, self._bar.total if self._bar is not None else None))
            if self._bar is not None:
                self._bar.set_postfix({v: f"{clean[k]:.3g}" for k, v in list(_CONSOLE_KEYS.items())[:3]
                                       if k in clean}, refresh=False)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for key, value in clean.items():
                self._tb.add_scalar(key, value, global_step=step)
            self._tb.flush()
        if self._wandb_run is not None:
            self._wandb_run.log(clean, step=step)
        return clean

    def rewind(self, step: int) -> int:
        """Drop the ``metrics.jsonl`` rows logged after ``step`` (a run resumed from ``step``, or -1 for
        a fresh start, logs them again); returns how many were dropped. Other backends keep theirs."""
        if self._jsonl is None:
            return 0
        path = self.run_dir / "metrics.jsonl"
        self._jsonl.close()
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        _atomic_write(path, "".join(f"{line}\n" for line in kept))
        self._jsonl = open(path, "a", encoding="utf-8")  # noqa: SIM115
        if len(lines) != len(kept):
            logger.info("metrics.jsonl: dropped %d row(s) after step %d", len(lines) - len(kept), step)
        return len(lines) - len(kept)

    @staticmethod
    def format_line(metrics: Mapping[str, float], step: int, total: int | None = None) -> str:
        """Compact one-line summary: the step (of ``total``), known key metrics under short names, then
        validation accuracies."""
        parts = [f"step {step}" if total is None else f"step {step}/{total}"]
        for key, short in _CONSOLE_KEYS.items():
            if key in metrics:
                parts.append(f"{short}={metrics[key]:.4g}")
        for key in sorted(metrics):
            if key.startswith("val") and "/acc" in key:
                parts.append(f"{key}={metrics[key]:.4g}")
        return " | ".join(parts)

    def progress(self, total: int, desc: str = "training", initial: int = 0) -> Any:
        """A tqdm bar the trainer advances with ``bar.update(n)``; shown when "console" is a backend and
        stderr is a terminal (in a pipe or a log file the per-step record lines, ``step k/total``, are the
        progress report: one line per step).

        While it exists, console log records (this logger's and the root logger's handlers that write to
        stdout / stderr) are printed with ``tqdm.write``: each on its own line above the bar, never inside
        it. The bar and the redirection end with :meth:`finish`.
        """
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._close_bar()
        self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                         disable=True if "console" not in self.backends else None)  # None: off unless a TTY
        if "console" in self.backends:
            loggers = [lg for lg in (logging.getLogger(), logger) if _has_console_handler(lg)]
            self._console_redirect.enter_context(logging_redirect_tqdm(loggers=loggers, tqdm_class=tqdm))
        return self._bar

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._console_redirect.close()

    def summary(self, data: Mapping[str, Any]) -> Path:
        """Write ``summary.json`` (e.g. the final base -> adapted report) in the run folder; returns its path.

        Also sets the wandb run summary and names the file on the console when those backends are active.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        safe = scrub_secrets(_json_safe(dict(data)))
        path = self.run_dir / "summary.json"
        _atomic_write(path, json.dumps(safe, indent=2) + "\n")
        if self._wandb_run is not None:
            for key, value in safe.items():
                self._wandb_run.summary[key] = value
        if "console" in self.backends:
            logger.info("summary: %s", path)
        return path

    def finish(self) -> None:
        """Flush and close every backend (idempotent)."""
        if self._finished:
            return
        self._finished = True
        self._close_bar()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None
        if self.skipped:
            logger.warning("Tracker: skipped %d non-finite / non-numeric values: %s",
                           sum(self.skipped.values()), dict(self.skipped))

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()
