"""Label-free statistics of one prompt's sampled answers (no reward here: rewards belong to a method).

``p`` is the empirical answer distribution over the VALID answers (INVALID, an unparseable output, never
votes unless ``invalid_votes``, which makes it a class of its own, denominator N); ties of the majority go to
the tied answer that appears FIRST. Used by validation (maj@N, answer entropy), the label metrics and by
methods that vote (recipes/ttrv); :func:`select_train_subset` picks the samples of a prompt that train.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from verl.rewards.answers import INVALID


def answer_counts(answers: Sequence[str], invalid_votes: bool = False) -> Counter:
    """Votes per answer, in order of first appearance (INVALID only with ``invalid_votes``)."""
    return Counter(a for a in answers if invalid_votes or a != INVALID)


def answer_distribution(answers: Sequence[str], invalid_votes: bool = False) -> dict[str, float]:
    """Empirical answer distribution {answer: p}, in order of first appearance ({} if nothing votes)."""
    counts = answer_counts(answers, invalid_votes)
    total = sum(counts.values())
    return {a: c / total for a, c in counts.items()} if total else {}


def majority_answer(answers: Sequence[str], invalid_votes: bool = False) -> str:
    """Most frequent voting answer; ties go to the tied answer that appears FIRST among the votes
    (deterministic, independent of answer spelling).  INVALID when no answer votes."""
    counts = answer_counts(answers, invalid_votes)
    if not counts:
        return INVALID
    best = max(counts.values())
    return next(a for a in counts if counts[a] == best)  # Counter keeps first-appearance order


def answer_entropy(answers: Sequence[str], invalid_votes: bool = False) -> float:
    """H = -sum_a p(a) ln p(a) over the voting answers (nats; 0 when none or one distinct)."""
    return float(-sum(p * math.log(p) for p in answer_distribution(answers, invalid_votes).values()))


def select_train_subset(n_votes: int, n_train: int,
                        rng: int | np.random.Generator | None = None) -> np.ndarray:
    """Indices of the samples that enter the policy update (a method may score all n_votes).

    ``rng=None`` -> the first ``n_train``: rollouts of one prompt are i.i.d. samples, so the first n_train
    are already a uniformly random subset and the choice is reproducible.  With a seed or a numpy
    Generator: a random subset without replacement (TTRL-style down-sampling), sorted.
    """
    if not 0 < n_train <= n_votes:
        raise ValueError(f"need 0 < n_train <= n_votes, got n_train={n_train}, n_votes={n_votes}")
    if rng is None:
        return np.arange(n_train)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return np.sort(gen.choice(n_votes, size=n_train, replace=False))
