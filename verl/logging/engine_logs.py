"""Engine logs off the console: Ray's and vLLM's own messages go to ``engine.log`` in the run folder.

The console keeps the progress bar, one metrics line per step and the trainer's own warnings. Ray
workers write all their output (engine internals included) to ``worker_<rank>.log`` beside it
(:class:`~verl.single_controller.worker_group.RayWorkerGroup`); this module handles the driver
process, where the local backend also runs the engine.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

ENGINE_LOGGERS = ("ray", "vllm")


def route_engine_logs(run_dir: str | os.PathLike) -> Path:
    """Send the ``ray`` and ``vllm`` loggers of this process to ``<run_dir>/engine.log``; returns its path.

    Call before the engines start: vLLM is told not to install its own console handler
    (``VLLM_CONFIGURE_LOGGING=0``), and Ray's console handler, installed when Ray is imported, is replaced.
    """
    path = Path(run_dir) / "engine.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ENGINE_LOGGERS:
        engine_logger = logging.getLogger(name)
        for old in list(engine_logger.handlers):
            engine_logger.removeHandler(old)
        engine_logger.addHandler(handler)
        engine_logger.setLevel(logging.INFO)
        engine_logger.propagate = False
    return path
