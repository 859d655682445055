"""The one reward path: registry, built-in TTRV reward, custom rewards, output checks, metadata."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from verl.protocol import DataProto
from verl.rewards.answers import INVALID
from verl.rewards.registry import (
    GROUP_REWARDS,
    GroupReward,
    RewardError,
    batch_answers,
    build_group_reward,
    compute_group_rewards,
    group_indices,
    load_custom_reward,
    register_group_reward,
    score_groups,
    without_labels,
)

OPTIONS = {"A": "accordion", "B": "shovel", "C": "koala", "D": "toaster"}
RESPONSES = ["C", "koala", "A", "<|im_end|>"]
# answers C, C, A, INVALID -> valid p(C) = 2/3, p(A) = 1/3 ; H = 0.6365142
H = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))


def reward_cfg(**kw):
    base = dict(name="ttrv", reward_type="frequency", entropy_coef=0.75, entropy_form="paper", invalid_penalty=-1.0,
                invalid_votes=False, custom_reward_function=None)
    return SimpleNamespace(**{**base, **kw})


def batch(responses, uids, options=OPTIONS, extra=None):
    n = len(responses)
    return DataProto.from_dict(non_tensors={
        "uid": list(uids), "response_text": list(responses), "prompt": [[{"role": "user", "content": "q"}]] * n,
        "options": [dict(options)] * n, "extra": [dict(extra or {})] * n, "data_source": ["src"] * n})


def test_ttrv_reward_hand_computed():
    r = build_group_reward(reward_cfg())
    assert r.name == "ttrv" and "ttrv" in GROUP_REWARDS
    out = compute_group_rewards(r, RESPONSES, prompt=None, uid="u0", options=OPTIONS)
    assert out.tolist() == pytest.approx([2 / 3 - 0.75 * H, 2 / 3 - 0.75 * H, 1 / 3 - 0.75 * H, -1.0 - 0.75 * H])
    r = build_group_reward(reward_cfg(entropy_coef=0.0, reward_type="majority", invalid_penalty=-0.5))
    assert compute_group_rewards(r, RESPONSES, prompt=None, uid="u0", options=OPTIONS).tolist() == [1, 1, 0, -0.5]


def test_majority_tie_goes_to_first_appearing_answer():
    # B, A, A, B, INVALID: a 2-2 tie between A and B; B appears first -> B is the majority (1), A gets 0.
    r = build_group_reward(reward_cfg(reward_type="majority", entropy_coef=0.0, invalid_penalty=-1.0))
    out = compute_group_rewards(r, ["B", "A", "A", "B", ""], prompt=None, uid="t", options=OPTIONS)
    assert out.tolist() == [1.0, 0.0, 0.0, 1.0, -1.0]
    # the same votes in another order: A first -> A wins
    out = compute_group_rewards(r, ["A", "B", "B", "A"], prompt=None, uid="t", options=OPTIONS)
    assert out.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_score_groups_batch_order_and_dtype():
    data = batch(["C", "A", "C", "B", "B", "B"], ["p", "q", "p", "q", "p", "q"])
    r = build_group_reward(reward_cfg(entropy_coef=0.0))
    scores = score_groups(r, data)
    # p: C, C, B -> 2/3, 2/3, 1/3 ; q: A, B, B -> 1/3, 2/3, 2/3 (rows back in batch order)
    np.testing.assert_allclose(scores, [2 / 3, 1 / 3, 2 / 3, 2 / 3, 1 / 3, 2 / 3], rtol=1e-6)
    assert scores.dtype == np.float32
    assert group_indices(np.array(["p", "q", "p"], dtype=object)) == {"p": [0, 2], "q": [1]}
    assert batch_answers(data).tolist() == ["C", "A", "C", "B", "B", "B"]
    assert batch_answers(batch(["<|im_end|>"], ["p"])).tolist() == [INVALID]


@pytest.mark.parametrize("bad, match", [
    (lambda r, **k: [0.0], r"returned shape \(1,\) for 2 responses"),
    (lambda r, **k: [[0.0, 1.0]], r"returned shape \(1, 2\)"),
    (lambda r, **k: [float("nan")] * len(r), "non-finite"),
    (lambda r, **k: [math.inf, 0.0], "non-finite"),
    (lambda r, **k: ["x", "y"], "not a list of floats"),
    (lambda r, **k: 1 / 0, "raised ZeroDivisionError"),
])
def test_bad_output_stops_naming_function_and_uid(bad, match):
    data = batch(["A", "B", "C"], ["ok", "p7", "p7"])
    calls = []

    def fn(responses, **kw):
        calls.append(kw["uid"])
        return [0.0] if kw["uid"] == "ok" else bad(responses, **kw)

    with pytest.raises(RewardError, match=rf"group reward 'my_fn' for prompt uid 'p7' .*{match}") as e:
        score_groups(GroupReward("my_fn", fn), data)
    assert calls == ["ok", "p7"] and "my_fn" in str(e.value)


def test_custom_reward_receives_non_label_metadata(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text("SEEN = []\n"
                 "def score(responses, *, prompt, options, extra, uid, data_source):\n"
                 "    SEEN.append((prompt, options, extra, uid, data_source))\n"
                 "    return [1.0 if r.strip() == 'B' else 0.0 for r in responses]\n")
    r = build_group_reward(reward_cfg(custom_reward_function=f"{f}:score"))
    assert r.name == f"{f}:score"
    data = batch(["B", "C"], ["rec:3", "rec:3"], extra={"qtype": "sum", "answer": "B", "Ground_Truth": "B"})
    assert score_groups(r, data).tolist() == [1.0, 0.0]
    import sys

    seen = next(m for n, m in sys.modules.items() if n.startswith("_verl_custom_reward_") and hasattr(m, "SEEN")).SEEN
    prompt, options, extra, uid, source = seen[-1]
    assert prompt == [{"role": "user", "content": "q"}] and options == OPTIONS
    assert extra == {"qtype": "sum"} and uid == "rec:3" and source == "src"  # answer keys removed
    assert without_labels({"gold": 1, "label": 2, "id": 3}) == {"id": 3}
    # values that spell the answer go too: the label itself, or the text of its option
    assert without_labels({"digit": "5", "shift": "noise"}, "A", {"A": "5", "B": "7"}) == {"shift": "noise"}
    assert without_labels({"digit": " 5 ", "shift": "noise"}, "5") == {"shift": "noise"}
    assert without_labels({"digit": "5"}, "B", {"A": "5", "B": "7"}) == {"digit": "5"}


def test_custom_reward_loading_errors(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text("def score(responses, **kw):\n    return [0.0] * len(responses)\nCONST = 3\n")
    assert callable(load_custom_reward(f"{f}:score"))
    with pytest.raises(FileNotFoundError, match="missing.py"):
        load_custom_reward(f"{tmp_path}/missing.py:score")
    with pytest.raises(AttributeError, match="'nofn' not found in custom reward file .*my_reward.py.*score"):
        load_custom_reward(f"{f}:nofn")
    with pytest.raises(TypeError, match="not callable"):
        load_custom_reward(f"{f}:CONST")
    with pytest.raises(ValueError, match="path/to/file.py:function"):
        load_custom_reward(str(f))


def test_register_and_unknown():
    @register_group_reward("_test_len")
    def _len(cfg):
        return lambda responses, **kw: [float(len(r)) * cfg.entropy_coef for r in responses]

    try:
        r = build_group_reward(reward_cfg(name="_test_len", entropy_coef=2.0))
        assert compute_group_rewards(r, ["ab", ""], prompt=None, uid="u").tolist() == [4.0, 0.0]
        with pytest.raises(ValueError, match="already registered"):
            register_group_reward("_test_len")(lambda cfg: None)
        with pytest.raises(KeyError, match="known: .*ttrv"):
            build_group_reward(reward_cfg(name="nope"))
    finally:
        GROUP_REWARDS.pop("_test_len")
