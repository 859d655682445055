"""Trajectory selection: hand-computed caption rewards, alpha strictness, ties, keep_n, drop counts."""

from __future__ import annotations

import pytest

from recipes.sophia.select import (
    DROP_CAPTION_BELOW_ALPHA,
    DROP_NO_CORRECT,
    Candidate,
    caption_reward_histogram,
    caption_rewards,
    select_trajectories,
)


def test_caption_rewards_mean():
    assert caption_rewards({"c0": [1, 1, 1, 0], "c1": [0, 0, 0, 0], "c2": [1, 1, 1, 1, 1, 1, 1, 0]}) == {
        "c0": 0.75, "c1": 0.0, "c2": 0.875}
    with pytest.raises(ValueError, match="c9"):
        caption_rewards({"c9": []})


def _cands(qid, caption_id, rewards, texts):
    cr = caption_rewards({caption_id: rewards})[caption_id]
    return [Candidate(qid, caption_id, f"r{i}", t, r, cr) for i, (r, t) in enumerate(zip(rewards, texts))]


def test_alpha_is_strict_and_shortest_is_kept():
    # q1: caption a has 3/4 = 0.75 (NOT > 0.75) with a very short correct answer; caption b has 4/4.
    cands = _cands("q1", "a", [1, 1, 1, 0], ["x", "xx", "xxx", "y"])
    cands += _cands("q1", "b", [1, 1, 1, 1], ["bbbbbb", "bbbb", "bbbbbbbb", "bbbbb"])
    res = select_trajectories(cands, alpha=0.75)
    assert [(k.candidate.caption_id, k.candidate.reasoning_id, k.length) for k in res.kept] == [("b", "r1", 4)]
    # with a lower alpha caption a qualifies and its 1-char answer wins
    res = select_trajectories(cands, alpha=0.7)
    assert [(k.candidate.caption_id, k.candidate.reasoning_id) for k in res.kept] == [("a", "r0")]


def test_drop_reasons_counted():
    cands = _cands("q_none", "a", [0, 0], ["p", "q"])  # no correct reasoning at all
    cands += _cands("q_low", "a", [1, 0, 0, 0], ["p", "q", "r", "s"])  # correct, but R(c) = 0.25
    cands += _cands("q_exact", "a", [1, 1, 1, 0], ["p", "q", "r", "s"])  # correct, R(c) = 0.75 exactly
    cands += _cands("q_ok", "a", [1, 1, 1, 1], ["pp", "q", "rrr", "ss"])
    res = select_trajectories(cands)
    assert res.dropped == {DROP_NO_CORRECT: ["q_none"], DROP_CAPTION_BELOW_ALPHA: ["q_low", "q_exact"]}
    assert res.drop_counts == {DROP_NO_CORRECT: 1, DROP_CAPTION_BELOW_ALPHA: 2}
    assert res.n_questions == 4 and res.n_kept_questions == 1
    assert res.kept_fraction == 0.25
    assert [k.candidate.reasoning_text for k in res.kept] == ["q"]
    assert res.mean_kept_length == 1.0
    # captions: q_none 0/2 -> 0.0, q_low 0.25, q_exact 0.75, q_ok 1.0 ; N = 4 -> bins 0, .25, .5, .75, 1
    assert res.caption_reward_hist == [1, 1, 0, 1, 1]
    s = res.stats()
    assert s["sophia/dropped/caption_reward_not_above_alpha"] == 2 and s["sophia/kept_fraction"] == 0.25


def test_ties_keep_n_and_token_lengths():
    # equal lengths: higher caption reward first, then caption id, then reasoning id
    cands = [
        Candidate("q", "c2", "r1", "aaaa", 1, 0.875),
        Candidate("q", "c1", "r9", "bbbb", 1, 0.875),
        Candidate("q", "c1", "r3", "cccc", 1, 0.875),
        Candidate("q", "c3", "r0", "dddd", 1, 1.0),
        Candidate("q", "c3", "r5", "eeeeeeeeee", 1, 1.0),
    ]
    order = [(k.candidate.caption_id, k.candidate.reasoning_id) for k in select_trajectories(cands, keep_n=4).kept]
    assert order == [("c3", "r0"), ("c1", "r3"), ("c1", "r9"), ("c2", "r1")]
    assert select_trajectories(list(reversed(cands)), keep_n=4).kept == select_trajectories(cands, keep_n=4).kept
    assert len(select_trajectories(cands, keep_n=10).kept) == 5
    # token length function: "eeeeeeeeee" is 1 token, the others 4 -> it wins
    res = select_trajectories(cands, length_fn=lambda t: 1 if t.startswith("e") else 4)
    assert [k.candidate.reasoning_id for k in res.kept] == ["r5"] and res.length_unit == "tokens"
    assert "sophia/mean_kept_length_tokens" in res.stats()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="question 'q'.*reasoning 'r'.*0 or 1"):
        select_trajectories([Candidate("q", "c", "r", "t", 0.5, 1.0)])
    with pytest.raises(ValueError, match="caption 'c'"):
        select_trajectories([Candidate("q", "c", "r", "t", 1, 1.0), Candidate("q", "c", "s", "t", 1, 0.5)])
    with pytest.raises(ValueError, match="keep_n"):
        select_trajectories([], keep_n=0)
    assert select_trajectories([]).kept_fraction == 0.0


def test_histogram_bins():
    assert caption_reward_histogram([0.0, 0.125, 0.125, 0.875, 1.0, 1.0], 8) == [1, 2, 0, 0, 0, 0, 0, 1, 2]


def test_random_pick_draws_among_eligible_only_and_is_order_free():
    # caption a: R(c) = 0.5 (not eligible at α 0.75); caption b: 4/4, four correct reasonings of lengths 1-4
    cands = _cands("q", "a", [1, 1, 0, 0], ["x", "xx", "y", "y"])
    cands += _cands("q", "b", [1, 1, 1, 1], ["b", "bb", "bbb", "bbbb"])
    picked = {seed: select_trajectories(cands, pick="random", seed=seed).kept[0].candidate for seed in range(40)}
    assert {c.caption_id for c in picked.values()} == {"b"}  # the caption-reward filter still applies
    assert len({c.reasoning_id for c in picked.values()}) == 4  # not always the shortest: every one is drawn
    for seed in (0, 7):
        same = select_trajectories(list(reversed(cands)), pick="random", seed=seed).kept
        assert same == select_trajectories(cands, pick="random", seed=seed).kept
    with pytest.raises(ValueError, match="pick"):
        select_trajectories(cands, pick="longest")
