"""Entry point: ``python -m verl.trainer.main [--config-dir DIR] [--config-name NAME] key=value ...``.

Composes the Hydra config (typed schema: unknown keys fail here), loads and validates the data,
starts the worker group (``trainer.backend``: Ray bound to 127.0.0.1 unless ``trainer.ray_address``
names a cluster, or ``local``: this process, no Ray), runs the trainer and prints the
base → adapted summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from verl.config.loader import ConfigError, declared_entry_point, load_config, to_yaml
from verl.config.schema import RLConfig
from verl.utils.cli import run_command, setup_logging

logger = logging.getLogger("verl.trainer")
ENTRY_POINT = "verl.trainer.main"  # this module, as the configs' ``entry_point`` names it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-dir", default=None, help="folder with the YAML config (default: verl/config)")
    p.add_argument("--config-name", default="ppo_trainer", help="YAML name without .yaml")
    p.add_argument("--cfg", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. actor_rollout_ref.rollout.n=16")
    return p.parse_args(argv)


def load_data(cfg: RLConfig):
    """Read the adaptation (train) and validation records, check the model folder, validate the
    records with its processor; returns (train, val). Errors name the file and record (or the key)."""
    from verl.data.formats import load_records

    loaded = []
    for key, files in (("data.train_files", cfg.data.train_files), ("data.val_files", cfg.data.val_files)):
        if not files:
            raise ValueError(f"{key} is empty")
        records = []
        for file in files:
            file_records = load_records([file], format=cfg.data.format, image_root=cfg.data.image_root)
            if not file_records:
                raise ValueError(f"{file}: no records ({key})")
            records.extend(file_records)
        if cfg.data.max_samples and cfg.data.max_samples > 0:
            records = records[: cfg.data.max_samples]
        loaded.append((key, files, records))
    from verl.data.validate import validate_records
    from verl.models.load import check_model_folder, load_processor

    model = cfg.actor_rollout_ref.model
    try:
        check_model_folder(model.path)
        processor = load_processor(model.path, trust_remote_code=model.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"actor_rollout_ref.model.path: {err}") from err
    out = []
    for key, files, records in loaded:
        records, report = validate_records(
            records, processor=processor, max_prompt_length=cfg.data.max_prompt_length, on_invalid=cfg.data.on_invalid
        )
        if report.skipped:
            logger.warning("skipped records in %s: %s", list(files), report.skipped)
        if not records:
            raise ValueError(f"{key}: every record of {list(files)} was skipped as invalid")
        out.append(records)
    if cfg.data.train_subset > 0:
        out[0] = pick_subset(out[0], cfg.data.train_subset, cfg.data.seed)
    if cfg.data.system_prompt:
        for records in out:
            for r in records:
                if not r.prompt or r.prompt[0].get("role") != "system":
                    r.prompt = [{"role": "system", "content": cfg.data.system_prompt}, *r.prompt]
    return out[0], out[1]


def pick_subset(records: list, k: int, seed: int) -> list:
    """``k`` records drawn without replacement with ``seed`` (kept in file order)."""
    import numpy as np

    if k > len(records):
        raise ValueError(f"data.train_subset={k} but the adaptation set has only {len(records)} prompts")
    idx = np.sort(np.random.default_rng(seed).choice(len(records), size=k, replace=False))
    logger.info("adapting on %d of %d prompts (data.train_subset, seed %d)", k, len(records), seed)
    return [records[i] for i in idx]


def worker_env() -> dict[str, str]:
    """Environment every worker gets (and the driver, for the local backend)."""
    return {
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # no weight-loading bars (transformers reads it too)
        # A Ray worker's output goes to its log file, vLLM's own handler included; the local backend's
        # driver keeps the 0 that route_engine_logs set (its vLLM logger writes to engine.log).
        "VLLM_CONFIGURE_LOGGING": "1",
    }


def init_ray(cfg: RLConfig) -> bool:
    """Connect to ``trainer.ray_address``, or start Ray on this node bound to 127.0.0.1.

    Returns whether this call started Ray (the caller then shuts it down).
    """
    t = cfg.trainer
    if not t.ray_address:
        # Ray's single-machine mode: node IP 127.0.0.1, so its servers listen on loopback only.
        # Read when Ray is first imported; harmless for a Ray that was imported already.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from verl.logging.engine_logs import route_engine_logs

    if ray.is_initialized():
        return False
    route_engine_logs(Path(t.log_dir) / t.project_name / t.experiment_name)  # after Ray's import-time set-up
    # Zero-copy tensors (RAY_ENABLE_ZERO_COPY_TORCH_TENSORS) arrive read-only by design; torch warns about it.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
    kwargs: dict = {"runtime_env": {"env_vars": worker_env()}, "log_to_driver": False, "configure_logging": False}
    if t.ray_address:
        ray.init(address=t.ray_address, **kwargs)
    else:
        ray.init(
            num_cpus=t.ray_num_cpus,
            include_dashboard=t.include_dashboard,
            dashboard_host=t.ray_dashboard_host,
            _node_ip_address="127.0.0.1",
            **kwargs,
        )
    return True


def check_entry_point(entry_point: str | None, config_name: str | None = None, config_dir: str | None = None) -> None:
    """A config that another command runs (its ``entry_point``) stops here, naming that command."""
    if entry_point is None or entry_point == ENTRY_POINT:
        return
    if config_name is None:
        raise ConfigError(f"entry_point={entry_point}: this config is run by python -m {entry_point} "
                          "(same --config-dir, --config-name and overrides)")
    where = f" --config-dir {config_dir}" if config_dir else ""
    raise ConfigError(f"config '{config_name}' is run by its own command: python -m {entry_point}{where} "
                      f"--config-name {config_name} [key=value ...]")


def prepare(cfg: RLConfig) -> tuple[list, list, dict[str, float] | None]:
    """Everything that can fail on the user's input, before any worker starts: the data, the model
    folder and the checkpoint to resume from. Returns (train, val, summary of a finished run or None)."""
    from verl.trainer.fit import finished_summary

    check_entry_point(cfg.entry_point)
    train, val = load_data(cfg)
    return train, val, finished_summary(cfg, len(train))


def run(cfg: RLConfig) -> dict[str, float]:
    """Run one training job from a finalized config; returns the summary."""
    train, val, done = prepare(cfg)
    return train_and_report(cfg, train, val, done)


def train_and_report(cfg: RLConfig, train: list, val: list, done: dict[str, float] | None) -> dict[str, float]:
    """Start the workers, train, print base -> adapted; a finished run (``done``) is reported, not re-run."""
    from verl.logging.tracker import Tracker
    from verl.trainer.fit import Trainer

    t = cfg.trainer
    log_folder = Path(t.log_dir) / t.project_name / t.experiment_name
    if done is not None:
        print(f"run {t.project_name}/{t.experiment_name} is already finished (its checkpoint is at the last "
              f"step, in {t.default_local_dir}); nothing changed")
        print_summary(done, log_folder)
        return done
    logger.info("data: %d adaptation prompts, %d validation prompts", len(train), len(val))
    tracker = Tracker(t.project_name, t.experiment_name, list(t.logger), log_dir=t.log_dir, config=cfg)
    started_ray = False
    logger.info("engine and worker logs: %s", log_folder)
    if t.backend == "local":
        from verl.logging.engine_logs import route_engine_logs

        route_engine_logs(log_folder)
        for key, value in worker_env().items():
            os.environ.setdefault(key, value)
    else:
        started_ray = init_ray(cfg)
    trainer = Trainer(cfg, train, val, tracker)
    try:
        trainer.init_workers()
        summary = trainer.fit()
    finally:
        trainer.close()
        tracker.finish()
        if started_ray:
            import ray

            ray.shutdown()
    print_summary(summary, log_folder)
    return summary


def print_summary(summary: dict[str, float], log_folder: Path) -> None:
    keys = sorted({k.split("/", 1)[1] for k in summary if k.startswith("adapted/")})
    print("\n=== base -> adapted ===")
    for k in keys:
        base, adapted = summary.get(f"base/{k}"), summary[f"adapted/{k}"]
        base_s = f"{100 * base:6.2f}" if base is not None else "   n/a"
        print(f"{k:60s} {base_s} -> {100 * adapted:6.2f}")
    print(f"logs: {log_folder}")


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (:func:`verl.utils.cli.run_command`: 2 bad config, data or model;
    1 a worker died; 130 interrupted)."""
    args = parse_args(argv)
    setup_logging()

    def setup() -> Callable[[], object] | None:
        check_entry_point(declared_entry_point(args.config_name, args.config_dir), args.config_name, args.config_dir)
        cfg = load_config(args.config_name, args.overrides, config_dir=args.config_dir)
        if args.cfg:
            print(to_yaml(cfg))
            return None
        train, val, done = prepare(cfg)
        return lambda: train_and_report(cfg, train, val, done)

    return run_command(setup)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
