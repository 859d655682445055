"""SOPHIA trajectory selection: caption rewards and the per-question "shortest correct" filter.

Choices (stated, as the paper leaves them open):
  * caption reward R(c) = mean of the reasoning rewards of the N reasonings that used caption c;
  * a trajectory is eligible iff its reward == 1 AND its caption reward is STRICTLY above ``alpha``
    (``>`` like the paper: with N = 8 and alpha = 0.75, a caption needs at least 7/8 correct);
  * "shortest" is measured with ``length_fn(reasoning_text)`` when given (the stage passes the VLM
    tokenizer's token count: that is what the update trains on), else in characters. The candidate's
    ``length_tokens`` (the reasoner's own count) is informational and not used for the ranking;
  * ties on length: higher caption reward first, then ``caption_id``, then ``reasoning_id`` (compared as
    strings), so the result does not depend on the input order;
  * up to ``keep_n`` trajectories per question; questions with none are dropped and counted by reason;
  * ``pick="random"`` (the paper's ablation) keeps ``keep_n`` eligible trajectories drawn uniformly instead of
    the shortest: the draw is a hash of ``(seed, question, caption, reasoning)`` ids, so it does not depend on
    the input order or the process.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

DROP_NO_CORRECT = "no_correct_reasoning"
DROP_CAPTION_BELOW_ALPHA = "caption_reward_not_above_alpha"


class Candidate(NamedTuple):
    """One (question, caption, reasoning) trajectory with its rewards."""

    question_id: Hashable
    caption_id: Hashable
    reasoning_id: Hashable
    reasoning_text: str
    reward: float
    caption_reward: float
    length_tokens: int | None = None


class Kept(NamedTuple):
    """A selected trajectory and the length used to rank it."""

    candidate: Candidate
    length: int


@dataclass
class SelectionResult:
    """Selected trajectories plus the statistics a run report needs."""

    kept: list[Kept]
    n_questions: int
    dropped: dict[str, list[Hashable]] = field(default_factory=dict)
    caption_reward_hist: list[int] = field(default_factory=list)
    length_unit: str = "chars"

    @property
    def n_kept_questions(self) -> int:
        return len({k.candidate.question_id for k in self.kept})

    @property
    def kept_fraction(self) -> float:
        """Fraction of questions with at least one kept trajectory (0 when there are no questions)."""
        return self.n_kept_questions / self.n_questions if self.n_questions else 0.0

    @property
    def mean_kept_length(self) -> float:
        return sum(k.length for k in self.kept) / len(self.kept) if self.kept else 0.0

    @property
    def drop_counts(self) -> dict[str, int]:
        return {reason: len(ids) for reason, ids in self.dropped.items()}

    def stats(self) -> dict[str, float | int | list[int]]:
        """Flat metrics dict (``sophia/...`` names) for a logger."""
        out: dict[str, float | int | list[int]] = {
            "sophia/n_questions": self.n_questions,
            "sophia/n_kept_questions": self.n_kept_questions,
            "sophia/n_kept_trajectories": len(self.kept),
            "sophia/kept_fraction": self.kept_fraction,
            f"sophia/mean_kept_length_{self.length_unit}": self.mean_kept_length,
            "sophia/caption_reward_hist": list(self.caption_reward_hist),
        }
        for reason, n in self.drop_counts.items():
            out[f"sophia/dropped/{reason}"] = n
        return out


def caption_rewards(reasoning_rewards: Mapping[Hashable, Sequence[float]]) -> dict[Hashable, float]:
    """R(c) = mean of the reasoning rewards that used caption c. An empty list is an error naming c."""
    out: dict[Hashable, float] = {}
    for cid, rewards in reasoning_rewards.items():
        rewards = list(rewards)
        if not rewards:
            raise ValueError(f"caption {cid!r}: no reasoning rewards to average")
        out[cid] = sum(float(r) for r in rewards) / len(rewards)
    return out


def caption_reward_histogram(values: Iterable[float], n: int) -> list[int]:
    """Counts of caption rewards in the N+1 bins k/N (k = 0..N), each value rounded to the nearest bin."""
    if n < 1:
        raise ValueError(f"histogram needs n >= 1 reasonings per caption, got {n}")
    hist = [0] * (n + 1)
    for v in values:
        hist[min(n, max(0, round(float(v) * n)))] += 1
    return hist


PICKS = ("shortest", "random")


def _rank_key(c: Candidate, length: int) -> tuple:
    return (length, -float(c.caption_reward), str(c.caption_id), str(c.reasoning_id))


def _random_key(seed: int) -> Callable[[Candidate, int], tuple]:
    def key(c: Candidate, length: int) -> tuple:
        ids = f"{seed}\x00{c.question_id}\x00{c.caption_id}\x00{c.reasoning_id}".encode()
        return (hashlib.sha256(ids).hexdigest(), str(c.caption_id), str(c.reasoning_id))
    return key


def select_trajectories(
    candidates: Iterable[Candidate],
    alpha: float = 0.75,
    keep_n: int = 1,
    length_fn: Callable[[str], int] | None = None,
    n_per_caption: int | None = None,
    pick: str = "shortest",
    seed: int = 0,
) -> SelectionResult:
    """Per question keep up to ``keep_n`` shortest (or, ``pick="random"``, randomly drawn with ``seed``) correct
    trajectories with caption reward > ``alpha``.

    ``n_per_caption`` (N) sets the histogram bins (1/N); by default it is the largest number of
    candidates sharing one (question, caption).
    """
    if keep_n < 1:
        raise ValueError(f"keep_n must be >= 1, got {keep_n}")
    if pick not in PICKS:
        raise ValueError(f"pick must be one of {list(PICKS)}, got {pick!r}")
    order = _rank_key if pick == "shortest" else _random_key(seed)
    by_question: dict[Hashable, list[Candidate]] = defaultdict(list)
    caption_r: dict[tuple, float] = {}
    caption_count: dict[tuple, int] = defaultdict(int)
    for i, c in enumerate(candidates):
        c = Candidate(*c)
        if float(c.reward) not in (0.0, 1.0):
            raise ValueError(f"candidate {i} (question {c.question_id!r}, reasoning {c.reasoning_id!r}): "
                             f"reward must be 0 or 1, got {c.reward!r}")
        if not 0.0 <= float(c.caption_reward) <= 1.0:
            raise ValueError(f"candidate {i} (question {c.question_id!r}, caption {c.caption_id!r}): "
                             f"caption_reward must be in [0, 1], got {c.caption_reward!r}")
        key = (c.question_id, c.caption_id)
        if key in caption_r and caption_r[key] != float(c.caption_reward):
            raise ValueError(f"candidate {i} (question {c.question_id!r}, caption {c.caption_id!r}): caption_reward "
                             f"{c.caption_reward!r} differs from {caption_r[key]!r} seen for the same caption")
        by_question[c.question_id].append(c)
        caption_r[key] = float(c.caption_reward)
        caption_count[(c.question_id, c.caption_id)] += 1

    measure = length_fn if length_fn is not None else len
    kept: list[Kept] = []
    dropped: dict[str, list[Hashable]] = {DROP_NO_CORRECT: [], DROP_CAPTION_BELOW_ALPHA: []}
    for qid, cands in by_question.items():
        correct = [c for c in cands if float(c.reward) == 1.0]
        if not correct:
            dropped[DROP_NO_CORRECT].append(qid)
            continue
        eligible = [c for c in correct if float(c.caption_reward) > alpha]
        if not eligible:
            dropped[DROP_CAPTION_BELOW_ALPHA].append(qid)
            continue
        ranked = sorted(((c, int(measure(c.reasoning_text))) for c in eligible), key=lambda t: order(*t))
        kept.extend(Kept(c, n) for c, n in ranked[:keep_n])

    n = n_per_caption or max(caption_count.values(), default=1)
    return SelectionResult(
        kept=kept,
        n_questions=len(by_question),
        dropped=dropped,
        caption_reward_hist=caption_reward_histogram(caption_r.values(), n),
        length_unit="tokens" if length_fn is not None else "chars",
    )
