"""Pre-flight checks of records before any worker starts.

Checks (reason names as counted in :class:`ValidationReport`):

- ``missing_field``: no user message, an empty prompt text, or a bad ``data_source`` / ``uid``;
- ``duplicate_uid``: two records with the same uid (group rewards key on it);
- ``image_count_mismatch``: number of ``<image>`` placeholders differs from ``len(images)``;
- ``image_missing``: an image file that does not exist;
- ``image_unreadable``: an image PIL cannot ``verify()`` and ``load()``;
- ``prompt_too_long``: more than ``max_prompt_length`` input ids as produced by the processor
  (chat template applied, image tokens included): see :func:`count_prompt_tokens`.

``on_invalid="error"`` raises :class:`DataValidationError` at the first invalid record, naming the file,
the record id and what is wrong; ``on_invalid="skip"`` drops invalid records, counts them per reason and
logs the counts on the ``verl.data`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl.data.formats import Record
from verl.data.images import check_image, count_image_placeholders, image_ref_name, load_image, record_to_chat

REASONS = ("missing_field", "duplicate_uid", "image_count_mismatch", "image_missing", "image_unreadable",
           "prompt_too_long")
MAX_EXAMPLES = 10


class DataValidationError(ValueError):
    """An invalid record; the message names the file, the record id and the problem."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_records`: ``skipped`` counts per reason and a few example messages."""

    total: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


def count_prompt_tokens(processor: Any, record: Record) -> int:
    """Number of ``input_ids`` the processor produces for the record's prompt (template + images)."""
    messages = record_to_chat(record)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if isinstance(text, list):
        text = text[0]
    kwargs: dict[str, Any] = {"text": [text]}
    if record.images:
        kwargs["images"] = [load_image(ref) for ref in record.images]
    out = processor(**kwargs)
    ids = out["input_ids"]
    first = ids[0]
    return int(first.numel()) if hasattr(first, "numel") else len(first)


def _check(record: Record, processor: Any, max_prompt_length: int | None, image_ok: dict) -> tuple[str, str] | None:
    """(reason, detail) of the first problem of one record, or None."""
    if not isinstance(record.prompt, list) or not any(
        isinstance(m, dict) and m.get("role") == "user" for m in record.prompt
    ):
        return "missing_field", "prompt has no user message"
    if not record.user_text().replace("<image>", "").strip():
        return "missing_field", "prompt text is empty"
    if not record.data_source:
        return "missing_field", "data_source is empty"
    n_ph = count_image_placeholders(record.prompt)
    if n_ph != len(record.images):
        return "image_count_mismatch", (f"prompt has {n_ph} <image> placeholder(s) but the record has "
                                        f"{len(record.images)} image(s)")
    for j, ref in enumerate(record.images):
        key = ref if isinstance(ref, str) else id(ref)
        if key not in image_ok:
            try:
                check_image(ref)
                image_ok[key] = None
            except FileNotFoundError:
                image_ok[key] = ("image_missing", f"image {j} file not found: {ref}")
            except (ValueError, TypeError) as e:
                image_ok[key] = ("image_unreadable", f"image {j} ({image_ref_name(ref)[:200]}) is not a readable "
                                                     f"image: {e}")
        if image_ok[key] is not None:
            return image_ok[key]
    if max_prompt_length is not None and max_prompt_length > 0:
        n = count_prompt_tokens(processor, record)
        if n > max_prompt_length:
            return "prompt_too_long", (f"prompt is {n} tokens with the chat template and image tokens, "
                                       f"more than max_prompt_length={max_prompt_length}")
    return None


def validate_records(
    records: Sequence[Record],
    *,
    processor: Any = None,
    max_prompt_length: int | None = None,
    on_invalid: str = "error",
    logger: logging.Logger | None = None,
) -> tuple[list[Record], ValidationReport]:
    """Check every record; returns (valid records, report). See the module docstring for the checks."""
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    if max_prompt_length is not None and max_prompt_length > 0 and processor is None:
        raise ValueError("validate_records: max_prompt_length needs a processor to count prompt tokens")
    log = logger or logging.getLogger("verl.data")
    report = ValidationReport(total=len(records))
    kept: list[Record] = []
    seen: dict[str, Record] = {}
    image_ok: dict = {}
    for rec in records:
        problem = _check(rec, processor, max_prompt_length, image_ok)
        if problem is None and rec.uid in seen:
            problem = ("duplicate_uid", f"uid {rec.uid!r} already used by {seen[rec.uid].where()}")
        if problem is None:
            seen[rec.uid] = rec
            kept.append(rec)
            continue
        reason, detail = problem
        message = f"{rec.where()}: {detail}"
        if on_invalid == "error":
            raise DataValidationError(f"invalid record: {message}", reason)
        report.skipped[reason] = report.skipped.get(reason, 0) + 1
        if len(report.examples) < MAX_EXAMPLES:
            report.examples.append(message)
    report.kept = len(kept)
    if report.skipped:
        files = sorted({Path(r.origin).name for r in records if r.origin})
        log.warning("skipped %d of %d records (%s) in %s; e.g. %s", report.n_skipped, report.total,
                    ", ".join(f"{k}={v}" for k, v in sorted(report.skipped.items())), files,
                    report.examples[0])
    else:
        log.info("validated %d records: all valid", report.total)
    return kept, report
