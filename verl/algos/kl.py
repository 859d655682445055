"""Per-token KL estimators between the policy and the reference (pure torch), behind a registry.

With d = log_prob - ref_log_prob (samples drawn from the policy):

- ``k1`` / ``kl``:  d                              (unbiased, high variance, can be negative)
- ``abs``:          |d|
- ``k2`` / ``mse``: 0.5 * d^2
- ``k3`` / ``low_var_kl``: (r - 1) - log r with r = exp(ref - logp) = exp(-d)   (unbiased, >= 0,
  low variance; Schulman's k3).  Like verl, log r is clamped to [-20, 20] before exp and the
  result to [-10, 10].  TTRV uses it as a loss (coefficient 0.001).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from verl.utils.registry import lookup, registrar

KLFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KL_PENALTIES: dict[str, KLFn] = {}


register_kl = registrar(KL_PENALTIES, "KL estimator")  # decorator: @register_kl(*names)


@register_kl("k1", "kl")
def _k1(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    return log_prob - ref_log_prob


@register_kl("abs")
def _abs(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    return (log_prob - ref_log_prob).abs()


@register_kl("k2", "mse")
def _k2(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    return 0.5 * (log_prob - ref_log_prob).square()


@register_kl("k3", "low_var_kl")
def _k3(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    log_r = torch.clamp(ref_log_prob - log_prob, min=-20.0, max=20.0)
    return torch.clamp(torch.exp(log_r) - 1.0 - log_r, min=-10.0, max=10.0)


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str = "low_var_kl") -> torch.Tensor:
    """Element-wise KL estimate of the given ``kind``; an unknown kind raises KeyError listing the known."""
    if log_prob.shape != ref_log_prob.shape:
        raise ValueError(f"kl_penalty: log_prob {tuple(log_prob.shape)} and ref_log_prob "
                         f"{tuple(ref_log_prob.shape)} differ")
    return lookup(KL_PENALTIES, "KL penalty", kind)(log_prob, ref_log_prob)
