"""Controls that work with any estimator, set in ``algorithm.method_kwargs`` (typed here, checked at start-up).

- **Consensus gate** (EMPO's prompt filter): only prompts whose majority ratio (fraction of ALL votes that
  give the majority answer) lies in ``[gate_min, gate_max]`` train; the others get advantage weight 0 (their
  rows skip the update: ``actor.skip_zero_adv_groups``). Metric ``train/gated_frac``: fraction left out.
- **Soft down-weight** (RESTRAIN's prompt-level form): every prompt's advantages are multiplied by
  ``sigmoid((majority_ratio - soft_kappa) / soft_tau)``, so low-consistency prompts count less; ``soft_kappa``
  None = off. Metric ``train/advantage_weight``: the mean weight of the prompts.
- **KL anchor** to the base: ``actor_rollout_ref.actor.use_kl_loss`` / ``kl_loss_coef`` (the trainer's).
- **Stopping rule**: the collapse guard (``trainer.guard``, verl/trainer/guards.py) watches the same vote
  statistics; ``trainer.guard.max_majority_ratio=<t> trainer.guard.action=stop|rollback`` ends (or rolls back)
  a run whose window majority ratio crosses ``t``.
Weights multiply the advantages after the advantage estimator, so they act the same under every estimator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from recipes.ttrv.voting import VoteGroup


@dataclass(frozen=True)
class Controls:
    gate_min: float = 0.0  # train only prompts with majority ratio >= gate_min ...
    gate_max: float = 1.0  # ... and <= gate_max (0, 1: no gate)
    soft_kappa: float | None = None  # RESTRAIN-style weight sigmoid((m - kappa) / tau); None = off
    soft_tau: float = 0.1

    @property
    def active(self) -> bool:
        return self.gate_min > 0.0 or self.gate_max < 1.0 or self.soft_kappa is not None


def controls_from(method_kwargs: Mapping[str, Any]) -> Controls:
    """``algorithm.method_kwargs`` as :class:`Controls`; ValueError naming an unknown key or a bad value."""
    known = [f.name for f in fields(Controls)]
    for key in method_kwargs:
        if key not in known:
            raise ValueError(f"algorithm.method_kwargs.{key} is not a TTRV control (known: {known})")
    c = Controls(**{k: (None if v is None else float(v)) for k, v in method_kwargs.items()})
    if not 0.0 <= c.gate_min <= c.gate_max <= 1.0:
        raise ValueError(f"algorithm.method_kwargs: need 0 <= gate_min <= gate_max <= 1, got {c.gate_min}, {c.gate_max}")
    if c.soft_tau <= 0:
        raise ValueError(f"algorithm.method_kwargs.soft_tau must be > 0, got {c.soft_tau}")
    return c


def prompt_weights(groups: Sequence[VoteGroup], c: Controls) -> list[float]:
    """One advantage weight per prompt: 0 outside the gate, else the soft weight (1 without one)."""
    out = []
    for g in groups:
        m = g.majority_ratio
        if not c.gate_min <= m <= c.gate_max:
            out.append(0.0)
        elif c.soft_kappa is not None:
            out.append(1.0 / (1.0 + math.exp(-(m - c.soft_kappa) / c.soft_tau)))
        else:
            out.append(1.0)
    return out


def row_weights(n_rows: int, groups: Sequence[VoteGroup], weights: Sequence[float]) -> np.ndarray:
    out = np.ones(n_rows, dtype=np.float64)
    for g, w in zip(groups, weights):
        out[g.rows] = w
    return out
