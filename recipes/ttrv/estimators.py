"""Label-free reward estimators of the TTRV recipe: ``reward.name`` picks one, ``reward.kwargs`` reach it unchanged.

An estimator is one function plus one registry line (docs/rewards.md)::

    @register_estimator("my_reward")
    def my_reward(batch: DataProto, votes: list[VoteGroup], *, weight: float = 1.0) -> np.ndarray:
        '''One score per row of ``batch`` (all votes of the step).'''

``votes`` are the step's vote groups (answers extracted once, grouped once: :func:`recipes.ttrv.voting.vote_groups`),
each with its batch rows, answers, answer distribution and majority. ``reward.kwargs`` are checked against the
keyword-only parameters at start-up (an unknown key fails naming it). The registration may declare what
else the function reads: ``token_stats`` (per-response statistics of the policy's next-token distribution,
non-tensor columns of ``batch`` computed in the old-log-prob pass: ``self_certainty``, ``token_entropy``),
``aux="views"`` (the votes of augmented views, :mod:`recipes.ttrv.views`) or ``aux="teacher"`` (the votes of
the EMA teacher, :mod:`recipes.ttrv.teacher`): the function then takes an ``aux`` argument (those votes);
and ``constant_terms``: ``kwargs -> [term names]``, the terms that are constant within every prompt group
(a per-group advantage cancels them; :mod:`recipes.ttrv.reward_check` warns).

``reward.custom_reward_function=path/to/file.py:function`` (a group reward, :mod:`verl.rewards.registry`)
takes the place of ``reward.name`` and gets ``reward.kwargs`` too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from recipes.ttrv.voting import (
    ENTROPY_FORMS,
    REWARD_TYPES,
    VoteGroup,
    constant_entropy_term,
    ttrv_group_reward,
)
from verl.protocol import DataProto
from verl.rewards.registry import check_reward_kwargs, custom_group_reward, score_groups
from verl.utils.registry import lookup

AUX_KINDS = ("views", "teacher")


AuxMaker = Callable[[DataProto, int, int, Mapping[str, Any]], tuple[DataProto, int]]


@dataclass(frozen=True)
class EstimatorSpec:
    """A registered estimator function and what it reads besides the votes."""

    fn: Callable[..., np.ndarray]
    token_stats: tuple[str, ...] = ()
    aux: str | None = None  # None | "views" | "teacher"
    constant_terms: Callable[..., list[str]] | None = None


ESTIMATORS: dict[str, EstimatorSpec] = {}


def register_estimator(name: str, *, token_stats: tuple[str, ...] = (), aux: str | None = None,
                       constant_terms: Callable[..., list[str]] | None = None) -> Callable:
    """Decorator: register ``fn(batch, votes[, aux], **kwargs) -> scores`` under ``name``."""
    if aux is not None and aux not in AUX_KINDS:
        raise ValueError(f"estimator {name!r}: aux must be one of {AUX_KINDS}, got {aux!r}")

    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        if name in ESTIMATORS and ESTIMATORS[name].fn is not fn:
            raise ValueError(f"reward estimator {name!r} is already registered")
        ESTIMATORS[name] = EstimatorSpec(fn, tuple(token_stats), aux, constant_terms)
        return fn

    return deco


@dataclass(frozen=True)
class Estimator:
    """An estimator bound to its ``reward.kwargs`` (what the method calls each step); ``settings`` are the
    kwargs with the function's defaults filled in (what the auxiliary rollouts read)."""

    name: str
    spec: EstimatorSpec
    kwargs: Mapping[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        params = inspect.signature(self.spec.fn).parameters.values()
        defaults = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        return {**defaults, **self.kwargs}

    @property
    def token_stats(self) -> tuple[str, ...]:
        return self.spec.token_stats

    @property
    def aux(self) -> str | None:
        return self.spec.aux

    def __call__(self, batch: DataProto, votes: list[VoteGroup], aux: dict[str, list[str]] | None = None) -> np.ndarray:
        if self.spec.aux is not None:
            return self.spec.fn(batch, votes, aux, **self.kwargs)
        return self.spec.fn(batch, votes, **self.kwargs)

    def constant_terms(self) -> list[str]:
        return self.spec.constant_terms(**self.kwargs) if self.spec.constant_terms else []


def build_estimator(reward: Any) -> Estimator:
    """The estimator of a ``reward`` config section (``name`` or ``custom_reward_function``, plus ``kwargs``);
    ValueError / TypeError naming the key when it cannot be used."""
    kwargs = dict(reward.kwargs)
    if reward.custom_reward_function:
        if reward.name:
            raise ValueError(f"set reward.name ({reward.name!r}) or reward.custom_reward_function, not both")
        group = custom_group_reward(reward.custom_reward_function, kwargs)
        return Estimator(group.name, EstimatorSpec(lambda batch, votes: score_groups(group, batch)), {})
    spec = lookup(ESTIMATORS, "reward estimator", reward.name,
                  " (reward.name; or reward.custom_reward_function='path/to/file.py:function')")
    check_reward_kwargs(spec.fn, kwargs, reward.name)
    _check_defaults_bind(spec.fn, kwargs, reward.name)
    return Estimator(reward.name, spec, kwargs)


def _check_defaults_bind(fn: Callable[..., Any], kwargs: Mapping[str, Any], name: str) -> None:
    """Values of the wrong kind fail now, not at the first step: each kwarg must match its default's type."""
    for key, value in kwargs.items():
        default = inspect.signature(fn).parameters[key].default
        if isinstance(default, bool) and not isinstance(value, bool) or (
                isinstance(default, (int, float)) and not isinstance(default, bool)
                and not isinstance(value, (int, float))) or (isinstance(default, str) and not isinstance(value, str)):
            raise TypeError(f"reward.kwargs.{key}={value!r}: reward {name!r} expects a {type(default).__name__}")


# ---------------------------------------------------------------------------------------------- ttrv
def _check_ttrv_choices(reward_type: str, entropy_form: str) -> None:
    for key, value, allowed in (("reward_type", reward_type, REWARD_TYPES), ("entropy_form", entropy_form, ENTROPY_FORMS)):
        if value not in allowed:
            raise ValueError(f"reward.kwargs.{key}={value!r} not allowed; choose one of {list(allowed)}")


def _ttrv_constant_terms(*, reward_type: str = "frequency", entropy_coef: float = 0.75, entropy_form: str = "per_sample",
                         invalid_penalty: float = -1.0, invalid_votes: bool = False) -> list[str]:
    _check_ttrv_choices(reward_type, entropy_form)
    if entropy_coef != 0 and constant_entropy_term(entropy_form, invalid_votes):
        return [f"entropy term (reward.kwargs.entropy_coef={entropy_coef}, reward.kwargs.entropy_form={entropy_form})"]
    return []


@register_estimator("ttrv", constant_terms=_ttrv_constant_terms)
def ttrv(batch: DataProto, votes: list[VoteGroup], *, reward_type: str = "frequency", entropy_coef: float = 0.75,
         entropy_form: str = "per_sample", invalid_penalty: float = -1.0, invalid_votes: bool = False) -> np.ndarray:
    """TTRV: R_i = r1_i + entropy_coef * r2_i (:func:`recipes.ttrv.voting.ttrv_group_reward`): r1 the answer's
    frequency among the votes (``reward_type=frequency``) or TTRL's 0/1 majority reward (``majority``), r2 the
    entropy term of ``entropy_form`` (paper | normalized | per_sample); unparseable votes earn
    ``invalid_penalty`` and never vote (``invalid_votes=true``: the public code's ablation)."""
    _check_ttrv_choices(reward_type, entropy_form)
    scores = np.zeros(len(batch), dtype=np.float64)
    for g in votes:
        scores[g.rows] = ttrv_group_reward(g.answers, reward_type=reward_type, entropy_coef=entropy_coef,
                                           entropy_form=entropy_form, invalid_penalty=invalid_penalty,
                                           invalid_votes=invalid_votes).scores
    return scores


# ------------------------------------------------------------------------- the policy's own certainty
@register_estimator("self_certainty", token_stats=("self_certainty",))
def self_certainty(batch: DataProto, votes: list[VoteGroup]) -> np.ndarray:
    """Intuitor / RLIF: the response's mean over its tokens of KL(uniform || pi(. | context)), from the policy's
    full next-token distribution in the old-log-prob pass (the ``self_certainty`` column)."""
    return batch.batch["self_certainty"].double().numpy()


@register_estimator("token_entropy", token_stats=("token_entropy",))
def token_entropy(batch: DataProto, votes: list[VoteGroup]) -> np.ndarray:
    """RENT: minus the response's mean token entropy of the policy's next-token distribution (``token_entropy``)."""
    return -batch.batch["token_entropy"].double().numpy()


# ------------------------------------------------------------------------------- votes of other voters
def agreement(answers: list[str], others: list[str], invalid_penalty: float) -> np.ndarray:
    """Per answer: its share among the VALID ``others`` (0 when none is valid); INVALID gets ``invalid_penalty``."""
    from verl.rewards.answers import INVALID

    valid = [o for o in others if o != INVALID]
    return np.array([invalid_penalty if a == INVALID else (valid.count(a) / len(valid) if valid else 0.0)
                     for a in answers], dtype=np.float64)


def _views_aux(prompts: DataProto, step: int, seed: int, settings: Mapping[str, Any]) -> tuple[DataProto, int]:
    from recipes.ttrv.views import view_prompts

    views = view_prompts(prompts, step, views=settings["views"], seed=seed, crop_min=settings["crop_min"],
                         max_rotation=settings["max_rotation"], jitter=settings["jitter"], flip=settings["flip"])
    return views, settings["votes_per_view"]


@register_estimator("view_vote", aux="views")
def view_vote(batch: DataProto, votes: list[VoteGroup], aux: dict[str, list[str]], *, views: int = 4,
              votes_per_view: int = 4, crop_min: float = 0.7, max_rotation: float = 10.0, jitter: float = 0.2,
              flip: bool = False, invalid_penalty: float = -1.0) -> np.ndarray:
    """Co-rewarding I on images: each vote of the original image earns its answer's share among the votes of
    the ``views`` augmented views (``votes_per_view`` each; :mod:`recipes.ttrv.views`); all views' votes pool
    into one answer distribution (``aux``: uid -> the views' answers)."""
    scores = np.zeros(len(batch), dtype=np.float64)
    for g in votes:
        scores[g.rows] = agreement(g.answers, aux[g.uid], invalid_penalty)
    return scores


def _teacher_aux(prompts: DataProto, step: int, seed: int, settings: Mapping[str, Any]) -> tuple[DataProto, int]:
    teacher = DataProto.from_dict(non_tensors=dict(prompts.non_tensor_batch),
                                  meta_info={**prompts.meta_info, "weights": "ema"})
    return teacher, settings["teacher_votes"]


@register_estimator("ema_teacher", aux="teacher")
def ema_teacher(batch: DataProto, votes: list[VoteGroup], aux: dict[str, list[str]], *, decay: float = 0.99,
                teacher_votes: int = 8, invalid_penalty: float = -1.0) -> np.ndarray:
    """Co-rewarding II: the pseudo-label is the majority of ``teacher_votes`` samples from an exponential moving
    average of the policy (ema <- decay * ema + (1 - decay) * policy after every update, started at the base);
    a vote earns 1 when its answer is that majority, else 0 (``invalid_penalty`` when unparseable)."""
    from verl.rewards.answers import INVALID
    from verl.rewards.voting import majority_answer

    scores = np.zeros(len(batch), dtype=np.float64)
    for g in votes:
        label = majority_answer(aux[g.uid])
        scores[g.rows] = [invalid_penalty if a == INVALID else float(a == label and label != INVALID)
                          for a in g.answers]
    return scores


AUX_MAKERS: dict[str, AuxMaker] = {"views": _views_aux, "teacher": _teacher_aux}
