"""Hand-computed checks of loss aggregation, the clipped PPO loss, the NLL loss and the helpers."""

import math

import pytest
import torch

from verl.algos.policy_loss import (
    POLICY_LOSSES,
    agg_loss,
    clipped_policy_loss,
    get_policy_loss,
    weighted_nll_loss,
)
from verl.algos.utils import entropy_from_logits, masked_mean, masked_var, masked_whiten

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize("mode,expected", [
    ("token-mean", 2.5),                    # (1+2+3+4)/4
    ("seq-mean-token-sum", 5.0),            # (6 + 4)/2
    ("seq-mean-token-mean", 3.0),           # (6/3 + 4/1)/2
    ("seq-sum", 10.0),                      # 6 + 4
    ("seq-mean-token-sum-norm", 5.0 / 3),   # (6/3 + 4/3)/2
])
def test_agg_modes(mode, expected):
    assert agg_loss(LOSS, MASK, mode).item() == pytest.approx(expected)


def test_agg_empty_sequence_and_errors():
    # second row empty: seq-mean-token-mean = (mean(1,1) + 0)/2 = 0.5 ; token-mean of nothing = 0
    loss = torch.tensor([[1.0, 1.0], [5.0, 5.0]])
    assert agg_loss(loss, torch.tensor([[1, 1], [0, 0]]), "seq-mean-token-mean").item() == pytest.approx(0.5)
    assert agg_loss(loss, torch.zeros(2, 2), "token-mean").item() == 0.0
    with pytest.raises(ValueError, match="known"):
        agg_loss(loss, torch.ones(2, 2), "token-sum")
    with pytest.raises(ValueError, match="differ"):
        agg_loss(loss, torch.ones(2, 3), "token-mean")


def _ppo_inputs():
    old = torch.zeros(2, 2)
    ratios = torch.tensor([[1.5, 0.5], [1.1, 4.0]])
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    return old, ratios.log(), adv


def test_clipped_loss_hand_computed():
    # t1: A=+1 r=1.5: L1=-1.5, L2=-1.2 -> -1.2 (clipped)
    # t2: A=+1 r=0.5: L1=-0.5, L2=-0.8 -> -0.5
    # t3: A=-1 r=1.1: L1=1.1,  L2=1.1  -> 1.1 (dual bound 3 inactive)
    # t4: A=-1 r=4.0: L1=4.0,  L2=1.2  -> 4.0 -> dual clip min(4, 3) = 3
    # token-mean = (-1.2 - 0.5 + 1.1 + 3)/4 = 0.6
    old, logp, adv = _ppo_inputs()
    loss, clipfrac, kl, lower = clipped_policy_loss(old, logp, adv, torch.ones(2, 2), 0.2, 0.2, 3.0)
    assert loss.item() == pytest.approx(0.6, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.25)
    assert lower.item() == pytest.approx(0.25)
    # ppo_kl = mean(old - logp) = -ln(1.5 * 0.5 * 1.1 * 4)/4 = -ln(3.3)/4
    assert kl.item() == pytest.approx(-math.log(3.3) / 4, abs=1e-6)


def test_clipped_loss_masked_and_asymmetric():
    old, logp, adv = _ppo_inputs()
    mask = torch.tensor([[1, 1], [1, 0]])
    # t4 masked out: (-1.2 - 0.5 + 1.1)/3 = -0.2 ; clipfrac 1/3 ; no dual clip
    loss, clipfrac, _, lower = clipped_policy_loss(old, logp, adv, mask)
    assert loss.item() == pytest.approx(-0.2, abs=1e-6)
    assert clipfrac.item() == pytest.approx(1 / 3)
    assert lower.item() == 0.0
    # clip_ratio_high = 0.6: t1 ratio 1.5 no longer clipped -> (-1.5 - 0.5 + 1.1)/3 = -0.3
    loss, clipfrac, _, _ = clipped_policy_loss(old, logp, adv, mask, 0.2, 0.6)
    assert loss.item() == pytest.approx(-0.3, abs=1e-6)
    assert clipfrac.item() == 0.0
    with pytest.raises(ValueError, match="clip_ratio_c"):
        clipped_policy_loss(old, logp, adv, mask, clip_ratio_c=1.0)


def test_clipped_loss_gradient_zero_when_clipped():
    # A=+1, ratio 1.5 > 1.2: clipped branch is constant in logp -> zero gradient
    logp = torch.tensor([[math.log(1.5)]], requires_grad=True)
    loss, *_ = clipped_policy_loss(torch.zeros(1, 1), logp, torch.ones(1, 1), torch.ones(1, 1))
    loss.backward()
    assert logp.grad.item() == 0.0


def test_weighted_nll():
    logp = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    w = torch.tensor([1.0, 0.0])
    ones = torch.ones(2, 2)
    assert weighted_nll_loss(logp, w, ones).item() == pytest.approx(0.75)  # (1 + 2 + 0 + 0)/4
    assert weighted_nll_loss(logp, w, ones, "seq-mean-token-sum").item() == pytest.approx(1.5)  # (3+0)/2
    loss, metrics = get_policy_loss("sft")(old_log_prob=None, log_prob=logp, advantages=w[:, None] * ones,
                                           response_mask=ones, loss_agg_mode="token-mean")
    assert loss.item() == pytest.approx(0.75) and metrics["pg_clipfrac"].item() == 0.0


def test_registry():
    assert {"vanilla", "nll", "sft"} <= set(POLICY_LOSSES)
    old, logp, adv = _ppo_inputs()
    loss, metrics = get_policy_loss("vanilla")(old_log_prob=old, log_prob=logp, advantages=adv,
                                               response_mask=torch.ones(2, 2), loss_agg_mode="token-mean")
    assert loss.item() == pytest.approx(0.6, abs=1e-6) and metrics["pg_clipfrac_lower"].item() == 0.25
    with pytest.raises(KeyError, match="known: .*vanilla"):
        get_policy_loss("gspo")


def test_helpers():
    # uniform over 4 -> ln 4 ; probs (0.75, 0.25) -> -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.562335
    ent = entropy_from_logits(torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, -1e9, -1e9]]))
    torch.testing.assert_close(ent, torch.tensor([math.log(4), 0.5623351]), atol=1e-5, rtol=0)
    vals = torch.tensor([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([1, 1, 1, 0])
    assert masked_mean(vals, mask).item() == 2.0
    assert masked_mean(vals, torch.zeros(4)).item() == 0.0
    assert masked_var(vals, mask).item() == pytest.approx(1.0)  # (1 + 0 + 1)/(3 - 1)
    torch.testing.assert_close(masked_whiten(vals, mask)[:3], torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(masked_whiten(vals, mask, shift_mean=False)[:3], torch.tensor([1.0, 2.0, 3.0]))
    rows = masked_mean(torch.tensor([[1.0, 3.0], [5.0, 7.0]]), torch.tensor([[1, 1], [1, 0]]), dim=-1)
    torch.testing.assert_close(rows, torch.tensor([2.0, 5.0]))
    with pytest.raises(ValueError, match="no element"):
        masked_var(vals, torch.zeros(4))
