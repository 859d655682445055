"""Label-free group rewards for TTRV / TTRL from the extracted answers of ONE prompt's N votes.

Notation: a_i the answer of vote i, p(a) the empirical frequency, M the number of distinct valid
answers, H = -sum_a p(a) ln p(a).

Invalid answers (:data:`INVALID`, unparseable outputs) never vote by default: p is the empirical
distribution over the VALID votes only (denominator = number of valid votes), invalid votes earn
``invalid_penalty`` and can never become the majority.  ``invalid_votes=True`` reproduces the public
code (INVALID is a vote class of its own, denominator N) and exists for ablations only.

Entropy forms (``entropy_rewards``; R_i = r1_i + entropy_coef * r2_i):

- ``paper``:      r2 = -H, identical for every vote of the prompt.
- ``normalized``: r2 = -H / ln M (0 if M <= 1), the public code's form; identical for every vote.
  Both constant forms are cancelled EXACTLY by per-group GRPO normalization (mean subtraction),
  so as published they change nothing in training.
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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from verl.rewards.answers import INVALID

ENTROPY_FORMS = ("paper", "normalized", "per_sample")
REWARD_TYPES = ("frequency", "majority")


def _counts(answers: Sequence[str], invalid_votes: bool) -> Counter:
    return Counter(a for a in answers if invalid_votes or a != INVALID)


def answer_distribution(answers: Sequence[str], invalid_votes: bool = False) -> dict[str, float]:
    """Empirical answer distribution {answer: p}, in order of first appearance ({} if nothing votes)."""
    counts = _counts(answers, invalid_votes)
    total = sum(counts.values())
    return {a: c / total for a, c in counts.items()} if total else {}


def majority_answer(answers: Sequence[str], invalid_votes: bool = False) -> str:
    """Most frequent voting answer; ties go to the tied answer that appears FIRST among the votes
    (deterministic, independent of answer spelling).  INVALID when no answer votes."""
    counts = _counts(answers, invalid_votes)
    if not counts:
        return INVALID
    best = max(counts.values())
    return next(a for a in counts if counts[a] == best)  # Counter keeps first-appearance order


def answer_entropy(answers: Sequence[str], invalid_votes: bool = False) -> float:
    """H = -sum_a p(a) ln p(a) over the voting answers (nats; 0 when none or one distinct)."""
    return float(-sum(p * math.log(p) for p in answer_distribution(answers, invalid_votes).values()))


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
class GroupReward:
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
                      invalid_votes: bool = False) -> GroupReward:
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
    return GroupReward(
        scores=r1 + entropy_coef * r2,
        majority=majority_answer(answers, invalid_votes),
        distribution=answer_distribution(answers, invalid_votes),
        entropy=answer_entropy(answers, invalid_votes),
        n_invalid=sum(a == INVALID for a in answers),
        r1=r1,
        r2=r2,
    )


@dataclass(frozen=True)
class Votes:
    """The extracted answers of one prompt's votes, with the majority rule of :func:`majority_answer`."""

    uid: str
    answers: list[str]
    invalid_votes: bool = False

    @property
    def majority(self) -> str:
        return majority_answer(self.answers, self.invalid_votes)

    @property
    def entropy(self) -> float:
        return answer_entropy(self.answers, self.invalid_votes)


def select_train_subset(n_votes: int, n_train: int,
                        rng: int | np.random.Generator | None = None) -> np.ndarray:
    """Indices of the votes that enter the policy update (rewards are computed over all n_votes).

    ``rng=None`` -> the first ``n_train`` votes: rollouts of one prompt are i.i.d. samples, so the
    first n_train are already a uniformly random subset and the choice is reproducible.  With a seed
    or a numpy Generator: a random subset without replacement (TTRL-style down-sampling), sorted.
    """
    if not 0 < n_train <= n_votes:
        raise ValueError(f"need 0 < n_train <= n_votes, got n_train={n_train}, n_votes={n_votes}")
    if rng is None:
        return np.arange(n_train)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return np.sort(gen.choice(n_votes, size=n_train, replace=False))
