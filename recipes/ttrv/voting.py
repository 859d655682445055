"""TTRV's votes: each prompt's answers grouped ONCE per step (:class:`VoteGroup`), and the rewards built on them.

Notation: a_i the answer of vote i, p(a) the empirical frequency, M the number of distinct valid answers,
H = -sum_a p(a) ln p(a) (:mod:`verl.rewards.voting`: INVALID never votes unless ``invalid_votes``, which
reproduces the public code: INVALID is a class of its own, denominator N; for ablations only).

Entropy forms (``entropy_rewards``; R_i = r1_i + entropy_coef * r2_i):

- ``paper``:      r2 = -H, identical for every vote of the prompt.
- ``normalized``: r2 = -H / ln M (0 if M <= 1), the public code's form; identical for every vote.
  Both constant forms are cancelled EXACTLY by per-group GRPO normalization (mean subtraction),
  so as published they change nothing in training (:mod:`recipes.ttrv.reward_check` warns).
- ``per_sample``: r2_i = ln p(a_i) (minus the surprisal of the vote's own answer).  Its group mean is
  sum_a p(a) ln p(a) = -H, i.e. it is the per-sample decomposition of the paper's term, but it is
  not constant within the group, so it survives GRPO: after centering, ln p(a_i) + H > 0 exactly
  for answers more probable than "typical".  It is also the plug-in REINFORCE estimator of the
  gradient of -H: grad(-H) = sum_a (ln p(a) + 1) grad p(a) = E_a[ln p(a) grad ln pi(a)] (the +1
  vanishes because sum_a grad p(a) = 0), so it really lowers the answer entropy.  Invalid votes
  get r2 = ln(1/N), the lowest value a valid (singleton) answer can get, so an invalid vote always
  scores below every valid one (with invalid_penalty <= 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from verl.protocol import DataProto
from verl.rewards.answers import INVALID
from verl.rewards.registry import group_indices
from verl.rewards.voting import answer_distribution, answer_entropy, majority_answer
from verl.trainer.guards import GroupStats

ENTROPY_FORMS = ("paper", "normalized", "per_sample")
REWARD_TYPES = ("frequency", "majority")


@dataclass(frozen=True)
class VoteGroup:
    """One prompt's votes: batch rows, extracted answers and the statistics every consumer shares."""

    uid: str
    rows: list[int]
    answers: list[str]
    invalid_votes: bool = False
    distribution: dict[str, float] = field(init=False, repr=False)
    majority: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "distribution", answer_distribution(self.answers, self.invalid_votes))
        object.__setattr__(self, "majority", majority_answer(self.answers, self.invalid_votes))

    @property
    def entropy(self) -> float:
        return float(-sum(p * math.log(p) for p in self.distribution.values()))

    @property
    def majority_ratio(self) -> float:
        """Fraction of ALL votes equal to the majority answer (0 when nothing votes)."""
        if self.majority == INVALID or not self.answers:
            return 0.0
        return sum(a == self.majority for a in self.answers) / len(self.answers)

    @property
    def invalid_ratio(self) -> float:
        return sum(a == INVALID for a in self.answers) / max(1, len(self.answers))

    def stats(self) -> GroupStats:
        """What the generic collapse guard watches (verl/trainer/guards.py)."""
        return GroupStats(self.majority, self.majority_ratio, self.invalid_ratio)


def vote_groups(batch: DataProto, invalid_votes: bool = False) -> list[VoteGroup]:
    """The ``answer`` column grouped by prompt uid (first-appearance order)."""
    nt = batch.non_tensor_batch
    return [VoteGroup(uid, idx, [str(nt["answer"][i]) for i in idx], invalid_votes)
            for uid, idx in group_indices(nt["uid"]).items()]


def frequency_rewards(answers: Sequence[str], invalid_penalty: float = -1.0,
                      invalid_votes: bool = False) -> np.ndarray:
    """r_i = p(a_i); invalid votes get ``invalid_penalty`` (unless ``invalid_votes``)."""
    dist = answer_distribution(answers, invalid_votes)
    return np.array([dist[a] if a in dist else invalid_penalty for a in answers], dtype=np.float64)


def majority_rewards(answers: Sequence[str], invalid_penalty: float = -1.0,
                     invalid_votes: bool = False) -> np.ndarray:
    """TTRL: r_i = 1 if a_i is the majority answer else 0; invalid votes get ``invalid_penalty``.

    If every vote is invalid everyone gets the penalty (there is no majority)."""
    maj = majority_answer(answers, invalid_votes)
    out = []
    for a in answers:
        if a == INVALID and not invalid_votes:
            out.append(invalid_penalty)
        else:
            out.append(1.0 if a == maj else 0.0)
    return np.array(out, dtype=np.float64)


def entropy_rewards(answers: Sequence[str], form: str = "paper", invalid_votes: bool = False) -> np.ndarray:
    """Entropy term r2 per vote for ``form`` in {"paper", "normalized", "per_sample"} (module docstring)."""
    n = len(answers)
    if form == "paper":
        return np.full(n, -answer_entropy(answers, invalid_votes))
    if form == "normalized":
        m = len(answer_distribution(answers, invalid_votes))
        h = answer_entropy(answers, invalid_votes)
        return np.full(n, -h / math.log(m) if m > 1 else 0.0)
    if form == "per_sample":
        dist = answer_distribution(answers, invalid_votes)
        floor = math.log(1.0 / n) if n else 0.0
        return np.array([math.log(dist[a]) if a in dist else floor for a in answers], dtype=np.float64)
    raise ValueError(f"unknown entropy form {form!r}; known: {list(ENTROPY_FORMS)}")


@dataclass
class TTRVReward:
    """Rewards of one prompt's votes plus the statistics behind them."""

    scores: np.ndarray
    majority: str
    distribution: dict[str, float]
    entropy: float
    n_invalid: int
    r1: np.ndarray = field(repr=False)
    r2: np.ndarray = field(repr=False)


def ttrv_group_reward(answers: Sequence[str], *, reward_type: str = "frequency", entropy_coef: float = 0.75,
                      entropy_form: str = "paper", invalid_penalty: float = -1.0,
                      invalid_votes: bool = False) -> TTRVReward:
    """TTRV reward of every vote: R_i = r1_i + entropy_coef * r2_i.

    r1 is the frequency reward p(a_i) (``reward_type="frequency"``) or TTRL's 0/1 majority reward
    (``"majority"``); r2 the entropy term of ``entropy_form``.  Invalid votes: r1 = invalid_penalty.
    """
    if reward_type == "frequency":
        r1 = frequency_rewards(answers, invalid_penalty, invalid_votes)
    elif reward_type == "majority":
        r1 = majority_rewards(answers, invalid_penalty, invalid_votes)
    else:
        raise ValueError(f"unknown reward_type {reward_type!r}; known: {list(REWARD_TYPES)}")
    r2 = entropy_rewards(answers, entropy_form, invalid_votes)
    return TTRVReward(
        scores=r1 + entropy_coef * r2,
        majority=majority_answer(answers, invalid_votes),
        distribution=answer_distribution(answers, invalid_votes),
        entropy=answer_entropy(answers, invalid_votes),
        n_invalid=sum(a == INVALID for a in answers),
        r1=r1,
        r2=r2,
    )


# a few synthetic vote groups on which a term's constancy within every group is probed
PROBE_GROUPS = (["1", "1", "2", "3"], ["4", "4", "4", "5"], ["6", "7", INVALID, "6"], ["8", "8", "8", "8"])


def constant_entropy_term(form: str, invalid_votes: bool = False) -> bool:
    """True when the entropy term of ``form`` is the same for every vote of each probe group."""
    r2 = [entropy_rewards(g, form, invalid_votes) for g in PROBE_GROUPS]
    return all(np.allclose(x, x[0]) for x in r2)
