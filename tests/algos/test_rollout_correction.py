"""Rollout correction against hand-computed weights, masks, metrics and corrected losses."""

from __future__ import annotations

import math

import pytest
import torch

from verl.algos.policy_loss import clipped_policy_loss, get_policy_loss
from verl.algos.rollout_correction import (
    check_correction,
    correction_enabled,
    importance_weights,
    off_policy_metrics,
    rejection_bounds,
    rejection_mask,
    rollout_correction,
)
from verl.config.schema import RolloutCorrectionConfig

LN = math.log


def _approx(x: float) -> pytest.approx:
    return pytest.approx(x, rel=1e-5, abs=1e-6)


def test_token_weights_are_truncated_ratios_with_their_metrics():
    log_ratio = torch.tensor([[LN(3.0), LN(0.5), 0.0]])  # rho = 3, 0.5, 1
    w, m = importance_weights(log_ratio, torch.ones(1, 3), "token", threshold=2.0)
    assert torch.allclose(w, torch.tensor([[2.0, 0.5, 1.0]]))
    assert m["rollout_is_mean"] == _approx(1.5) and m["rollout_is_max"] == _approx(3.0)
    assert m["rollout_is_min"] == _approx(0.5)
    assert m["rollout_is_ratio_fraction_high"] == _approx(1 / 3) and m["rollout_is_ratio_fraction_low"] == 0.0
    assert m["rollout_is_eff_sample_size"] == _approx(7 / 9)  # E[w]^2 / E[w^2] = (3.5/3)^2 / (5.25/3)


def test_sequence_weights_are_truncated_products_broadcast_and_zero_on_padding():
    log_ratio = torch.tensor([[LN(2.0), LN(2.0), 5.0], [LN(0.5), 0.0, 0.0]])  # 5.0 sits on padding
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    w, m = importance_weights(log_ratio, mask, "sequence", threshold=2.0)
    assert torch.allclose(w, torch.tensor([[2.0, 2.0, 0.0], [0.5, 0.5, 0.5]]))  # 4 -> 2; 0.5
    assert m["rollout_is_max"] == _approx(4.0) and m["rollout_is_mean"] == _approx(2.25)  # per sequence
    assert m["rollout_is_ratio_fraction_high"] == _approx(0.5)


def test_rejection_masks_tokens_sequences_and_geometric_means():
    log_ratio = torch.tensor([[LN(2.0), LN(2.0), 0.0], [LN(0.5), 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    tok, m = rejection_mask(log_ratio, mask, "token", lower=0.5, upper=1.5)
    assert torch.equal(tok, torch.tensor([[0, 0, 0], [1, 1, 1]]))  # 2 > 1.5 rejected; 0.5 >= lower kept
    assert m["rollout_rs_masked_fraction"] == _approx(2 / 5) and m["rollout_rs_seq_masked_fraction"] == _approx(0.5)
    assert m["rollout_rs_ratio_fraction_high"] == _approx(2 / 5) and m["rollout_rs_ratio_fraction_low"] == 0.0
    seq, _ = rejection_mask(log_ratio, mask, "sequence", lower=0.6, upper=1.5)  # products 4 and 0.5: both out
    assert torch.equal(seq, torch.zeros(2, 3, dtype=torch.long))
    geo, m = rejection_mask(log_ratio, mask, "geometric", lower=0.6, upper=1.5)  # 2 (out), 0.5 ** (1/3) = 0.79
    assert torch.equal(geo, torch.tensor([[0, 0, 0], [1, 1, 1]]))
    assert m["rollout_rs_seq_masked_fraction"] == _approx(0.5)


def test_off_policy_metrics_by_hand():
    old = torch.tensor([[-1.0, -2.0]])
    roll = torch.tensor([[-1.0 - LN(2.0), -2.0]])  # rho = 2, 1
    m = off_policy_metrics(old, roll, torch.ones(1, 2))
    assert m["kl"] == _approx(-LN(2.0) / 2)
    assert m["k3_kl"] == _approx((2 - LN(2.0) - 1) / 2)
    assert m["training_log_ppl"] == _approx(1.5) and m["rollout_log_ppl"] == _approx(1.5 + LN(2.0) / 2)
    assert m["log_ppl_abs_diff"] == _approx(LN(2.0) / 2)
    assert m["chi2_token"] == _approx((4 + 1) / 2 - 1) and m["chi2_seq"] == _approx(4 - 1)


def test_corrected_ppo_loss_by_hand():
    """rho = pi_old / pi_rollout = 3, 0.5, 1; the new policy moves token 0 by 1.5 (clipped at 1.2 for A > 0)."""
    old = torch.tensor([[-1.0, -1.0, -1.0]])
    roll = old - torch.tensor([[LN(3.0), LN(0.5), 0.0]])
    new = old + torch.tensor([[LN(1.5), 0.0, 0.0]])
    adv, mask = torch.ones(1, 3), torch.ones(1, 3)
    cfg = RolloutCorrectionConfig(rollout_is="token", rollout_is_threshold=2.0)
    w, m2, metrics = rollout_correction(old, roll, mask, cfg)
    assert torch.equal(m2, mask) and metrics["rollout_corr/rollout_is_max"] == _approx(3.0)
    loss = clipped_policy_loss(old, new, adv, m2, rollout_is_weights=w)[0]
    assert float(loss) == _approx(-(1.2 * 2.0 + 1.0 * 0.5 + 1.0 * 1.0) / 3)  # -1.3
    # plus token rejection outside [0.4, 2.5]: token 0 (rho 3) leaves the loss and its normalizer
    cfg = RolloutCorrectionConfig(rollout_is="token", rollout_is_threshold=2.0, rollout_rs="token",
                                  rollout_rs_threshold=2.5, rollout_rs_threshold_lower=0.4)
    w, m2, _ = rollout_correction(old, roll, mask, cfg)
    loss, *_ = get_policy_loss("vanilla")(old_log_prob=old, log_prob=new, advantages=adv, response_mask=m2,
                                          rollout_is_weights=w)
    assert float(loss) == _approx(-(0.5 + 1.0) / 2)
    nll, _ = get_policy_loss("nll")(log_prob=old, advantages=adv, response_mask=mask, rollout_is_weights=w)
    assert float(nll) == _approx((2.0 + 0.5 + 1.0) / 3)  # -w * log_prob, token-mean


def test_off_by_default_diagnostics_only_and_settings_checked():
    cfg = RolloutCorrectionConfig()
    assert not correction_enabled(cfg) and rejection_bounds(cfg) == (0.5, 2.0)
    old, mask = torch.tensor([[-1.0, -2.0]]), torch.tensor([[1, 0]])
    w, m2, metrics = rollout_correction(old, old, mask, cfg)
    assert w is None and m2 is mask and metrics["rollout_corr/kl"] == 0.0 and metrics["rollout_corr/chi2_seq"] == 0.0
    assert not any("rollout_is_" in k or "rollout_rs_" in k for k in metrics)
    for bad, key in ((dict(rollout_is="geometric"), "rollout_is"), (dict(rollout_rs="seq"), "rollout_rs"),
                     (dict(rollout_is_threshold=0.0), "rollout_is_threshold"),
                     (dict(rollout_rs_threshold=1.0, rollout_rs_threshold_lower=2.0), "lower")):
        with pytest.raises(ValueError, match=key):
            check_correction(RolloutCorrectionConfig(**bad))
