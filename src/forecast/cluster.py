"""A Dask cluster, when a command is given one (docs/scale.md).

Beyond one machine the project runs on Dask's distributed scheduler, never on a scheduler of its
own. `dask_client` connects to a running scheduler (`--scheduler tcp://HOST:8786`, or the
`FORECAST_DASK_SCHEDULER` setting) or starts a `LocalCluster` of worker processes on this
machine (`--local-cluster N`); asked for neither, it gives None and Dask is never imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (parts done, parts)


class SchedulerUnreachableError(RuntimeError):
    """The scheduler a command was given does not answer."""


@contextmanager
def dask_client(
    scheduler: str | None = None, local_cluster: int | None = None, *, memory_limit: str = "auto"
) -> Iterator[Client | None]:
    """A client to `scheduler`, or to a LocalCluster of `local_cluster` single-threaded worker
    processes (each with `memory_limit`), or to the scheduler of the `dask_scheduler` setting;
    None when none is asked for. `client.dashboard_link` is the dashboard's address."""
    if scheduler and local_cluster:
        raise ValueError("give a scheduler or a local cluster, not both")
    if not scheduler and not local_cluster:
        from forecast.settings import get_settings

        scheduler = get_settings().dask_scheduler
    if not scheduler and not local_cluster:
        yield None
        return
    from distributed import Client, LocalCluster

    if not log.isEnabledFor(logging.DEBUG):  # its start and stop are dozens of INFO lines
        logging.getLogger("distributed").setLevel(logging.WARNING)

    if local_cluster:
        if local_cluster < 1:
            raise ValueError(f"a local cluster of {local_cluster} workers: give at least 1")
        cluster = LocalCluster(
            n_workers=local_cluster,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit=memory_limit,
        )
        try:
            with Client(cluster) as client:
                client.run(_worker_prints_to, "stderr" if log.isEnabledFor(logging.DEBUG) else None)
                log.debug("Dask: a local cluster of %d workers, dashboard %s", local_cluster,
                         client.dashboard_link)  # fmt: skip
                yield client
        finally:
            _close(cluster)
        return
    try:
        client = Client(scheduler)  # waits distributed.comm.timeouts.connect (30 s)
    except OSError as err:  # distributed's connection timeout is an OSError
        message = f"no Dask scheduler answered at {scheduler}: {err}"
        raise SchedulerUnreachableError(message) from err
    with client:
        log.debug("Dask: scheduler %s, dashboard %s", scheduler, client.dashboard_link)
        yield client


def _close(cluster: LocalCluster) -> None:
    """Close a local cluster without letting its close replace what the command did or said.

    After a worker died, its nanny starts another; a close that comes while that process is
    being started fails inside distributed ("can only join a started process", 2026.8). The
    command's own outcome (its answer, or the message naming the dead worker) stands; the
    close's error is logged, and the worker processes end with this one."""
    try:
        cluster.close()
    except Exception as err:  # what a teardown race raises is distributed's own, any kind
        log.warning("the local Dask cluster did not close cleanly: %s", err)


def worker_lost(err: BaseException | None) -> bool:
    """Whether `err` (or what caused it) is the cluster losing a worker mid-task: killed past
    its memory limit, or dead in native code (Dask then cancels or gives up on the task, or
    the data being sent to it finds the connection closed)."""
    from distributed.client import FutureCancelledError
    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    seen = 0
    while err is not None and seen < 20:
        if isinstance(err, KilledWorker | FutureCancelledError | CommClosedError):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def gathered(futures: list, progress: Progress | None = None) -> list:
    """The futures' results in their order, `progress` told as each finishes."""
    from distributed import as_completed

    if progress is not None:
        for done, _ in enumerate(as_completed(futures), 1):
            progress(done, len(futures))
    return [future.result() for future in futures]


def _worker_prints_to(stream: str | None) -> None:
    """In a local worker: what it prints (LightGBM's network log, from C++, dozens of lines per
    fit) to the command's stderr (`stream`, with --verbose) or nowhere, never to the stdout it
    shares with the command, whose own output (`--json`) must stay clean. Its logs are
    unchanged."""
    import os
    import sys

    sys.stdout.flush()
    target = os.open(os.devnull, os.O_WRONLY) if stream is None else 2
    os.dup2(target, 1)
