"""TTRV's reward estimators, hand-computed: registry and start-up checks, self-certainty, token entropy,
view agreement, EMA-teacher majority; augmented views are seeded, label-free and the size of the original."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recipes.ttrv.estimators import ESTIMATORS, agreement, build_estimator, register_estimator
from recipes.ttrv.views import augment, original_uid, view_prompts
from recipes.ttrv.voting import VoteGroup
from verl.algos.utils import self_certainty_from_logits
from verl.config.loader import ConfigError, load_config
from verl.config.schema import RewardConfig
from verl.protocol import DataProto
from verl.rewards.answers import INVALID

CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "recipes" / "ttrv" / "config")


def rows(n: int, **tensors: list[float]) -> DataProto:
    return DataProto.from_dict(tensors={"response_mask": torch.ones(n, 2), **{k: torch.tensor(v) for k, v in tensors.items()}},
                               non_tensors={"uid": ["p"] * n})


@pytest.mark.parametrize("override, match", [
    ("reward.name=nope", "unknown reward estimator 'nope'; known: .*self_certainty.*ttrv"),
    ("++reward.kwargs.entropy_form=perSample", r"reward.kwargs.entropy_form='perSample' not allowed"),
    ("++reward.kwargs.entropy_coef=high", r"reward.kwargs.entropy_coef='high': reward 'ttrv' expects a float"),
    ("++reward.kwargs.alpha=1", r"reward.kwargs.alpha is not a setting of reward 'ttrv'"),
])
def test_bad_reward_fails_at_start_up_naming_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("ttrv_cpu_tiny", [override], config_dir=CONFIG_DIR)


def test_every_estimator_loads_with_its_defaults():
    for name in ("ttrv", "self_certainty", "token_entropy", "view_vote", "ema_teacher"):
        cfg = load_config("ttrv_cpu_tiny", [f"reward.name={name}"], config_dir=CONFIG_DIR)
        assert build_estimator(cfg.reward).name == name
    est = build_estimator(RewardConfig(name="view_vote", kwargs={"views": 2}))
    assert est.settings["views"] == 2 and est.settings["flip"] is False and est.aux == "views"


def test_a_new_estimator_is_one_function_and_one_line():
    @register_estimator("_longest")
    def _longest(batch, votes, *, bonus: float = 1.0):
        return np.array([bonus * len(a) for g in votes for a in g.answers])

    try:
        est = build_estimator(RewardConfig(name="_longest", kwargs={"bonus": 2.0}))
        votes = [VoteGroup("p", [0, 1], ["7", "10"])]
        np.testing.assert_allclose(est(rows(2), votes), [2.0, 4.0])
    finally:
        ESTIMATORS.pop("_longest")


def test_self_certainty_and_token_entropy_hand_computed():
    # V = 2, p = (0.75, 0.25): KL(U || p) = -ln 2 - (ln 0.75 + ln 0.25) / 2 = 0.143841
    logits = torch.log(torch.tensor([[0.75, 0.25], [0.5, 0.5]]))
    np.testing.assert_allclose(self_certainty_from_logits(logits).numpy(), [0.143841, 0.0], atol=1e-6)
    sc = build_estimator(RewardConfig(name="self_certainty"))
    assert sc.token_stats == ("self_certainty",)
    np.testing.assert_allclose(sc(rows(2, self_certainty=[0.14, 0.5]), []), [0.14, 0.5], rtol=1e-6)
    ent = build_estimator(RewardConfig(name="token_entropy"))
    assert ent.token_stats == ("token_entropy",)
    np.testing.assert_allclose(ent(rows(2, token_entropy=[math.log(2), 0.1]), []), [-math.log(2), -0.1], rtol=1e-6)


def test_view_vote_rewards_agreement_with_the_other_views():
    # views voted 7, 7, 1, INVALID -> valid shares: 7 = 2/3, 1 = 1/3, anything else 0
    np.testing.assert_allclose(agreement(["7", "1", "4", INVALID], ["7", "7", "1", INVALID], -1.0),
                               [2 / 3, 1 / 3, 0.0, -1.0])
    np.testing.assert_allclose(agreement(["7"], [INVALID], -1.0), [0.0])  # no valid view vote: no signal
    est = build_estimator(RewardConfig(name="view_vote", kwargs={"invalid_penalty": -0.5}))
    votes = [VoteGroup("p", [0, 2], ["7", INVALID]), VoteGroup("q", [1, 3], ["3", "5"])]
    out = est(rows(4), votes, {"p": ["7", "1"], "q": ["5", "5", "5", "3"]})
    np.testing.assert_allclose(out, [0.5, 0.25, -0.5, 0.75])


def test_ema_teacher_rewards_the_teachers_majority():
    est = build_estimator(RewardConfig(name="ema_teacher", kwargs={"decay": 0.9}))
    assert est.aux == "teacher" and est.settings["teacher_votes"] == 8
    votes = [VoteGroup("p", [0, 1, 2], ["7", "1", INVALID]), VoteGroup("q", [3, 4], ["3", "5"])]
    # p: teacher votes 1, 1, 7 -> label 1 ; q: teacher all unparseable -> no label, nobody earns 1
    out = est(rows(5), votes, {"p": ["1", "1", "7"], "q": [INVALID, INVALID]})
    np.testing.assert_allclose(out, [0.0, 1.0, -1.0, 0.0, 0.0])


def _png(w: int = 24, h: int = 16) -> bytes:
    arr = (np.arange(w * h * 3).reshape(h, w, 3) % 251).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_views_are_seeded_label_free_and_keep_the_prompt():
    img = Image.open(io.BytesIO(_png())).convert("RGB")
    a = augment(img, np.random.default_rng(3))
    b = augment(img, np.random.default_rng(3))
    assert a.size == img.size and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(img))
    same = augment(img, np.random.default_rng(3), crop_min=1.0, max_rotation=0.0, jitter=0.0)
    assert np.array_equal(np.asarray(same), np.asarray(img))  # no crop, rotation or jitter: the image itself
    prompts = DataProto.from_dict(non_tensors={"uid": ["d:1"], "prompt": [[{"role": "user", "content": "<image> ?"}]],
                                               "images": [[_png()]], "options": [{"A": "1"}]}, meta_info={"n": 4})
    views = view_prompts(prompts, step=2, views=3, seed=1, crop_min=0.7, max_rotation=10.0, jitter=0.2, flip=False)
    nt = views.non_tensor_batch
    assert list(nt["uid"]) == ["d:1#view0", "d:1#view1", "d:1#view2"]
    assert {original_uid(u) for u in nt["uid"]} == {"d:1"} and set(nt) == {"uid", "prompt", "images", "options"}
    assert all(isinstance(im[0], bytes) for im in nt["images"]) and nt["prompt"][2] == prompts.non_tensor_batch["prompt"][0]
    again = view_prompts(prompts, step=2, views=3, seed=1, crop_min=0.7, max_rotation=10.0, jitter=0.2, flip=False)
    assert list(again.non_tensor_batch["images"]) == list(nt["images"])  # seeded by (seed, step, uid, view)
