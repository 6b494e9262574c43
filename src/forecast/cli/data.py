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
    console,
    fail,
    moment_option,
    now,
    steps,
)
from forecast.cli.data_parts import generate_in_parts, ran_in_parts
from forecast.cli.data_views import (
    print_description,
    print_diagnosis,
    print_set_aside,
    print_violations,
)

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
        generate_in_parts(deals, partitions, seed, as_of, dirt, (scheduler, local_cluster))
        return
    with steps(7, "generating") as on_step:
        world, result = generate(
            deals, seed=seed, as_of=as_of, dirt=dirt, imported_at=now(), on_step=on_step
        )
    verb = "stored" if result.changed else "already stored (unchanged)"
    console.print(f"[green]{verb}[/] version {result.version} in {result.path}")
    if show:
        print_description(world.tables)


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

    if ran_in_parts(source, partitions, (mapping, sql, sql_spec, adapter), as_of, bad_rows.value,
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
        print_violations(err)
        raise typer.Exit(1) from None
    print_set_aside(result.set_aside, result.derived)
    verb = "imported" if result.write.changed else "unchanged (same data already stored)"
    console.print(f"[green]{verb}[/]: version {result.write.version} in {result.write.path}")
    if result.tables is not None:
        print_description(result.tables)


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

    if ran_in_parts(source, partitions, (mapping, sql, sql_spec, adapter), as_of, bad_rows.value,
                     (scheduler, local_cluster), store=False):  # fmt: skip
        return
    try:
        raw, stamp, _ = _read_source(source, mapping, sql, sql_spec, adapter, as_of)
        checked = check(raw, as_of=stamp, bad_rows=bad_rows.value)
    except ValidationError as err:
        print_violations(err)
        raise typer.Exit(1) from None
    print_set_aside(checked.set_aside, checked.derived)
    rows = ", ".join(
        f"{name} {len(frame):,}" + (" (derived)" if name in checked.derived else "")
        for name, frame in checked.tables.items()
        if len(frame)
    )
    console.print(f"[green]valid[/]: {rows}")


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


@data_app.command("rollback")
def data_rollback() -> None:
    """Make the import before the current one current again (the store keeps
    FORECAST_STORE_VERSIONS_KEPT earlier ones); a running service reloads it by itself."""
    from forecast.data.store import StoreError, rollback_store, store_manifest

    try:
        left = store_manifest()["version"]
        version = rollback_store()
    except StoreError as err:
        raise fail(str(err)) from None
    manifest = store_manifest()
    rows = ", ".join(
        f"{name} {count:,}" for name, count in manifest.get("rows", {}).items() if count
    )
    console.print(
        f"[green]rolled back[/]: version {version} is current again ({rows}); "
        f"{left} stays in the store"
    )


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
    when something blocks training a model the data is made for.
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
        print_violations(err)
        raise typer.Exit(1) from None
    found = diagnose(tables)
    if as_json:
        json.dump(found.to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_diagnosis(found)
    if found.blocked:
        raise typer.Exit(1)
