"""SOPHIA update and evaluation on a tiny random VLM: hand-computed loss normalization (token mean vs sum per
sequence), frozen vision tower, export + cache, greedy evaluation that resumes per question."""

from __future__ import annotations

import json

import pytest
import torch

from recipes.sophia.config import DEFAULT_CONFIG, load_sophia_config
from recipes.sophia.pairs import build_pairs_dataset


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_vlm_path):
    tmp = tmp_path_factory.mktemp("sophia_update")
    build_pairs_dataset(tmp / "data", seed=0, sizes={"caption_train": 1, "sophia_train": 3, "eval": 3, "dev": 1})
    cfg = load_sophia_config(DEFAULT_CONFIG, [
        f"data.dir={tmp / 'data'}", "data.max_train=-1", "data.max_eval=-1", f"caption.model_path={tiny_vlm_path()}",
        f"trainer.run_dir={tmp / 'run'}", f"trainer.log_dir={tmp / 'logs'}", "trainer.logger=[jsonl]",
        "update.epochs=1", "update.batch_size=3", "update.micro_batch=2", "eval.max_new_tokens=8",
        "update.max_response_tokens=16"])
    cfg.run_path.mkdir(parents=True)
    return cfg


def _selected(cfg) -> list[dict]:
    from recipes.sophia.stages import load_questions

    qs = load_questions(f"{cfg.data.dir}/sophia_train.json")
    texts = ["The left digit is 1. \\boxed{3}", "So \\boxed{12}", "The answer is \\boxed{0} after a long check."]
    rows = [{"key": f"{q.uid}#r", "question_id": q.uid, "caption_id": "c", "reasoning": t, "length": len(t),
             "reward": 1.0, "caption_reward": 1.0, "caption": "never trained on"} for q, t in zip(qs, texts)]
    (cfg.run_path / "selected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_update_loss_normalization_hand_computed(env):
    from recipes.sophia.config import update_actor_config, vlm_model_config
    from recipes.sophia.stages import load_questions, training_rows
    from recipes.sophia.vlm_data import make_actor, sft_dataproto

    cfg = env
    cfg.update.micro_batch = 4
    rows = training_rows(cfg, load_questions(f"{cfg.data.dir}/sophia_train.json"), _selected(cfg))
    actor = make_actor(vlm_model_config(cfg), update_actor_config(cfg, total_steps=4))
    data = sft_dataproto(actor.processor, rows)
    m = data.batch["response_mask"].float()
    lengths = m.sum(-1)
    assert len(set(lengths.tolist())) == 3  # different lengths: the two normalizations differ
    w = torch.tensor([1.0, 1.0, 0.5])
    for mode in ("token-mean", "seq-mean-token-sum"):
        actor.cfg.loss_agg_mode = mode
        lp, _ = actor.compute_log_prob(data)
        nll = -(lp * m).sum(-1)  # per-sequence summed NLL
        want = (w * nll).sum() / m.sum() if mode == "token-mean" else (w * nll).mean()
        got = actor.sft_step(data, weights=w)["actor/sft_loss"]
        assert got == pytest.approx(want.item(), rel=1e-5), mode


def test_update_stage_freezes_tower_exports_and_caches(env):
    from safetensors.torch import load_file

    from recipes.sophia.stages import load_questions, update_stage

    cfg = env
    _selected(cfg)
    qs = load_questions(f"{cfg.data.dir}/sophia_train.json")
    info = update_stage(cfg, qs, cfg.run_path)
    assert info["steps"] == 1 and info["rows"] == 3
    model = cfg.run_path / "model"
    before = load_file(f"{cfg.caption.model_path}/model.safetensors")
    after = load_file(model / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    tower = {k for k in before if "visual" in k and "merger" not in k}
    assert tower and not changed & tower  # vision tower frozen
    assert any("merger" in k for k in changed) and any("language_model" in k or "lm_head" in k for k in changed)
    mtime = (model / "model.safetensors").stat().st_mtime_ns
    assert update_stage(cfg, qs, cfg.run_path) == info  # cached: same stamp, nothing retrained
    assert (model / "model.safetensors").stat().st_mtime_ns == mtime


def test_evaluate_stage_resumes_per_question(env):
    from recipes.sophia.pipeline import _rollout_factory
    from recipes.sophia.stages import evaluate_stage, load_questions

    cfg = env
    qs = load_questions(f"{cfg.data.dir}/eval.json")
    built = []

    def factory(path):
        built.append(path)
        return _rollout_factory(cfg)(path)

    m = evaluate_stage(cfg, qs, cfg.caption.model_path, "base", cfg.run_path, factory)
    assert set(m) >= {"eval/base/acc", "eval/base/boxed_rate", "eval/base/acc/sum", "eval/base/digits_stated_right"}
    path = cfg.run_path / "eval_base.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and len(built) == 1
    assert evaluate_stage(cfg, qs, cfg.caption.model_path, "base", cfg.run_path, factory) == m
    assert len(built) == 1  # nothing pending: no engine built
    path.write_text("\n".join(lines[:2]) + "\n")
    assert evaluate_stage(cfg, qs, cfg.caption.model_path, "base", cfg.run_path, factory) == m  # greedy: same
    assert len(built) == 2 and len(path.read_text().splitlines()) == 3
