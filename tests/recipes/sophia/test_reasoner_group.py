"""``reason.backend=local`` runs the text reasoner in a worker group of its own: the same texts as the reasoner
built directly, and a pipeline that releases the policy workers for it and starts them again afterwards."""

from __future__ import annotations

import json

import pytest

from recipes.sophia.config import load_sophia_config
from recipes.sophia.pairs import build_pairs_dataset
from recipes.sophia.reasoners import ReasonItem, Sampling, make_reasoner


@pytest.fixture(scope="module")
def reasoner_dir(tmp_path_factory):
    from recipes.sophia.pretrain_reasoner import build_model

    out = tmp_path_factory.mktemp("reasoner")
    tok, model = build_model(seed=0, hidden=32, layers=1)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def test_group_gives_the_reasoner_s_texts(tmp_path, reasoner_dir):
    from recipes.sophia.reasoner_group import ReasonerGroup

    cfg = load_sophia_config(overrides=[f"reason.model_path={reasoner_dir}", f"trainer.log_dir={tmp_path}"])
    items = [ReasonItem(f"q{i}|c", "What is the sum of the two digits?", f"The left digit is {i}.") for i in range(3)]
    sampling = Sampling(n=2, temperature=0.8, max_new_tokens=6, seed=5)
    group = ReasonerGroup(cfg, tmp_path)
    try:
        got = group.reason(items, sampling)
        assert group.info == [{"rank": 0, "device": "cpu"}] and group.calls == 6
    finally:
        group.close()
    assert got == make_reasoner(cfg.reason).reason(items, sampling)
    assert len(got) == 3 and all(len(t) == 2 for t in got)


def test_pipeline_releases_the_policy_for_the_reasoner(tmp_path, reasoner_dir, tiny_vlm_path):
    from recipes.sophia.pipeline import run_pipeline

    build_pairs_dataset(tmp_path / "data", seed=0, sizes={"caption_train": 1, "sophia_train": 2, "eval": 2, "dev": 1})
    cfg = load_sophia_config(overrides=[
        f"data.dir={tmp_path / 'data'}", f"actor_rollout_ref.model.path={tiny_vlm_path()}",
        f"reason.model_path={reasoner_dir}", f"trainer.log_dir={tmp_path / 'logs'}", "trainer.logger=[jsonl]",
        "caption.k=2", "caption.max_new_tokens=4", "reason.n=2", "reason.max_new_tokens=6", "eval.max_new_tokens=4",
        "stages=[caption,reason,reward,select,evaluate]"])
    s = run_pipeline(cfg)  # policy (captions) -> released -> reasoner group -> released -> policy again (eval)
    assert s["sophia/reason_failed"] == 0 and s["sophia/reason_calls"] == 2 * 2 * 2
    rows = [json.loads(x) for x in (cfg.run_path / "reasonings.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["reasonings"]) == 2 for r in rows)
    assert "eval/base/acc" in s and len((cfg.run_path / "eval_base.jsonl").read_text().splitlines()) == 2
