"""Child processes that ignore SIGTERM (the log writer, the scenario process) stopped by their
owners when the interpreter exits.

multiprocessing's own exit handler sends SIGTERM to daemonic children and waits for them: a
child that ignores SIGTERM by design (it must outlive a signal to the whole process group)
would keep the interpreter from ever exiting. Registered after multiprocessing's, the handler
here runs first (atexit runs last-registered first).
"""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Callable

_STOPS: dict[int, weakref.WeakMethod] = {}  # owner's id -> its bound stop method


def stop_at_exit(stop: Callable[[], object]) -> None:
    """Call `stop` (a bound method) at exit, unless `forget` was called for its owner."""
    if not _STOPS:
        atexit.unregister(_stop_all)
        atexit.register(_stop_all)
    _STOPS[id(stop.__self__)] = weakref.WeakMethod(stop)  # type: ignore[attr-defined]


def forget(owner: object) -> None:
    _STOPS.pop(id(owner), None)


def _stop_all() -> None:
    for method in list(_STOPS.values()):
        if (stop := method()) is not None:
            stop()
    _STOPS.clear()
