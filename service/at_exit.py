"""Child processes that ignore SIGTERM (the log writer, the scenario process) stopped by their
owners when the process exits.

multiprocessing's exit (`multiprocessing.util._exit_function`, run at interpreter exit and at
the end of every process it started) sends SIGTERM to daemonic children and then waits for
them: a child that ignores SIGTERM by design (it must outlive a signal to the whole process
group) would keep the process from ever exiting. Its finalizers with an exit priority run
before that wait: the hook here is one of them. (An `atexit` handler would not do: a process
multiprocessing started ends with `os._exit`, and no `atexit` handler runs in it.)
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from multiprocessing import util

_STOPS: dict[int, weakref.WeakMethod] = {}  # owner's id -> its bound stop method
_hooked = False


def stop_at_exit(stop: Callable[[], object]) -> None:
    """Call `stop` (a bound method) at exit, unless `forget` was called for its owner."""
    global _hooked
    if not _hooked:
        util.Finalize(None, _stop_all, exitpriority=100)
        _hooked = True
    _STOPS[id(stop.__self__)] = weakref.WeakMethod(stop)  # type: ignore[attr-defined]


def forget(owner: object) -> None:
    _STOPS.pop(id(owner), None)


def _stop_all() -> None:
    for method in list(_STOPS.values()):
        if (stop := method()) is not None:
            stop()
    _STOPS.clear()
