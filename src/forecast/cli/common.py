"""What the `forecast` commands share: the consoles, a progress bar, a clean exit with a message,
and options whose bad values are usage errors naming the option, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

console = Console()
err_console = Console(stderr=True)

SeedOpt = Annotated[int, typer.Option(help="Random seed: same data and seed, same model.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        help="Run on the Dask cluster of this scheduler (tcp://HOST:8786; default: the "
        "FORECAST_DASK_SCHEDULER setting). docs/scale.md.",
    ),
]
LocalClusterOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Run on a Dask cluster of N worker processes on this machine."),
]


def now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s")


class Steps:
    """A progress bar's callbacks: called with each step's name it moves to that step;
    `parts(done, total)` shows a second bar for work split in parts (a Dask cluster's)."""

    def __init__(self, progress: Progress, title: str, total: int):
        self._progress, self._title = progress, title
        self._task, self._total = progress.add_task(title, total=total), total
        self._parts: TaskID | None = None
        self._started = False

    def __call__(self, name: str) -> None:
        if self._started:
            self._progress.advance(self._task)
        self._started = True
        self._progress.update(self._task, description=f"{self._title}: {name}")
        if self._parts is not None:  # a step's parts are done when the next step starts
            self._progress.remove_task(self._parts)
            self._parts = None

    def parts(self, done: int, total: int) -> None:
        if self._parts is None:
            self._parts = self._progress.add_task("  parts done on the cluster", total=total)
        self._progress.update(self._parts, completed=done, total=total)

    def finish(self) -> None:
        self._progress.update(self._task, completed=self._total)


@contextmanager
def steps(total: int, title: str) -> Iterator[Steps]:
    """A progress bar advanced by a callback that receives each step's name (and, through
    `Steps.parts`, a cluster's parts as they finish)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        bar = Steps(progress, title, total)
        yield bar
        bar.finish()


@contextmanager
def cluster(scheduler: str | None, local_cluster: int | None) -> Iterator:
    """The Dask client a command was given (`--scheduler`, `--local-cluster` or the setting),
    or None; its dashboard's address printed; a scheduler that does not answer, an exit 1."""
    from forecast.cluster import SchedulerUnreachableError, dask_client, worker_lost
    from forecast.settings import get_settings

    if scheduler and local_cluster:
        raise fail("give --scheduler or --local-cluster, not both", code=2)
    memory = get_settings().dask_worker_memory
    try:
        with dask_client(scheduler, local_cluster, memory_limit=memory) as client:
            if client is not None:
                err_console.print(f"Dask dashboard: {client.dashboard_link}", highlight=False)
            try:
                yield client
            except Exception as err:
                if client is None or not worker_lost(err):
                    raise
                raise fail(_worker_lost(err, scheduler, local_cluster, memory)) from None
    except SchedulerUnreachableError as err:
        raise fail(str(err)) from None


def _worker_lost(err: Exception, scheduler: str | None, local: int | None, memory: str) -> str:
    from forecast.settings import get_settings

    if local:
        where, limit = f"the local cluster of {local}", f"FORECAST_DASK_WORKER_MEMORY, {memory}"
    else:
        where = str(scheduler or get_settings().dask_scheduler)
        limit = "the workers' --memory-limit"
    return (
        f"a Dask worker of {where} died while working, so the command stopped "
        f"({type(err).__name__}: {str(err).strip()[:200]}). Most often a worker ran past its "
        f"memory limit ({limit}): give the workers more memory, or use more of them; their "
        "logs (forecast --verbose ...) say why. No model was registered and no file written; "
        "the store is as it was (docs/scale.md)."
    )


def parts_read_by_workers(client: object | None) -> Path | None:
    """The current store version's folder when a cluster was given and the store is in parts:
    the workers then read their parts themselves (docs/scale.md); else None."""
    from forecast.data.store import StoreEmptyError, current_path, store_parts

    if client is None:
        return None
    try:
        folder = current_path()
    except StoreEmptyError as err:
        raise fail(str(err)) from None
    if not (count := store_parts(folder)):
        return None
    err_console.print(f"the store is in {count} parts: each worker reads its own", highlight=False)
    return folder


def fail(message: str, code: int = 1) -> typer.Exit:
    # the terminal wraps it: a path or a command in the message stays whole, to copy
    err_console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def moment_option(value: str | None) -> str | None:
    """Check an `--as-of` value and give it back as the store keeps moments (UTC, no zone)."""
    from forecast.data.cells import iso_moment

    if value is None:
        return None
    try:
        return iso_moment(value).isoformat()
    except (ValueError, TypeError, OverflowError):
        raise typer.BadParameter(
            f"{value!r} is not an ISO date or moment: year-month-day, e.g. 2026-11-15 or "
            "2026-11-15T09:00Z"
        ) from None


def stored_world(tables: Sequence[str] | None = None):
    """The stored tables (only `tables` when given) and, for a generated world, its truth (None
    for real data)."""
    from forecast.data.ingest import read_world
    from forecast.data.store import StoreEmptyError, read_store

    try:
        world = read_world(tables=tables)
        return (read_store(tables=tables), None) if world is None else (world.tables, world.truth)
    except StoreEmptyError as err:
        raise fail(str(err)) from None
