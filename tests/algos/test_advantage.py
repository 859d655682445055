"""Hand-computed checks of the advantage estimators."""

import math

import numpy as np
import pytest
import torch

from verl.algos.advantage import ADV_ESTIMATORS, get_adv_estimator, register_adv_estimator

EPS = 1e-6


def test_registry_names_and_unknown():
    assert {"grpo", "drgrpo", "grpo_batch", "batch_norm"} <= set(ADV_ESTIMATORS)
    with pytest.raises(KeyError, match="known: .*grpo"):
        get_adv_estimator("gae_typo")


def test_register_duplicate_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_adv_estimator("grpo")(lambda *a, **k: None)


def test_grpo_per_group():
    # group a: [1, 0, 0, 1] mean 0.5, unbiased std sqrt(4*0.25/3) = sqrt(1/3) = 0.57735
    #   -> +-0.5/0.57735 = +-0.866025
    # group b: [1, 1] mean 1, std 0 -> 0 / (0 + eps) = 0
    # group c: singleton [0.3] -> mean 0, std 1 -> 0.3 / (1 + eps)
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.3])
    uids = np.array(["a", "a", "a", "a", "b", "b", "c"], dtype=object)
    adv, ret = get_adv_estimator("grpo")(scores, uids, None)
    h = 0.5 / math.sqrt(1 / 3)
    expected = torch.tensor([h, -h, -h, h, 0.0, 0.0, 0.3 / (1 + EPS)])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    assert torch.equal(adv, ret)


def test_grpo_group_ids_interleaved_and_int():
    # groups 0: [2, 4] (mean 3, std sqrt(2)) ; 1: [5, 1] (mean 3, std 2*sqrt(2))
    scores = torch.tensor([2.0, 5.0, 4.0, 1.0])
    adv, _ = get_adv_estimator("grpo")(scores, [0, 1, 0, 1], None)
    r = 1 / math.sqrt(2)
    torch.testing.assert_close(adv, torch.tensor([-r, r, r, -r]), atol=1e-5, rtol=0)


def test_drgrpo_mean_only_and_mask_broadcast():
    # group a: [1, 0, 0, 1] -> [0.5, -0.5, -0.5, 0.5]
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]])
    for fn, kw in ((get_adv_estimator("drgrpo"), {}), (get_adv_estimator("grpo"), {"norm_adv_by_std": False})):
        adv, ret = fn(scores, ["a"] * 4, mask, **kw)
        assert adv.shape == (4, 3)
        expected = torch.tensor([[0.5, 0.5, 0.0], [-0.5, 0.0, 0.0], [-0.5, -0.5, -0.5], [0.0, 0.0, 0.0]])
        torch.testing.assert_close(adv, expected)
        assert torch.equal(adv, ret)


def test_grpo_batch_and_batch_norm():
    # scores [1, 0 | 3, 3], groups a, b. Batch mean 1.75; deviations -0.75 -1.75 1.25 1.25,
    # squares 0.5625 + 3.0625 + 1.5625 + 1.5625 = 6.75, /3 = 2.25 -> batch std 1.5.
    scores = torch.tensor([1.0, 0.0, 3.0, 3.0])
    uids = ["a", "a", "b", "b"]
    # grpo_batch: per-group centering [0.5, -0.5, 0, 0] / 1.5
    adv, _ = get_adv_estimator("grpo_batch")(scores, uids, None)
    torch.testing.assert_close(adv, torch.tensor([1 / 3, -1 / 3, 0.0, 0.0]), atol=1e-5, rtol=0)
    # batch_norm: (s - 1.75) / 1.5
    adv, _ = get_adv_estimator("batch_norm")(scores, uids, None)
    torch.testing.assert_close(adv, torch.tensor([-0.5, -1.75 / 1.5, 1.25 / 1.5, 1.25 / 1.5]),
                               atol=1e-5, rtol=0)


def test_group_constant_cancelled_by_grpo_batch_but_not_batch_norm():
    # add c_a = -1 to group a and c_b = 0 to group b (a per-group "entropy" term)
    scores = torch.tensor([1.0, 0.0, 3.0, 3.0])
    shifted = scores + torch.tensor([-1.0, -1.0, 0.0, 0.0])
    uids = ["a", "a", "b", "b"]
    # grpo_batch: centered numerators identical ([0.5, -0.5, 0, 0]); only the batch std changes
    a0, _ = get_adv_estimator("grpo_batch")(scores, uids, None)
    a1, _ = get_adv_estimator("grpo_batch")(shifted, uids, None)
    assert torch.equal(torch.sign(a0), torch.sign(a1))
    torch.testing.assert_close(a0 * scores.std(), a1 * shifted.std(), atol=1e-5, rtol=0)
    # grpo_batch group means stay 0 whatever the constant
    assert abs(a1[:2].sum().item()) < 1e-6 and abs(a1[2:].sum().item()) < 1e-6
    # batch_norm: shifted = [0, -1, 3, 3], mean 1.25, deviations -1.25 -2.25 1.75 1.75,
    # squares 1.5625 + 5.0625 + 3.0625 + 3.0625 = 12.75, /3 = 4.25 -> std sqrt(4.25)
    b1, _ = get_adv_estimator("batch_norm")(shifted, uids, None)
    sd = math.sqrt(4.25)
    torch.testing.assert_close(b1, torch.tensor([-1.25 / sd, -2.25 / sd, 1.75 / sd, 1.75 / sd]),
                               atol=1e-5, rtol=0)
    # the group-a mean advantage is non-zero: the per-group term survives
    assert b1[:2].mean().item() < -0.8


def test_bad_shapes():
    with pytest.raises(ValueError, match="group_ids has 2"):
        get_adv_estimator("grpo")(torch.zeros(3), ["a", "a"], None)
    with pytest.raises(ValueError, match="response_mask"):
        get_adv_estimator("grpo")(torch.zeros(3), ["a"] * 3, torch.ones(2, 4))
