"""SOPHIA reasoning reward: R(y) = 1 if the final answer of a reasoning verifies against the gold answer.

Extraction (``extract_final_answer``), in order:
  1. the content of the LAST ``\\boxed{...}`` (nested braces handled; ``\\fbox{...}`` too);
  2. otherwise the last "Answer: X" / "Final answer: X" / "the answer is X" occurrence (rest of that line,
     trailing period dropped);
  3. otherwise ``None`` (reward 0).

Verification (``answers_match``), the gold kind decides the rule:
  * option letter (``B``, ``(B)``, ``B.``, ``B. koala``; letters A-F) -> the prediction's option letter must
    match (``B``, ``(B)``, ``B)``, ``B: text``, ``\\text{B}``);
  * short text (no digit, no LaTeX / math operator) -> normalized string match (case, whitespace,
    punctuation, ``$``/``\\text{}`` insensitive). math-verify is NOT used here: it reads "cat" as c*a*t,
    which equals "act";
  * anything else (numbers, fractions, expressions, intervals) -> normalized string match first, then
    ``math_verify.parse`` + ``math_verify.verify`` on ``$...$``-wrapped strings.
math-verify is guarded: its own signal-based timeouts are used in the main thread (they cannot run
elsewhere, so other threads call it without one), inputs longer than ``MAX_MATH_CHARS`` skip it, and any
exception (its ``TimeoutException`` is a ``BaseException``) counts as "no match". Nothing here raises
into the caller for any text input.
"""

from __future__ import annotations

import logging
import re
import threading

from verl.rewards.answers import boxed_contents

logger = logging.getLogger(__name__)

MAX_MATH_CHARS = 300
MATH_TIMEOUT_S = 2

_ANSWER_LINE_RE = re.compile(
    r"\b(?:(?:final\s+)?answer\s*(?:is\s*)?[:：]|the\s+(?:final\s+)?answer\s+is\b[:：]?)\s*(.+)", re.IGNORECASE
)
_OPTION_RE = re.compile(r"^\(?([A-F])\)?(?:\s*[.:)]\s*.*|\s*)$", re.DOTALL)
_MATHISH_RE = re.compile(r"[\d\\^_=+*/<>{}\[\]|%]|(?<![A-Za-z])-|-(?![A-Za-z])")


def extract_final_answer(text: str | None) -> str | None:
    """The final answer of a reasoning text (see module doc for the rules), stripped; None if absent."""
    if not text:
        return None
    boxed = boxed_contents(text)
    if boxed:
        ans = boxed[-1].strip()
        return ans or None
    matches = list(_ANSWER_LINE_RE.finditer(text))
    if matches:
        ans = matches[-1].group(1).strip().splitlines()[0].strip()
        ans = re.sub(r"[.\s]+$", "", ans).strip("*").strip()
        return ans or None
    return None


def _unwrap(s: str) -> str:
    s = s.strip().strip("$").strip()
    for _ in range(3):  # \text{...}, \mathrm{...}, \textbf{...} around the whole answer
        m = re.fullmatch(r"\\(?:text|mathrm|textbf|mathbf)\s*\{(.*)\}", s, re.DOTALL)
        if not m:
            break
        s = m.group(1).strip()
    return s


def normalize_text(s: str) -> str:
    """Lower-case, unwrap ``$``/``\\text{}``, drop punctuation except math-relevant, collapse whitespace."""
    s = _unwrap(s).lower()
    s = re.sub(r"\\[,;!: ]", " ", s)  # LaTeX spacing commands
    s = re.sub(r"[\"'`.,;:!?]+(?=\s|$)", "", s)  # trailing punctuation of words
    s = re.sub(r"^[\"'`]+", "", s)
    return " ".join(s.split())


def option_letter(s: str) -> str | None:
    """The option letter (A-F) an answer names, e.g. ``(B)``, ``B.``, ``B: koala``, ``\\text{B}``; else None."""
    m = _OPTION_RE.match(_unwrap(s))
    return m.group(1) if m else None


def _math_verify(gold: str, pred: str) -> bool:
    if len(gold) > MAX_MATH_CHARS or len(pred) > MAX_MATH_CHARS:
        return False
    try:
        from math_verify import parse, verify
    except ImportError:  # pragma: no cover - math-verify is a declared dependency
        return False
    # signal.alarm only works in the main thread; elsewhere run without math-verify's timeout.
    t = MATH_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        g = parse(f"${gold}$", parsing_timeout=t)
        p = parse(f"${pred}$", parsing_timeout=t)
        if not g or not p:
            return False
        return bool(verify(g, p, timeout_seconds=t))
    except BaseException as e:  # noqa: BLE001 - TimeoutException derives from BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        logger.debug("math-verify failed on gold=%r pred=%r: %s", gold[:80], pred[:80], type(e).__name__)
        return False


def answers_match(pred: str | None, gold: str) -> bool:
    """Whether an extracted answer matches the gold answer (rules in the module doc). Never raises."""
    if pred is None or gold is None:
        return False
    pred, gold = str(pred), str(gold)
    gold_letter = option_letter(gold)
    if gold_letter is not None:
        return option_letter(pred) == gold_letter
    ng, np_ = normalize_text(gold), normalize_text(pred)
    if not ng or not np_:
        return False
    if ng == np_:
        return True
    if not _MATHISH_RE.search(_unwrap(gold)):
        return False  # short text answer: string match only
    return _math_verify(_unwrap(gold), _unwrap(pred))


def reasoning_reward(response: str | None, gold: str) -> float:
    """SOPHIA R(y): 1.0 if the final answer extracted from ``response`` matches ``gold``, else 0.0."""
    try:
        return 1.0 if answers_match(extract_final_answer(response), gold) else 0.0
    except Exception as e:  # noqa: BLE001 - a reward must never kill the stage
        logger.warning("reasoning_reward failed (%s); scoring 0", type(e).__name__)
        return 0.0
