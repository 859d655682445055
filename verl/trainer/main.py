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
from pathlib import Path

from verl.config.loader import load_config, to_yaml
from verl.config.schema import RLConfig

logger = logging.getLogger("verl.trainer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-dir", default=None, help="folder with the YAML config (default: verl/config)")
    p.add_argument("--config-name", default="ppo_trainer", help="YAML name without .yaml")
    p.add_argument("--cfg", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. actor_rollout_ref.rollout.n=16")
    return p.parse_args(argv)


def load_data(cfg: RLConfig):
    """Read and validate the adaptation (train) and validation records; returns (train, val)."""
    from verl.data.formats import load_records
    from verl.data.validate import validate_records
    from verl.models.load import load_processor

    processor = load_processor(cfg.actor_rollout_ref.model.path, trust_remote_code=cfg.actor_rollout_ref.model.trust_remote_code)
    out = []
    for files in (cfg.data.train_files, cfg.data.val_files):
        records = load_records(list(files), format=cfg.data.format, image_root=cfg.data.image_root)
        if cfg.data.max_samples and cfg.data.max_samples > 0:
            records = records[: cfg.data.max_samples]
        records, report = validate_records(
            records, processor=processor, max_prompt_length=cfg.data.max_prompt_length, on_invalid=cfg.data.on_invalid
        )
        if report.skipped:
            logger.warning("skipped records in %s: %s", list(files), report.skipped)
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

    if ray.is_initialized():
        return False
    kwargs: dict = {"runtime_env": {"env_vars": worker_env()}, "log_to_driver": True}
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


def run(cfg: RLConfig) -> dict[str, float]:
    """Run one training job from a finalized config; returns the summary."""
    from verl.logging.tracker import Tracker
    from verl.trainer.fit import Trainer

    train, val = load_data(cfg)
    logger.info("data: %d adaptation prompts, %d validation prompts", len(train), len(val))
    tracker = Tracker(
        cfg.trainer.project_name,
        cfg.trainer.experiment_name,
        list(cfg.trainer.logger),
        log_dir=cfg.trainer.log_dir,
        config=cfg,
    )
    started_ray = False
    if cfg.trainer.backend == "local":
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
    print_summary(summary, Path(cfg.trainer.log_dir) / cfg.trainer.project_name / cfg.trainer.experiment_name)
    return summary


def print_summary(summary: dict[str, float], log_folder: Path) -> None:
    keys = sorted({k.split("/", 1)[1] for k in summary if k.startswith("adapted/")})
    print("\n=== base -> adapted ===")
    for k in keys:
        base, adapted = summary.get(f"base/{k}"), summary[f"adapted/{k}"]
        base_s = f"{100 * base:6.2f}" if base is not None else "   n/a"
        print(f"{k:60s} {base_s} -> {100 * adapted:6.2f}")
    print(f"logs: {log_folder}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=os.environ.get("VERL_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s: %(message)s")
    cfg = load_config(args.config_name, args.overrides, config_dir=args.config_dir)
    if args.cfg:
        print(to_yaml(cfg))
        return
    run(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
