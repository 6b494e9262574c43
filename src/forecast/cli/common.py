"""What the `forecast` commands share: the consoles, a progress bar, a clean exit with a message,
and options whose bad values are usage errors naming the option, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

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


@contextmanager
def steps(total: int, title: str) -> Iterator:
    """A progress bar advanced by a callback that receives each step's name."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(title, total=total)
        started = False

        def on_step(name: str) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started = True
            progress.update(task, description=f"{title}: {name}")

        yield on_step
        progress.update(task, completed=total)


@contextmanager
def cluster(scheduler: str | None, local_cluster: int | None) -> Iterator:
    """The Dask client a command was given (`--scheduler`, `--local-cluster` or the setting),
    or None; its dashboard's address printed; a scheduler that does not answer, an exit 1."""
    from forecast.cluster import SchedulerUnreachableError, dask_client

    if scheduler and local_cluster:
        raise fail("give --scheduler or --local-cluster, not both", code=2)
    try:
        with dask_client(scheduler, local_cluster) as client:
            if client is not None:
                err_console.print(f"Dask dashboard: {client.dashboard_link}", highlight=False)
            yield client
    except SchedulerUnreachableError as err:
        raise fail(str(err)) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)


def moment_option(value: str | None) -> str | None:
    """Check an `--as-of` value and give it back as the store keeps moments (UTC, no zone)."""
    from forecast.features.records import moment

    if value is None:
        return None
    try:
        return moment(value).isoformat()
    except (ValueError, TypeError, OverflowError):
        raise typer.BadParameter(
            f"{value!r} is not a date or moment (e.g. 2026-11-15 or 2026-11-15T09:00Z)"
        ) from None


def stored_world():
    """The stored tables and, for a generated world, its truth (None for real data)."""
    from forecast.data.ingest import read_world
    from forecast.data.store import StoreEmptyError, read_store

    try:
        world = read_world()
        return (read_store(), None) if world is None else (world.tables, world.truth)
    except StoreEmptyError as err:
        raise fail(str(err)) from None
