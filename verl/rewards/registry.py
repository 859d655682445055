"""Registry of GROUP reward functions and loading of custom ``path/to/file.py:function`` rewards.

A group reward function receives all N responses of one prompt at once (majority voting needs the
whole group) and returns one float per response::

    fn(responses: list[str], *, prompt: str, options: dict, extra: dict) -> list[float]

Reward functions never receive the ground truth: :func:`compute_group_rewards` refuses an ``extra``
that carries one (ground truths are read only by :mod:`verl.rewards.metrics`).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path

from verl.rewards.answers import extract_answer
from verl.rewards.options import parse_options
from verl.rewards.voting import ttrv_group_reward

GroupRewardFn = Callable[..., list[float]]
GROUP_REWARDS: dict[str, GroupRewardFn] = {}
FORBIDDEN_EXTRA_KEYS = ("ground_truth", "answer", "label", "gt")


def register_group_reward(name: str) -> Callable[[GroupRewardFn], GroupRewardFn]:
    """Decorator registering a group reward function under ``name``."""

    def deco(fn: GroupRewardFn) -> GroupRewardFn:
        if name in GROUP_REWARDS and GROUP_REWARDS[name] is not fn:
            raise ValueError(f"group reward {name!r} is already registered")
        GROUP_REWARDS[name] = fn
        return fn

    return deco


def get_group_reward(name_or_spec: str) -> GroupRewardFn:
    """A registered name, or a ``path/to/file.py:function`` spec (loaded with :func:`load_custom_reward`)."""
    if name_or_spec in GROUP_REWARDS:
        return GROUP_REWARDS[name_or_spec]
    if ":" in name_or_spec and name_or_spec.split(":", 1)[0].endswith(".py"):
        return load_custom_reward(name_or_spec)
    raise KeyError(f"unknown group reward {name_or_spec!r}; known: {sorted(GROUP_REWARDS)} "
                   f"or a 'path/to/file.py:function' spec")


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


def compute_group_rewards(fn: GroupRewardFn, responses: list[str], *, prompt: str,
                          options: dict | None = None, extra: dict | None = None,
                          where: str = "") -> list[float]:
    """Call a group reward function and check its output (one finite float per response).

    ``where`` (e.g. a record id) is added to error messages.
    """
    extra = dict(extra or {})
    leaked = [k for k in FORBIDDEN_EXTRA_KEYS if k in extra]
    if leaked:
        raise ValueError(f"reward extra{where and ' for ' + where} carries ground-truth keys {leaked}: "
                         f"reward functions must not see labels")
    out = fn(list(responses), prompt=prompt, options=dict(options or {}), extra=extra)
    out = [float(x) for x in out]
    if len(out) != len(responses):
        raise ValueError(f"group reward {getattr(fn, '__name__', fn)!r}{where and ' for ' + where} returned "
                         f"{len(out)} scores for {len(responses)} responses")
    if not all(math.isfinite(x) for x in out):
        raise ValueError(f"group reward {getattr(fn, '__name__', fn)!r}{where and ' for ' + where} "
                         f"returned a non-finite score: {out}")
    return out


@register_group_reward("ttrv")
def ttrv_reward(responses: list[str], *, prompt: str, options: dict | None = None,
                extra: dict | None = None) -> list[float]:
    """TTRV group reward: extract answers against the options, then :func:`ttrv_group_reward`.

    ``options`` default to those parsed from ``prompt``.  ``extra`` may set ``reward_type``,
    ``entropy_coef``, ``entropy_form``, ``invalid_penalty``, ``invalid_votes`` and ``open_kind``.
    """
    extra = extra or {}
    opts = options if options else parse_options(prompt)
    answers = [extract_answer(r, opts, open_kind=extra.get("open_kind")) for r in responses]
    kw = {k: extra[k] for k in ("reward_type", "entropy_coef", "entropy_form", "invalid_penalty",
                                "invalid_votes") if k in extra}
    return ttrv_group_reward(answers, **kw).scores.tolist()
