"""Answer extraction against a prompt's option set (stdlib only).

``extract_answer(text, options)`` returns a canonical answer or :data:`INVALID`.  Multiple choice
(``options`` = ``{letter: text}``, see :func:`verl.rewards.options.parse_options`) is resolved by
these rules, first hit wins:

0. Clean-up: special tokens (``<|im_end|>``, ``<|endoftext|>``, ``<s>``, ``</s>``, any ``<|...|>``,
   image tokens) are removed; if ``</think>`` occurs only the text after the last one is read;
   markdown ``*`` and backticks are dropped.  Empty text -> INVALID.
1. ``\\boxed{...}`` (or ``\\fbox{...}``): the last balanced box's content, read as a short answer
   (rule 3 / 4 forms).
2. Explicit cue: the LAST "answer" / "final answer" / "option" / "choice" cue (``Answer: B``,
   ``The answer is (b)``, ``answer is koala``) whose remainder of the line (its first 300
   characters) reads as a short answer.
3. A first line equal to one option's whole text or one of its names (``B Horizon``, ``T-shirt``,
   ``dial phone``) -> that option;
   else a leading letter on the first line: ``B``, ``b``, ``(B)``, ``[B]``, ``B.``, ``B)``, ``B:``,
   ``B. koala``, ``B is correct``.  A lower-case letter counts only alone (``b``, ``(b)``, ``b.``) or
   followed by its own option text; the English words ``A`` and ``I`` followed by another word
   (``A cat ...``) are not letters.  If the letter contradicts the option text after it, the
   letter wins.
4. Option text (case-insensitive, whole words, ``_`` = space): first an option text that is the
   output's whole first clause (followed by the end or ``, . ; : ! ? )``, an article before it
   allowed: "No, there is no ..." -> No; "accordion or koala" is not), then a unique option text
   anywhere; overlapping matches keep the longest ("sea urchin" beats "urchin"); two different
   options -> go on.  Single-letter option texts (AI2D's ``B. B``) are never text-matched.
   An option listing synonyms (ImageNet's ``D. dial telephone, dial phone``) matches any of its
   names as well as its whole text: "dial phone", "It is a dial telephone." -> D.
5. Standalone capital letters in strict form anywhere (``(B)``, ``[B]``, ``B.``, ``B)``, ``B:`` or
   a ``B`` ending the text): exactly one distinct in-set letter -> it; several -> INVALID.  The last
   stray capital never wins by position ("I think B. Actually C." -> INVALID).
Any letter read by rules 1-3 that is outside the option set (``E`` when options are A-D) -> INVALID,
unless it is exactly one option's single-letter text (AI2D's ``A. F`` read from output ``F``).
Yes/no options (MME "A. No / B. Yes.") are covered by rule 4: "yes" maps to the Yes letter.
Each rule scans the text a bounded number of times, so extraction is linear in the output length
(a collapsing model's 100k characters of repeated cues take milliseconds), and it never raises.

Open answers (``options`` empty/None) follow ``open_kind``: ``"number"`` -> boxed number, else the
number after the last answer cue, else the only distinct number in the text (several -> INVALID),
normalized ("3.50" -> "3.5", "1,000" -> "1000", "-2"); ``"letter"`` -> rules above with options
A-F (no option texts); ``"text"`` / None -> boxed content, else the cue remainder, else the first
line, normalized: a leading frame ("It is", "It's", "This is", "The digit is", "I see") and articles
("a", "an", "the") are dropped, then lower case without outer punctuation; a pure number or a number
word ("zero" ... "twenty") becomes the number ("It is a 7." -> "7", "The digit is seven." -> "7",
"Answer: Seven" -> "7").  With ``"number"``, number words count as numbers where no digits occur.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation

from verl.rewards.options import OPTION_LETTERS, option_key

INVALID = "[invalid]"

_SPECIAL = re.compile(r"<\|[^<>|]*\|>|</?s>|<pad>|<unk>|</?img>|<IMG_CONTEXT>|<image>|<video>")
_CUE = re.compile(r"\b(?:final\s+answer|answer|(?:correct\s+)?(?:option|choice)(?:\s+letter)?)\b\s*"
                  r"(?:is\b|:|=|：)?\s*", re.IGNORECASE)
_LETTER_HEAD = re.compile(r"^\s*(?:\(\s*([A-Za-z])\s*\)|\[\s*([A-Za-z])\s*\]|([A-Za-z])(?![A-Za-z0-9'\-]))"
                          r"\s*([.:)\],;!]?)\s*(.*)$", re.DOTALL)
_STRICT_LETTER = re.compile(r"\(([A-Z])\)|\[([A-Z])\]|(?<![A-Za-z0-9'])([A-Z])(?=[.:)]|\s*$)")
_NUMBER = re.compile(r"(?<![\w.])([-+]?)(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(\d+))?")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
_WORD_VALUE = {w: str(i) for i, w in enumerate(NUMBER_WORDS)}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)
_FRAME = re.compile(r"^(?:(?:it|this|that|there|the\s+[a-z]+)\s+(?:is|shows)|it's|i\s+see)\s+"
                    r"|^(?:an?|the)\s+", re.IGNORECASE)


def strip_special_tokens(text: str) -> str:
    """Remove chat/special tokens (``<|im_end|>``, ``<|endoftext|>``, ``<s>``, ``</s>``, ``<|...|>``)."""
    return _SPECIAL.sub(" ", text)


def normalize_number(text: str) -> str | None:
    """Canonical string of the single number ``text`` holds ("3.50" -> "3.5", "1,000" -> "1000"), or None."""
    m = _NUMBER.fullmatch(text.strip().rstrip("."))
    return _canon_number(m) if m else None


def _canon_number(m: re.Match) -> str:
    sign, whole, frac = m.group(1), m.group(2).replace(",", ""), m.group(3)
    try:
        d = Decimal(f"{'-' if sign == '-' else ''}{whole}{'.' + frac if frac else ''}")
    except InvalidOperation:  # pragma: no cover - the regex only admits digits
        return m.group(0)
    out = format(d.normalize(), "f")
    return "0" if out in ("-0", "0") else out


def _clean(text: str) -> str:
    text = strip_special_tokens(text or "")
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:  # reasoning never closed: no answer was given
        text = text.split("<think>", 1)[0]
    return re.sub(r"[*`]+", "", text).strip()


_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def boxed_contents(text: str) -> list[str]:
    """Contents of every balanced ``\\boxed{...}`` / ``\\fbox{...}`` in order (nested braces kept;
    an unbalanced box is skipped)."""
    out: list[str] = []
    for m in _BOX.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end():i - 1])
    return out


def _last_boxed(text: str) -> str | None:
    boxes = boxed_contents(text)
    return boxes[-1].strip() if boxes else None


def _search_key(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[*`]+", "", text.lower()).replace("_", " ")).strip()


_ARTICLE = re.compile(r"(?:a|an|the)\s+")
_NAME_SPLIT = re.compile(r"(?<!\d),|,(?!\d)")  # commas between names, not inside "1,000"
_MAX_SHORT = 300  # characters of a cue's remainder read as a short answer (keeps scanning linear)


@functools.lru_cache(maxsize=4096)
def _option_names(opt: str) -> tuple[re.Pattern, ...]:
    """Whole-word patterns for an option's names: its whole text and each comma-separated synonym.

    ``"dial telephone, dial phone"`` -> whole text, "dial telephone", "dial phone".  Only a list of
    short names (each <= 4 words, no ``; : . ? !``) is split, never prose.  A name led by "the"/"an"
    also matches without it.  Single-letter names are never text-matched.
    """
    key = option_key(opt)
    parts = [option_key(n) for n in _NAME_SPLIT.split(key)]
    is_list = len(parts) > 1 and not re.search(r"[;:.?!]", key) and all(len(n.split()) <= 4 for n in parts)
    names = [key] + (parts if is_list else [])
    names += [n.split(" ", 1)[1] for n in names if re.match(r"(?:the|an) \S", n)]
    keep = dict.fromkeys(n for n in names if n and not (len(n) == 1 and n.isalpha()))
    return tuple(re.compile(r"(?<![a-z0-9])" + re.escape(n) + r"(?![a-z0-9]|\.\d)") for n in keep)


def _undominated(spans: list[tuple[int, int, str]]) -> set[str]:
    """Letters of the spans not strictly inside a longer span (one sort, linear sweep)."""
    spans.sort(key=lambda sp: (sp[0], -sp[1]))
    out: set[str] = set()
    max_end, i = -1, 0
    while i < len(spans):
        j = i
        while j < len(spans) and spans[j][:2] == spans[i][:2]:
            j += 1
        if spans[i][1] > max_end:
            out.update(sp[2] for sp in spans[i:j])
        max_end = max(max_end, spans[i][1])
        i = j
    return out


def _text_matches(text: str, options: dict[str, str], leading: bool) -> set[str]:
    """Letters one of whose names occurs (whole words) in ``text``; overlapped shorter matches dropped.

    ``leading``: only a name that is the text's whole first clause (after an optional article).
    """
    hay = _search_key(text)
    art = _ARTICLE.match(hay)
    starts = (0, art.end()) if art else (0,)
    spans: list[tuple[int, int, str]] = []
    for letter, opt in options.items():
        for pat in _option_names(opt):
            if leading:
                for m in filter(None, (pat.match(hay, st) for st in starts)):
                    if re.match(r"$|[,.;:!?)]", hay[m.end():m.end() + 1]):
                        spans.append((m.start(), m.end(), letter))
            else:
                spans += [(m.start(), m.end(), letter) for m in pat.finditer(hay)]
    return _undominated(spans)


def _letter_head(s: str, options: dict[str, str]) -> str | None:
    """Rule 3 on ``s``: a letter answer at its start -> letter / INVALID (out of set); None if none."""
    m = _LETTER_HEAD.match(s)
    if not m:
        return None
    raw = m.group(1) or m.group(2) or m.group(3)
    bracketed, sep, rest = m.group(3) is None, m.group(4), m.group(5).strip()
    letter = raw.upper()
    own_text = bool(rest) and letter in options and letter in _text_matches(rest, {letter: options[letter]}, True)
    strong = bracketed or sep in (".", ":", ")", "]")
    if rest and not own_text and (raw.islower() or (not strong and raw in ("A", "I"))):
        return None
    if letter in options:
        return letter
    same = [k for k, v in options.items() if v.strip().lower() == raw.lower()]
    return same[0] if len(same) == 1 else INVALID


def _exact_text(s: str, options: dict[str, str]) -> str | None:
    """The only option one of whose names equals ``s`` (article-insensitive; single letters excluded)."""
    key = option_key(s)
    if not key or (len(key) == 1 and key.isalpha()):
        return None
    art = _ARTICLE.match(key)
    keys = (key, key[art.end():]) if art else (key,)
    hits = [k for k, v in options.items() if any(p.fullmatch(x) for p in _option_names(v) for x in keys)]
    return hits[0] if len(hits) == 1 else None


def _short(s: str, options: dict[str, str]) -> str | None:
    """A short answer (boxed content, cue remainder): letter form, else a unique option text."""
    got = _exact_text(s, options) or _letter_head(s, options)
    if got is not None:
        return got
    return _unique_text_match(s, options)


def _unique_text_match(s: str, options: dict[str, str]) -> str | None:
    """The one option whose text matches (as the leading clause first, then anywhere), else None."""
    for leading in (True, False):
        hits = _text_matches(s, options, leading)
        if len(hits) == 1:
            return hits.pop()
    return None


def _cue_remainders(text: str) -> list[str]:
    """The rest of the line after each answer cue, last cue first, each cut at ``_MAX_SHORT`` chars."""
    out = []
    for m in _CUE.finditer(text):
        end = text.find("\n", m.end(), m.end() + _MAX_SHORT)
        out.append(text[m.end():end if end >= 0 else m.end() + _MAX_SHORT].strip())
    return out[::-1]


def _extract_choice(t: str, options: dict[str, str]) -> str:
    boxed = _last_boxed(t)
    if boxed:
        got = _short(boxed, options)
        if got is not None:
            return got
    for rem in dict.fromkeys(_cue_remainders(t)):  # repeated cues are read once
        if rem:
            got = _short(rem, options)
            if got is not None:
                return got
    first_line = t.split("\n", 1)[0]
    got = _exact_text(first_line, options) or _letter_head(first_line, options)
    if got is not None:
        return got
    got = _unique_text_match(t, options)
    if got is not None:
        return got
    letters = {next(g for g in m.groups() if g) for m in _STRICT_LETTER.finditer(t)} & set(options)
    return letters.pop() if len(letters) == 1 else INVALID


def _extract_number(t: str) -> str:
    boxed = _last_boxed(t)
    for source in ([boxed] if boxed else []) + [r for r in _cue_remainders(t) if r]:
        nums = list(_NUMBER.finditer(source))
        if nums:
            return _canon_number(nums[-1] if source is boxed else nums[0])
    values = {_canon_number(m) for m in _NUMBER.finditer(t)}
    if not values:
        values = {_WORD_VALUE[m.group(1).lower()] for m in _NUMBER_WORD.finditer(t)}
    return values.pop() if len(values) == 1 else INVALID


def _normalize_text(s: str) -> str:
    """Open text answer: frame and articles dropped, then a number, a number word's value, or the text key."""
    s = s.strip()
    while (m := _FRAME.match(s)) and m.end() < len(s):
        s = s[m.end():]
    num = normalize_number(s)
    if num is not None:
        return num
    key = option_key(s)
    return _WORD_VALUE.get(key, key) if key else INVALID


def extract_answer(text: str, options: dict[str, str] | None, *, open_kind: str | None = None) -> str:
    """Canonical answer read from a model output, or INVALID (rules in the module docstring).

    ``open_kind`` ("letter" | "number" | "text" | None) only applies when ``options`` is empty.
    """
    if open_kind not in (None, "letter", "number", "text"):
        raise ValueError(f"open_kind must be 'letter', 'number', 'text' or None, got {open_kind!r}")
    t = _clean(text)
    if not t:
        return INVALID
    if options:
        return _extract_choice(t, options)
    if open_kind == "letter":
        return _extract_choice(t, dict.fromkeys(OPTION_LETTERS, ""))
    if open_kind == "number":
        return _extract_number(t)
    boxed = _last_boxed(t)
    if boxed:
        return _normalize_text(boxed)
    rems = [r for r in _cue_remainders(t) if r]
    return _normalize_text(rems[0] if rems else t.split("\n", 1)[0])


def normalize_ground_truth(gt: object, options: dict[str, str] | None, *, open_kind: str | None = None) -> str:
    """Map a dataset ground truth to the canonical form :func:`extract_answer` produces.

    Letters (``"B"``, ``"(B)"``, ``"b."``) stay letters; a non-letter ground truth equal to one option
    text (``False``, ``090^\\circ T``) becomes that option's letter.  Raises ValueError naming the
    value and the options when it cannot be mapped.
    """
    s = str(gt).strip()
    if options:
        m = re.fullmatch(r"\(?\s*([A-Fa-f])\s*\)?\.?", s)
        if m and m.group(1).upper() in options:
            return m.group(1).upper()
        hits = [k for k, v in options.items() if option_key(v) == option_key(s) and option_key(s)]
        if len(hits) == 1:
            return hits[0]
        raise ValueError(f"ground truth {gt!r} is neither an option letter nor exactly one option text; "
                         f"options: {options}")
    if open_kind == "letter":
        m = re.fullmatch(r"\(?\s*([A-Fa-f])\s*\)?\.?", s)
        if not m:
            raise ValueError(f"ground truth {gt!r} is not a letter A-F")
        return m.group(1).upper()
    if open_kind == "number":
        num = normalize_number(s)
        if num is None:
            raise ValueError(f"ground truth {gt!r} is not a number")
        return num
    out = _normalize_text(s)
    if out == INVALID:
        raise ValueError(f"ground truth {gt!r} is empty")
    return out
