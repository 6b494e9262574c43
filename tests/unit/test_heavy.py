"""Heavy requests take turns: one runs at a time, a caller has one running or waiting (429 for
the next), and a wait past the budget is 503; both say when to come back."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi import HTTPException

from service.heavy import HeavyWork


def _hold(heavy: HeavyWork, caller: str, release: threading.Event, started: threading.Event):
    with heavy.turn(caller):
        started.set()
        release.wait(10)


def test_a_caller_with_a_scenario_running_is_told_to_wait_others_wait_their_turn():
    heavy = HeavyWork(per_caller=1, wait_seconds=5)
    release, started = threading.Event(), threading.Event()
    first = threading.Thread(target=_hold, args=(heavy, "a", release, started))
    first.start()
    assert started.wait(5)
    with pytest.raises(HTTPException) as refused, heavy.turn("a"):
        pass
    assert refused.value.status_code == 429 and refused.value.headers["Retry-After"] == "5"
    order = []

    def other() -> None:
        with heavy.turn("b"):
            order.append("b")

    waiting = threading.Thread(target=other)
    waiting.start()
    time.sleep(0.2)
    assert order == [], "b waits while a runs: one at a time"
    release.set()
    first.join(5)
    waiting.join(5)
    assert order == ["b"]
    with heavy.turn("a"):  # a's turn is over: a may ask again
        pass


def test_a_wait_past_the_budget_is_503_and_frees_the_callers_place():
    heavy = HeavyWork(per_caller=1, wait_seconds=0.2)
    release, started = threading.Event(), threading.Event()
    first = threading.Thread(target=_hold, args=(heavy, "a", release, started))
    first.start()
    assert started.wait(5)
    with pytest.raises(HTTPException) as busy, heavy.turn("b"):
        pass
    assert busy.value.status_code == 503 and "Retry-After" in busy.value.headers
    release.set()
    first.join(5)
    with heavy.turn("b"):  # the refused wait did not keep b's place
        pass
