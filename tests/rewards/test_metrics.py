"""Hand-computed label metrics and validation accuracies."""

import math

import pytest

from verl.rewards.answers import INVALID
from verl.rewards.metrics import label_metrics, maj_at_n, mean_at_n, mean_label_metrics

VOTES = ["A", "A", "B", INVALID]
# valid distribution A: 2/3, B: 1/3 -> H = -(2/3 ln 2/3 + 1/3 ln 1/3) = 0.6365142
H = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))


def test_label_metrics_wrong_majority():
    m = label_metrics(VOTES, "B")
    # majority A != B ; pseudo [1 1 0 0] vs true [0 0 1 0] agree only at index 3 -> 1/4
    assert m == pytest.approx({
        "label_accuracy": 0.0, "reward_accuracy": 0.25, "majority_ratio": 0.5, "ground_truth_ratio": 0.25,
        "pass_at_n": 1.0, "invalid_ratio": 0.25, "answer_entropy": H})


def test_label_metrics_right_majority_and_prefix():
    m = label_metrics(VOTES, "A", prefix="post_")
    assert m["post_label_accuracy"] == 1.0 and m["post_reward_accuracy"] == 1.0
    assert m["post_ground_truth_ratio"] == 0.5 and set(m) == {f"post_{k}" for k in label_metrics(VOTES, "A")}


def test_label_metrics_all_invalid():
    m = label_metrics([INVALID] * 3, "A")
    # no majority: pseudo rewards all 0 = true rewards all 0 -> reward_accuracy 1
    assert m["label_accuracy"] == 0.0 and m["majority_ratio"] == 0.0 and m["reward_accuracy"] == 1.0
    assert m["pass_at_n"] == 0.0 and m["invalid_ratio"] == 1.0 and m["answer_entropy"] == 0.0
    with pytest.raises(ValueError, match="INVALID"):
        label_metrics(["A"], INVALID)
    with pytest.raises(ValueError, match="no answers"):
        label_metrics([], "A")


def test_mean_label_metrics():
    avg = mean_label_metrics([label_metrics(VOTES, "A"), label_metrics(VOTES, "B")])
    assert avg["label_accuracy"] == 0.5 and avg["reward_accuracy"] == pytest.approx(0.625)  # (1 + .25)/2


def test_mean_and_maj_at_n():
    groups = [["A", "B"], ["C", "C", "D"]]
    assert mean_at_n(groups, ["A", "C"]) == pytest.approx((0.5 + 2 / 3) / 2)  # 0.5833333
    assert maj_at_n(groups, ["A", "C"]) == 1.0   # tie A/B -> first seen A
    assert maj_at_n(groups, ["B", "D"]) == 0.0
    assert maj_at_n([[INVALID, INVALID, "A"]], ["A"]) == 1.0  # invalid never votes
    with pytest.raises(ValueError, match="2 answer groups but 1"):
        mean_at_n(groups, ["A"])
