"""JSON text that both databases can store."""

from __future__ import annotations

import json
import re
from typing import Any

_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def storable_json(value: Any) -> str:
    """Compact JSON text of ``value``; ValueError/TypeError for what a jsonb column refuses
    (NaN and infinities, U+0000, lone surrogates) or what isn't JSON at all.

    Refused before writing, such a value fails its own job or request instead of the statement
    that writes a whole batch (SQLite would store it, so both databases behave the same)."""
    text = _ENCODER.encode(value)
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise ValueError("it contains U+0000")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("it contains a lone surrogate") from None
    return text
