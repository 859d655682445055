"""Collapse guard in the training loop (local backend): a collapse induced by a huge learning rate is caught and rolled back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verl.config.loader import load_config
from verl.data.formats import load_records

pytestmark = pytest.mark.slow
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "recipes" / "ttrv" / "config")


def test_guard_rolls_back_an_induced_collapse(tiny_vlm_path, digits_dir, tmp_path):
    from verl.logging.tracker import Tracker
    from verl.trainer.fit import Trainer

    files = f"[{digits_dir / 'test_noise_mc.json'}]"
    cfg = load_config("ttrv_cpu_tiny", [
        f"actor_rollout_ref.model.path={tiny_vlm_path('qwen2_5_vl')}", f"data.train_files={files}",
        f"data.val_files={files}", "data.train_batch_size=4", "trainer.n_gpus_per_node=1", "trainer.backend=local",
        "actor_rollout_ref.rollout.name=hf", "actor_rollout_ref.rollout.n_votes=4", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.val_sample_n=1", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.actor.optim.lr=1.0",  # Adam moves every weight by ~1 per step: the outputs degenerate
        "actor_rollout_ref.actor.grad_clip=1000", "actor_rollout_ref.actor.skip_zero_adv_groups=false",
        "trainer.total_training_steps=6",
        "trainer.guard.action=rollback", "trainer.guard.window=2",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}", f"trainer.log_dir={tmp_path / 'logs'}", "trainer.logger=[jsonl]",
    ], config_dir=CONFIG_DIR)
    records = load_records([digits_dir / "test_noise_mc.json"])[:8]
    tracker = Tracker(cfg.trainer.project_name, cfg.trainer.experiment_name, ["jsonl"], log_dir=cfg.trainer.log_dir,
                      config=cfg)
    trainer = Trainer(cfg, records, records, tracker)
    try:
        trainer.init_workers()
        base = trainer.wg.full_state_dict()[0]
        summary = trainer.fit()
        final = trainer.wg.full_state_dict()[0]
    finally:
        trainer.close()
        tracker.finish()
    run_dir = tracker.run_dir
    (event,) = [json.loads(x) for x in (run_dir / "guard_events.jsonl").read_text().splitlines()]
    assert event["action"] == "rollback" and event["rolled_back_to"] == 0
    assert event["reasons"] and event["step"] < 6  # stopped early, saying why
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tripped = [r for r in rows if r.get("guard/tripped") == 1.0]
    reason = event["reasons"][0].split(" ", 1)[0]
    assert tripped[0][f"guard/trip/{reason}"] == 1.0 and tripped[0]["guard/rolled_back_to"] == 0.0
    assert all(np.array_equal(base[k], final[k]) for k in base)  # the base weights are back
    acc = "val-core/digits_test_noise/acc/mean@1"
    assert summary[f"adapted/{acc}"] >= summary[f"base/{acc}"] - 0.02
