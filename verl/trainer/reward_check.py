"""Does an advantage estimator cancel reward terms that are constant within a prompt group? (probed numerically)

A reward term that is the same for every sample of a prompt is removed exactly by an advantage that is
centered per prompt group (GRPO, Dr.GRPO, ``grpo_batch``): as configured it cannot change training. A method
that knows which of its terms are constant per group (recipes/ttrv/reward_check.py) asks
:func:`cancels_group_constants` whether the configured estimator removes them.
"""

from __future__ import annotations

import numpy as np
import torch

from verl.algos.advantage import get_adv_estimator
from verl.config.schema import AlgorithmConfig


def cancels_group_constants(algorithm: AlgorithmConfig) -> bool:
    """True when adding a different constant to each group's scores leaves the advantages unchanged
    (or changes them only by one common positive factor: the term's direction is still cancelled)."""
    fn = get_adv_estimator(algorithm.adv_estimator)
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(12, generator=gen, dtype=torch.float64)
    ids = np.repeat(np.arange(3), 4)
    shifted = scores + torch.as_tensor([0.3, -1.1, 2.0], dtype=torch.float64)[ids]
    kw = {"norm_adv_by_std": algorithm.norm_adv_by_std_in_grpo, "epsilon": algorithm.epsilon}
    a, b = fn(scores, ids, None, **kw)[0], fn(shifted, ids, None, **kw)[0]
    scale = float(b.norm() / a.norm()) if float(a.norm()) > 0 else 1.0
    return bool(torch.allclose(b, scale * a, atol=1e-6))
