"""Rollout correction (verl's ``algorithm.rollout_correction``): the rollout engine samples with its own kernels
and precision, so the actor's old log-probs differ from the rollout's; these pure functions correct the
policy gradient by the ratio ``rho = pi_old / pi_rollout`` of each sampled token.

- Importance sampling (``rollout_is``): truncated weights ``min(rho, rollout_is_threshold)`` that multiply
  each token's policy loss. ``token``: one ``rho`` per token; ``sequence``: the product over the sequence,
  one weight for all its tokens.
- Rejection sampling (``rollout_rs``): tokens or sequences whose ratio lies outside
  ``[rollout_rs_threshold_lower, rollout_rs_threshold]`` leave the response mask (the loss and its
  normalizer). ``token``: per token; ``sequence``: the product; ``geometric``: the geometric mean
  ``exp(mean log rho)`` of the sequence.

Log-ratios are clamped to ``[-20, 20]`` before ``exp`` (verl's safety bound). Metrics carry verl's names
under ``rollout_corr/``: off-policy diagnostics always, ``rollout_is_*`` / ``rollout_rs_*`` when enabled.
Weights and masks are computed once per step on the driver from the old log-probs (no gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from verl.utils.registry import lookup, registrar

if TYPE_CHECKING:
    from verl.config.schema import RolloutCorrectionConfig

SAFETY_BOUND = 20.0
PREFIX = "rollout_corr/"

# level -> [B, T] log-ratio of the unit each token belongs to (the token itself, or its whole sequence)
LevelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LEVELS: dict[str, LevelFn] = {}
register_level = registrar(LEVELS, "rollout correction level")
IS_LEVELS = ("token", "sequence")
RS_LEVELS = ("token", "sequence", "geometric")


@register_level("token")
def _token(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return log_ratio


@register_level("sequence")
def _sequence(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (log_ratio * mask).sum(-1, keepdim=True).expand_as(log_ratio)


@register_level("geometric")
def _geometric(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
    return mean.expand_as(log_ratio)


def correction_enabled(cfg: RolloutCorrectionConfig) -> bool:
    """Whether ``cfg`` asks for weights or rejection (the trainer then computes old log-probs separately)."""
    return cfg.rollout_is is not None or cfg.rollout_rs is not None


def rejection_bounds(cfg: RolloutCorrectionConfig) -> tuple[float, float]:
    """``(lower, upper)``: upper = ``rollout_rs_threshold`` (null: ``rollout_is_threshold``), lower =
    ``rollout_rs_threshold_lower`` (null: ``1 / upper``)."""
    upper = cfg.rollout_is_threshold if cfg.rollout_rs_threshold is None else cfg.rollout_rs_threshold
    return (1.0 / upper if cfg.rollout_rs_threshold_lower is None else cfg.rollout_rs_threshold_lower), upper


def check_correction(cfg: RolloutCorrectionConfig) -> None:
    """ValueError naming the key when a level or a threshold is not allowed."""
    key = "algorithm.rollout_correction"
    if cfg.rollout_is is not None and cfg.rollout_is not in IS_LEVELS:
        raise ValueError(f"{key}.rollout_is={cfg.rollout_is!r}: choose one of {[None, *IS_LEVELS]}")
    if cfg.rollout_rs is not None and cfg.rollout_rs not in RS_LEVELS:
        raise ValueError(f"{key}.rollout_rs={cfg.rollout_rs!r}: choose one of {[None, *RS_LEVELS]}")
    if cfg.rollout_is_threshold <= 0:
        raise ValueError(f"{key}.rollout_is_threshold must be > 0, got {cfg.rollout_is_threshold}")
    lower, upper = rejection_bounds(cfg)
    if not 0 <= lower < upper:
        raise ValueError(f"{key}: the rejection bounds must satisfy 0 <= rollout_rs_threshold_lower < "
                         f"rollout_rs_threshold, got [{lower}, {upper}]")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp(min=1.0))


def _units(level: str, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The values of the level's units: each valid token, or each non-empty sequence (its first column)."""
    if level == "token":
        return values[mask.bool()]
    return values[:, 0][mask.sum(-1) > 0]


def off_policy_metrics(old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor,
                       mask: torch.Tensor) -> dict[str, float]:
    """verl's diagnostics of the rollout / actor gap (no prefix): ``kl`` = E[log pi_rollout - log pi_old],
    ``k3_kl`` = E[rho - log rho - 1], per-sequence log-perplexities (``training_log_ppl``, ``rollout_log_ppl``,
    ``log_ppl_abs_diff``), ``chi2_token`` = E_token[rho^2] - 1, ``chi2_seq`` = E_seq[(prod rho)^2] - 1."""
    m = mask.to(old_log_prob.dtype)
    log_ratio = old_log_prob - rollout_log_prob
    rho = torch.exp(log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND))
    rows = m.sum(-1) > 0
    n_tok = m.sum(-1).clamp(min=1.0)
    train_lp, roll_lp = (old_log_prob * m).sum(-1) / n_tok, (rollout_log_prob * m).sum(-1) / n_tok
    seq_log_ratio = (log_ratio * m).sum(-1).clamp(-SAFETY_BOUND, SAFETY_BOUND)
    return {
        "kl": _masked_mean(-log_ratio, m),
        "k3_kl": _masked_mean(rho - log_ratio - 1, m),
        "training_log_ppl": float((-train_lp)[rows].mean()),
        "rollout_log_ppl": float((-roll_lp)[rows].mean()),
        "log_ppl_abs_diff": float((roll_lp - train_lp)[rows].abs().mean()),
        "chi2_token": _masked_mean(rho.square(), m) - 1.0,
        "chi2_seq": float(torch.exp(2 * seq_log_ratio)[rows].mean()) - 1.0,
    }


def importance_weights(log_ratio: torch.Tensor, mask: torch.Tensor, level: str,
                       threshold: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated IS weights ``min(exp(level log-ratio), threshold)`` ``[B, T]`` (0 on padding), and metrics
    of the untruncated ratios per unit: mean / max / min, fractions above ``threshold`` and below
    ``1 / threshold``, and the effective sample size ``1 / E[(w / E[w])^2]`` of the truncated weights."""
    m = mask.to(log_ratio.dtype)
    ratio = torch.exp(lookup(LEVELS, "rollout correction level", level)(log_ratio, m)
                      .clamp(-SAFETY_BOUND, SAFETY_BOUND))
    weights = ratio.clamp(max=threshold) * m
    units, kept = _units(level, ratio, m), _units(level, weights, m)
    if units.numel() == 0:
        return weights, {}
    normed = kept / kept.mean().clamp(min=1e-8)
    return weights, {
        "rollout_is_mean": float(units.mean()), "rollout_is_max": float(units.max()),
        "rollout_is_min": float(units.min()),
        "rollout_is_ratio_fraction_high": float((units > threshold).float().mean()),
        "rollout_is_ratio_fraction_low": float((units < 1.0 / threshold).float().mean()),
        "rollout_is_eff_sample_size": float(1.0 / normed.square().mean()),
    }


def rejection_mask(log_ratio: torch.Tensor, mask: torch.Tensor, level: str, lower: float,
                   upper: float) -> tuple[torch.Tensor, dict[str, float]]:
    """``mask`` with the tokens (``token``) or whole sequences (``sequence``, ``geometric``) whose ratio is
    outside ``[lower, upper]`` set to 0, and the fractions of tokens / sequences masked and of units above
    and below the bounds."""
    m = mask.to(log_ratio.dtype)
    ratio = torch.exp(lookup(LEVELS, "rollout correction level", level)(log_ratio, m)
                      .clamp(-SAFETY_BOUND, SAFETY_BOUND))
    keep = ((ratio >= lower) & (ratio <= upper)).to(m.dtype)
    new_mask = (m * keep).to(mask.dtype)
    units = _units(level, ratio, m)
    rows = m.sum(-1) > 0
    if units.numel() == 0:
        return new_mask, {}
    rejected_rows = ((m * (1 - keep)).sum(-1) > 0)[rows]
    return new_mask, {
        "rollout_rs_masked_fraction": _masked_mean(1 - keep, m),
        "rollout_rs_seq_masked_fraction": float(rejected_rows.float().mean()),
        "rollout_rs_ratio_fraction_high": float((units > upper).float().mean()),
        "rollout_rs_ratio_fraction_low": float((units < lower).float().mean()),
    }


def rollout_correction(old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor, response_mask: torch.Tensor,
                       cfg: RolloutCorrectionConfig) -> tuple[torch.Tensor | None, torch.Tensor, dict[str, float]]:
    """``(IS weights or None, response mask after rejection, metrics under rollout_corr/)`` of ``[B, T]``
    old (actor) and rollout log-probs; with ``cfg`` off: ``(None, response_mask, diagnostics)``."""
    if not (old_log_prob.shape == rollout_log_prob.shape == response_mask.shape):
        raise ValueError(f"rollout_correction: old {tuple(old_log_prob.shape)}, rollout "
                         f"{tuple(rollout_log_prob.shape)} and mask {tuple(response_mask.shape)} differ")
    old, roll = old_log_prob.float(), rollout_log_prob.float()
    log_ratio = (old - roll) * response_mask
    metrics = off_policy_metrics(old, roll, response_mask) if response_mask.any() else {}
    weights, mask = None, response_mask
    if cfg.rollout_is is not None:
        weights, is_metrics = importance_weights(log_ratio, response_mask, cfg.rollout_is, cfg.rollout_is_threshold)
        metrics.update(is_metrics)
    if cfg.rollout_rs is not None:
        mask, rs_metrics = rejection_mask(log_ratio, response_mask, cfg.rollout_rs, *rejection_bounds(cfg))
        metrics.update(rs_metrics)
    return weights, mask, {PREFIX + k: v for k, v in metrics.items()}
