"""Start-up check of the reward composition: terms of the chosen estimator that the advantage cancels.

Each estimator declares its terms that are constant within every prompt group (``constant_terms`` of its
registration, :mod:`recipes.ttrv.estimators`); TTRV's published entropy term ``-alpha * H_g`` is one, probed
numerically on a few synthetic vote groups. Whether the configured advantage estimator removes such terms is
probed by :func:`verl.trainer.reward_check.cancels_group_constants`. Custom reward functions are not probed.
"""

from __future__ import annotations

import numpy as np

from recipes.ttrv.estimators import Estimator
from recipes.ttrv.voting import ENTROPY_FORMS, PROBE_GROUPS, entropy_rewards
from verl.config.schema import AlgorithmConfig
from verl.trainer.reward_check import cancels_group_constants

_SURVIVING_FORMS = [f for f in ENTROPY_FORMS if not all(
    np.allclose(x, x[0]) for x in (entropy_rewards(g, f) for g in PROBE_GROUPS))]


def reward_composition_warnings(estimator: Estimator, algorithm: AlgorithmConfig) -> list[str]:
    """One warning line per term of ``estimator`` that the advantage estimator cancels ([] if none)."""
    terms = estimator.constant_terms()
    if not terms or not cancels_group_constants(algorithm):
        return []
    return [
        f"{term} of reward {estimator.name!r} is constant within every prompt group and algorithm.adv_estimator="
        f"{algorithm.adv_estimator} normalizes per group, so it cannot change training; use "
        f"reward.kwargs.entropy_form={'|'.join(_SURVIVING_FORMS)} (per-sample term) or "
        f"algorithm.adv_estimator=batch_norm (batch-wide centering) for a term that does"
        for term in terms
    ]
