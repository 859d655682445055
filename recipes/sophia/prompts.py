"""SOPHIA prompts: the captioner prompt (question hidden), the reasoner prompt, the VLM training sample.

Messages are verl-style chat messages: ``{"role": ..., "content": str}`` with ``<image>`` placeholders
in strings, or structured content parts (``{"type": "image"}`` / ``{"type": "text", "text": ...}``);
``verl.models.multimodal.to_chat_messages`` reads both.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

IMAGE_PLACEHOLDER = "<image>"

CAPTION_PROMPT = (
    "Describe this image in as much detail as possible. Cover everything that is visible: every object, "
    "person, shape, line and region; all text, numbers, symbols, labels, axes, legends and their values; "
    "the spatial layout and relations between elements (positions, sizes, angles, lengths, counts); colors "
    "and styles. For charts, tables, diagrams and geometric figures, transcribe all values, marked points, "
    "given measurements and annotations exactly. Describe only what you see; do not guess or solve anything."
)

# A short fixed describe prompt for tiny CPU models (the detailed one is ~245 tokens of a 1k-vocab BPE).
BRIEF_CAPTION_PROMPT = "Describe this image in detail. Describe only what you see; do not solve anything."
CAPTION_PROMPTS = {"detailed": CAPTION_PROMPT, "brief": BRIEF_CAPTION_PROMPT}

REASONING_SYSTEM_PROMPT = (
    "You are an expert problem solver. Think step by step, check your work, and put the final answer "
    "inside \\boxed{}."
)

REASONING_TEMPLATE = (
    "You are given a question about an image. You cannot see the image, but the following visual "
    "information describes it in detail.\n\n"
    "### Visual information\n{caption}\n\n"
    "### Question\n{question}\n\n"
    "Answer the question as if you were looking at the image yourself: reason directly about what the "
    "image shows and do not mention the description, the caption or the visual information. If the question "
    "has options, give the option letter. End your response with the final answer in \\boxed{{}}."
)

LONG_REASONING_SYSTEM_PROMPT = (
    "You are a helpful assistant that looks carefully at images and reasons about them. Before answering, "
    "think through the problem step by step in detail: describe what you observe, explore approaches, "
    "verify intermediate results and correct mistakes. Then state the final answer inside \\boxed{}."
)


def build_caption_messages(n_images: int = 1, prompt: str = CAPTION_PROMPT) -> list[dict[str, Any]]:
    """The fixed "describe everything" captioner prompt for ``n_images`` images; the question is hidden.

    ``prompt`` may be a key of ``CAPTION_PROMPTS`` ("detailed", "brief") or the prompt text itself."""
    if n_images < 1:
        raise ValueError(f"caption prompt needs at least one image, got n_images={n_images}")
    text = CAPTION_PROMPTS.get(prompt, prompt)
    return [{"role": "user", "content": IMAGE_PLACEHOLDER * n_images + "\n" + text}]


def question_text(question_messages: str | Sequence[dict[str, Any]]) -> str:
    """The text of a question prompt with image placeholders / parts removed (for the text-only reasoner)."""
    if isinstance(question_messages, str):
        return question_messages.replace(IMAGE_PLACEHOLDER, "").strip()
    texts: list[str] = []
    for i, msg in enumerate(question_messages):
        if not isinstance(msg, dict) or "content" not in msg:
            raise ValueError(f"question message {i} must be a dict with 'content', got {msg!r:.200}")
        if msg.get("role", "user") != "user":
            continue
        content = msg["content"]
        if isinstance(content, str):
            texts.append(content.replace(IMAGE_PLACEHOLDER, "").strip())
        else:
            texts.extend(str(p.get("text", "")).replace(IMAGE_PLACEHOLDER, "").strip()
                         for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(t for t in texts if t)


def build_reasoning_messages(question: str | Sequence[dict[str, Any]], caption: str,
                             system_prompt: str | None = REASONING_SYSTEM_PROMPT) -> list[dict[str, str]]:
    """Chat messages for the text-only reasoner: question + one caption given as "visual information"."""
    q = question if isinstance(question, str) else question_text(question)
    q = q.replace(IMAGE_PLACEHOLDER, "").strip()
    if not q:
        raise ValueError("reasoning prompt: the question text is empty")
    msgs: list[dict[str, str]] = []
    if system_prompt:
        msgs.append({"role": "system", "content": system_prompt})
    msgs.append({"role": "user", "content": REASONING_TEMPLATE.format(caption=caption.strip(), question=q)})
    return msgs


def _count_images(messages: list[dict[str, Any]]) -> int:
    n = 0
    for m in messages:
        c = m["content"]
        if isinstance(c, str):
            n += c.count(IMAGE_PLACEHOLDER)
        else:
            n += sum(1 for p in c if isinstance(p, dict) and p.get("type") == "image")
            n += sum(str(p.get("text", "")).count(IMAGE_PLACEHOLDER) for p in c
                     if isinstance(p, dict) and p.get("type") == "text")
    return n


def build_training_sample(question_messages: str | Sequence[dict[str, Any]], images: Sequence[Any],
                          reasoning_text: str,
                          system_prompt: str | None = LONG_REASONING_SYSTEM_PROMPT) -> dict[str, Any]:
    """The VLM update sample: (image(s), original question) -> reasoning as the assistant answer.

    The caption is NOT part of it. Returns ``{"messages": [...], "images": [...]}``; the last message is the
    assistant turn. A question without image placeholders gets them prepended to its first user turn; a
    placeholder count that differs from ``len(images)`` is an error. An existing system turn is replaced
    by ``system_prompt`` (kept when ``system_prompt`` is None).
    """
    if not reasoning_text or not reasoning_text.strip():
        raise ValueError("training sample: reasoning_text is empty")
    if isinstance(question_messages, str):
        msgs = [{"role": "user", "content": question_messages}]
    else:
        msgs = copy.deepcopy(list(question_messages))
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"training sample: question message {i} needs 'role' and 'content', got {m!r:.200}")
    if system_prompt is not None:
        msgs = [m for m in msgs if m["role"] != "system"]
    if any(m["role"] == "assistant" for m in msgs):
        raise ValueError("training sample: question messages already contain an assistant turn")
    images = list(images)
    n_ph = _count_images(msgs)
    if n_ph == 0 and images:
        first = next((m for m in msgs if m["role"] == "user"), None)
        if first is None:
            raise ValueError("training sample: question messages have no user turn")
        if isinstance(first["content"], str):
            first["content"] = IMAGE_PLACEHOLDER * len(images) + "\n" + first["content"]
        else:
            first["content"] = [{"type": "image"} for _ in images] + list(first["content"])
    elif n_ph != len(images):
        raise ValueError(f"training sample: question has {n_ph} image placeholders but {len(images)} images")
    if system_prompt is not None:
        msgs.insert(0, {"role": "system", "content": system_prompt})
    msgs.append({"role": "assistant", "content": reasoning_text.strip()})
    return {"messages": msgs, "images": images}
