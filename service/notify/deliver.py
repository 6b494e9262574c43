"""Posting a payload to a webhook, trying again where the receiver asks for it.

429 and 5xx answers and connection failures are tried again after a pause that doubles
(1, 2, 4 ... seconds, at most `max_wait`), or after the answer's `Retry-After` when it gives
one; any other answer is final. No error names the URL: its path is the webhook's secret.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

RETRIED = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Delivery:
    ok: bool
    status: int  # the last answer's HTTP status (0: no answer)
    attempts: int
    detail: str  # what the receiver last said, for the record (never the URL)


def post(
    url: str,
    payload: dict[str, Any],
    *,
    tries: int = 5,
    timeout: float = 10.0,
    max_wait: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST `payload` as JSON to `url`, up to `tries` times."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    status, detail = 0, ""
    for attempt in range(1, tries + 1):
        status, detail, wait = _post_once(url, body, timeout)
        if 200 <= status < 300:
            return Delivery(True, status, attempt, detail)
        if status and status not in RETRIED:
            break
        if attempt < tries:
            sleep(min(max_wait, wait if wait is not None else 2.0 ** (attempt - 1)))
    return Delivery(False, status, attempt, detail)


def _post_once(url: str, body: bytes, timeout: float) -> tuple[int, str, float | None]:
    """(status, what the receiver said, the wait it asked for) of one POST."""
    request = urllib.request.Request(
        url, body, {"Content-Type": "application/json; charset=utf-8"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, _said(answer.read()), None
    except urllib.error.HTTPError as err:
        return err.code, _said(err.read()), retry_after(err.headers.get("Retry-After"))
    except (OSError, ValueError, http.client.HTTPException) as err:  # refused, reset, timed out
        reason = getattr(err, "reason", err)
        return 0, f"no answer: {type(reason).__name__}", None


def retry_after(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks for (a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _said(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip()
