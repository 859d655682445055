"""SOPHIA update and evaluation on a tiny random VLM through the policy worker group (local backend):
hand-computed loss normalization, frozen vision tower, export + cache, greedy evaluation that resumes per
question, and an update killed with SIGKILL that resumes from its checkpoint to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recipes.sophia.config import load_sophia_config
from recipes.sophia.pairs import build_pairs_dataset

ROOT = Path(__file__).resolve().parents[3]
TEXTS = ["The left digit is 1. \\boxed{3}", "So \\boxed{12}", "The answer is \\boxed{0} after a long check."]


def make_cfg(tmp: Path, model: Path, name: str, *extra: str):
    return load_sophia_config(overrides=[
        f"data.dir={tmp / 'data'}", "data.max_train=-1", "data.max_eval=-1", f"actor_rollout_ref.model.path={model}",
        f"trainer.log_dir={tmp / 'logs'}", f"trainer.experiment_name={name}", "trainer.logger=[jsonl]",
        "trainer.total_epochs=1", "actor_rollout_ref.actor.ppo_mini_batch_size=3",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "eval.max_new_tokens=8",
        "update.max_response_tokens=16", *extra])


def write_selected(cfg) -> list[dict]:
    from recipes.sophia.stages import questions_of

    rows = [{"key": f"{q.uid}#r", "question_id": q.uid, "caption_id": "c", "reasoning": t, "length": len(t),
             "reward": 1.0, "caption_reward": 1.0, "caption": "never trained on"}
            for q, t in zip(questions_of(cfg, "train"), TEXTS)]
    cfg.run_path.mkdir(parents=True, exist_ok=True)
    (cfg.run_path / "selected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_vlm_path):
    tmp = tmp_path_factory.mktemp("sophia_update")
    build_pairs_dataset(tmp / "data", seed=0, sizes={"caption_train": 1, "sophia_train": 3, "eval": 3, "dev": 1})
    return tmp, tiny_vlm_path()


def processor_tokens(cfg, text: str) -> list[int]:
    from verl.models.load import load_processor

    return load_processor(cfg.model_path).tokenizer(text, add_special_tokens=False)["input_ids"]


def run_update(cfg):
    from recipes.sophia.policy import LazyPolicy, PolicyGroup
    from recipes.sophia.stages import questions_of, update_stage
    from verl.models.load import load_processor

    workers = LazyPolicy(lambda: PolicyGroup(cfg, cfg.run_path))
    try:
        return update_stage(cfg, questions_of(cfg, "train"), cfg.run_path, workers.get,
                            lambda: load_processor(cfg.model_path))
    finally:
        workers.close()


def test_update_loss_normalization_hand_computed(env):
    import dataclasses

    from recipes.sophia.stages import questions_of, training_rows
    from recipes.sophia.vlm_data import make_actor, sft_dataproto

    cfg = make_cfg(*env, "norm", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4")
    rows = training_rows(cfg, questions_of(cfg, "train"), write_selected(cfg))
    arr = cfg.actor_rollout_ref
    actor = make_actor(arr.model, dataclasses.replace(arr.actor, optim=dataclasses.replace(
        arr.actor.optim, total_training_steps=4)))
    data = sft_dataproto(actor.processor, rows)
    m = data.batch["response_mask"].float()
    assert len(set(m.sum(-1).tolist())) == 3  # different lengths: the two normalizations differ
    w = torch.tensor([1.0, 1.0, 0.5])
    for mode in ("token-mean", "seq-mean-token-sum"):
        actor.cfg.loss_agg_mode = mode
        lp, _ = actor.compute_log_prob(data)
        nll = -(lp * m).sum(-1)  # per-sequence summed NLL
        want = (w * nll).sum() / m.sum() if mode == "token-mean" else (w * nll).mean()
        got = actor.sft_step(data, weights=w)["actor/sft_loss"]
        assert got == pytest.approx(want.item(), rel=1e-5), mode
    # a padding row (empty response mask) changes nothing: same loss as without it
    from recipes.sophia.policy import pad_for_workers

    data.batch["sft_weights"] = w
    padded = pad_for_workers(data, 4)
    assert len(padded) == 4 and padded.batch["response_mask"][3].sum() == 0
    lp, _ = actor.compute_log_prob(data)
    want = (w * -(lp * m).sum(-1)).mean()
    got = actor.sft_step(padded, weights=padded.batch["sft_weights"])["actor/sft_loss"]
    assert got == pytest.approx(want.item(), rel=1e-5)
    import torch.distributed as dist

    dist.destroy_process_group()


def test_update_freezes_tower_exports_caches_and_evaluates(env):
    from safetensors.torch import load_file

    from recipes.sophia.pipeline import evaluate_folder
    from recipes.sophia.stages import questions_of

    cfg = make_cfg(*env, "update")
    write_selected(cfg)
    info = run_update(cfg)
    assert info["steps"] == 1 and info["rows"] == 3
    model = cfg.run_path / "model"
    before = load_file(f"{cfg.model_path}/model.safetensors")
    after = load_file(model / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    tower = {k for k in before if "visual" in k and "merger" not in k}
    assert tower and not changed & tower  # vision tower frozen
    assert any("merger" in k for k in changed) and any("language_model" in k or "lm_head" in k for k in changed)
    assert (Path(cfg.trainer.default_local_dir) / "global_step_1" / "actor").is_dir()  # verl's checkpoint layout
    mtime = (model / "model.safetensors").stat().st_mtime_ns
    assert run_update(cfg) == info  # cached: same stamp, nothing retrained
    assert (model / "model.safetensors").stat().st_mtime_ns == mtime

    qs = questions_of(cfg, "eval")
    m = evaluate_folder(cfg, qs, cfg.model_path, "base", cfg.run_path)
    assert set(m) >= {"eval/base/acc", "eval/base/boxed_rate", "eval/base/acc/sum", "eval/base/digits_stated_right"}
    path = cfg.run_path / "eval_base.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    path.write_text("\n".join(lines[:2]) + "\n")  # one answer lost: only it is generated again, greedy: same
    assert evaluate_folder(cfg, qs, cfg.model_path, "base", cfg.run_path) == m
    assert len(path.read_text().splitlines()) == 3
    cfg.eval.max_new_tokens = 3  # another token budget: every stored answer is generated again
    evaluate_folder(cfg, qs, cfg.model_path, "base", cfg.run_path)
    tokens = [len(processor_tokens(cfg, json.loads(x)["response"])) for x in path.read_text().splitlines()]
    assert len(tokens) == 3 and max(tokens) <= 3


@pytest.mark.slow
def test_killed_update_resumes_to_the_same_weights(env):
    """SIGKILL in the middle of the update (checkpoint every step), re-run: the same final weights as a run
    that was never interrupted."""
    from safetensors.torch import load_file

    extra = ("trainer.total_epochs=4", "actor_rollout_ref.actor.ppo_mini_batch_size=1", "trainer.save_freq=1",
             "trainer.max_actor_ckpt_to_keep=2")
    ref = make_cfg(*env, "straight", *extra)
    write_selected(ref)
    run_update(ref)
    cfg = make_cfg(*env, "killed", *extra)
    write_selected(cfg)
    tmp, model = env
    cmd = [sys.executable, "-m", "recipes.sophia.main", f"data.dir={tmp / 'data'}", f"actor_rollout_ref.model.path={model}",
           f"trainer.log_dir={tmp / 'logs'}", "trainer.experiment_name=killed", "trainer.logger=[jsonl]",
           "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "update.max_response_tokens=16", "stages=[update]",
           "data.max_eval=-1", *extra]
    env_vars = {**os.environ, "PYTHONPATH": str(ROOT)}
    marker = Path(cfg.trainer.default_local_dir) / "latest_checkpointed_iteration.txt"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env_vars, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if marker.is_file() and marker.read_text().strip() not in ("", "1"):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed_at = int(marker.read_text())
    assert 2 <= killed_at < 12 and not (cfg.run_path / "model" / "update.json").exists()
    done = subprocess.run(cmd, cwd=ROOT, env=env_vars, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((cfg.run_path / "model" / "update.json").read_text())["steps"] == 12
    want = load_file(ref.run_path / "model" / "model.safetensors")
    got = load_file(cfg.run_path / "model" / "model.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.slow
def test_one_and_two_workers_take_the_same_update(env, ray_local):
    """The same update on 1 worker (local backend) and 2 Ray workers (3 trajectories per step: one padding
    row on the second worker) gives the same weights in fp32."""
    from safetensors.torch import load_file

    extra = ("trainer.total_epochs=2",)
    one = make_cfg(*env, "one_worker", *extra)
    two = make_cfg(*env, "two_workers", *extra, "trainer.backend=ray", "trainer.n_gpus_per_node=2")
    for cfg in (one, two):
        write_selected(cfg)
        assert run_update(cfg)["steps"] == 2
    a = load_file(one.run_path / "model" / "model.safetensors")
    b = load_file(two.run_path / "model" / "model.safetensors")
    base = load_file(f"{one.model_path}/model.safetensors")
    assert any(not torch.equal(a[k], base[k]) for k in a)  # it trained
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-5
