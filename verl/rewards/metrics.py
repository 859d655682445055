"""Label metrics (TTRL names) and validation accuracies: the ONLY module that reads ground truths.

All functions take already extracted/canonical answers (:func:`verl.rewards.answers.extract_answer`)
and a ground truth normalized with :func:`verl.rewards.answers.normalize_ground_truth`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from verl.rewards.answers import INVALID
from verl.rewards.voting import answer_entropy, majority_answer


def label_metrics(answers: Sequence[str], ground_truth: str, *, invalid_votes: bool = False,
                  prefix: str = "") -> dict[str, float]:
    """Per-prompt label metrics over the N votes of one prompt.

    - ``label_accuracy``: majority answer == ground truth (an all-invalid group has no majority: 0).
    - ``reward_accuracy``: fraction of votes whose pseudo reward 1[a_i == majority] equals the true
      reward 1[a_i == ground truth] (TTRL's definition, whatever reward type trains).
    - ``majority_ratio``: fraction of the N votes equal to the majority answer (0 if no majority).
    - ``ground_truth_ratio``: fraction of votes equal to the ground truth; ``pass_at_n``: any vote is.
    - ``invalid_ratio``: fraction of INVALID votes; ``answer_entropy``: H of the voting answers (nats).
    ``prefix`` (e.g. ``"post_"`` for the down-sampled votes) is prepended to every key.
    """
    n = len(answers)
    if n == 0:
        raise ValueError("label_metrics: no answers")
    if ground_truth == INVALID:
        raise ValueError("label_metrics: the ground truth is INVALID (normalize it first)")
    maj = majority_answer(answers, invalid_votes)
    has_maj = maj != INVALID
    pseudo = np.array([has_maj and a == maj for a in answers], dtype=bool)
    true = np.array([a == ground_truth for a in answers], dtype=bool)
    out = {
        "label_accuracy": float(has_maj and maj == ground_truth),
        "reward_accuracy": float(np.mean(pseudo == true)),
        "majority_ratio": float(pseudo.mean()) if has_maj else 0.0,
        "ground_truth_ratio": float(true.mean()),
        "pass_at_n": float(true.any()),
        "invalid_ratio": float(np.mean([a == INVALID for a in answers])),
        "answer_entropy": answer_entropy(answers, invalid_votes),
    }
    return {prefix + k: v for k, v in out.items()}


def mean_label_metrics(per_prompt: Sequence[dict[str, float]]) -> dict[str, float]:
    """Average per-prompt metric dicts key by key (keys must agree)."""
    if not per_prompt:
        return {}
    keys = per_prompt[0].keys()
    return {k: float(np.mean([m[k] for m in per_prompt])) for k in keys}


def _check(answers_per_prompt: Sequence[Sequence[str]], ground_truths: Sequence[str]) -> None:
    if len(answers_per_prompt) != len(ground_truths):
        raise ValueError(f"{len(answers_per_prompt)} answer groups but {len(ground_truths)} ground truths")
    for i, group in enumerate(answers_per_prompt):
        if len(group) == 0:
            raise ValueError(f"prompt {i} has no answers")


def mean_at_n(answers_per_prompt: Sequence[Sequence[str]], ground_truths: Sequence[str]) -> float:
    """mean@N: mean over prompts of the fraction of its N samples equal to the ground truth."""
    _check(answers_per_prompt, ground_truths)
    return float(np.mean([np.mean([a == gt for a in group])
                          for group, gt in zip(answers_per_prompt, ground_truths)]))


def maj_at_n(answers_per_prompt: Sequence[Sequence[str]], ground_truths: Sequence[str]) -> float:
    """maj@N: fraction of prompts whose majority answer (invalid never votes) equals the ground truth."""
    _check(answers_per_prompt, ground_truths)
    return float(np.mean([majority_answer(group) == gt and gt != INVALID
                          for group, gt in zip(answers_per_prompt, ground_truths)]))
