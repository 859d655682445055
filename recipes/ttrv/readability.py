"""Are the model's answers readable at all? One warning on the first step when most are not.

A wrong prompt format or option style (e.g. options the extractor cannot match, a model that answers in
another language) makes nearly every vote unreadable: every vote then gets ``reward.invalid_penalty`` and
training goes on in silence. :func:`unreadable_warning` turns that into one console line with two raw
responses and their prompts, so the cause is found in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from verl.data.images import content_text
from verl.rewards.answers import INVALID

MOST = 0.5  # warn when more than this fraction of the answers cannot be read
EXAMPLES = 2
SHOWN_CHARS = 160  # of each prompt / response in the warning


def _short(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "...")


def prompt_text(messages: Any) -> str:
    """The last user message of a chat prompt as text (``<image>`` placeholders kept)."""
    if isinstance(messages, str):
        return messages
    users = [m for m in messages if m.get("role") == "user"] or list(messages)
    return content_text(users[-1].get("content")) if users else ""


def unreadable_warning(answers: Sequence[str], responses: Sequence[str], prompts: Sequence[Any],
                       uids: Sequence[str]) -> str | None:
    """One line when more than half of ``answers`` are INVALID, quoting the raw response and the prompt of
    up to two unreadable rows of different prompts; None otherwise."""
    if not answers:
        return None
    bad = [i for i, a in enumerate(answers) if a == INVALID]
    if len(bad) <= MOST * len(answers):
        return None
    picked: list[int] = []
    for i in bad:
        if len(picked) < EXAMPLES and all(uids[j] != uids[i] for j in picked):
            picked.append(i)
    examples = "; ".join(f"prompt {_short(prompt_text(prompts[i]))} -> response {_short(str(responses[i]))}"
                         for i in picked)
    return (f"{len(bad)} of {len(answers)} answers ({100 * len(bad) / len(answers):.0f} %) on the first step cannot "
            f"be read against the options: check the prompt format and the option style. {examples}")
