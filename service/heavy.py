"""Heavy work (a scenario draws the quarter again: up to seconds of CPU) kept from crowding out
scoring, which answers in milliseconds.

- one heavy request runs at a time in each service process: Python runs one thread at a time,
  and every heavy thread more would take its turns from the scoring requests;
- a caller has at most `per_caller` heavy requests running or waiting: one more is 429 with
  `Retry-After` (four tabs of the same manager wait their turn, never a queue without end);
- a request waits at most `wait_seconds` for its turn: then 503 with `Retry-After`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException


class HeavyWork:
    """The turn of heavy requests in one process (see the module)."""

    def __init__(self, *, per_caller: int = 1, wait_seconds: float = 30.0):
        self.per_caller = per_caller
        self.wait_seconds = wait_seconds
        self._running = threading.Lock()  # one at a time
        self._lock = threading.Lock()
        self._callers: dict[str, int] = {}  # requests running or waiting, per caller

    @contextmanager
    def turn(self, caller: str) -> Iterator[None]:
        """Hold the process's heavy turn for `caller`'s request.

        Raises:
            HTTPException: 429 for a caller already at `per_caller`; 503 when the turn does
                not come within `wait_seconds`.
        """
        with self._lock:
            if self._callers.get(caller, 0) >= self.per_caller:
                raise HTTPException(
                    429,
                    f"you have {self.per_caller} scenario(s) running already: "
                    "wait for the answer, then ask again",
                    headers={"Retry-After": "5"},
                )
            self._callers[caller] = self._callers.get(caller, 0) + 1
        try:
            if not self._running.acquire(timeout=self.wait_seconds):
                raise HTTPException(
                    503,
                    f"other scenarios kept the service busy for {self.wait_seconds:g} s: "
                    "try again shortly",
                    headers={"Retry-After": "10"},
                )
            try:
                yield
            finally:
                self._running.release()
        finally:
            with self._lock:
                self._callers[caller] -= 1
                if not self._callers[caller]:
                    del self._callers[caller]
