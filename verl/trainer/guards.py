"""Label-free collapse guards: watch the adaptation rollouts and say when the model is collapsing.

Per training step the guard records, from the method's label-free statistics of each prompt's samples
(:class:`GroupStats`, returned by the method's ``score``; the same numbers the method itself uses): the
majority answer of every item, the invalid-answer ratio, the majority ratio and the mean response length.  Over
the last ``window`` steps it computes

- ``guard/item_answer_entropy``: entropy (nats) of the majority answers ACROSS the window's items
  (a model that answers every item the same way, or with nothing, has ~0);
- ``guard/invalid_ratio``, ``guard/majority_ratio``, ``guard/response_length``: window means;

and compares them with the base, the first step's rollouts (the model before any update).  It
trips, naming each reason, when

- the invalid ratio is above ``max_invalid_ratio`` and above the base's (rising past it);
- the item entropy is below ``min_entropy_ratio`` x the base's while the base's was above
  ``min_base_entropy`` (it was not collapsed at the base);
- optionally the majority ratio is above ``max_majority_ratio``, or the response length leaves
  ``[min_length_ratio, max_length_ratio]`` x the base's (``None`` = not checked).

The trainer acts on a trip as ``trainer.guard.action`` says: ``warn`` (log and go on), ``stop``
(end training) or ``rollback`` (restore the newest checkpoint saved while the guard passed and at least
``window`` steps before the trip, then end training).  Pure Python; the state round-trips through ``state_dict`` for exact resume.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

from verl.config.schema import GuardConfig

GUARD_ACTIONS = ("warn", "stop", "rollback")


@dataclass(frozen=True)
class GroupStats:
    """Label-free statistics of one prompt's sampled answers (computed by the method, once per step)."""

    majority: str  # the most frequent valid answer (INVALID when none is valid)
    majority_ratio: float  # fraction of the samples that give it (0 when there is none)
    invalid_ratio: float  # fraction of unparseable samples


@dataclass
class StepStats:
    """What one training step's rollouts show (label-free)."""

    majorities: list[str]
    invalid_ratio: float
    majority_ratio: float
    response_length: float


def step_stats(groups: Sequence[GroupStats], response_length: float) -> StepStats:
    """Stats of one step from the method's per-prompt statistics."""
    return StepStats(majorities=[str(g.majority) for g in groups], invalid_ratio=_mean([g.invalid_ratio for g in groups]),
                     majority_ratio=_mean([g.majority_ratio for g in groups]), response_length=float(response_length))


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def item_entropy(answers: Sequence[str]) -> float:
    """Entropy (nats) of the answers across items; INVALID counts as one more answer."""
    counts = Counter(answers)
    n = sum(counts.values())
    return 0.0 - sum(c / n * math.log(c / n) for c in counts.values()) if n else 0.0


def _summary(steps: Sequence[StepStats]) -> dict[str, float]:
    return {
        "item_answer_entropy": item_entropy([a for s in steps for a in s.majorities]),
        "invalid_ratio": _mean([s.invalid_ratio for s in steps]),
        "majority_ratio": _mean([s.majority_ratio for s in steps]),
        "response_length": _mean([s.response_length for s in steps]),
    }


class CollapseGuard:
    """Sliding-window collapse detector (module docstring); ``observe`` once per training step."""

    def __init__(self, config: GuardConfig) -> None:
        if config.action not in GUARD_ACTIONS:
            raise ValueError(f"trainer.guard.action must be one of {GUARD_ACTIONS}, got {config.action!r}")
        if config.window < 1:
            raise ValueError(f"trainer.guard.window must be >= 1, got {config.window}")
        self.config = config
        self.window: deque[StepStats] = deque(maxlen=config.window)
        self.base: dict[str, float] | None = None
        self.reasons: list[str] = []  # of the latest observe; [] = passing

    @property
    def passing(self) -> bool:
        return not self.reasons

    def observe(self, stats: StepStats) -> dict[str, float]:
        """Add one step; returns ``guard/*`` metrics (window values, base values, one flag per trip)."""
        self.window.append(stats)
        now = _summary(self.window)
        if self.base is None:
            self.base = _summary([stats])
        self.reasons = self._check(now, self.base)
        out = {f"guard/{k}": v for k, v in now.items()}
        out.update({f"guard/base_{k}": v for k, v in self.base.items()})
        out["guard/tripped"] = float(bool(self.reasons))
        for r in self.reasons:
            out[f"guard/trip/{r.split(' ', 1)[0]}"] = 1.0
        return out

    def _check(self, now: dict[str, float], base: dict[str, float]) -> list[str]:
        c, out = self.config, []
        if now["invalid_ratio"] > c.max_invalid_ratio and now["invalid_ratio"] > base["invalid_ratio"]:
            out.append(f"invalid_ratio {now['invalid_ratio']:.3f} > {c.max_invalid_ratio} "
                       f"(base {base['invalid_ratio']:.3f})")
        ent, ent0 = now["item_answer_entropy"], base["item_answer_entropy"]
        if ent0 > c.min_base_entropy and ent < c.min_entropy_ratio * ent0:
            out.append(f"item_answer_entropy {ent:.3f} < {c.min_entropy_ratio} x base {ent0:.3f}")
        if c.max_majority_ratio is not None and now["majority_ratio"] > c.max_majority_ratio:
            out.append(f"majority_ratio {now['majority_ratio']:.3f} > {c.max_majority_ratio}")
        length, length0 = now["response_length"], max(base["response_length"], 1e-9)
        if c.max_length_ratio is not None and length > c.max_length_ratio * length0:
            out.append(f"response_length {length:.1f} > {c.max_length_ratio} x base {length0:.1f}")
        if c.min_length_ratio is not None and length < c.min_length_ratio * length0:
            out.append(f"response_length {length:.1f} < {c.min_length_ratio} x base {length0:.1f}")
        return out

    def state_dict(self) -> dict:
        return {"window": [vars(s) for s in self.window], "base": self.base, "reasons": list(self.reasons)}

    def load_state_dict(self, state: dict) -> None:
        self.window = deque((StepStats(**s) for s in state["window"]), maxlen=self.config.window)
        self.base = state["base"]
        self.reasons = list(state["reasons"])
