from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest

from verl.data.formats import Record, read_json_records
from verl.data.validate import DataValidationError, count_prompt_tokens, validate_records


@pytest.fixture()
def good(small_digits) -> list[Record]:
    return read_json_records(small_digits / "test_occlude_mc.json")


def _bad_cases(good: list[Record], tmp_path: Path) -> dict[str, Record]:
    """One invalid record per reason (copies of valid ones with one thing broken)."""
    cases: dict[str, Record] = {}
    r = copy.deepcopy(good[0])
    r.images = [str(tmp_path / "gone.png")]
    cases["image_missing"] = r
    r = copy.deepcopy(good[1])
    r.images = [Path(good[1].images[0]).read_bytes()[:60]]  # truncated PNG bytes
    cases["image_unreadable"] = r
    r = copy.deepcopy(good[2])
    (tmp_path / "fake.png").write_bytes(b"not an image at all")
    r.images = [str(tmp_path / "fake.png")]
    cases["image_unreadable_file"] = r
    r = copy.deepcopy(good[3])
    r.prompt = [{"role": "system", "content": "hi"}]
    cases["missing_field"] = r
    r = copy.deepcopy(good[4])
    r.prompt = [{"role": "user", "content": "<image> <image> which digit?"}]
    cases["image_count_mismatch"] = r
    return cases


@pytest.mark.parametrize("name", ["image_missing", "image_unreadable", "image_unreadable_file", "missing_field",
                                  "image_count_mismatch"])
def test_each_bad_record_raises_naming_file_and_id(good, tmp_path, name):
    bad = _bad_cases(good, tmp_path)[name]
    records = [good[5], bad]
    with pytest.raises(DataValidationError) as ei:
        validate_records(records)
    msg = str(ei.value)
    assert "test_occlude_mc.json" in msg and f"record id '{bad.record_id}'" in msg
    assert ei.value.reason == name.replace("_file", "")
    expected_words = {"image_missing": "file not found", "image_unreadable": "not a readable image",
                      "image_unreadable_file": "not a readable image", "missing_field": "no user message",
                      "image_count_mismatch": "2 <image> placeholder(s) but the record has 1 image"}[name]
    assert expected_words in msg


def test_empty_prompt_text_is_missing_field(good):
    r = copy.deepcopy(good[0])
    r.prompt = [{"role": "user", "content": "<image>  "}]
    with pytest.raises(DataValidationError, match="prompt text is empty"):
        validate_records([r])


def test_skip_mode_counts_and_logs(good, tmp_path, caplog):
    cases = _bad_cases(good, tmp_path)
    dup = copy.deepcopy(good[5])
    records = [good[5], *cases.values(), dup]
    with caplog.at_level(logging.WARNING, logger="verl.data"):
        kept, report = validate_records(records, on_invalid="skip")
    assert kept == [good[5]]
    assert report.skipped == {"image_missing": 1, "image_unreadable": 2, "missing_field": 1,
                              "image_count_mismatch": 1, "duplicate_uid": 1}
    assert report.total == 7 and report.kept == 1 and report.n_skipped == 6
    assert len(report.examples) == 6 and all("test_occlude_mc.json: record id" in e for e in report.examples)
    assert "skipped 6 of 7 records" in caplog.text and "image_unreadable=2" in caplog.text


def test_all_valid_passes_through(good):
    kept, report = validate_records(good)
    assert kept == good and report.skipped == {} and report.kept == len(good)
    with pytest.raises(ValueError, match="needs a processor"):
        validate_records(good, max_prompt_length=10)
    with pytest.raises(ValueError, match="on_invalid"):
        validate_records(good, on_invalid="ignore")


class FakeProcessor:
    """Counts one token per whitespace word of the templated text plus 10 per image."""

    def __init__(self):
        self.seen = []

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt and not tokenize
        self.seen.append(messages)
        words = []
        for m in messages:
            words.append(f"<{m['role']}>")
            for p in m["content"]:
                words.extend(["<img>"] if p["type"] == "image" else p["text"].split())
        return " ".join(words + ["<assistant>"])

    def __call__(self, text, images=None):
        n = len(text[0].split()) + 9 * len(images or [])
        return {"input_ids": [list(range(n))]}


def test_count_with_fake_processor_and_length_filter(good):
    rec = copy.deepcopy(good[0])
    rec.prompt = [{"role": "user", "content": "<image> one two three"}]
    proc = FakeProcessor()
    # <user> + <img> + 3 words + <assistant> = 6 words; the image adds 9 more tokens -> 15
    assert count_prompt_tokens(proc, rec) == 15
    assert proc.seen[0] == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " one two three"}]}]
    kept, _ = validate_records([rec], processor=proc, max_prompt_length=15)
    assert kept == [rec]
    with pytest.raises(DataValidationError, match=r"record id '.*'.*15 tokens.*max_prompt_length=14"):
        validate_records([rec], processor=proc, max_prompt_length=14)


def test_overlong_prompt_with_real_processor(good, tiny_vlm_path):
    from verl.models.load import load_processor

    proc = load_processor(tiny_vlm_path("qwen2_5_vl"))
    rec = good[0]
    n = count_prompt_tokens(proc, rec)
    # hand check: the text-only tokenization of the templated prompt has ONE image pad token; the processor
    # expands it to (grid_h * grid_w) / merge_size**2 tokens for the 56x56 image
    from verl.data.formats import load_image, record_to_chat

    text = proc.apply_chat_template(record_to_chat(rec), add_generation_prompt=True, tokenize=False)
    n_text = len(proc.tokenizer(text)["input_ids"])
    grid = proc.image_processor(images=[load_image(rec.images[0])])["image_grid_thw"][0]
    merge = proc.image_processor.merge_size
    n_img = int(grid[0] * grid[1] * grid[2]) // merge**2
    assert n_img > 1
    assert n == n_text - 1 + n_img
    kept, _ = validate_records([rec], processor=proc, max_prompt_length=n)
    assert len(kept) == 1
    with pytest.raises(DataValidationError) as ei:
        validate_records(good[:2], processor=proc, max_prompt_length=n - 1)
    assert "test_occlude_mc.json" in str(ei.value) and f"record id '{rec.record_id}'" in str(ei.value)
    assert ei.value.reason == "prompt_too_long"
    kept, report = validate_records(good, processor=proc, max_prompt_length=n - 1, on_invalid="skip")
    assert report.skipped.get("prompt_too_long", 0) >= 1 and len(kept) + report.n_skipped == len(good)
