"""The `forecast` command: thin Typer wrappers around the library's pipeline stages."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from forecast.settings import disable_telemetry, get_settings

app = typer.Typer(
    help="Calibrated sales forecasts and coaching from CRM history.", no_args_is_help=True
)
data_app = typer.Typer(
    help="Generate, import, validate and describe CRM data.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


class Adapter(StrEnum):
    maven_crm = "maven-crm"
    ibm_telco_churn = "ibm-telco-churn"


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs.")] = False):
    """Set up logging and keep MLflow offline; nothing of this happens at import time."""
    disable_telemetry()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s")


@contextmanager
def _steps(total: int, title: str) -> Iterator:
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


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)


@data_app.command("generate")
def data_generate(
    deals: Annotated[int, typer.Option("--deals", "-n", help="Number of opportunities.")] = 30_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same world.")] = 0,
    as_of: Annotated[str, typer.Option("--as-of", help="The world's export date.")] = "2026-11-15",
    dirt: Annotated[float, typer.Option(help="Share of untidy rows (0 = clean).")] = 0.0,
    show: Annotated[bool, typer.Option("--describe/--quiet", help="Describe it after.")] = True,
) -> None:
    """Generate a realistic CRM world (with its latent truth) into the store."""
    from forecast.data import generate

    with _steps(7, "generating") as on_step:
        world, result = generate(
            deals, seed=seed, as_of=as_of, dirt=dirt, imported_at=_now(), on_step=on_step
        )
    verb = "stored" if result.changed else "already stored (unchanged)"
    console.print(f"[green]{verb}[/] version {result.version} in {result.path}")
    if show:
        _print_description(world.tables)


def _read_source(
    source: Path | None,
    mapping: Path | None,
    sql: str | None,
    sql_spec: Path | None,
    adapter: Adapter | None,
    as_of: str | None,
) -> tuple[dict, pd.Timestamp, str]:
    """Pick the reader from the options; return raw tables, the as-of and a source label."""
    from forecast.sources.files import read_folder

    chosen = [x for x in (mapping, sql, sql_spec, adapter) if x is not None]
    if len(chosen) > 1:
        raise _fail("choose one of --mapping, --sql, --sql-spec, --adapter")
    found_as_of: pd.Timestamp | None = None
    if sql or sql_spec:
        from forecast.sources.sql import read_sql, read_sql_spec

        raw = read_sql(sql) if sql else read_sql_spec(sql_spec)
        label = "SQL " + (str(sql_spec) if sql_spec else "source")
    else:
        if source is None:
            raise _fail("give the folder to import (or --sql / --sql-spec)")
        if not source.exists():
            raise _fail(f"{source}: no such file or folder")
        label = str(source.resolve())
        if adapter == Adapter.maven_crm:
            from forecast.sources.maven import read_maven_crm

            raw, found_as_of = read_maven_crm(source)
        elif adapter == Adapter.ibm_telco_churn:
            from forecast.sources.telco import read_telco_churn

            raw, found_as_of = read_telco_churn(source)
        elif mapping is not None:
            from forecast.sources.mapping import read_mapped

            raw, found_as_of = read_mapped(source, mapping)
            label += f" (mapping {mapping})"
        else:
            raw = read_folder(source)
    if as_of:
        stamp = pd.Timestamp(as_of)
    elif found_as_of is not None:
        stamp = found_as_of
    else:
        stamp = _now()
    return raw, stamp, label


SourceArg = Annotated[
    Path | None, typer.Argument(help="Folder of canonical CSV/Parquet files, or a CRM export.")
]
MappingOpt = Annotated[
    Path | None, typer.Option(help="YAML mapping of a CRM export onto the canonical tables.")
]
SqlOpt = Annotated[str | None, typer.Option(help="SQLAlchemy URL; tables of canonical names.")]
SqlSpecOpt = Annotated[
    Path | None, typer.Option(help="YAML with a SQLAlchemy url and a table or query per table.")
]
AdapterOpt = Annotated[Adapter | None, typer.Option(help="Built-in adapter for a public dataset.")]
AsOfOpt = Annotated[
    str | None,
    typer.Option("--as-of", help="The export's as-of (default: from the source, or now)."),
]


@data_app.command("import")
def data_import(
    source: SourceArg = None,
    mapping: MappingOpt = None,
    sql: SqlOpt = None,
    sql_spec: SqlSpecOpt = None,
    adapter: AdapterOpt = None,
    as_of: AsOfOpt = None,
) -> None:
    """Validate a source and store it; any violation stops the import and nothing is written."""
    from forecast.data import import_raw
    from forecast.validate import ValidationError

    try:
        raw, stamp, label = _read_source(source, mapping, sql, sql_spec, adapter, as_of)
        result = import_raw(raw, as_of=stamp, source=label, imported_at=_now())
    except ValidationError as err:
        _print_violations(err)
        raise typer.Exit(1) from None
    verb = "imported" if result.write.changed else "unchanged (same data already stored)"
    console.print(f"[green]{verb}[/]: version {result.write.version} in {result.write.path}")
    _print_description(result.tables)


@data_app.command("validate")
def data_validate(
    source: SourceArg = None,
    mapping: MappingOpt = None,
    sql: SqlOpt = None,
    sql_spec: SqlSpecOpt = None,
    adapter: AdapterOpt = None,
    as_of: AsOfOpt = None,
) -> None:
    """Check a source against the data contract without storing anything."""
    from forecast.validate import ValidationError, validate

    try:
        raw, stamp, _ = _read_source(source, mapping, sql, sql_spec, adapter, as_of)
        tables = validate(raw, as_of=stamp)
    except ValidationError as err:
        _print_violations(err)
        raise typer.Exit(1) from None
    rows = ", ".join(f"{name} {len(frame):,}" for name, frame in tables.items() if len(frame))
    console.print(f"[green]valid[/]: {rows}")


@data_app.command("describe")
def data_describe(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Describe the stored CRM: counts, date ranges, win rates, conversion, revenue."""
    from forecast.store import StoreEmptyError, read_store

    try:
        tables = read_store()
    except StoreEmptyError as err:
        raise _fail(str(err)) from None
    if as_json:
        from forecast.describe import describe

        json.dump(describe(tables).to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    _print_description(tables)


def _print_violations(err) -> None:
    """The validation summary as plain text: long paths must not be wrapped mid-name."""
    err_console.print(
        err.summary(get_settings().max_violations_shown),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _print_description(tables) -> None:
    from forecast.describe import describe

    d = describe(tables)
    console.rule(f"CRM as of {d.as_of:%Y-%m-%d}")
    counts = Table("table", "rows", "from", "to", title="Tables")
    for name, n in d.rows.items():
        first, last = d.date_ranges.get(name, (None, None))
        counts.add_row(
            name,
            f"{n:,}",
            "" if first is None else f"{first:%Y-%m-%d}",
            "" if last is None else f"{last:%Y-%m-%d}",
        )
    console.print(counts)
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(d.deals_by_outcome.items()))
    console.print(f"Deals: {outcomes}; win rate of closed deals {d.win_rate:.1%}")
    segments = ", ".join(f"{k} {v:.1%}" for k, v in d.win_rate_by_segment.items())
    console.print(f"Win rate by segment: {segments}")
    conversion = Table("from", "to", "deals", "converted", "rate", title="Stage conversion")
    for row in d.stage_conversion.itertuples():
        conversion.add_row(
            row[1], row[2], f"{row.deals:,}", f"{row.converted:,}", f"{row.rate:.1%}"
        )
    console.print(conversion)
    revenue = Table("quarter", *d.revenue_by_quarter.columns, title="Revenue by quarter (last 8)")
    for quarter, row in d.revenue_by_quarter.tail(8).iterrows():
        revenue.add_row(quarter, *(f"{v:,.0f}" for v in row))
    console.print(revenue)


if __name__ == "__main__":  # pragma: no cover
    app()
