"""Policy losses (PPO clip with dual-clip, reward-weighted NLL) and loss aggregation (pure torch).

Registry ``POLICY_LOSSES``: every entry is called with keyword arguments
``old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, rollout_is_weights`` (+ loss-specific
options) and returns ``(loss, metrics)`` where ``metrics`` is a dict of scalar tensors.
``rollout_is_weights`` (``[B, T]`` or None): the rollout-correction importance weights
(:mod:`verl.algos.rollout_correction`), multiplying each token's loss before aggregation (verl's rule).

- ``vanilla``: :func:`clipped_policy_loss` (metrics pg_clipfrac, ppo_kl, pg_clipfrac_lower).
- ``nll`` / ``sft``: :func:`weighted_nll_loss` with the advantages used as per-sample weights
  (SOPHIA: reward-weighted maximum likelihood; with R in {0, 1} and only R = 1 kept it is plain
  maximum likelihood on the filtered trajectories; no ratio, no clipping).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from verl.algos.utils import masked_mean
from verl.utils.registry import lookup, registrar

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-sum", "seq-mean-token-sum-norm")


def agg_loss(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean") -> torch.Tensor:
    """Aggregate a ``[B, T]`` token-loss matrix into a scalar.

    - ``token-mean``: sum over all valid tokens / number of valid tokens (every token weighs the
      same; long answers weigh more). verl / TTRV default.
    - ``seq-mean-token-sum``: per-sequence sum of token losses, then mean over sequences.
    - ``seq-mean-token-mean``: per-sequence token mean, then mean over sequences (every sequence
      weighs the same, whatever its length; original GRPO).
    - ``seq-sum``: total sum of all valid token losses (no normalization; the caller owns the scale).
    - ``seq-mean-token-sum-norm``: per-sequence token sum divided by the constant T (= mask width),
      then mean over sequences (Dr.GRPO's length-unbiased form).
    Empty sequences contribute 0; an all-empty batch gives 0 (never NaN).
    """
    if loss_mat.shape != mask.shape:
        raise ValueError(f"agg_loss: loss_mat {tuple(loss_mat.shape)} and mask {tuple(mask.shape)} differ")
    m = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return masked_mean(loss_mat, m)
    seq_sum = (loss_mat * m).sum(dim=-1)
    if mode == "seq-mean-token-sum":
        return seq_sum.mean()
    if mode == "seq-mean-token-mean":
        return (seq_sum / m.sum(dim=-1).clamp(min=1.0)).mean()
    if mode == "seq-sum":
        return seq_sum.sum()
    if mode == "seq-mean-token-sum-norm":
        return (seq_sum / loss_mat.shape[-1]).mean()
    raise ValueError(f"unknown loss_agg_mode {mode!r}; known: {list(AGG_MODES)}")


def clipped_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate with dual-clip for negative advantages.

    ratio = exp(logp - old_logp) (log-ratio clamped to [-20, 20]);
    L1 = -A * ratio, L2 = -A * clip(ratio, 1 - low, 1 + high), L = max(L1, L2);
    for A < 0 additionally L = min(L, -A * clip_ratio_c) (dual clip bounds the loss when the ratio
    explodes on a negative-advantage token); then L *= rollout_is_weights when given.

    Returns ``(pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower)``: clipfrac is the fraction of valid
    tokens where L2 > L1, ppo_kl = masked mean of (old_logp - logp), clipfrac_lower the fraction
    where the dual clip was active.
    """
    if clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be > 1.0 for dual-clip PPO, got {clip_ratio_c}")
    log_ratio = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(log_ratio)
    ppo_kl = masked_mean(-log_ratio, response_mask)

    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    loss_ppo = torch.maximum(loss_unclipped, loss_clipped)
    pg_clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), response_mask)

    loss_dual_bound = -advantages * clip_ratio_c
    negative = advantages < 0
    loss_dual = torch.minimum(loss_ppo, loss_dual_bound)
    pg_clipfrac_lower = masked_mean(((loss_ppo > loss_dual_bound) & negative).float(), response_mask)

    token_losses = torch.where(negative, loss_dual, loss_ppo)
    if rollout_is_weights is not None:
        token_losses = token_losses * rollout_is_weights.detach()
    pg_loss = agg_loss(token_losses, response_mask, loss_agg_mode)
    return pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower


def weighted_nll_loss(log_prob: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor,
                      mode: str = "token-mean", rollout_is_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Reward-weighted negative log-likelihood: agg(-w * log_prob).

    ``weights`` is ``[B]`` (one reward per sequence, broadcast over tokens) or ``[B, T]``.
    """
    if weights.dim() == 1:
        weights = weights.unsqueeze(-1)
    if rollout_is_weights is not None:
        weights = weights * rollout_is_weights.detach()
    return agg_loss(-weights.to(log_prob.dtype) * log_prob, mask, mode)


LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
POLICY_LOSSES: dict[str, LossFn] = {}


register_policy_loss = registrar(POLICY_LOSSES, "policy loss")  # decorator: @register_policy_loss(*names)


def get_policy_loss(name: str) -> LossFn:
    """Look up a policy loss; an unknown name raises KeyError listing the known ones."""
    return lookup(POLICY_LOSSES, "policy loss", name)


@register_policy_loss("vanilla")
def _vanilla(*, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
             response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", clip_ratio_low: float = 0.2,
             clip_ratio_high: float = 0.2, clip_ratio_c: float = 3.0, rollout_is_weights: torch.Tensor | None = None,
             **_: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss, clipfrac, kl, clipfrac_lower = clipped_policy_loss(
        old_log_prob, log_prob, advantages, response_mask, clip_ratio_low, clip_ratio_high,
        clip_ratio_c, loss_agg_mode, rollout_is_weights)
    return loss, {"pg_clipfrac": clipfrac, "ppo_kl": kl, "pg_clipfrac_lower": clipfrac_lower}


@register_policy_loss("nll", "sft")
def _nll(*, log_prob: torch.Tensor, advantages: torch.Tensor, response_mask: torch.Tensor,
         loss_agg_mode: str = "token-mean", old_log_prob: torch.Tensor | None = None,
         rollout_is_weights: torch.Tensor | None = None, **_: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = weighted_nll_loss(log_prob, advantages, response_mask, loss_agg_mode, rollout_is_weights)
    zero = torch.zeros((), dtype=log_prob.dtype)
    return loss, {"pg_clipfrac": zero, "ppo_kl": zero, "pg_clipfrac_lower": zero}
