"""Start-up check of the reward composition: terms that the advantage estimator cancels.

A reward term that is the same for every sample of a prompt (TTRV's published entropy term
``-alpha * H_g``) is removed exactly by an advantage that is centered per prompt group (GRPO,
Dr.GRPO, ``grpo_batch``): as configured it cannot change training.  Both facts are probed
numerically, not looked up: the term on a few synthetic vote groups, the estimator on scores with
per-group constants added (an estimator whose advantages only change by a common positive factor
still cancels the term's direction).  Custom reward functions are not probed.
"""

from __future__ import annotations

import numpy as np
import torch

from verl.algos.advantage import get_adv_estimator
from verl.config.schema import AlgorithmConfig, RewardConfig
from verl.rewards.answers import INVALID
from verl.rewards.voting import ENTROPY_FORMS, entropy_rewards

_PROBE_GROUPS = (["1", "1", "2", "3"], ["4", "4", "4", "5"], ["6", "7", INVALID, "6"], ["8", "8", "8", "8"])
_SURVIVING_FORMS = [f for f in ENTROPY_FORMS if f == "per_sample"]


def cancels_group_constants(algorithm: AlgorithmConfig) -> bool:
    """True when adding a different constant to each group's scores leaves the advantages unchanged
    (or changes them only by one common positive factor)."""
    fn = get_adv_estimator(algorithm.adv_estimator)
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(12, generator=gen, dtype=torch.float64)
    ids = np.repeat(np.arange(3), 4)
    shifted = scores + torch.as_tensor([0.3, -1.1, 2.0], dtype=torch.float64)[ids]
    kw = {"norm_adv_by_std": algorithm.norm_adv_by_std_in_grpo, "epsilon": algorithm.epsilon}
    a, b = fn(scores, ids, None, **kw)[0], fn(shifted, ids, None, **kw)[0]
    scale = float(b.norm() / a.norm()) if float(a.norm()) > 0 else 1.0
    return bool(torch.allclose(b, scale * a, atol=1e-6))


def constant_terms(reward: RewardConfig) -> list[str]:
    """Names of the configured reward terms (non-zero weight) that are constant within every group."""
    if reward.custom_reward_function or reward.entropy_coef == 0:
        return []
    r2 = [entropy_rewards(g, reward.entropy_form, reward.invalid_votes) for g in _PROBE_GROUPS]
    if all(np.allclose(x, x[0]) for x in r2):
        return [f"entropy term (reward.entropy_coef={reward.entropy_coef}, reward.entropy_form={reward.entropy_form})"]
    return []


def reward_composition_warnings(reward: RewardConfig, algorithm: AlgorithmConfig) -> list[str]:
    """One warning line per configured reward term that the advantage estimator cancels ([] if none)."""
    terms = constant_terms(reward)
    if not terms or not cancels_group_constants(algorithm):
        return []
    return [
        f"{term} is constant within every prompt group and algorithm.adv_estimator={algorithm.adv_estimator} "
        f"normalizes per group, so it cannot change training; use reward.entropy_form="
        f"{'|'.join(_SURVIVING_FORMS)} (per-sample term) or algorithm.adv_estimator=batch_norm (batch-wide "
        f"centering) for a term that does"
        for term in terms
    ]
