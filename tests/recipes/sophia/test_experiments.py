"""The GRPO baseline loop (one step on a tiny random VLM) and the results table."""

from __future__ import annotations

import itertools

import pytest


def test_grpo_baseline_one_step(tmp_path, tiny_vlm_path, monkeypatch):
    """The baseline runs on the framework's trainer (local backend): one step changes the weights, not the tower."""
    import torch
    from safetensors.torch import load_file

    from recipes.sophia import grpo_baseline
    from recipes.sophia.pairs import build_pairs_dataset
    from recipes.sophia.stages import load_questions

    paths = build_pairs_dataset(tmp_path / "data", sizes={"caption_train": 1, "sophia_train": 2, "eval": 1, "dev": 1})
    qs = load_questions(paths["sophia_train"])
    flip = itertools.cycle([1.0, 0.0])  # an untrained model never answers: fake a reward signal
    monkeypatch.setattr(grpo_baseline, "reasoning_reward", lambda text, gold: next(flip))
    g = grpo_baseline.GRPOCfg(steps=1, prompts_per_step=2, group=2, max_new_tokens=6, lr=1e-2)
    stats = grpo_baseline.run_grpo(tiny_vlm_path(), qs, tmp_path / "grpo", g, None)
    assert stats["steps"] == 1 and stats["reward_mean"] == [0.5]
    before = load_file(tiny_vlm_path() / "model.safetensors")
    after = load_file(tmp_path / "grpo" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any("visual" in k and "merger" not in k for k in changed)  # tower frozen
    assert grpo_baseline.run_grpo(tiny_vlm_path(), qs, tmp_path / "grpo", g, None) == stats  # cached


def test_gold_reward_method_by_hand():
    from recipes.sophia.grpo_baseline import GoldRewardMethod
    from verl.protocol import DataProto

    m = GoldRewardMethod({"q1": "7", "q2": "3"})
    batch = DataProto.from_dict(non_tensors={"uid": ["q1", "q1", "q2"],
                                             "response_text": [r"so \boxed{7}", r"\boxed{8}", "3"]})
    assert m.score(batch).values.tolist() == [1.0, 0.0, 0.0]  # the last one has no final answer
    assert m.metrics(batch, {})["grpo/reward_mean"] == pytest.approx(1 / 3)
    assert m.train_rows(batch, step=1).tolist() == [0, 1, 2]


def test_results_table(tmp_path):
    from recipes.sophia.experiments import write_table

    def res(acc):
        return {"eval/sophia/acc": acc, "eval/sophia/acc/sum": acc, "eval/sophia/boxed_rate": 1.0,
                "eval/sophia/digits_stated_right": 0.5}

    results = {s: {"base": res(0.0), "sophia": {**res(0.2 + 0.1 * s), "sophia/kept_fraction": 0.5,
                                                "sophia/kept_fraction/sum": 0.25 * s},
                   "grpo": res(0.0)} for s in range(3)}
    text = write_table(results, tmp_path / "t.md", "cmd")
    assert "| sophia | 20.0 | 30.0 | 40.0 | 30.0 ± 10.0 | 100.0 ± 0.0 | 50.0 ± 0.0 |" in text
    assert "| caption_sft | - | - | - | - |" in text
    assert "| 0 | - | - | - | - | 50.0% | - | 0.0 |" in text
    assert "| sophia | 25.0 ± 25.0 |" in text and "| no_caption_reward | - |" in text  # kept per type
    assert (tmp_path / "t.md").read_text() == text


def test_alpha_is_chosen_on_dev_questions_only(tmp_path, monkeypatch):
    from recipes.sophia import experiments as E

    seen = []

    def fake_pipeline(cfg):
        seen.append((cfg.select.alpha, cfg.data.eval_file, cfg.trainer.val_before_train))
        return {"eval/sophia/acc": {0.75: 0.5, 0.5: 0.7, 0.25: 0.7, 0.0: 0.6}[cfg.select.alpha]}

    monkeypatch.setattr(E, "run_pipeline", fake_pipeline)
    alpha, scores = E.choose_alpha(tmp_path, None, [], seed=0)
    assert alpha == 0.5  # best on dev; the tie with 0.25 keeps the larger α
    assert scores == [(0.75, 0.5), (0.5, 0.7), (0.25, 0.7), (0.0, 0.6)]
    assert seen == [(a, "dev.json", False) for a in E.ALPHAS]  # never the reported eval questions
    assert E.choose_alpha(tmp_path, None, [], seed=0) == (alpha, scores) and len(seen) == 4  # cached
    assert E.run_alpha(tmp_path, None, [], 0, 0.5)["eval/sophia/acc"] == 0.7
    assert seen[-1] == (0.5, "eval.json", False)
