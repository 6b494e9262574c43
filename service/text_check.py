"""Text no database or log can hold, refused at the edge: a NUL character or a lone surrogate
in the path, the query or the body is a 422 naming where it is, before any route reads it.

PostgreSQL refuses a NUL in text and UTF-8 cannot encode a lone surrogate, so such text reaching
a route would break the row that logs it (or the answer that echoes it), not just the request.
"""

from __future__ import annotations

import json
import re
from typing import Any

# JSON escapes that may decode to such text (paired surrogates decode to one character, fine)
SUSPECT_JSON = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
SUSPECT_FORM = re.compile(rb"%00|\x00")

Location = tuple[str | int, ...]


def _bad(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (not a character: it cannot be encoded as UTF-8)"
    return None


def unusable_text(
    path: str, query: bytes, body: bytes, content_type: str
) -> tuple[Location, str] | None:
    """Where the first text no log can hold is, and what it is; None when there is none."""
    if (found := _bad(path)) is not None:
        return ("path",), f"the path holds {found}"
    if SUSPECT_FORM.search(query):
        return ("query",), "the query holds a NUL character (%00)"
    if "json" in content_type and SUSPECT_JSON.search(body):
        try:
            return _in_json(json.loads(body), ("body",))
        except ValueError:
            return None  # not JSON: the route's own 422 says so
    if "form" in content_type and SUSPECT_FORM.search(body):
        return ("body",), "the form holds a NUL character (%00)"
    return None


def _in_json(value: Any, where: Location) -> tuple[Location, str] | None:
    if isinstance(value, str):
        found = _bad(value)
        return None if found is None else (where, f"text may not hold {found}")
    if isinstance(value, dict):
        for key, item in value.items():
            if (found := _bad(key)) is not None:
                return where, f"a field name may not hold {found}"
            if (inner := _in_json(item, (*where, key))) is not None:
                return inner
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (inner := _in_json(item, (*where, i))) is not None:
                return inner
    return None
