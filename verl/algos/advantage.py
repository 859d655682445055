"""Outcome-reward advantage estimators (pure torch) behind a small registry.

Every estimator has the signature::

    fn(scores: Tensor[B], group_ids: Sequence | np.ndarray, response_mask: Tensor[B, T] | None, **kw)
        -> (advantages, returns)

``scores`` holds one scalar reward per response, ``group_ids`` the uid of the prompt each response
belongs to (any hashable values: str, int).  With a ``response_mask`` both outputs are ``[B, T]``
(the per-sequence advantage broadcast over the response tokens, 0 on padding); without one they
are ``[B]``.  ``returns`` equals ``advantages`` (outcome supervision, no critic).

Estimators
----------
``grpo``        (s - mean_g) / (std_g + eps), per prompt group g; ``norm_adv_by_std=False`` gives
                Dr.GRPO (s - mean_g), also registered as ``drgrpo``.
``grpo_batch``  (s - mean_g) / (std_batch + eps): per-group centering, batch-wide scale (std of
                the raw scores over the whole batch).  NOTE: a reward term that is constant within
                a group (e.g. TTRV's published entropy term -alpha*H_g) is still cancelled exactly
                by the per-group mean subtraction; it only changes the common scale.
``batch_norm``  (s - mean_batch) / (std_batch + eps): no per-group centering, so a per-group
                constant term survives: groups with lower answer entropy get higher advantages.

Standard deviations use torch.std(unbiased=True) like verl.  A group of size 1 uses mean 0 and
std 1 (its advantage is its raw score, divided by 1 + eps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from verl.utils.registry import lookup, registrar

AdvFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
ADV_ESTIMATORS: dict[str, AdvFn] = {}


register_adv_estimator = registrar(ADV_ESTIMATORS, "advantage estimator")  # decorator: @register_adv_estimator(name)


def get_adv_estimator(name: str) -> AdvFn:
    """Look up an estimator; an unknown name raises KeyError listing the known ones."""
    return lookup(ADV_ESTIMATORS, "advantage estimator", name)


def _check(scores: torch.Tensor, group_ids: Sequence | np.ndarray,
           response_mask: torch.Tensor | None) -> list:
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D [B], got shape {tuple(scores.shape)}")
    ids = list(np.asarray(group_ids, dtype=object).reshape(-1))
    if len(ids) != scores.shape[0]:
        raise ValueError(f"group_ids has {len(ids)} entries but scores has {scores.shape[0]}")
    if response_mask is not None and (response_mask.dim() != 2 or response_mask.shape[0] != scores.shape[0]):
        raise ValueError(f"response_mask must be [B, T] with B={scores.shape[0]}, "
                         f"got {tuple(response_mask.shape)}")
    return ids


def _group_stats(scores: torch.Tensor, ids: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and unbiased std of its group (size-1 groups: mean 0, std 1)."""
    members: dict = {}
    for i, g in enumerate(ids):
        members.setdefault(g, []).append(i)
    mean = torch.zeros_like(scores)
    std = torch.ones_like(scores)
    for idx in members.values():
        if len(idx) > 1:
            t = torch.as_tensor(idx)
            mean[t] = scores[t].mean()
            std[t] = scores[t].std(unbiased=True)
    return mean, std


def _as_float(scores: torch.Tensor) -> torch.Tensor:
    """float64 stays float64 (exact cancellation tests); everything else is computed in float32."""
    return scores if scores.dtype == torch.float64 else scores.float()


def _batch_std(scores: torch.Tensor) -> torch.Tensor:
    return scores.std(unbiased=True) if scores.numel() > 1 else torch.ones((), dtype=scores.dtype)


def _broadcast(adv: torch.Tensor, response_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if response_mask is not None:
        adv = adv.unsqueeze(-1) * response_mask.to(adv.dtype)
    return adv, adv


@register_adv_estimator("grpo")
def grpo_advantage(scores: torch.Tensor, group_ids: Sequence | np.ndarray,
                   response_mask: torch.Tensor | None = None, *, epsilon: float = 1e-6,
                   norm_adv_by_std: bool = True, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO: (s - mean_g) / (std_g + eps); Dr.GRPO (mean subtraction only) when not norm_adv_by_std."""
    ids = _check(scores, group_ids, response_mask)
    s = _as_float(scores)
    mean, std = _group_stats(s, ids)
    adv = (s - mean) / (std + epsilon) if norm_adv_by_std else s - mean
    return _broadcast(adv, response_mask)


@register_adv_estimator("drgrpo")
def drgrpo_advantage(scores: torch.Tensor, group_ids: Sequence | np.ndarray,
                     response_mask: torch.Tensor | None = None, **kw: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Dr.GRPO: s - mean_g (no std normalization)."""
    kw.pop("norm_adv_by_std", None)
    return grpo_advantage(scores, group_ids, response_mask, norm_adv_by_std=False, **kw)


@register_adv_estimator("grpo_batch")
def grpo_batch_advantage(scores: torch.Tensor, group_ids: Sequence | np.ndarray,
                         response_mask: torch.Tensor | None = None, *, epsilon: float = 1e-6,
                         **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(s - mean_g) / (std over the whole batch + eps). Per-group constants are still cancelled."""
    ids = _check(scores, group_ids, response_mask)
    s = _as_float(scores)
    mean, _std = _group_stats(s, ids)
    adv = (s - mean) / (_batch_std(s) + epsilon)
    return _broadcast(adv, response_mask)


@register_adv_estimator("batch_norm")
def batch_norm_advantage(scores: torch.Tensor, group_ids: Sequence | np.ndarray,
                         response_mask: torch.Tensor | None = None, *, epsilon: float = 1e-6,
                         **_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(s - mean_batch) / (std_batch + eps); a per-group constant term survives (group ids unused)."""
    _check(scores, group_ids, response_mask)
    s = _as_float(scores)
    mean = s.mean() if s.numel() > 1 else torch.zeros((), dtype=s.dtype)
    adv = (s - mean) / (_batch_std(s) + epsilon)
    return _broadcast(adv, response_mask)
