"""TTRV in one place: answers from votes -> the chosen estimator's rewards -> the votes that train -> metrics.

Chosen by ``algorithm.method: recipes.ttrv.method:TTRVMethod`` (``recipes/ttrv/config/ttrv.yaml``); the
generic loop of :mod:`verl.trainer.fit` calls it through the interface of :mod:`verl.trainer.method`.
Each step:

1. ``score``: every vote's answer is extracted ONCE against the prompt's options (the ``answer`` column),
   the votes are grouped ONCE per prompt (:func:`recipes.ttrv.voting.vote_groups`), and the estimator
   ``reward.name`` (:mod:`recipes.ttrv.estimators`, given ``reward.kwargs``) scores every vote from them.
   The same groups give the collapse guard its statistics (returned with the scores) and the metrics.
   On the first step, one warning when most answers cannot be read (:mod:`recipes.ttrv.readability`).
2. ``metrics``: label-free vote statistics (answer entropy, invalid and majority ratios) and TTRL's label
   metrics (label / reward accuracy, pass@N, ...; labels are reported, never trained on), over all votes.
3. ``train_rows``: ``rollout.n`` of each prompt's ``n_votes`` votes, a random subset seeded by
   ``trainer.seed`` and the step (TTRL's down-sampling; :func:`verl.rewards.voting.select_train_subset`).

``rollout.n_votes`` itself stays a generic rollout key (samples generated per prompt; ``None`` -> ``n``,
derived in :func:`verl.config.loader.finalize`): any method may score more samples than it trains on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from recipes.ttrv.controls import controls_from, prompt_weights, row_weights
from recipes.ttrv.estimators import AUX_MAKERS, build_estimator
from recipes.ttrv.readability import unreadable_warning
from recipes.ttrv.reward_check import reward_composition_warnings
from recipes.ttrv.views import original_uid
from recipes.ttrv.voting import VoteGroup, vote_groups
from verl.protocol import DataProto
from verl.rewards import metrics as label_metrics
from verl.rewards.registry import batch_answers
from verl.trainer.method import Scores, first_n_per_group

logger = logging.getLogger("recipes.ttrv")


def vote_metrics(groups: Sequence[VoteGroup]) -> dict[str, float]:
    """Label-free statistics of the vote: mean answer entropy, invalid ratio, majority ratio."""
    if not groups:
        return {}
    return {"train/answer_entropy": float(np.mean([g.entropy for g in groups])),
            "train/invalid_ratio": float(np.mean([g.invalid_ratio for g in groups])),
            "train/majority_ratio": float(np.mean([g.majority_ratio for g in groups]))}


def train_label_metrics(groups: Sequence[VoteGroup], labels: dict[str, str]) -> dict[str, float]:
    """TTRL metrics that need the hidden labels (reported only): label/reward accuracy, pass@N, ..."""
    rows = [label_metrics.label_metrics(g.answers, labels[g.uid]) for g in groups if g.uid in labels]
    out = {f"train/{k}": v for k, v in label_metrics.mean_label_metrics(rows).items()}
    if "train/pass_at_n" in out:
        out[f"train/pass@{len(groups[0].answers)}"] = out.pop("train/pass_at_n")
    return out


def train_subset(batch: DataProto, n: int, seed: int, step: int) -> np.ndarray:
    """Sorted rows of ``n`` votes per prompt, drawn without replacement with seed ``seed * 7919 + step``."""
    return first_n_per_group(batch, n, np.random.default_rng(seed * 7919 + step))


def aux_answers(aux: DataProto | None) -> dict[str, list[str]] | None:
    """Answers of the auxiliary samples per ORIGINAL prompt uid (the views of a prompt pool; extracted once)."""
    if aux is None:
        return None
    out: dict[str, list[str]] = {}
    for uid, answer in zip(aux.non_tensor_batch["uid"], batch_answers(aux)):
        out.setdefault(original_uid(uid), []).append(str(answer))
    return out


class TTRVMethod:
    """Test-time RL with label-free rewards (the interface of :mod:`verl.trainer.method`)."""

    def __init__(self, config: Any) -> None:
        self.estimator = build_estimator(config.reward)
        self.controls = controls_from(config.algorithm.method_kwargs)
        self.token_stats = self.estimator.token_stats
        self.n = config.actor_rollout_ref.rollout.n
        self.seed = config.trainer.seed
        self.groups: list[VoteGroup] = []  # of the latest scored batch (metrics read them)
        self.weights: list[float] = []  # the controls' advantage weight per prompt of that batch
        self.readability_checked = False  # the first scored batch is checked for unreadable answers
        for warning in reward_composition_warnings(self.estimator, config.algorithm):
            logger.warning(warning)

    @staticmethod
    def check_config(config: Any) -> None:
        """Start-up check of ``reward.name`` / ``reward.kwargs`` (unknown name or key, wrong kind of value) and
        of the controls in ``algorithm.method_kwargs``."""
        build_estimator(config.reward).constant_terms()
        controls_from(config.algorithm.method_kwargs)

    def aux_prompts(self, prompts: DataProto, step: int) -> tuple[DataProto, int] | None:
        """The estimator's auxiliary rollouts (augmented views, EMA-teacher votes) and samples per prompt."""
        if self.estimator.aux is None:
            return None
        return AUX_MAKERS[self.estimator.aux](prompts, step, self.seed, self.estimator.settings)

    def score(self, batch: DataProto, aux: DataProto | None = None) -> Scores:
        batch.non_tensor_batch["answer"] = batch_answers(batch)
        if not self.readability_checked:
            self.readability_checked = True
            nt = batch.non_tensor_batch
            prompts = list(nt["prompt"]) if "prompt" in nt else [""] * len(batch)
            if warning := unreadable_warning(list(nt["answer"]), list(nt["response_text"]), prompts, list(nt["uid"])):
                logger.warning(warning)
        self.groups = vote_groups(batch)
        scores = self.estimator(batch, self.groups, aux_answers(aux))
        weights = None
        if self.controls.active:
            self.weights = prompt_weights(self.groups, self.controls)
            weights = row_weights(len(batch), self.groups, self.weights)
        return Scores(scores, [g.stats() for g in self.groups], weights)

    def after_update(self, workers: Any, step: int) -> None:
        """Move the EMA teacher toward the updated policy (``ema_teacher``); nothing for the other estimators."""
        if self.estimator.aux == "teacher":
            workers.update_ema(float(self.estimator.settings["decay"]))

    def metrics(self, batch: DataProto, labels: dict[str, str]) -> dict[str, float]:
        out = {**vote_metrics(self.groups), **train_label_metrics(self.groups, labels)}
        if self.controls.active and self.weights:
            out["train/gated_frac"] = float(np.mean([w == 0.0 for w in self.weights]))
            out["train/advantage_weight"] = float(np.mean(self.weights))
        return out

    def train_rows(self, batch: DataProto, step: int) -> np.ndarray:
        return train_subset(batch, self.n, self.seed, step)
