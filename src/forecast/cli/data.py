"""`forecast data`: generate, import, validate, describe and diagnose CRM data."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from forecast.cli.common import (
    LocalClusterOpt,
    SchedulerOpt,
    cluster,
    console,
    err_console,
    fail,
    moment_option,
    now,
    steps,
)
from forecast.cli.data_views import print_description, print_diagnosis
from forecast.settings import get_settings

data_app = typer.Typer(
    help="Generate, import, validate and describe CRM data.", no_args_is_help=True
)


class Adapter(StrEnum):
    maven_crm = "maven-crm"
    ibm_telco_churn = "ibm-telco-churn"


@data_app.command("generate")
def data_generate(
    *,
    deals: Annotated[int, typer.Option("--deals", "-n", help="Number of opportunities.")] = 30_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same world.")] = 0,
    as_of: Annotated[
        str, typer.Option("--as-of", help="The world's export date.", callback=moment_option)
    ] = "2026-11-15",
    dirt: Annotated[float, typer.Option(help="Share of untidy rows (0 = clean).")] = 0.0,
    show: Annotated[bool, typer.Option("--describe/--quiet", help="Describe it after.")] = True,
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Make and store the world in this many parts, one in memory at a time, for "
            "worlds larger than memory (docs/scale.md).",
        ),
    ] = None,
    scheduler: SchedulerOpt = None,
    local_cluster: LocalClusterOpt = None,
) -> None:
    """Generate a realistic CRM world (with its latent truth) into the store."""
    from forecast.data.ingest import generate

    if partitions is not None:
        _generate_in_parts(deals, partitions, seed, as_of, dirt, (scheduler, local_cluster))
        return
    with steps(7, "generating") as on_step:
        world, result = generate(
            deals, seed=seed, as_of=as_of, dirt=dirt, imported_at=now(), on_step=on_step
        )
    verb = "stored" if result.changed else "already stored (unchanged)"
    console.print(f"[green]{verb}[/] version {result.version} in {result.path}")
    if show:
        print_description(world.tables)


def _generate_in_parts(
    deals: int, partitions: int, seed: int, as_of: str, dirt: float, where: tuple
) -> None:
    """`data generate --partitions`: the world made and stored part by part."""
    from forecast.data.ingest import generate_in_parts
    from forecast.data.parts import PartsError
    from forecast.data.validate import ValidationError

    if dirt:
        raise fail("--dirt: a world made in parts is clean (generate it whole for untidy rows)", 2)
    if not 1 <= partitions <= deals // 50:
        raise fail(f"--partitions {partitions}: give 1 to {deals // 50} (50 deals a part)", 2)
    try:
        with cluster(*where) as client, steps(partitions + 1, "generating") as on_step:
            result = generate_in_parts(
                deals, partitions, seed=seed, as_of=as_of, imported_at=now(), client=client,
                on_step=on_step,
            )  # fmt: skip
    except (ValidationError, PartsError) as err:
        raise fail(f"the generated world broke the contract, nothing stored: {err}") from None
    verb = "stored" if result.changed else "already stored (unchanged)"
    console.print(f"[green]{verb}[/] version {result.version} in {result.path}")
    rows = ", ".join(f"{name} {count:,}" for name, count in result.rows.items() if count)
    console.print(f"{partitions} parts: {rows}", highlight=False)


def _read_source(
    source: Path | None,
    mapping: Path | None,
    sql: str | None,
    sql_spec: Path | None,
    adapter: Adapter | None,
    as_of: str | None,
) -> tuple[dict, pd.Timestamp, str]:
    """Pick the reader from the options; return raw tables, the as-of and a source label."""
    from forecast.data.sources.files import read_folder

    chosen = [x for x in (mapping, sql, sql_spec, adapter) if x is not None]
    if len(chosen) > 1:
        raise fail("choose one of --mapping, --sql, --sql-spec, --adapter")
    found_as_of: pd.Timestamp | None = None
    if sql or sql_spec:
        from forecast.data.sources.sql import read_sql, read_sql_spec

        if sql:
            raw = read_sql(sql)
        else:
            assert sql_spec is not None  # one of the two was given
            raw = read_sql_spec(sql_spec)
        label = "SQL " + (str(sql_spec) if sql_spec else "source")
    else:
        if source is None:
            raise fail("give the folder to import (or --sql / --sql-spec)")
        if not source.exists():
            raise fail(f"{source}: no such file or folder")
        label = str(source.resolve())
        if adapter == Adapter.maven_crm:
            from forecast.data.sources.maven import read_maven_crm

            raw, found_as_of = read_maven_crm(source)
        elif adapter == Adapter.ibm_telco_churn:
            from forecast.data.sources.telco import read_telco_churn

            raw, found_as_of = read_telco_churn(source)
        elif mapping is not None:
            from forecast.data.sources.mapping import read_mapped

            raw, found_as_of = read_mapped(
                source, mapping, as_of=pd.Timestamp(as_of) if as_of else None, now=now()
            )
            label += f" (mapping {mapping})"
        else:
            raw = read_folder(source)
    if as_of:
        stamp = pd.Timestamp(as_of)
    elif found_as_of is not None:
        stamp = found_as_of
    else:
        stamp = now()
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


class BadRows(StrEnum):
    refuse = "refuse"
    repair = "repair"
    quarantine = "quarantine"


BadRowsOpt = Annotated[
    BadRows,
    typer.Option(
        "--bad-rows",
        help="Deals closed before they were created, history rows outside their deal's life: "
        "refuse the import, repair them, or quarantine them (each reported with file and line).",
    ),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="The export's as-of (default: from the source, or now).",
        callback=moment_option,
    ),
]

PartitionsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Read a folder of canonical files a part at a time, split by account, for "
        "exports larger than memory (docs/scale.md).",
    ),
]


@data_app.command("import")
def data_import(
    source: SourceArg = None,
    *,
    mapping: MappingOpt = None,
    sql: SqlOpt = None,
    sql_spec: SqlSpecOpt = None,
    adapter: AdapterOpt = None,
    as_of: AsOfOpt = None,
    bad_rows: BadRowsOpt = BadRows.refuse,
    partitions: PartitionsOpt = None,
    scheduler: SchedulerOpt = None,
    local_cluster: LocalClusterOpt = None,
) -> None:
    """Validate a source and store it; any violation stops the import and nothing is written."""
    from forecast.data.ingest import import_raw
    from forecast.data.violations import ValidationError

    if _ran_in_parts(source, partitions, (mapping, sql, sql_spec, adapter), as_of, bad_rows,
                     (scheduler, local_cluster), store=True):  # fmt: skip
        return
    try:
        with steps(3, "importing") as on_step:
            on_step("reading")
            raw, stamp, label = _read_source(source, mapping, sql, sql_spec, adapter, as_of)
            result = import_raw(
                raw,
                as_of=stamp,
                source=label,
                imported_at=now(),
                bad_rows=bad_rows.value,
                on_step=on_step,
            )
    except ValidationError as err:
        _print_violations(err)
        raise typer.Exit(1) from None
    _print_set_aside(result.set_aside, result.derived)
    verb = "imported" if result.write.changed else "unchanged (same data already stored)"
    console.print(f"[green]{verb}[/]: version {result.write.version} in {result.write.path}")
    if result.tables is not None:
        print_description(result.tables)


def _ran_in_parts(
    source: Path | None,
    partitions: int | None,
    other_sources: tuple,
    as_of: str | None,
    bad_rows: BadRows,
    where: tuple,
    *,
    store: bool,
) -> bool:
    """`data import` or `data validate` with `--partitions`: a folder of canonical files, split
    by account, checked a part at a time (and stored so, or into a store removed after); False
    without `--partitions` (a cluster is then refused: a whole export is read here)."""
    from forecast.data.ingest import import_in_parts, validate_in_parts
    from forecast.data.parts import PartsError
    from forecast.data.violations import ValidationError

    if partitions is None:
        if any(where):
            raise fail("an export is read on a cluster a part at a time: give --partitions N", 2)
        return False
    if any(x is not None for x in other_sources):
        only = "a folder of canonical files (one file or one folder of files per table)"
        raise fail(f"--partitions reads {only}, not --mapping, --sql or --adapter", 2)
    if source is None or not source.is_dir():
        raise fail(f"{source or 'the folder'}: give the folder of canonical files", 2)
    run = import_in_parts if store else validate_in_parts
    try:
        with cluster(*where) as client, steps(partitions + 2, "checking") as on_step:
            result = run(
                source, partitions, as_of=pd.Timestamp(as_of) if as_of else now(),
                imported_at=now(), bad_rows=bad_rows.value, client=client, on_step=on_step,
            )  # fmt: skip
    except ValidationError as err:
        _print_violations(err)
        raise typer.Exit(1) from None
    except PartsError as err:
        raise fail(f"the parts together break the contract, nothing stored: {err}") from None
    _print_set_aside(result.set_aside, result.derived)
    write = result.write
    rows = ", ".join(f"{name} {count:,}" for name, count in write.rows.items() if count)
    if not store:
        console.print(f"[green]valid[/] ({partitions} parts): {rows}", highlight=False)
        return True
    verb = "imported" if write.changed else "unchanged (same data already stored)"
    console.print(f"[green]{verb}[/]: version {write.version} in {write.path}")
    console.print(f"{partitions} parts: {rows}", highlight=False)
    return True


@data_app.command("validate")
def data_validate(
    source: SourceArg = None,
    *,
    mapping: MappingOpt = None,
    sql: SqlOpt = None,
    sql_spec: SqlSpecOpt = None,
    adapter: AdapterOpt = None,
    as_of: AsOfOpt = None,
    bad_rows: BadRowsOpt = BadRows.refuse,
    partitions: PartitionsOpt = None,
    scheduler: SchedulerOpt = None,
    local_cluster: LocalClusterOpt = None,
) -> None:
    """Check a source against the data contract without storing anything."""
    from forecast.data.validate import check
    from forecast.data.violations import ValidationError

    if _ran_in_parts(source, partitions, (mapping, sql, sql_spec, adapter), as_of, bad_rows,
                     (scheduler, local_cluster), store=False):  # fmt: skip
        return
    try:
        raw, stamp, _ = _read_source(source, mapping, sql, sql_spec, adapter, as_of)
        checked = check(raw, as_of=stamp, bad_rows=bad_rows.value)
    except ValidationError as err:
        _print_violations(err)
        raise typer.Exit(1) from None
    _print_set_aside(checked.set_aside, checked.derived)
    rows = ", ".join(
        f"{name} {len(frame):,}" + (" (derived)" if name in checked.derived else "")
        for name, frame in checked.tables.items()
        if len(frame)
    )
    console.print(f"[green]valid[/]: {rows}")


def _print_set_aside(set_aside, derived) -> None:
    """Rows repaired or quarantined under --bad-rows, and tables derived, as warnings."""
    if "deal_history" in derived:
        err_console.print(
            "deal_history: none in the source, derived from deals (a creation row and the "
            "closing row per deal); stage-history features are off",
            style="yellow",
            markup=False,
        )
    if not set_aside:
        return
    err_console.print(f"{len(set_aside):,} rows set aside or repaired:", style="yellow")
    shown = get_settings().max_violations_shown
    for note in set_aside[:shown]:
        err_console.print(f"  {note}", markup=False, highlight=False, soft_wrap=True)
    if len(set_aside) > shown:
        err_console.print(f"  … and {len(set_aside) - shown:,} more", markup=False)


@data_app.command("describe")
def data_describe(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Describe the stored CRM: counts, date ranges, win rates, conversion, revenue."""
    from forecast.data.store import StoreEmptyError, read_store

    try:
        tables = read_store()
    except StoreEmptyError as err:
        raise fail(str(err)) from None
    if as_json:
        from forecast.data.describe import describe

        json.dump(describe(tables).to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    print_description(tables)


@data_app.command("doctor")
def data_doctor(
    source: SourceArg = None,
    *,
    mapping: MappingOpt = None,
    sql: SqlOpt = None,
    sql_spec: SqlSpecOpt = None,
    adapter: AdapterOpt = None,
    as_of: AsOfOpt = None,
    bad_rows: BadRowsOpt = BadRows.refuse,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What the data supports: models, features off and why, spans, cycles, suspicious columns.

    Reads the store, or a source given like `forecast data import` (nothing is stored). Exits 1
    when something blocks training.
    """
    from forecast.data.doctor import diagnose
    from forecast.data.store import StoreEmptyError, read_store
    from forecast.data.validate import check
    from forecast.data.violations import ValidationError

    try:
        if source is None and sql is None and sql_spec is None:
            tables = read_store()
        else:
            raw, stamp, _ = _read_source(source, mapping, sql, sql_spec, adapter, as_of)
            tables = check(raw, as_of=stamp, bad_rows=bad_rows.value).tables
    except StoreEmptyError as err:
        raise fail(str(err)) from None
    except ValidationError as err:
        _print_violations(err)
        raise typer.Exit(1) from None
    found = diagnose(tables)
    if as_json:
        json.dump(found.to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_diagnosis(found)
    if found.blockers:
        raise typer.Exit(1)


def _print_violations(err) -> None:
    """The validation summary as plain text: long paths must not be wrapped mid-name."""
    err_console.print(
        err.summary(get_settings().max_violations_shown),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
