"""The plain evaluation command: metric aggregation by hand, and a real run on a tiny model."""

from __future__ import annotations

import pytest

from recipes.ttrv import evaluate as E
from verl.data.formats import Record
from verl.rewards.answers import INVALID


def _rec(uid: str, gt: str) -> Record:
    return Record(uid=uid, index=0, data_source="d", prompt=[], ground_truth=gt,
                  options={"A": "1", "B": "2", "C": "3", "D": "4"})


def test_score_by_hand():
    recs = [_rec("a", "A"), _rec("b", "B"), _rec("c", "C")]
    answers = [["A", "A", "B", INVALID], ["C", "C", "B", "B"], [INVALID, INVALID, INVALID, "C"]]
    s = E.score(answers, recs)
    assert s["mean"] == pytest.approx((2 / 4 + 2 / 4 + 1 / 4) / 3)
    # majorities: A (right), tie C/B -> first seen C (wrong), C (right: invalid never votes)
    assert s["maj"] == pytest.approx(2 / 3)
    assert s["invalid_ratio"] == pytest.approx(4 / 12)
    g = E.score([["A"], ["B"], ["D"]], recs)
    assert g["mean"] == pytest.approx(2 / 3) and "maj" not in g


def test_evaluate_runs_on_a_tiny_model(tiny_vlm_path, digits_dir):
    res = E.evaluate(tiny_vlm_path("qwen2_5_vl"), [digits_dir / "test_noise_mc.json"], n=2, max_samples=4)
    row = res["test_noise_mc"]
    assert row["n_items"] == 4 and set(row) == {"greedy", "invalid_ratio", "n_items", "mean@2", "maj@2"}
    assert all(0.0 <= row[k] <= 1.0 for k in ("greedy", "mean@2", "maj@2"))
