"""Majority-vote reward for TRL's GRPOTrainer (TTRV's label-free signal, for the peer benchmark).

TRL calls a reward function with the batch's ``prompts`` and ``completions`` (plain strings or chat
messages) and expects one float per completion. Completions are grouped by their prompt; each gets
1.0 when its answer (read by :func:`verl.rewards.answers.extract_answer`) is its group's majority
answer, 0.0 otherwise, and the penalty when it is unparseable: the project's own
:func:`recipes.ttrv.voting.majority_rewards`, so both sides of the benchmark score alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recipes.ttrv.voting import majority_rewards
from verl.rewards.answers import extract_answer


def _text(item: Any) -> str:
    """A prompt or completion as text: a string, or the text parts of chat messages."""
    if isinstance(item, str):
        return item
    out: list[str] = []
    for message in item:
        content = message["content"]
        if isinstance(content, str):
            out.append(content)
        else:
            out.extend(p["text"] if p["type"] == "text" else f"<{p['type']}>" for p in content)
    return "\n".join(out)


def majority_vote_rewards(prompts: Sequence[Any], completions: Sequence[Any], *,
                          invalid_penalty: float = -1.0, **_: Any) -> list[float]:
    """One reward per completion: agreement with the majority answer of the completions of its prompt."""
    if len(prompts) != len(completions):
        raise ValueError(f"majority_vote_rewards: {len(prompts)} prompts for {len(completions)} completions")
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(_text(prompt), []).append(i)
    rewards = [0.0] * len(completions)
    for idx in groups.values():
        answers = [extract_answer(_text(completions[i]), None) for i in idx]
        for i, r in zip(idx, majority_rewards(answers, invalid_penalty)):
            rewards[i] = float(r)
    return rewards
