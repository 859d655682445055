"""Hand-computed checks of the KL estimators."""

import math

import pytest
import torch

from verl.algos.kl import KL_PENALTIES, kl_penalty


def test_kinds():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    # d = logp - ref = [0.5, -1.0, 0.0]
    d = torch.tensor([0.5, -1.0, 0.0])
    for k in ("k1", "kl"):
        torch.testing.assert_close(kl_penalty(logp, ref, k), d)
    torch.testing.assert_close(kl_penalty(logp, ref, "abs"), torch.tensor([0.5, 1.0, 0.0]))
    for k in ("k2", "mse"):  # 0.5 d^2
        torch.testing.assert_close(kl_penalty(logp, ref, k), torch.tensor([0.125, 0.5, 0.0]))
    # k3: log r = ref - logp = [-0.5, 1.0, 0]; (e^lr - 1) - lr
    #   = [e^-0.5 - 1 + 0.5, e - 1 - 1, 0] = [0.106531, 0.718282, 0]
    expected = torch.tensor([math.exp(-0.5) - 0.5, math.e - 2.0, 0.0])
    for k in ("k3", "low_var_kl"):
        torch.testing.assert_close(kl_penalty(logp, ref, k), expected)


def test_k3_clamped():
    # log r = 30 -> clamped to 20 -> e^20 - 21 huge -> clamped to 10
    out = kl_penalty(torch.tensor([-30.0]), torch.tensor([0.0]), "low_var_kl")
    assert out.item() == 10.0
    assert (kl_penalty(torch.randn(50), torch.randn(50), "k3") >= 0).all()


def test_unknown_and_shape():
    assert {"k1", "kl", "abs", "mse", "k2", "low_var_kl", "k3"} <= set(KL_PENALTIES)
    with pytest.raises(KeyError, match="known: .*low_var_kl"):
        kl_penalty(torch.zeros(2), torch.zeros(2), "full")
    with pytest.raises(ValueError, match="differ"):
        kl_penalty(torch.zeros(2), torch.zeros(3), "k1")
