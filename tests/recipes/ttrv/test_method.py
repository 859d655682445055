"""TTRV's method module: answers -> group rewards -> n of n_votes -> metrics, computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recipes.ttrv.method import TTRVMethod, train_subset, vote_metrics
from recipes.ttrv.voting import VoteGroup
from verl.config.loader import load_config
from verl.protocol import DataProto
from verl.rewards.answers import INVALID
from verl.rewards.voting import select_train_subset

CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "recipes" / "ttrv" / "config")
OPTIONS = {"A": "cat", "B": "dog", "C": "cow"}


def votes(texts: dict[str, list[str]]) -> DataProto:
    uids = [u for u, ts in texts.items() for _ in ts]
    flat = [t for ts in texts.values() for t in ts]
    return DataProto.from_dict(tensors={"response_mask": torch.ones(len(flat), 2)},
                               non_tensors={"uid": uids, "response_text": flat, "options": [OPTIONS] * len(flat)})


def method(*overrides: str) -> TTRVMethod:
    cfg = load_config("ttrv", ["actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.n_votes=4", *overrides],
                      config_dir=CONFIG_DIR)
    assert cfg.algorithm.method == "recipes.ttrv.method:TTRVMethod"
    return TTRVMethod(cfg)


def test_score_and_metrics_by_hand():
    m = method("++reward.kwargs.entropy_form=paper", "++reward.kwargs.entropy_coef=0.5")
    data = votes({"p": ["A", "cat", "B", "<|im_end|>"], "q": ["B", "A", "A", "B"]})
    scored = m.score(data)
    scores = scored.values
    assert data.non_tensor_batch["answer"].tolist() == ["A", "A", "B", INVALID, "B", "A", "A", "B"]
    h_p = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))  # valid votes A, A, B
    h_q = math.log(2)
    expected = [2 / 3 - 0.5 * h_p, 2 / 3 - 0.5 * h_p, 1 / 3 - 0.5 * h_p, -1 - 0.5 * h_p] + [0.5 - 0.5 * h_q] * 4
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    out = m.metrics(data, {"p": "A", "q": "A"})
    # majorities: p -> A (2 of 4 votes), q -> tie A/B, B appears first (2 of 4)
    assert out["train/majority_ratio"] == pytest.approx(0.5)
    assert out["train/answer_entropy"] == pytest.approx((h_p + h_q) / 2)
    assert out["train/invalid_ratio"] == pytest.approx(1 / 8)
    assert out["train/label_accuracy"] == pytest.approx(0.5)  # p right (A), q wrong (B won the tie)
    assert out["train/pass@4"] == pytest.approx(1.0)


def test_first_step_with_mostly_unreadable_answers_warns_once_with_two_prompts(caplog):
    m = method()
    data = votes({"p": ["rouge", "rouge", "A", "bleu"], "q": ["vert", "B", "noir", "jaune"]})
    data.non_tensor_batch["prompt"] = np.array(
        [[{"role": "user", "content": f"<image> Which animal ({u})?"}] for u in data.non_tensor_batch["uid"]],
        dtype=object)
    with caplog.at_level("WARNING", logger="recipes.ttrv"):
        m.score(data)
        m.score(data)  # later steps: silent
    warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert warnings == ["6 of 8 answers (75 %) on the first step cannot be read against the options: check the "
                        "prompt format and the option style. prompt '<image> Which animal (p)?' -> response "
                        "'rouge'; prompt '<image> Which animal (q)?' -> response 'vert'"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="recipes.ttrv"):
        method().score(votes({"p": ["A", "cat", "B", "?"]}))  # readable: no warning
    assert not [r for r in caplog.records if "cannot be read" in r.getMessage()]


def test_vote_metrics_invalid_majority():
    out = vote_metrics([VoteGroup("p", [0, 1], [INVALID, INVALID])])
    assert out == {"train/answer_entropy": 0.0, "train/invalid_ratio": 1.0, "train/majority_ratio": 0.0}


def test_train_rows_are_n_random_votes_per_prompt_seeded_by_step():
    m = method("trainer.seed=3")
    data = votes({"p": ["A"] * 4, "q": ["B"] * 4})
    rows = m.train_rows(data, step=5)
    rng = np.random.default_rng(3 * 7919 + 5)  # p's draw first, then q's, from one generator
    expected = sorted([*select_train_subset(4, 2, rng), *(4 + select_train_subset(4, 2, rng))])
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(train_subset(data, 2, 3, 5), rows)
