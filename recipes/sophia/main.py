"""SOPHIA's entry point::

    python -m recipes.sophia.main --config-dir recipes/sophia/config --config-name sophia_cpu_tiny [key=value ...]

Composes the Hydra config on the typed schema (``recipes/sophia/config.py``: verl's ``actor_rollout_ref`` and
``trainer`` sections plus SOPHIA's; a misspelled key fails naming it), checks the data, the policy folder and
the reasoner (:mod:`recipes.sophia.preflight`) before any caption is generated, runs one round (caption ->
reason -> reward -> select -> update -> evaluate) and prints base -> SOPHIA accuracy. Exit status 2: bad
config, data, model or reasoner, or a round whose filter keeps nothing (one ``error: ...`` line); 1: a worker
died; 130: interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recipes.sophia.config import CONFIG_DIR, DEFAULT_CONFIG_NAME, load_sophia_config
from verl.utils.cli import run_command, setup_logging

ENTRY_POINT = "recipes.sophia.main"  # this module, as SOPHIA's configs' ``entry_point`` names it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-dir", default=str(CONFIG_DIR), help="folder with the YAML config")
    p.add_argument("--config-name", default=DEFAULT_CONFIG_NAME, help="YAML name without .yaml")
    p.add_argument("--cfg", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. select.alpha=0.5 trainer.backend=ray")
    return p.parse_args(argv)


def report(summary: dict[str, Any], seconds: float) -> None:
    base, after = summary.get("eval/base/acc"), summary.get("eval/sophia/acc")
    kept = summary.get("sophia/kept_fraction")
    print(f"run folder (logs, stage files, model): {summary['run_dir']}  ({seconds:.0f} s)")
    if kept is not None:
        print(f"kept questions: {100 * kept:.1f}%  reasoning accuracy: {100 * summary['sophia/reasoning_accuracy']:.1f}%")
    if base is not None and after is not None:
        print(f"held-out VLM accuracy (greedy): base {100 * base:.1f}% -> SOPHIA {100 * after:.1f}%")
    if summary.get("plots"):
        names = ", ".join(Path(p).name for p in summary["plots"])
        print(f"plots: {Path(summary['plots'][0]).parent}/ ({names})")


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (:func:`verl.utils.cli.run_command`)."""
    from omegaconf import OmegaConf

    from recipes.sophia.pipeline import run_pipeline
    from recipes.sophia.preflight import preflight

    args = parse_args(argv)
    setup_logging()

    def setup() -> Callable[[], object] | None:
        cfg = load_sophia_config(args.config_name, args.overrides, args.config_dir)
        if cfg.entry_point != ENTRY_POINT:
            raise ValueError(f"entry_point={cfg.entry_point}: this config is run by python -m {cfg.entry_point}")
        if args.cfg:
            print(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
            return None
        preflight(cfg)

        def run() -> None:
            t0 = time.perf_counter()
            report(run_pipeline(cfg), time.perf_counter() - t0)

        return run

    return run_command(setup)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
