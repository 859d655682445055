"""How a training method plugs into the controller loop: the object named by ``algorithm.method``.

The loop in :mod:`verl.trainer.fit` is generic. Each step it generates ``rollout.n_votes`` samples per
prompt, then asks the method three things::

    class MyMethod:
        def __init__(self, config: RLConfig) -> None: ...
        def score(self, batch: DataProto) -> np.ndarray:
            '''One finite score per row (the sequence reward). May add non-tensor columns (e.g. answers).'''
        def metrics(self, batch: DataProto, labels: dict[str, str]) -> dict[str, float]:
            '''Logged metrics of the scored batch (all votes). ``labels`` (uid -> ground truth) are for
            reporting only: nothing derived from them may feed back into training.'''
        def train_rows(self, batch: DataProto, step: int) -> np.ndarray:
            '''Row indices that enter the update (e.g. ``rollout.n`` of each prompt's votes).'''

then computes old/ref log-probs, advantages (``algorithm.adv_estimator``) and the update on those rows.

``algorithm.method`` is a registered name (:data:`METHODS`, e.g. ``grpo``) or ``package.module:Class``,
imported by that string, so ``verl`` never imports a recipe (``recipes.ttrv.method:TTRVMethod``).
The trainer checks ``score``'s output (one finite value per row) and stops naming the method.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from verl.protocol import DataProto
from verl.rewards.registry import batch_answers, build_group_reward, group_indices, score_groups
from verl.rewards.voting import select_train_subset


class Method(Protocol):
    """The interface above (structural: any class with these methods is a method)."""

    def score(self, batch: DataProto) -> np.ndarray: ...

    def metrics(self, batch: DataProto, labels: dict[str, str]) -> dict[str, float]: ...

    def train_rows(self, batch: DataProto, step: int) -> np.ndarray: ...


def first_n_per_group(batch: DataProto, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Sorted row indices of ``n`` samples of each uid group: the first ``n``, or a random ``n`` with ``rng``."""
    keep: list[int] = []
    for idx in group_indices(batch.non_tensor_batch["uid"]).values():
        keep.extend(idx[j] for j in select_train_subset(len(idx), n, rng))
    return np.asarray(sorted(keep), dtype=np.int64)


class GRPOMethod:
    """Plain GRPO: the configured group reward (``reward.name`` or ``reward.custom_reward_function``) scores
    every sample (answers extracted into the ``answer`` column); the first ``rollout.n`` samples of each
    prompt train; no method metrics."""

    def __init__(self, config: Any) -> None:
        self.reward = build_group_reward(config.reward)
        self.n = config.actor_rollout_ref.rollout.n

    def score(self, batch: DataProto) -> np.ndarray:
        batch.non_tensor_batch["answer"] = batch_answers(batch)  # for the collapse guard and predictions
        return score_groups(self.reward, batch)

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


def checked_scores(scores: Any, batch: DataProto, method: str) -> np.ndarray:
    """``scores`` as float32, or a ValueError naming ``method`` unless one finite value per row."""
    out = np.asarray(scores, dtype=np.float32)
    if out.shape != (len(batch),):
        raise ValueError(f"method {method!r}: score returned shape {out.shape} for {len(batch)} rows")
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        uid = batch.non_tensor_batch["uid"][bad[0]]
        raise ValueError(f"method {method!r}: non-finite score {out[bad[0]]} for prompt uid {uid!r}")
    return out
