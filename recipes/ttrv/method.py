"""TTRV in one place: answers from votes -> group rewards -> the ``n`` of ``n_votes`` samples that train -> metrics.

Chosen by ``algorithm.method: recipes.ttrv.method:TTRVMethod`` (``recipes/ttrv/config/ttrv.yaml``); the
generic loop of :mod:`verl.trainer.fit` calls it through the interface of :mod:`verl.trainer.method`.
It composes pure functions only:

1. ``score``: every vote's answer is extracted against the prompt's options
   (:func:`verl.rewards.registry.batch_answers`, stored as the ``answer`` column), and each prompt's
   group of ``rollout.n_votes`` votes is scored by the configured group reward (built-in ``ttrv``:
   :func:`verl.rewards.voting.ttrv_group_reward`; or ``reward.custom_reward_function``) through the one
   checked path :func:`verl.rewards.registry.score_groups`.
2. ``metrics``: label-free vote statistics (answer entropy, invalid and majority ratios) and TTRL's label
   metrics (label / reward accuracy, pass@N, ...; labels are reported, never trained on), over all votes.
3. ``train_rows``: ``rollout.n`` of each prompt's ``n_votes`` votes, a random subset seeded by
   ``trainer.seed`` and the step (TTRL's down-sampling; :func:`verl.rewards.voting.select_train_subset`).

``rollout.n_votes`` itself stays a generic rollout key (samples generated per prompt; ``None`` -> ``n``,
derived in :func:`verl.config.loader.finalize`): any method may score more samples than it trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from verl.protocol import DataProto
from verl.rewards import metrics as label_metrics
from verl.rewards.answers import INVALID
from verl.rewards.registry import batch_answers, build_group_reward, score_groups
from verl.rewards.voting import Votes
from verl.trainer.method import first_n_per_group
from verl.trainer.metrics import votes_of


def vote_metrics(groups: Sequence[Votes]) -> dict[str, float]:
    """Label-free statistics of the vote: mean answer entropy, invalid ratio, majority ratio."""
    if not groups:
        return {}
    ent, inv, maj = [], [], []
    for g in groups:
        m = g.majority
        ent.append(g.entropy)
        inv.append(sum(a == INVALID for a in g.answers) / max(1, len(g.answers)))
        maj.append(sum(a == m for a in g.answers) / len(g.answers) if m != INVALID else 0.0)
    return {"train/answer_entropy": float(np.mean(ent)), "train/invalid_ratio": float(np.mean(inv)),
            "train/majority_ratio": float(np.mean(maj))}


def train_label_metrics(groups: Sequence[Votes], labels: dict[str, str],
                        invalid_votes: bool = False) -> dict[str, float]:
    """TTRL metrics that need the hidden labels (reported only): label/reward accuracy, pass@N, ..."""
    rows = [label_metrics.label_metrics(g.answers, labels[g.uid], invalid_votes=invalid_votes)
            for g in groups if g.uid in labels]
    out = {f"train/{k}": v for k, v in label_metrics.mean_label_metrics(rows).items()}
    if "train/pass_at_n" in out:
        out[f"train/pass@{len(groups[0].answers)}"] = out.pop("train/pass_at_n")
    return out


def train_subset(batch: DataProto, n: int, seed: int, step: int) -> np.ndarray:
    """Sorted rows of ``n`` votes per prompt, drawn without replacement with seed ``seed * 7919 + step``."""
    return first_n_per_group(batch, n, np.random.default_rng(seed * 7919 + step))


class TTRVMethod:
    """Test-time RL with majority-vote rewards (the interface of :mod:`verl.trainer.method`)."""

    def __init__(self, config: Any) -> None:
        self.reward = build_group_reward(config.reward)
        self.invalid_votes = config.reward.invalid_votes
        self.n = config.actor_rollout_ref.rollout.n
        self.seed = config.trainer.seed

    def score(self, batch: DataProto) -> np.ndarray:
        batch.non_tensor_batch["answer"] = batch_answers(batch)
        return score_groups(self.reward, batch)

    def metrics(self, batch: DataProto, labels: dict[str, str]) -> dict[str, float]:
        groups = votes_of(batch, self.invalid_votes)
        return {**vote_metrics(groups), **train_label_metrics(groups, labels, self.invalid_votes)}

    def train_rows(self, batch: DataProto, step: int) -> np.ndarray:
        return train_subset(batch, self.n, self.seed, step)
