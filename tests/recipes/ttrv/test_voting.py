"""Hand-computed checks of TTRV's voting rewards and vote groups, incl. how they interact with GRPO normalization."""

import math

import numpy as np
import pytest
import torch

from recipes.ttrv.voting import (
    VoteGroup,
    entropy_rewards,
    frequency_rewards,
    majority_rewards,
    ttrv_group_reward,
)
from verl.algos.advantage import get_adv_estimator
from verl.rewards.answers import INVALID, extract_answer
from verl.rewards.voting import majority_answer

ABBC = ["A", "A", "B", "C"]
# p(A)=0.5, p(B)=p(C)=0.25 ; H = 0.5 ln 2 + 0.5 ln 4 = 1.5 ln 2 = 1.0397208
H_ABBC = 1.5 * math.log(2)


def test_vote_group_statistics():
    g = VoteGroup("p", [4, 5, 6, 7], ["A", INVALID, "A", "B"])
    assert g.distribution == pytest.approx({"A": 2 / 3, "B": 1 / 3})  # invalid never votes
    assert g.majority == "A" and g.majority_ratio == 0.5 and g.invalid_ratio == 0.25
    assert g.entropy == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    s = g.stats()
    assert (s.majority, s.majority_ratio, s.invalid_ratio) == ("A", 0.5, 0.25)
    empty = VoteGroup("q", [0, 1], [INVALID, INVALID])
    assert empty.majority == INVALID and empty.majority_ratio == 0.0 and empty.entropy == 0.0


def test_frequency_and_majority():
    np.testing.assert_allclose(frequency_rewards(ABBC), [0.5, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(majority_rewards(ABBC), [1, 1, 0, 0])
    ans = ["A", "A", INVALID, "B"]
    np.testing.assert_allclose(frequency_rewards(ans, invalid_penalty=-1.0), [2 / 3, 2 / 3, -1.0, 1 / 3])
    np.testing.assert_allclose(majority_rewards(ans, invalid_penalty=-0.5), [1, 1, -0.5, 0])


def test_ties_first_appearance():
    assert majority_answer(["B", "A", "A", "B"]) == "B"
    assert majority_answer(["C", "A", "A", "B", "B"]) == "A"
    np.testing.assert_allclose(majority_rewards(["B", "A", "A", "B"]), [1, 0, 0, 1])


def test_invalid_never_majority():
    ans = [INVALID, INVALID, INVALID, "A"]
    assert majority_answer(ans) == "A"
    np.testing.assert_allclose(majority_rewards(ans), [-1, -1, -1, 1])
    # all outputs empty -> everyone gets the penalty, no majority
    empties = [extract_answer(t, {"A": "x", "B": "y"}) for t in ["", "<|im_end|>", "  ", "<|endoftext|>"]]
    assert empties == [INVALID] * 4
    g = ttrv_group_reward(empties, reward_type="majority", entropy_coef=0.75)
    assert g.majority == INVALID and g.n_invalid == 4 and g.entropy == 0.0
    np.testing.assert_allclose(g.scores, [-1.0] * 4)
    g = ttrv_group_reward(empties, reward_type="frequency", entropy_form="per_sample")
    # r1 = -1, r2 = ln(1/4) -> -1 + 0.75 ln(1/4) = -2.0397208
    np.testing.assert_allclose(g.scores, [-1 + 0.75 * math.log(0.25)] * 4)
    # the public-code failure mode, reproducible on request: empty outputs win the vote
    assert majority_answer(empties, invalid_votes=True) == INVALID


def test_entropy_forms():
    np.testing.assert_allclose(entropy_rewards(ABBC, "paper"), [-H_ABBC] * 4)
    # normalized: -H / ln 3 = -1.0397208 / 1.0986123 = -0.9463946
    np.testing.assert_allclose(entropy_rewards(ABBC, "normalized"), [-H_ABBC / math.log(3)] * 4)
    np.testing.assert_allclose(entropy_rewards(["A", "A"], "normalized"), [0.0, 0.0])
    ps = entropy_rewards(ABBC, "per_sample")
    np.testing.assert_allclose(ps, [math.log(0.5), math.log(0.5), math.log(0.25), math.log(0.25)])
    assert ps.mean() == pytest.approx(-H_ABBC)  # the per-sample term averages to the paper's -H
    np.testing.assert_allclose(entropy_rewards(["A", INVALID], "per_sample"), [0.0, math.log(0.5)])
    with pytest.raises(ValueError, match="known"):
        entropy_rewards(ABBC, "renyi")


def test_ttrv_group_reward_values():
    g = ttrv_group_reward(ABBC)  # frequency, paper form, alpha 0.75
    # R = p(a_i) - 0.75 * 1.0397208 = p - 0.7797906
    np.testing.assert_allclose(g.scores, np.array([0.5, 0.5, 0.25, 0.25]) - 0.75 * H_ABBC)
    assert g.majority == "A" and g.n_invalid == 0 and g.entropy == pytest.approx(H_ABBC)
    g = ttrv_group_reward(ABBC, reward_type="majority", entropy_form="normalized", entropy_coef=0.5)
    np.testing.assert_allclose(g.scores, np.array([1, 1, 0, 0]) - 0.5 * H_ABBC / math.log(3))
    with pytest.raises(ValueError, match="reward_type"):
        ttrv_group_reward(ABBC, reward_type="exact")


def _grpo(groups, **kw):
    scores, uids = [], []
    for gi, ans in enumerate(groups):
        scores += ttrv_group_reward(ans, **kw).scores.tolist()
        uids += [gi] * len(ans)
    adv, _ = get_adv_estimator("grpo")(torch.tensor(scores, dtype=torch.float64), uids, None)
    return adv


GROUPS = [["A", "A", "B", "C"], ["B", "B", "B", "D"], ["A", "B", "C", "D"], ["C", "C", "A", "A"]]


@pytest.mark.parametrize("form", ["paper", "normalized"])
def test_published_entropy_term_cancelled_by_grpo(form):
    base = _grpo(GROUPS, entropy_coef=0.0, entropy_form=form)
    with_h = _grpo(GROUPS, entropy_coef=0.75, entropy_form=form)
    torch.testing.assert_close(with_h, base, atol=1e-9, rtol=0)


def test_per_sample_entropy_term_survives_grpo():
    ans = ["A", "A", "A", "B", "B", "C"]  # p = 1/2, 1/3, 1/6
    base = _grpo([ans], entropy_coef=0.0, entropy_form="per_sample")
    with_h = _grpo([ans], entropy_coef=0.75, entropy_form="per_sample")
    # without the term: r1 mean 0.388889, deviations .111111 / -.055556 / -.222222,
    #   var (3*.012346 + 2*.003086 + .049383)/5 = .018519, std .136083 -> .816497 / -.408248 / -1.632993
    torch.testing.assert_close(base, torch.tensor([0.816497] * 3 + [-0.408248] * 2 + [-1.632993],
                                                  dtype=torch.float64), atol=1e-4, rtol=0)
    # with it: R = p + .75 ln p = -0.019860 / -0.490626 / -1.177153, mean -0.369664,
    #   deviations .349804 / -.120962 / -.807489, var 1.048392/5 = .209678, std .457906
    #   -> .763923 / -.264164 / -1.763440: the rare answer is pushed down harder (entropy lowered)
    torch.testing.assert_close(with_h, torch.tensor([0.763923] * 3 + [-0.264164] * 2 + [-1.763440],
                                                    dtype=torch.float64), atol=1e-4, rtol=0)
    # a two-valued group standardizes identically (B B B D): the term only matters with M >= 3
    torch.testing.assert_close(_grpo([GROUPS[1]], entropy_coef=0.75, entropy_form="per_sample"),
                               _grpo([GROUPS[1]], entropy_coef=0.0), atol=1e-5, rtol=0)  # eps/std


def test_two_answers_frequency_equals_majority_advantage():
    # A A A B: majority [1 1 1 0] mean .75 std sqrt(.75/3)=.5 -> [.5 .5 .5 -1.5]
    #          frequency [.75 .75 .75 .25] mean .625 std .25 -> [.5 .5 .5 -1.5]
    ans = ["A", "A", "A", "B"]
    freq = _grpo([ans], entropy_coef=0.0, reward_type="frequency")
    maj = _grpo([ans], entropy_coef=0.0, reward_type="majority")
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.5, 0.5, -1.5], dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(maj, freq, atol=1e-5, rtol=0)
    # with three distinct answers they differ: A A A B B C
    ans3 = ["A", "A", "A", "B", "B", "C"]
    f3 = _grpo([ans3], entropy_coef=0.0, reward_type="frequency")
    m3 = _grpo([ans3], entropy_coef=0.0, reward_type="majority")
    assert not torch.allclose(f3, m3, atol=1e-3)


def test_batch_norm_keeps_paper_entropy_term():
    groups = [["A", "A", "A", "A"], ["A", "B", "C", "D"]]  # H = 0 and H = ln 4
    scores, uids = [], []
    for gi, ans in enumerate(groups):
        scores += ttrv_group_reward(ans, entropy_coef=0.75).scores.tolist()
        uids += [gi] * 4
    # scores: group 0 = 1.0 ; group 1 = 0.25 - 0.75 ln 4 = -0.7897208
    adv, _ = get_adv_estimator("batch_norm")(torch.tensor(scores), uids, None)
    assert (adv[:4] > 0).all() and (adv[4:] < 0).all()
