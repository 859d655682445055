"""The one reward path: GROUP reward functions (``path/to/file.py:function`` or a method's own), checked.

A group reward function receives all N responses of one prompt at once (majority voting needs the
whole group) plus the record's non-label metadata and the ``reward.kwargs`` of the config, and returns
one float per response::

    fn(responses: list[str], *, prompt, options: dict, extra: dict, uid: str, data_source: str, **kwargs)
        -> list[float]

``prompt`` is the record's chat messages, ``options`` its answer options ({} for open questions),
``extra`` the record's extra fields minus anything that is the answer (:data:`LABEL_KEYS`), ``uid`` the
record id and ``data_source`` its source. :func:`score_groups` calls it once per uid group and checks each
group's output (finite, one per response), stopping with :class:`RewardError` naming the function and the
prompt's uid; :func:`check_reward_kwargs` checks ``kwargs`` against the signature at start-up. Reward
functions never receive the ground truth. Which rewards a method offers by name is the method's business
(recipes/ttrv: docs/rewards.md); ``verl`` names none.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verl.protocol import DataProto, object_array
from verl.rewards.answers import extract_answer

GroupRewardFn = Callable[..., Sequence[float]]
_METADATA = ("prompt", "options", "extra", "uid", "data_source")  # what score_groups passes besides kwargs
LABEL_KEYS = frozenset({"ground_truth", "answer", "answers", "label", "labels", "gt", "gold", "solution",
                        "reward_model"})


class RewardError(ValueError):
    """A reward function failed or returned unusable scores (names the function and the prompt uid)."""


@dataclass(frozen=True)
class GroupReward:
    """A group reward function with the name it is reported under and the keyword arguments it gets."""

    name: str
    fn: GroupRewardFn
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def custom_group_reward(spec: str, kwargs: Mapping[str, Any] | None = None) -> GroupReward:
    """The group reward of ``path/to/file.py:function`` with ``kwargs`` checked against its signature."""
    fn = load_custom_reward(spec)
    check_reward_kwargs(fn, dict(kwargs or {}), spec)
    return GroupReward(spec, fn, dict(kwargs or {}))


def check_reward_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], name: str) -> None:
    """TypeError naming ``reward.kwargs.<key>`` when ``fn`` cannot take ``kwargs`` as keyword arguments."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if n not in _METADATA and (p.kind is inspect.Parameter.KEYWORD_ONLY or
             (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is not inspect.Parameter.empty))]
    for key in kwargs:
        if key not in known:
            raise TypeError(f"reward.kwargs.{key} is not a setting of reward {name!r} (its settings: {known})")


def load_custom_reward(spec: str) -> GroupRewardFn:
    """Load ``path/to/file.py:function``; a missing file or function raises an error naming it."""
    path_str, sep, fn_name = spec.rpartition(":")
    if not sep or not path_str or not fn_name:
        raise ValueError(f"custom reward spec {spec!r} must look like 'path/to/file.py:function'")
    path = Path(path_str).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"custom reward file not found: {path} (from spec {spec!r})")
    mod_name = f"_verl_custom_reward_{abs(hash(str(path)))}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot import custom reward file {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(mod_name, None)
        raise
    fn = getattr(module, fn_name, None)
    if fn is None:
        public = sorted(n for n in vars(module) if callable(getattr(module, n)) and not n.startswith("_"))
        raise AttributeError(f"function {fn_name!r} not found in custom reward file {path}; "
                             f"callables there: {public}")
    if not callable(fn):
        raise TypeError(f"{fn_name!r} in {path} is not callable")
    return fn


def without_labels(extra: Mapping[str, Any] | None, ground_truth: Any = None,
                   options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``extra`` minus every key that names the answer (:data:`LABEL_KEYS`) and, when the record's
    ``ground_truth`` is given, every value that spells it (the label itself or its option's text, case-
    and space-insensitive: a ``digit: 5`` field of a record whose answer is option ``A. 5`` goes too)."""
    forms: set[str] = set()
    if ground_truth is not None:
        gt = str(ground_truth).strip()
        forms = {gt.lower()}
        if options and gt.upper() in options:
            forms.add(str(options[gt.upper()]).strip().lower())
    return {k: v for k, v in (extra or {}).items()
            if k.lower() not in LABEL_KEYS and str(v).strip().lower() not in forms}


def compute_group_rewards(reward: GroupReward, responses: Sequence[str], *, prompt: Any, uid: str,
                          options: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None,
                          data_source: str = "") -> np.ndarray:
    """Call ``reward`` on one prompt's responses; one finite float per response, else :class:`RewardError`."""
    where = f"group reward {reward.name!r} for prompt uid {uid!r}"
    try:
        raw = reward.fn(list(responses), prompt=prompt, options=dict(options or {}), extra=without_labels(extra),
                        uid=str(uid), data_source=str(data_source), **reward.kwargs)
    except RewardError:
        raise
    except Exception as e:
        raise RewardError(f"{where} raised {type(e).__name__}: {e}") from e
    try:
        out = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise RewardError(f"{where} returned {raw!r:.200}, not a list of floats") from e
    if out.shape != (len(responses),):
        raise RewardError(f"{where} returned shape {out.shape} for {len(responses)} responses "
                          f"(one float per response expected)")
    if not np.isfinite(out).all():
        raise RewardError(f"{where} returned a non-finite score: {out.tolist()}")
    return out


def group_indices(uids: Sequence[Any]) -> dict[str, list[int]]:
    """Row indices of each uid, in first-appearance order."""
    out: dict[str, list[int]] = {}
    for i, u in enumerate(list(uids)):
        out.setdefault(str(u), []).append(i)
    return out


def score_groups(reward: GroupReward, data: DataProto) -> np.ndarray:
    """Scores of every row of a rollout batch (float32, batch order): ``reward`` is called once per uid
    group with the group's ``response_text`` and the metadata columns of its first row."""
    nt = data.non_tensor_batch

    def first(key: str, idx: list[int], absent: Any) -> Any:
        return nt[key][idx[0]] if key in nt else absent

    scores = np.zeros(len(data), dtype=np.float32)
    for uid, idx in group_indices(nt["uid"]).items():
        scores[idx] = compute_group_rewards(
            reward, [str(nt["response_text"][i]) for i in idx], prompt=first("prompt", idx, None), uid=uid,
            options=first("options", idx, None), extra=first("extra", idx, None),
            data_source=first("data_source", idx, ""))
    return scores


def batch_answers(data: DataProto) -> np.ndarray:
    """Extracted answer of every row (object array), against the row's ``options`` when present."""
    nt = data.non_tensor_batch
    options = nt["options"] if "options" in nt else [None] * len(data)
    return object_array([extract_answer(str(t), o or None) for t, o in zip(nt["response_text"], options)])


__all__ = ["LABEL_KEYS", "GroupReward", "GroupRewardFn", "RewardError", "batch_answers", "check_reward_kwargs",
           "compute_group_rewards", "custom_group_reward", "group_indices", "load_custom_reward", "score_groups",
           "without_labels"]
