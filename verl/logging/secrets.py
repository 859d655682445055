"""Removing credentials from configs before they are logged anywhere (files, tensorboard, wandb)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "<redacted>"

# A key containing one of these is always redacted, whatever its value.
_STRONG = ("secret", "password", "passwd", "credential", "api_key", "apikey", "access_key", "private_key")
# A key containing one of these is redacted unless its value is a number / bool / None (token counts such
# as ``max_tokens``) or the key names a data column (``image_key``) or a tokenizer setting.
_WEAK = ("key", "token")
_BENIGN_KEYS = {
    "prompt_key", "image_key", "video_key", "answer_key", "reward_fn_key", "label_key", "id_key",
    "data_source_key", "response_key", "query_key", "question_key", "image_path_key",
}
# Keys whose children are environment variables: names are kept, values are redacted.
_ENV_KEYS = ("env", "env_vars", "environ", "environment", "environment_variables")
# Values that look like credentials whatever their key (Hugging Face, OpenAI-style, GitHub tokens).
_SECRET_VALUE = re.compile(r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|gh[pousr]_[A-Za-z0-9]{20,})$")


def is_secret_key(key: str, value: Any = None) -> bool:
    """Whether a config entry ``key: value`` must not be logged (case-insensitive substring rules)."""
    k = str(key).lower()
    if any(w in k for w in _STRONG):
        return True
    if not any(w in k for w in _WEAK):
        return False
    if k in _BENIGN_KEYS or "tokenizer" in k:
        return False
    if value is None or isinstance(value, bool | int | float):
        return False
    # Nested sections under a "token"/"key" name (e.g. ``special_tokens: {...}``) are walked, not dropped.
    return not isinstance(value, Mapping)


def scrub_secrets(obj: Any) -> Any:
    """Return a deep copy of ``obj`` (dicts / lists / scalars) with secret-looking entries redacted.

    Redacted: any key containing ``secret``, ``password``, ``passwd``, ``credential``, ``api_key``;
    keys containing ``key`` or ``token`` whose value is a string or list (numbers such as ``max_tokens``,
    data-column names such as ``image_key`` and ``tokenizer*`` settings are kept); every value under an
    ``env`` / ``env_vars`` / ``environment`` section; and string values that look like HF / OpenAI /
    GitHub tokens. The input is not modified.
    """
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            if str(key).lower() in _ENV_KEYS and isinstance(value, Mapping):
                out[key] = {name: REDACTED for name in value}
            elif is_secret_key(key, value):
                out[key] = REDACTED
            else:
                out[key] = scrub_secrets(value)
        return out
    if isinstance(obj, list | tuple):
        return [scrub_secrets(v) for v in obj]
    if isinstance(obj, str) and _SECRET_VALUE.match(obj.strip()):
        return REDACTED
    return obj
