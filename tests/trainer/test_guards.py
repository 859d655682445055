"""Collapse guard (pure): window stats vs the base, trips with reasons, state round trip."""

import pytest

from verl.config.schema import GuardConfig
from verl.rewards.answers import INVALID
from verl.trainer.guards import CollapseGuard, GroupStats, StepStats, item_entropy, step_stats


def groups(*answer_lists):
    out = []
    for answers in answer_lists:
        valid = [a for a in answers if a != INVALID]
        majority = max(valid, key=valid.count) if valid else INVALID
        ratio = answers.count(majority) / len(answers) if valid else 0.0
        out.append(GroupStats(majority, ratio, answers.count(INVALID) / len(answers)))
    return out


def test_step_stats_and_item_entropy():
    s = step_stats(groups(["1", "1", "2", INVALID], [INVALID] * 4), response_length=3.0)
    assert s.majorities == ["1", INVALID]
    assert s.invalid_ratio == pytest.approx((0.25 + 1.0) / 2)
    assert s.majority_ratio == pytest.approx((0.5 + 0.0) / 2)
    assert item_entropy(["1", "1"]) == 0.0
    assert item_entropy(["1", "2"]) == pytest.approx(0.6931, abs=1e-4)


def healthy(step):
    return StepStats(majorities=[str(step % 10), str((step + 3) % 10)], invalid_ratio=0.1, majority_ratio=0.6,
                     response_length=2.0)


def test_invalid_collapse_trips_after_the_window_fills():
    g = CollapseGuard(GuardConfig(window=2))
    assert g.observe(healthy(1))["guard/tripped"] == 0.0
    g.observe(StepStats(["7", "7"], 0.9, 0.1, 1.0))
    assert g.passing  # window mean (0.1 + 0.9) / 2 = 0.5 is not above 0.5
    m = g.observe(StepStats([INVALID, INVALID], 1.0, 0.0, 1.0))
    assert not g.passing and m["guard/tripped"] == 1.0 and m["guard/trip/invalid_ratio"] == 1.0
    assert g.reasons[0].startswith("invalid_ratio 0.950 > 0.5 (base 0.100)")


def test_entropy_collapse_needs_a_diverse_base():
    g = CollapseGuard(GuardConfig(window=2))
    g.observe(healthy(1))
    for _ in range(2):
        m = g.observe(StepStats(["7", "7"], 0.0, 1.0, 2.0))
    assert g.reasons == ["item_answer_entropy 0.000 < 0.1 x base 0.693"]
    assert m["guard/base_item_answer_entropy"] == pytest.approx(0.6931, abs=1e-4)
    flat = CollapseGuard(GuardConfig(window=2))
    flat.observe(StepStats(["7", "7"], 0.0, 1.0, 2.0))  # the base already answers one thing: not a collapse
    flat.observe(StepStats(["7", "7"], 0.0, 1.0, 2.0))
    assert flat.passing


def test_invalid_already_high_at_the_base_does_not_trip():
    g = CollapseGuard(GuardConfig(window=1))
    g.observe(StepStats(["1", "2"], 0.8, 0.5, 2.0))
    g.observe(StepStats(["3", "4"], 0.7, 0.5, 2.0))
    assert g.passing


def test_optional_checks_and_config_errors():
    g = CollapseGuard(GuardConfig(window=1, max_majority_ratio=0.9, max_length_ratio=3.0, min_length_ratio=0.5))
    g.observe(healthy(1))
    g.observe(StepStats(["1", "2"], 0.1, 0.95, 7.0))
    assert [r.split()[0] for r in g.reasons] == ["majority_ratio", "response_length"]
    g.observe(StepStats(["1", "2"], 0.1, 0.5, 0.5))
    assert g.reasons == ["response_length 0.5 < 0.5 x base 2.0"]
    with pytest.raises(ValueError, match="trainer.guard.action"):
        CollapseGuard(GuardConfig(action="panic"))
    with pytest.raises(ValueError, match="trainer.guard.window"):
        CollapseGuard(GuardConfig(window=0))


def test_state_round_trip():
    a, b = CollapseGuard(GuardConfig(window=3)), CollapseGuard(GuardConfig(window=3))
    for s in range(1, 4):
        a.observe(healthy(s))
    b.load_state_dict(a.state_dict())
    nxt = StepStats(["7", "7"], 0.9, 0.1, 1.0)
    assert a.observe(nxt) == b.observe(nxt) and a.reasons == b.reasons
