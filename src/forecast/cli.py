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

from forecast.cli_options import moment_option
from forecast.settings import disable_telemetry, get_settings
from forecast.training.drift import ROLLING_FOLDS

app = typer.Typer(
    help="Calibrated sales forecasts and coaching from CRM history.", no_args_is_help=True
)
data_app = typer.Typer(
    help="Generate, import, validate and describe CRM data.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
train_app = typer.Typer(
    help="Train a model: one MLflow run, registered as challenger, then the gate.",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")
models_app = typer.Typer(help="The model registry: list, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")

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
    as_of: Annotated[
        str, typer.Option("--as-of", help="The world's export date.", callback=moment_option)
    ] = "2026-11-15",
    dirt: Annotated[float, typer.Option(help="Share of untidy rows (0 = clean).")] = 0.0,
    show: Annotated[bool, typer.Option("--describe/--quiet", help="Describe it after.")] = True,
) -> None:
    """Generate a realistic CRM world (with its latent truth) into the store."""
    from forecast.data.ingest import generate

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
    from forecast.data.sources.files import read_folder

    chosen = [x for x in (mapping, sql, sql_spec, adapter) if x is not None]
    if len(chosen) > 1:
        raise _fail("choose one of --mapping, --sql, --sql-spec, --adapter")
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
            raise _fail("give the folder to import (or --sql / --sql-spec)")
        if not source.exists():
            raise _fail(f"{source}: no such file or folder")
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
                source, mapping, as_of=pd.Timestamp(as_of) if as_of else None, now=_now()
            )
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
) -> None:
    """Validate a source and store it; any violation stops the import and nothing is written."""
    from forecast.data.ingest import import_raw
    from forecast.data.violations import ValidationError

    try:
        with _steps(3, "importing") as on_step:
            on_step("reading")
            raw, stamp, label = _read_source(source, mapping, sql, sql_spec, adapter, as_of)
            result = import_raw(
                raw,
                as_of=stamp,
                source=label,
                imported_at=_now(),
                bad_rows=bad_rows.value,
                on_step=on_step,
            )
    except ValidationError as err:
        _print_violations(err)
        raise typer.Exit(1) from None
    _print_set_aside(result.set_aside, result.derived)
    verb = "imported" if result.write.changed else "unchanged (same data already stored)"
    console.print(f"[green]{verb}[/]: version {result.write.version} in {result.write.path}")
    _print_description(result.tables)


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
) -> None:
    """Check a source against the data contract without storing anything."""
    from forecast.data.validate import check
    from forecast.data.violations import ValidationError

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
        raise _fail(str(err)) from None
    if as_json:
        from forecast.data.describe import describe

        json.dump(describe(tables).to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    _print_description(tables)


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
        raise _fail(str(err)) from None
    except ValidationError as err:
        _print_violations(err)
        raise typer.Exit(1) from None
    found = diagnose(tables)
    if as_json:
        json.dump(found.to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        _print_diagnosis(found)
    if found.blockers:
        raise typer.Exit(1)


def _print_diagnosis(found) -> None:
    console.rule(f"CRM as of {found.as_of}: what it supports")
    rows = ", ".join(f"{k} {v:,}" for k, v in found.rows.items() if v)
    console.print(f"Rows: {rows}", highlight=False)
    first, last = found.deals_span
    console.print(
        f"Deals created {first} .. {last}; won {found.closed['won']:,}, lost "
        f"{found.closed['lost']:,}, open {found.closed['open']:,}; stage history: {found.history}",
        highlight=False,
    )
    cycle = ", ".join(f"{k} {v:g}" for k, v in found.cycle_days.items() if v is not None)
    console.print(f"Days from created to closed: {cycle or 'no closed deals'}", highlight=False)
    rates = ", ".join(f"{k} {v:.0%}" for k, v in found.win_rate_by_quarter.items())
    console.print(f"Win rate by close quarter: {rates or 'no closed deals'}", highlight=False)
    table = Table("model", "can be trained", title="Models")
    for model, verdict in found.trainable.items():
        table.add_row(model, verdict)
    console.print(table)
    if found.features_off:
        off = Table("reason", "features off", title="Features off (the data lacks what they read)")
        for reason in dict.fromkeys(found.features_off.values()):
            names = [n for n, r in found.features_off.items() if r == reason]
            off.add_row(reason, ", ".join(names))
        console.print(off)
    for suspect in found.suspicious_columns:
        console.print(f"suspicious: {suspect}", style="yellow", markup=False, highlight=False)
    if not found.blockers:
        console.print("[green]nothing blocks training[/]")


def _print_violations(err) -> None:
    """The validation summary as plain text: long paths must not be wrapped mid-name."""
    err_console.print(
        err.summary(get_settings().max_violations_shown),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _print_description(tables) -> None:
    from forecast.data.describe import describe

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
    if d.rows["deals"]:
        _print_deals(d, tables)
    if o := d.orders:
        console.print(
            f"Orders: {o['lines']:,} lines in {o['orders']:,} orders from {o['customers']:,} "
            f"customers; {o['lines_without_customer']:,} lines "
            f"({o['lines_without_customer'] / o['lines']:.1%}) without a customer (in the totals, "
            f"scored for no one); returns and cancellations {o['returned_share']:.1%} of sales",
            soft_wrap=True,
        )
    revenue = Table("quarter", *d.revenue_by_quarter.columns, title="Revenue by quarter (last 8)")
    for quarter, row in d.revenue_by_quarter.tail(8).iterrows():
        revenue.add_row(quarter, *(f"{v:,.0f}" for v in row))
    console.print(revenue)


def _print_deals(d, tables) -> None:
    from forecast.data.derive import history_is_derived

    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(d.deals_by_outcome.items()))
    console.print(f"Deals: {outcomes}; win rate of closed deals {d.win_rate:.1%}")
    segments = ", ".join(f"{k} {v:.1%}" for k, v in d.win_rate_by_segment.items())
    console.print(f"Win rate by segment: {segments}")
    if history_is_derived(tables.deal_history):
        console.print(
            "Stage conversion: no stage history in the export (deal_history derived from the "
            "deals), so there is none to show"
        )
    else:
        conversion = Table("from", "to", "deals", "converted", "rate", title="Stage conversion")
        for row in d.stage_conversion.itertuples():
            conversion.add_row(
                row[1], row[2], f"{row.deals:,}", f"{row.converted:,}", f"{row.rate:.1%}"
            )
        console.print(conversion)


# --- models --------------------------------------------------------------------------------------

SeedOpt = Annotated[int, typer.Option(help="Random seed: same data and seed, same model.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
# features, guard and candidates, each held-out window of the choice, evaluation, logging, gate
TRAIN_STEPS = 5 + ROLLING_FOLDS


def _stored_world():
    """The stored tables and, for a generated world, its truth (None for real data)."""
    from forecast.data.ingest import read_world
    from forecast.data.store import StoreEmptyError, read_store

    try:
        world = read_world()
        return (read_store(), None) if world is None else (world.tables, world.truth)
    except StoreEmptyError as err:
        raise _fail(str(err)) from None


def _run_pipeline(name: str, tables, truth, seed: int, **options):
    """One pipeline through training and its gate, with progress; training refusals exit 1."""
    from forecast.training.leakage import LeakageSuspected
    from forecast.training.pipelines import PIPELINES
    from forecast.training.task import NotEnoughDataError

    with _steps(TRAIN_STEPS, f"training {name}") as on_step:
        try:
            return PIPELINES[name](tables, truth=truth, seed=seed, on_step=on_step, **options)
        except (NotEnoughDataError, LeakageSuspected) as err:
            raise _fail(f"{name}: {err}") from None


def _outcome_dict(outcome) -> dict:
    d = outcome.decision
    return {
        "pipeline": outcome.pipeline,
        "run_id": outcome.run_id,
        "model": d.name,
        "version": d.version,
        "promoted": d.promoted,
        "reason": d.reason,
        "metrics": outcome.metrics.to_dict(orient="index"),
    }


def _print_outcome(outcome) -> None:
    from forecast.training.evaluate import LOWER_IS_BETTER, METRICS

    table = Table("contender", *METRICS, title=f"{outcome.pipeline}: test slice, same rows")
    best = {
        m: outcome.metrics[m]
        .drop("truth", errors="ignore")
        .agg("min" if m in LOWER_IS_BETTER else "max")
        for m in METRICS
    }
    for name, row in outcome.metrics.iterrows():
        cells = [
            f"[bold]{row[m]:.4f}[/]" if row[m] == best[m] and name != "truth" else f"{row[m]:.4f}"
            for m in METRICS
        ]
        table.add_row(str(name), *cells)
    console.print(table)
    d = outcome.decision
    colour = "green" if d.promoted else "yellow"
    console.print(f"[{colour}]{d.name} v{d.version} {d.summary()}[/]", highlight=False)
    console.print(f"MLflow run {outcome.run_id}", style="dim")


TestDaysOpt = Annotated[
    int | None,
    typer.Option(min=0, help="Days of the out-of-time test slice (default, or 0: fitted)."),
]
CalibrationDaysOpt = Annotated[
    int | None,
    typer.Option(min=0, help="Days of the calibration slice before it (default, or 0: fitted)."),
]


@train_app.command("win")
def train_win(
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    label_lag_days: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Days before the export where the test slice ends (default, or 0: from the "
            "data's cycle lengths).",
        ),
    ] = None,
    test_days: TestDaysOpt = None,
    calibration_days: CalibrationDaysOpt = None,
    allow_column: Annotated[
        list[str] | None,
        typer.Option(
            help="A column the leak guard refuses that you know is filled at creation (e.g. "
            "deals.amount); repeat, or separate with commas. Logged to MLflow and on the card."
        ),
    ] = None,
) -> None:
    """Train the deal win model on the stored CRM, compare it with the baselines and gate it."""
    from forecast.training import win as train

    tables, truth = _stored_world()
    allowed = [c.strip() for value in allow_column or () for c in value.split(",") if c.strip()]
    params = train.WinParams(
        seed=seed,
        label_lag_days=label_lag_days or None,
        test_days=test_days or None,
        calibration_days=calibration_days or None,
        allow_columns=tuple(allowed),
    )
    _show(_run_pipeline("win", tables, truth, seed, params=params), as_json)


class ChurnDefinition(StrEnum):
    auto = "auto"
    subscription = "subscription"
    inactivity = "inactivity"


@train_app.command("churn")
def train_churn(
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    definition: Annotated[
        ChurnDefinition,
        typer.Option(
            help="What churn is: subscription (recurring revenue stops), inactivity (no purchase "
            "within the horizon) or auto (subscription when the export has recurring revenue, "
            "else inactivity when it has orders).",
        ),
    ] = ChurnDefinition.auto,
    horizon_days: Annotated[
        int | None,
        typer.Option(
            min=7,
            max=730,
            help="Days a label looks ahead (default: 90 for subscription churn; for inactivity "
            "churn the gaps between a customer's purchases decide).",
        ),
    ] = None,
) -> None:
    """Train the account churn model on the stored CRM, compare it with the baselines, gate it."""
    tables, truth = _stored_world()
    outcome = _run_pipeline(
        "churn", tables, truth, seed, definition=definition.value, horizon_days=horizon_days
    )
    _show(outcome, as_json)


def _show(outcome, as_json: bool) -> None:
    """A training outcome as JSON on stdout, or as the table of its figures and the verdict."""
    if as_json:
        json.dump(_outcome_dict(outcome), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        _print_outcome(outcome)


@app.command("retrain")
def retrain(seed: SeedOpt = 0, as_json: JsonOpt = False) -> None:
    """Retrain every pipeline on the stored CRM and pass each through its registry gate."""
    from forecast.training.pipelines import PIPELINES

    tables, truth = _stored_world()
    outcomes, failed = [], []
    for name in PIPELINES:
        try:
            outcomes.append(_run_pipeline(name, tables, truth, seed))
        except typer.Exit:  # refused (reason printed): the other pipelines still run
            failed.append(name)
            continue
        if not as_json:
            _print_outcome(outcomes[-1])
    if as_json:
        json.dump([_outcome_dict(o) for o in outcomes], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    if failed:
        raise _fail(f"not retrained: {', '.join(failed)}")


def _registry_call(action, *args, **kwargs) -> str:
    from forecast.training.registry import RegistryError

    try:
        return action(*args, **kwargs)
    except RegistryError as err:
        raise _fail(str(err)) from None


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """Every registered model version with its aliases, test metrics and gate verdict."""
    from forecast.training.registry import list_models

    frame = list_models()
    if as_json:
        json.dump(frame.to_dict(orient="records"), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    if frame.empty:
        console.print("no registered models yet: run `forecast train win`")
        return
    # narrow enough for 80 columns: the gate's verdict in the table, its reasons below it
    table = Table("model", "v", "aliases", "created", "AUC", "log loss", "gate")
    reasons = []
    for row in frame.itertuples():
        verdict, _, why = str(row.gate).partition(":")
        table.add_row(
            row.name,
            str(row.version),
            row.aliases,
            f"{row.created:%Y-%m-%d}",
            f"{row.test_auc:.4f}",
            f"{row.test_log_loss:.4f}",
            verdict,
        )
        if why.strip():
            reasons.append(f"{row.name} v{row.version}: {why.strip()}")
    console.print(table)
    for reason in reasons:
        console.print(reason, markup=False, highlight=False)


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Registered model, e.g. deal-win.")],
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    force: Annotated[bool, typer.Option(help="Promote even if it fails the baselines.")] = False,
) -> None:
    """Make a version champion by hand (it must still beat the baselines unless --force)."""
    from forecast.training.registry import promote

    console.print(_registry_call(promote, name, version, force=force), highlight=False)


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Registered model, e.g. deal-win.")],
) -> None:
    """Give the champion alias back to the previous champion."""
    from forecast.training.registry import rollback

    console.print(_registry_call(rollback, name), highlight=False)


# --- revenue, explanations and coaching live in their own modules ------------------------------

from forecast.cli_explain import coach_app, explain_app  # noqa: E402
from forecast.cli_revenue import register as _register_revenue  # noqa: E402
from forecast.cli_score import score_app  # noqa: E402

app.add_typer(explain_app, name="explain")
app.add_typer(coach_app, name="coach")
app.add_typer(score_app, name="score")
_register_revenue(app)


def _add_installed_commands(cli: typer.Typer) -> None:
    """The commands other installed packages add (entry point group `forecast.commands`): the
    service's `keys`, `log` and `serve`. A group becomes a sub-command, a function a command."""
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group="forecast.commands"), key=lambda e: e.name):
        command = entry.load()
        if isinstance(command, typer.Typer):
            cli.add_typer(command, name=entry.name)
        else:
            cli.command(entry.name)(command)


_add_installed_commands(app)


if __name__ == "__main__":  # pragma: no cover
    app()
