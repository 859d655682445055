"""Small tensor helpers shared by the algorithm modules (torch only)."""

from __future__ import annotations

import math

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is non-zero (over everything, or along ``dim``)."""
    prod = values * mask.to(values.dtype)
    return prod.sum() if dim is None else prod.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is non-zero.

    An all-zero mask gives 0 (the denominator is clamped to 1), never NaN.
    """
    m = mask.to(values.dtype)
    denom = m.sum() if dim is None else m.sum(dim=dim)
    return masked_sum(values, m, dim) / denom.clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked positions (Bessel-corrected when ``unbiased`` and more than 1 element)."""
    n = mask.to(values.dtype).sum()
    if n.item() == 0:
        raise ValueError("masked_var: the mask selects no element")
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased and n.item() > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  eps: float = 1e-8) -> torch.Tensor:
    """(values - mean) / sqrt(var + eps) with mean and unbiased variance taken over the mask.

    With ``shift_mean=False`` the mean is added back (only the scale is normalized).
    """
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    return whitened if shift_mean else whitened + mean


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) along the last dim: logsumexp(z) - sum softmax(z) * z."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def self_certainty_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Self-certainty KL(U || softmax(z)) along the last dim (V entries): logsumexp(z) - mean(z) - ln V
    (= -ln V - (1/V) sum_j ln softmax(z)_j; 0 for a uniform distribution, larger when more peaked)."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - logits.mean(dim=-1) - math.log(logits.shape[-1])
