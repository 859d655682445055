"""Group reward registry, the TTRV reward end to end, and custom reward loading."""

import math

import pytest

from verl.rewards.registry import (
    GROUP_REWARDS,
    compute_group_rewards,
    get_group_reward,
    load_custom_reward,
    register_group_reward,
)

PROMPT = "<image> \n Look. \n Options:\nA. accordion\nB. shovel\nC. koala\nD. toaster"
RESPONSES = ["C", "koala", "A", "<|im_end|>"]
# answers C, C, A, INVALID -> valid p(C) = 2/3, p(A) = 1/3 ; H = 0.6365142
H = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))


def test_ttrv_reward_end_to_end():
    fn = get_group_reward("ttrv")
    assert "ttrv" in GROUP_REWARDS
    out = compute_group_rewards(fn, RESPONSES, prompt=PROMPT)  # options parsed from the prompt
    expected = [2 / 3 - 0.75 * H, 2 / 3 - 0.75 * H, 1 / 3 - 0.75 * H, -1.0 - 0.75 * H]
    assert out == pytest.approx(expected)
    out = compute_group_rewards(fn, RESPONSES, prompt=PROMPT,
                                extra={"entropy_coef": 0.0, "reward_type": "majority", "invalid_penalty": -0.5})
    assert out == pytest.approx([1.0, 1.0, 0.0, -0.5])


def test_ground_truth_never_reaches_reward():
    with pytest.raises(ValueError, match="ground_truth.*must not see labels"):
        compute_group_rewards(get_group_reward("ttrv"), RESPONSES, prompt=PROMPT, extra={"ground_truth": "C"},
                              where="record 7")


def test_output_checked():
    with pytest.raises(ValueError, match="returned 1 scores for 4 responses"):
        compute_group_rewards(lambda r, **k: [0.0], RESPONSES, prompt=PROMPT)
    with pytest.raises(ValueError, match="non-finite"):
        compute_group_rewards(lambda r, **k: [float("nan")] * len(r), RESPONSES, prompt=PROMPT)


def test_register_and_unknown():
    @register_group_reward("_test_len")
    def _len(responses, *, prompt, options, extra):
        return [float(len(r)) for r in responses]

    assert compute_group_rewards(get_group_reward("_test_len"), ["ab", ""], prompt="") == [2.0, 0.0]
    with pytest.raises(ValueError, match="already registered"):
        register_group_reward("_test_len")(lambda *a, **k: [])
    with pytest.raises(KeyError, match="known: .*ttrv"):
        get_group_reward("nope")
    GROUP_REWARDS.pop("_test_len")


def test_load_custom_reward(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text("def score(responses, *, prompt, options, extra):\n"
                 "    return [1.0 if r.strip() == 'B' else 0.0 for r in responses]\n"
                 "CONST = 3\n")
    fn = load_custom_reward(f"{f}:score")
    assert compute_group_rewards(fn, ["B", "C"], prompt="") == [1.0, 0.0]
    assert get_group_reward(f"{f}:score")(["B"], prompt="", options={}, extra={}) == [1.0]
    with pytest.raises(FileNotFoundError, match="missing.py"):
        load_custom_reward(f"{tmp_path}/missing.py:score")
    with pytest.raises(AttributeError, match="'nofn' not found in custom reward file .*my_reward.py.*score"):
        load_custom_reward(f"{f}:nofn")
    with pytest.raises(TypeError, match="not callable"):
        load_custom_reward(f"{f}:CONST")
    with pytest.raises(ValueError, match="path/to/file.py:function"):
        load_custom_reward(str(f))
