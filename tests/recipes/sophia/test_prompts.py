"""SOPHIA prompts and the VLM training sample."""

from __future__ import annotations

import pytest

from recipes.sophia.prompts import (
    CAPTION_PROMPT,
    LONG_REASONING_SYSTEM_PROMPT,
    build_caption_messages,
    build_reasoning_messages,
    build_training_sample,
    question_text,
)

QUESTION = [{"role": "user", "content": "<image>\nWhat is the area of the triangle?\nA. 3\nB. 6"}]


def test_caption_prompt_hides_question():
    msgs = build_caption_messages()
    assert msgs == [{"role": "user", "content": "<image>\n" + CAPTION_PROMPT}]
    assert "triangle" not in str(msgs)


def test_reasoning_prompt_has_question_and_caption_no_image():
    msgs = build_reasoning_messages(QUESTION, "A right triangle with legs 3 and 4.")
    user = msgs[-1]["content"]
    assert "What is the area of the triangle?\nA. 3\nB. 6" in user
    assert "A right triangle with legs 3 and 4." in user
    assert "<image>" not in user and "\\boxed{}" in user and "{caption}" not in user
    assert question_text([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]) == "Q?"
    with pytest.raises(ValueError, match="empty"):
        build_reasoning_messages("<image>", "cap")


def test_training_sample_excludes_caption():
    caption = "A right triangle with legs 3 and 4."
    sample = build_training_sample(QUESTION, ["img.png"], "Legs 3, 4 -> area 6. \\boxed{B}")
    msgs = sample["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[0]["content"] == LONG_REASONING_SYSTEM_PROMPT
    assert msgs[1] == QUESTION[0] and msgs[2]["content"].endswith("\\boxed{B}")
    assert caption not in str(sample) and sample["images"] == ["img.png"]
    assert QUESTION[0]["content"].startswith("<image>")  # input not mutated


def test_training_sample_placeholders():
    s = build_training_sample("How many?", ["a.png"], "two", system_prompt=None)
    assert s["messages"] == [{"role": "user", "content": "<image>\nHow many?"}, {"role": "assistant", "content": "two"}]
    s = build_training_sample([{"role": "user", "content": [{"type": "text", "text": "Q"}]}], ["a", "b"], "ok")
    assert s["messages"][1]["content"][:2] == [{"type": "image"}, {"type": "image"}]
    with pytest.raises(ValueError, match="2 image placeholders but 1 images"):
        build_training_sample("<image><image> Q", ["a"], "ok")
    with pytest.raises(ValueError, match="reasoning_text is empty"):
        build_training_sample(QUESTION, ["a"], "  ")
