"""The whole Ray loop on CPU: two FSDP2 workers (gloo), HF rollout, tiny Qwen2.5-VL, digits data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verl.config.loader import load_config
from verl.data.formats import load_records

pytestmark = pytest.mark.slow
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "recipes" / "ttrv" / "config")


def make_config(model: Path, data: Path, tmp: Path, *extra: str, engine: str = "hf"):
    files = f"[{data / 'test_noise_mc.json'}]"
    return load_config("ttrv_cpu_tiny", [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={files}", f"data.val_files={files}",
        "data.train_batch_size=2", "actor_rollout_ref.rollout.n_votes=4", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.val_sample_n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        f"trainer.default_local_dir={tmp / 'ckpt'}", f"trainer.log_dir={tmp / 'logs'}",
        "trainer.logger=[jsonl]", f"actor_rollout_ref.rollout.name={engine}", *extra,
    ], config_dir=CONFIG_DIR)


def records(data: Path, n: int = 4):
    return load_records([data / "test_noise_mc.json"])[:n]


def run(cfg, train, val, record_batches: list | None = None):
    """Train with a fresh worker group; returns (trainer summary, full actor params, per-step metrics)."""
    from verl.logging.tracker import Tracker
    from verl.trainer.fit import Trainer

    tracker = Tracker(cfg.trainer.project_name, cfg.trainer.experiment_name, ["jsonl"],
                      log_dir=cfg.trainer.log_dir, config=cfg)
    trainer = Trainer(cfg, train, val, tracker)
    if record_batches is not None:
        step = trainer.train_step

        def spy(batch):
            record_batches.append((trainer.global_step, [r.uid for r in batch]))
            return step(batch)

        trainer.train_step = spy
    try:
        trainer.init_workers()
        before = trainer.wg.full_state_dict()[0]
        summary = {**trainer.fit(), "workers": trainer.worker_info}
        after = trainer.wg.full_state_dict()
    finally:
        trainer.close()
        tracker.finish()
    log = Path(cfg.trainer.log_dir) / cfg.trainer.project_name / cfg.trainer.experiment_name / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return summary, before, after, rows


@pytest.mark.parametrize("engine", ["hf", "vllm"])
def test_two_workers_train_sync_and_log(ray_local, tiny_vlm_path, digits_dir, tmp_path, engine):
    # two PPO epochs: the old log-probs come from their own pass (compared with the rollout's); groups whose
    # votes all agree still train (their KL term), so the weights move even when no answer differs
    cfg = make_config(tiny_vlm_path("qwen2_5_vl"), digits_dir, tmp_path, "trainer.total_training_steps=2",
                      "actor_rollout_ref.actor.ppo_epochs=2", "actor_rollout_ref.actor.skip_zero_adv_groups=false",
                      engine=engine)
    assert cfg.trainer.n_gpus_per_node == 2  # world size 2
    summary, before, after, rows = run(cfg, records(digits_dir), records(digits_dir))
    # both ranks hold the same full parameters, and the update changed them
    assert after[0].keys() == after[1].keys()
    assert all(np.array_equal(after[0][k], after[1][k]) for k in after[0])
    assert any(not np.allclose(before[k], after[0][k]) for k in before)
    steps = [r for r in rows if "actor/pg_loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        for key in ("actor/grad_norm", "critic/score/mean", "train/label_accuracy", "train/answer_entropy",
                    "timing_s/gen", "timing_s/update_actor", "timing_s/update_weights", "perf/throughput"):
            assert key in r, key
        # rollout engine and actor agree on the sampled tokens' log-probs (step 2: after a weight sync)
        assert r["training/rollout_probs_diff_max"] < 1e-3, r["training/rollout_probs_diff_max"]
        assert abs(r["rollout_corr/k3_kl"]) < 1e-6 and "rollout_corr/rollout_is_mean" not in r  # diagnostics only
    assert rows[0]["step"] == 0 and "val-core/digits_test_noise/acc/mean@1" in rows[0]  # base model first
    assert "base/val-core/digits_test_noise/acc/mean@1" in summary
    assert "adapted/val-core/digits_test_noise/acc/maj@2" in summary
    assert {w["rollout"] for w in summary["workers"]} == {"VLLMRollout" if engine == "vllm" else "HFRollout"}
    run_dir = Path(cfg.trainer.log_dir) / cfg.trainer.project_name / cfg.trainer.experiment_name
    for step in (0, 2):  # predictions of the base model and of the adapted one
        preds = [json.loads(x) for x in (run_dir / f"val_predictions_step{step}.jsonl").read_text().splitlines()]
        assert [p["id"] for p in preds] == [r.record_id for r in records(digits_dir)]
        assert all(sum(p["votes"].values()) == 2 and p["data_source"] == "digits_test_noise" for p in preds)


def test_labels_never_reach_training(ray_local, tiny_vlm_path, digits_dir, tmp_path):
    """Same seed, scrambled answers of the adaptation set: identical updates, only accuracies differ."""
    model = tiny_vlm_path("qwen2_5_vl")
    train = records(digits_dir)
    scrambled = records(digits_dir)
    for r in scrambled:
        r.ground_truth = next(k for k in r.options if k != r.ground_truth)  # always wrong now
    results = []
    for name, data in (("true", train), ("scrambled", scrambled)):
        cfg = make_config(model, digits_dir, tmp_path / name, "trainer.total_training_steps=2",
                          "trainer.val_before_train=false")
        results.append(run(cfg, data, data))
    (_, _, after_a, rows_a), (_, _, after_b, rows_b) = results
    for k in after_a[0]:
        np.testing.assert_array_equal(after_a[0][k], after_b[0][k], err_msg=k)
    last_a = [r for r in rows_a if "train/ground_truth_ratio" in r][-1]
    last_b = [r for r in rows_b if "train/ground_truth_ratio" in r][-1]
    assert last_b["train/ground_truth_ratio"] == 0.0  # the reported metrics do see the (wrong) labels
    assert last_a["critic/score/mean"] == last_b["critic/score/mean"]


def test_resume_continues_with_the_same_data_order(ray_local, tiny_vlm_path, digits_dir, tmp_path):
    model = tiny_vlm_path("qwen2_5_vl")
    train, val = records(digits_dir, 6), records(digits_dir, 2)
    common = ("trainer.val_before_train=false", "actor_rollout_ref.rollout.val_sample_n=1")
    full_order: list = []
    cfg = make_config(model, digits_dir, tmp_path / "full", "trainer.total_training_steps=4", *common)
    _, _, full_params, _ = run(cfg, train, val, full_order)
    # "killed" after step 2: its last checkpoint is step 2
    cut = make_config(model, digits_dir, tmp_path / "cut", "trainer.total_training_steps=2", "trainer.save_freq=2",
                      *common)
    first: list = []
    run(cut, train, val, first)
    resumed_cfg = make_config(model, digits_dir, tmp_path / "cut", "trainer.total_training_steps=4",
                              "trainer.save_freq=2", *common)
    second: list = []
    _, _, resumed_params, rows = run(resumed_cfg, train, val, second)
    assert [s for s, _ in second] == [3, 4]  # continues at step 3
    assert first + second == full_order  # same batches in the same order (epoch boundary crossed at step 4)
    for k in full_params[0]:
        np.testing.assert_allclose(resumed_params[0][k], full_params[0][k], rtol=1e-5, atol=1e-6, err_msg=k)
    # export of the sharded (world size 2) checkpoint to a plain HF folder
    import subprocess
    import sys

    import torch

    from verl.models.load import load_vlm

    out = tmp_path / "exported"
    subprocess.run([sys.executable, "-m", "verl.trainer.export", str(tmp_path / "cut" / "ckpt" / "global_step_4"),
                    str(out)], check=True, timeout=300)
    exported, _ = load_vlm(out, dtype=torch.float32, device="cpu")
    sd = exported.state_dict()
    for k, v in full_params[0].items():
        np.testing.assert_allclose(sd[k].numpy(), v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_local_backend_matches_ray(ray_local, tiny_vlm_path, digits_dir, tmp_path):
    """The same worker class in the driver process (no Ray) trains to the same weights as one Ray worker."""
    model = tiny_vlm_path("qwen2_5_vl")
    params = {}
    for backend in ("ray", "local"):
        cfg = make_config(model, digits_dir, tmp_path / backend, "trainer.total_training_steps=2",
                          "trainer.n_gpus_per_node=1", f"trainer.backend={backend}", "trainer.val_before_train=false",
                          "actor_rollout_ref.rollout.val_sample_n=1")
        summary, before, after, rows = run(cfg, records(digits_dir), records(digits_dir, 2))
        assert [r["step"] for r in rows if "actor/pg_loss" in r] == [1, 2]
        assert any(not np.array_equal(before[k], after[0][k]) for k in before)  # it trained
        params[backend] = after[0]
    assert params["ray"].keys() == params["local"].keys()
    for k in params["ray"]:
        np.testing.assert_array_equal(params["local"][k], params["ray"][k], err_msg=k)
