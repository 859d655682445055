"""Multiple-choice option parsing from a prompt's text (stdlib only).

Recognized option lines (one option per line, letters A-F, in order A, B, C, ...)::

    A. koala      A.60      A:33      A) koala      (A) 30°      [A] koala

The option block is the LAST run of consecutive lines lettered A, B, C, ... (blank lines between
options are allowed); a header such as ``Options:`` / ``Choices:`` / ``Choice:`` is not needed.
A bare capital at the start of a sentence ("As shown ...", "A cat ...") is not an option line: a
separator (``.``, ``:``, ``)``) or brackets around the letter are required.  Option texts keep
their case; trailing spaces are removed (``B. Yes.`` -> ``"Yes."``).
"""

from __future__ import annotations

import re

OPTION_LETTERS = "ABCDEF"
_LINE = re.compile(r"^\s*(?:\(([A-F])\)|\[([A-F])\]|([A-F])\s*[.:)：])\s*(.*?)\s*$")


def parse_options(prompt_text: str) -> dict[str, str]:
    """Return ``{letter: option text}`` of the last A, B, C, ... option block ({} if there is none).

    A block needs at least two options (a lone ``A. ...`` line is not a choice list).
    """
    best: dict[str, str] = {}
    current: dict[str, str] = {}
    for line in prompt_text.splitlines():
        if not line.strip():
            continue
        m = _LINE.match(line)
        letter = (m.group(1) or m.group(2) or m.group(3)) if m else None
        if letter == "A":
            if len(current) >= 2:
                best = current
            current = {"A": m.group(4)}
        elif letter is not None and current and letter == OPTION_LETTERS[len(current)]:
            current[letter] = m.group(4)
        else:
            if len(current) >= 2:
                best = current
            current = {}
    if len(current) >= 2:
        best = current
    return dict(best)


def option_key(text: str) -> str:
    """Canonical form of an option text for comparisons: lower case, single spaces, no outer punctuation."""
    t = re.sub(r"[*`]+", "", text.lower()).replace("_", " ")
    t = re.sub(r"\s+", " ", t).strip()
    return t.strip(" .,;:!?\"'")


def is_yes_no(options: dict[str, str] | None) -> bool:
    """True when the options are exactly {yes, no} (in any order/case, e.g. MME's "A. No / B. Yes.")."""
    if not options or len(options) != 2:
        return False
    return sorted(option_key(t) for t in options.values()) == ["no", "yes"]
