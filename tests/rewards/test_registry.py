"""The one reward path: custom group rewards, their kwargs, output checks, metadata (no label)."""

import math

import numpy as np
import pytest

from verl.protocol import DataProto
from verl.rewards.answers import INVALID
from verl.rewards.registry import (
    GroupReward,
    RewardError,
    batch_answers,
    check_reward_kwargs,
    custom_group_reward,
    group_indices,
    load_custom_reward,
    score_groups,
    without_labels,
)

OPTIONS = {"A": "accordion", "B": "shovel", "C": "koala", "D": "toaster"}


def batch(responses, uids, options=OPTIONS, extra=None):
    n = len(responses)
    return DataProto.from_dict(non_tensors={
        "uid": list(uids), "response_text": list(responses), "prompt": [[{"role": "user", "content": "q"}]] * n,
        "options": [dict(options)] * n, "extra": [dict(extra or {})] * n, "data_source": ["src"] * n})


def test_score_groups_batch_order_and_dtype():
    data = batch(["C", "A", "C", "B", "B", "B"], ["p", "q", "p", "q", "p", "q"])

    def share(responses, *, scale, **kw):  # fraction of the group giving the same text, times scale
        return [scale * responses.count(r) / len(responses) for r in responses]

    scores = score_groups(GroupReward("share", share, {"scale": 3.0}), data)
    # p: C, C, B -> 2, 2, 1 ; q: A, B, B -> 1, 2, 2 (rows back in batch order)
    np.testing.assert_allclose(scores, [2, 1, 2, 2, 1, 2], rtol=1e-6)
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
                 "def score(responses, *, prompt, options, extra, uid, data_source, hit=1.0):\n"
                 "    SEEN.append((prompt, options, extra, uid, data_source))\n"
                 "    return [hit if r.strip() == 'B' else 0.0 for r in responses]\n")
    r = custom_group_reward(f"{f}:score", {"hit": 2.5})  # reward.kwargs reach the function unchanged
    assert r.name == f"{f}:score"
    data = batch(["B", "C"], ["rec:3", "rec:3"], extra={"qtype": "sum", "answer": "B", "Ground_Truth": "B"})
    assert score_groups(r, data).tolist() == [2.5, 0.0]
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
    with pytest.raises(TypeError, match=r"reward.kwargs.miss is not a setting of reward .*\['hit'\]"):
        custom_group_reward(f"{f}:score", {"miss": 1})


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


def test_check_reward_kwargs():
    def fn(responses, *, weight=1.0, form="a"):
        return responses

    check_reward_kwargs(fn, {"weight": 2.0, "form": "b"}, "fn")
    with pytest.raises(TypeError, match=r"reward.kwargs.wieght is not a setting of reward 'fn' \(its settings: "
                                        r"\['weight', 'form'\]"):
        check_reward_kwargs(fn, {"wieght": 2.0}, "fn")
    check_reward_kwargs(lambda responses, **kw: responses, {"anything": 1}, "open")  # **kwargs takes all
