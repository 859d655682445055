"""Name -> object registries (advantage estimators, policy losses, KL estimators, group rewards): one rule.

    ESTIMATORS: dict[str, Fn] = {}
    register_estimator = registrar(ESTIMATORS, "advantage estimator")   # @register_estimator("grpo", ...)
    lookup(ESTIMATORS, "advantage estimator", "grpo")                   # KeyError listing the known names
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def registrar(table: dict[str, Any], kind: str) -> Callable[..., Callable[[T], T]]:
    """A decorator factory registering into ``table`` under one or more names; a name already taken by
    another object is an error naming ``kind``."""

    def register(*names: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            for name in names:
                if name in table and table[name] is not obj:
                    raise ValueError(f"{kind} {name!r} is already registered")
                table[name] = obj
            return obj

        return deco

    return register


def lookup(table: dict[str, T], kind: str, name: str, hint: str = "") -> T:
    """``table[name]``, or a KeyError naming ``kind`` and the known names (plus ``hint``)."""
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown {kind} {name!r}; known: {sorted(table)}{hint}") from None
