"""Reward phase of the controller: extract answers, score each prompt's group of samples.

Runs on the driver over decoded responses (strings); it never sees ground-truth labels. The
label-based metrics live in :mod:`verl.rewards.metrics` and are called separately by the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from verl.config.schema import RewardConfig
from verl.protocol import DataProto
from verl.rewards.answers import INVALID, extract_answer
from verl.rewards.registry import load_custom_reward
from verl.rewards.voting import answer_entropy, ttrv_group_reward


@dataclass
class GroupOutcome:
    """What the reward phase learned about one prompt's group of samples (no labels involved)."""

    uid: str
    answers: list[str]
    scores: np.ndarray
    majority: str
    entropy: float
    n_invalid: int


@dataclass
class RewardResult:
    scores: np.ndarray  # one per sample, in batch order
    answers: np.ndarray  # extracted answers, object array
    groups: list[GroupOutcome] = field(default_factory=list)


def group_indices(uids: np.ndarray) -> dict[str, list[int]]:
    """Row indices of each uid, in first-appearance order."""
    out: dict[str, list[int]] = {}
    for i, u in enumerate(uids.tolist()):
        out.setdefault(str(u), []).append(i)
    return out


class GroupRewardManager:
    """Scores every sample of a rollout batch with the configured group reward."""

    def __init__(self, config: RewardConfig) -> None:
        self.config = config
        self.custom: Callable | None = (
            load_custom_reward(config.custom_reward_function) if config.custom_reward_function else None
        )

    def __call__(self, data: DataProto) -> RewardResult:
        texts = data.non_tensor_batch["response_text"]
        options = data.non_tensor_batch["options"]
        uids = data.non_tensor_batch["uid"]
        scores = np.zeros(len(data), dtype=np.float32)
        answers = np.empty(len(data), dtype=object)
        groups: list[GroupOutcome] = []
        for uid, idx in group_indices(uids).items():
            opts = options[idx[0]] or None
            ans = [extract_answer(str(texts[i]), opts) for i in idx]
            for i, a in zip(idx, ans):
                answers[i] = a
            if self.custom is not None:
                extra = data.non_tensor_batch.get("extra_info")
                group_scores = np.asarray(
                    self.custom(
                        [str(texts[i]) for i in idx],
                        prompt=data.non_tensor_batch["prompt"][idx[0]],
                        options=opts or {},
                        extra=extra[idx[0]] if extra is not None else {},
                    ),
                    dtype=np.float32,
                )
                if group_scores.shape != (len(idx),):
                    raise ValueError(
                        f"custom reward {self.config.custom_reward_function} returned {group_scores.shape} "
                        f"scores for a group of {len(idx)} samples (uid {uid})"
                    )
                majority = max(set(ans) - {INVALID}, key=ans.count, default=INVALID)
                ent = answer_entropy(ans)
            else:
                gr = ttrv_group_reward(
                    ans,
                    reward_type=self.config.reward_type,
                    entropy_coef=self.config.entropy_coef,
                    entropy_form=self.config.entropy_form,
                    invalid_penalty=self.config.invalid_penalty,
                    invalid_votes=self.config.invalid_votes,
                )
                group_scores, majority, ent = np.asarray(gr.scores, dtype=np.float32), gr.majority, gr.entropy
            scores[idx] = group_scores
            groups.append(
                GroupOutcome(
                    uid=uid,
                    answers=ans,
                    scores=group_scores,
                    majority=majority,
                    entropy=float(ent),
                    n_invalid=sum(a == INVALID for a in ans),
                )
            )
        return RewardResult(scores=scores, answers=answers, groups=groups)

    def extract_only(self, data: DataProto) -> np.ndarray:
        """Extracted answers of every sample (validation: no rewards needed)."""
        texts = data.non_tensor_batch["response_text"]
        options = data.non_tensor_batch["options"]
        out = np.empty(len(data), dtype=object)
        for i in range(len(data)):
            out[i] = extract_answer(str(texts[i]), options[i] or None)
        return out
