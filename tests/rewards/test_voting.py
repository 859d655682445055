"""Label-free answer statistics (verl.rewards.voting): distribution, entropy, majority, train subset."""

import math

import numpy as np
import pytest

from verl.rewards.answers import INVALID
from verl.rewards.voting import answer_distribution, answer_entropy, majority_answer, select_train_subset

ABBC = ["A", "A", "B", "C"]
# p(A)=0.5, p(B)=p(C)=0.25 ; H = 0.5 ln 2 + 0.5 ln 4 = 1.5 ln 2 = 1.0397208
H_ABBC = 1.5 * math.log(2)


def test_distribution_and_entropy():
    assert answer_distribution(ABBC) == {"A": 0.5, "B": 0.25, "C": 0.25}
    assert answer_entropy(ABBC) == pytest.approx(H_ABBC)
    assert answer_entropy(["A"] * 5) == 0.0
    assert answer_entropy([INVALID] * 3) == 0.0
    # invalid never votes: over valid votes A, A, B -> 2/3, 1/3
    assert answer_distribution(["A", INVALID, "A", "B"]) == pytest.approx({"A": 2 / 3, "B": 1 / 3})
    # public-code behaviour on request: INVALID is a class, denominator N = 4
    assert answer_distribution(["A", INVALID, INVALID, "B"], invalid_votes=True) == {
        "A": 0.25, INVALID: 0.5, "B": 0.25}


def test_majority_ties_go_to_the_first_appearing_answer():
    assert majority_answer(["B", "A", "A", "B"]) == "B"
    assert majority_answer(["C", "A", "A", "B", "B"]) == "A"
    assert majority_answer([INVALID, INVALID, "A"]) == "A" and majority_answer([INVALID]) == INVALID


def test_select_train_subset():
    np.testing.assert_array_equal(select_train_subset(32, 16), np.arange(16))
    a = select_train_subset(32, 16, 7)
    b = select_train_subset(32, 16, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 16 and (np.diff(a) > 0).all() and a.max() < 32
    with pytest.raises(ValueError, match="n_train=33"):
        select_train_subset(32, 33)
