"""How a training method plugs into the controller loop: the object named by ``algorithm.method``.

The loop in :mod:`verl.trainer.fit` is generic. Each step it generates ``rollout.n_votes`` samples per
prompt (plus the method's auxiliary rollouts, if any), then asks the method::

    class MyMethod:
        token_stats: tuple[str, ...] = ()  # optional: per-response statistics of the policy's next-token
            # distribution that ``score`` reads as non-tensor columns (``self_certainty``, ``token_entropy``);
            # the loop then runs the old-log-prob pass over every sample BEFORE scoring and keeps its log-probs
        def __init__(self, config: RLConfig) -> None: ...
        @staticmethod
        def check_config(config: RLConfig) -> None:  # optional: start-up check of the sections it reads
        def aux_prompts(self, prompts: DataProto, step: int) -> DataProto | None:  # optional: more prompts
            '''Prompts whose samples only feed the score (e.g. augmented views; images as bytes or paths).'''
        def score(self, batch: DataProto, aux: DataProto | None = None) -> Scores:
            '''One finite score per row, plus the label-free per-prompt statistics the collapse guard
            watches (:class:`verl.trainer.guards.GroupStats`) and optional per-row advantage weights
            (e.g. 0 for prompts a gate leaves out). May add non-tensor columns (e.g. answers).'''
        def metrics(self, batch: DataProto, labels: dict[str, str]) -> dict[str, float]:
            '''Logged metrics of the scored batch (all votes). ``labels`` (uid -> ground truth) are for
            reporting only: nothing derived from them may feed back into training.'''
        def train_rows(self, batch: DataProto, step: int) -> np.ndarray:
            '''Row indices that enter the update (e.g. ``rollout.n`` of each prompt's votes).'''
        def after_update(self, workers: Any, step: int) -> None:  # optional: e.g. move an EMA teacher

then computes old/ref log-probs, advantages (``algorithm.adv_estimator``) and the update on those rows.

``algorithm.method`` is a registered name (:data:`METHODS`, e.g. ``grpo``) or ``package.module:Class``,
imported by that string, so ``verl`` never imports a recipe (TTRV: ``recipes/ttrv/method.py``).
The trainer checks ``score``'s output (one finite value per row) and stops naming the method.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from verl.protocol import DataProto
from verl.rewards.registry import batch_answers, custom_group_reward, group_indices, score_groups
from verl.rewards.voting import answer_counts, majority_answer, select_train_subset
from verl.trainer.guards import GroupStats


@dataclass
class Scores:
    """What a method's ``score`` returns: one score per row and the per-prompt statistics (may be empty:
    then the collapse guard has nothing to watch)."""

    values: Any  # array-like, one finite float per row
    groups: list[GroupStats] = field(default_factory=list)
    advantage_weights: Any = None  # optional, one finite float >= 0 per row: multiplies the row's advantages


class Method(Protocol):
    """The interface above (structural: any class with these methods is a method)."""

    def score(self, batch: DataProto, aux: DataProto | None = None) -> Scores: ...

    def metrics(self, batch: DataProto, labels: dict[str, str]) -> dict[str, float]: ...

    def train_rows(self, batch: DataProto, step: int) -> np.ndarray: ...


def first_n_per_group(batch: DataProto, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Sorted row indices of ``n`` samples of each uid group: the first ``n``, or a random ``n`` with ``rng``."""
    keep: list[int] = []
    for idx in group_indices(batch.non_tensor_batch["uid"]).values():
        keep.extend(idx[j] for j in select_train_subset(len(idx), n, rng))
    return np.asarray(sorted(keep), dtype=np.int64)


def answer_group_stats(batch: DataProto) -> list[GroupStats]:
    """:class:`GroupStats` of each uid group from the batch's ``answer`` column (INVALID never votes)."""
    from verl.rewards.answers import INVALID

    out = []
    for idx in group_indices(batch.non_tensor_batch["uid"]).values():
        answers = [str(batch.non_tensor_batch["answer"][i]) for i in idx]
        maj = majority_answer(answers)
        ratio = answer_counts(answers)[maj] / len(answers) if maj != INVALID else 0.0
        out.append(GroupStats(maj, ratio, sum(a == INVALID for a in answers) / len(answers)))
    return out


class GRPOMethod:
    """Plain GRPO: the group reward ``reward.custom_reward_function`` (given ``reward.kwargs``) scores every
    sample (answers extracted into the ``answer`` column for the guard and predictions); the first
    ``rollout.n`` samples of each prompt train; no method metrics."""

    def __init__(self, config: Any) -> None:
        self.check_config(config)
        self.reward = custom_group_reward(config.reward.custom_reward_function, config.reward.kwargs)
        self.n = config.actor_rollout_ref.rollout.n

    @staticmethod
    def check_config(config: Any) -> None:
        if config.algorithm.method_kwargs:
            raise ValueError(f"algorithm.method_kwargs={dict(config.algorithm.method_kwargs)}: algorithm.method=grpo "
                             "has no settings")
        if config.reward.name:
            raise ValueError(f"reward.name={config.reward.name!r}: algorithm.method=grpo has no named rewards; "
                             "use reward.custom_reward_function=path/to/file.py:function (or a recipe's method)")

    def score(self, batch: DataProto, aux: DataProto | None = None) -> Scores:
        batch.non_tensor_batch["answer"] = batch_answers(batch)
        return Scores(score_groups(self.reward, batch), answer_group_stats(batch))

    def metrics(self, batch: DataProto, labels: dict[str, str]) -> dict[str, float]:
        return {}

    def train_rows(self, batch: DataProto, step: int) -> np.ndarray:
        return first_n_per_group(batch, self.n)


METHODS: dict[str, type] = {"grpo": GRPOMethod}


def method_class(spec: str) -> type:
    """The class ``spec`` names: a key of :data:`METHODS` or ``package.module:Class``."""
    if spec in METHODS:
        return METHODS[spec]
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise KeyError(f"unknown method {spec!r}; known: {sorted(METHODS)} or 'package.module:Class'")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise KeyError(f"cannot load method {spec!r}: {e}") from e
    missing = [m for m in ("score", "metrics", "train_rows") if not callable(getattr(cls, m, None))]
    if missing:
        raise KeyError(f"method {spec!r} lacks {missing} (see verl.trainer.method)")
    return cls


def make_method(config: Any) -> Method:
    """The method of ``config.algorithm.method``, built with the whole config."""
    return method_class(config.algorithm.method)(config)


def checked_scores(scores: Any, batch: DataProto, method: str, what: str = "score") -> np.ndarray:
    """``scores`` as float32, or a ValueError naming ``method`` unless one finite value per row."""
    out = np.asarray(scores, dtype=np.float32)
    if out.shape != (len(batch),):
        raise ValueError(f"method {method!r}: {what} returned shape {out.shape} for {len(batch)} rows")
    for kind, bad in (("non-finite", ~np.isfinite(out)), ("negative", (out < 0) & (what == "advantage weight"))):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"method {method!r}: {kind} {what} {out[i]} for prompt uid {batch.non_tensor_batch['uid'][i]!r}")
    return out
