"""Image references and chat messages shared by the data layer and the workers.

Images travel as *references*: an absolute file path (``str``) or the encoded file bytes (PNG/JPEG
``bytes``). They are decoded only where pixels are needed (:func:`load_image`), never stored as arrays.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

IMAGE_PLACEHOLDER = "<image>"

ImageRef = str | bytes


def image_ref_name(ref: Any) -> str:
    """Short printable description of an image reference (for error messages)."""
    if isinstance(ref, bytes | bytearray):
        return f"<{len(ref)} image bytes>"
    return str(ref)


def read_image_bytes(ref: ImageRef | Path) -> bytes:
    """The encoded bytes of an image reference (a path is read as is, without re-encoding)."""
    if isinstance(ref, bytes | bytearray):
        return bytes(ref)
    path = Path(ref)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    return path.read_bytes()


def load_image(ref: ImageRef | Path | dict) -> Image.Image:
    """Decode an image reference (path, encoded bytes, or a ``{"bytes", "path"}`` dict) to an RGB image.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for data PIL cannot decode.
    """
    if isinstance(ref, dict):
        ref = ref.get("bytes") or ref.get("path")
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if isinstance(ref, bytes | bytearray):
        src: Any = io.BytesIO(bytes(ref))
    elif isinstance(ref, str | Path):
        if not Path(ref).is_file():
            raise FileNotFoundError(f"image file not found: {ref}")
        src = str(ref)
    else:
        raise TypeError(f"unsupported image reference of type {type(ref).__name__}")
    try:
        with Image.open(src) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode image {image_ref_name(ref)}: {e}") from e


def check_image(ref: ImageRef | Path) -> None:
    """Raise like :func:`load_image` unless the image is present and fully decodable (``verify`` + ``load``)."""
    if isinstance(ref, bytes | bytearray):
        data: Any = bytes(ref)
    elif isinstance(ref, str | Path):
        if not Path(ref).is_file():
            raise FileNotFoundError(f"image file not found: {ref}")
        data = Path(ref).read_bytes()
    else:
        raise TypeError(f"unsupported image reference of type {type(ref).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode image {image_ref_name(ref)}: {e}") from e


def _split_text(text: str) -> list[dict]:
    parts: list[dict] = []
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i > 0:
            parts.append({"type": "image"})
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts


def content_parts(content: Any) -> list[dict]:
    """One message's content as typed parts; ``<image>`` in strings becomes ``{"type": "image"}``."""
    if isinstance(content, str):
        return _split_text(content)
    parts: list[dict] = []
    for part in list(content or []):
        if isinstance(part, str):
            parts.extend(_split_text(part))
        elif isinstance(part, dict) and part.get("type") == "image":
            parts.append({"type": "image"})
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.extend(_split_text(str(part.get("text") or "")))
        else:
            raise ValueError(f"unsupported message content part {part!r:.200}")
    return parts


def content_text(content: Any) -> str:
    """One message's content as a string with ``<image>`` placeholders (inverse of :func:`content_parts`)."""
    if isinstance(content, str):
        return content
    return "".join(IMAGE_PLACEHOLDER if p["type"] == "image" else p["text"] for p in content_parts(content))


def prompt_to_chat(prompt: list[dict]) -> list[dict]:
    """Chat messages with typed content parts, images in the order of their placeholders."""
    return [{"role": m["role"], "content": content_parts(m.get("content"))} for m in prompt]


def count_image_placeholders(prompt: list[dict]) -> int:
    """Number of image slots in a prompt (``<image>`` in strings plus ``{"type": "image"}`` parts)."""
    return sum(1 for m in prompt_to_chat(prompt) for p in m["content"] if p["type"] == "image")


def record_to_chat(record: Any) -> list[dict]:
    """A record's prompt as chat messages with typed content parts (feed to ``apply_chat_template``)."""
    return prompt_to_chat(record.prompt)
