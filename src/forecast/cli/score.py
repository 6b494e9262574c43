"""`forecast score deals --all` and `forecast score accounts --all`: every open deal's score,
and every account's churn risk, for a CRM to re-import in bulk."""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from forecast.cli.common import (
    LocalClusterOpt,
    SchedulerOpt,
    cluster,
    console,
    err_console,
    moment_option,
    parts_read_by_workers,
    steps,
)

OutOpt = Annotated[
    Path, typer.Option("--out", help="Where to write the scores (.parquet or .csv).")
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of", help="Moment to score at (default: the export's).", callback=moment_option
    ),
]
LogOpt = Annotated[
    bool, typer.Option("--log/--no-log", help="Also write each score to the prediction log.")
]
score_app = typer.Typer(help="Score the stored CRM in bulk.", no_args_is_help=True)


@score_app.command("deals")
def score_deals_command(
    every: Annotated[bool, typer.Option("--all", help="Every deal open at the as-of.")] = False,
    out: OutOpt = Path("deal-scores.parquet"),
    as_of: AsOfOpt = None,
    log: LogOpt = True,
    scheduler: SchedulerOpt = None,
    local_cluster: LocalClusterOpt = None,
) -> None:
    """Score every open deal with the deal-win champion: probability, grade, trend, reasons,
    top action, model version, as-of and data fingerprint on every row. With a Dask cluster,
    its workers score the deals, reading a store in parts themselves (docs/scale.md)."""
    from forecast.data.store import StoreEmptyError, read_store, store_manifest
    from forecast.explain.book import score_book, write_book
    from forecast.explain.scoring import load_deal_explainer
    from forecast.features.on_dask import CONTEXT_TABLES, own_context, shipped
    from forecast.training.registry import RegistryError

    if not every:
        err_console.print("name what to score: --all (every open deal)", style="red")
        raise typer.Exit(2)
    _check_suffix(out)
    with cluster(scheduler, local_cluster) as client, ExitStack() as held:
        parts = parts_read_by_workers(client)
        try:
            tables = read_store(tables=CONTEXT_TABLES if parts else None)
            fingerprint = store_manifest()["fingerprint"]
            moment = pd.Timestamp(as_of) if as_of else tables.as_of
            # the records that span deals, made once for the yardsticks and the scores
            context = own_context(client, parts, tables) if parts else None
            if parts and context:  # and sent to the workers once for both
                held.enter_context(shipped(context, parts))
            on = {"client": client, "parts": parts, "context": context}
            explainer = load_deal_explainer(tables, as_of=moment, **on)
        except StoreEmptyError as err:
            err_console.print(str(err), style="red")
            raise typer.Exit(1) from None
        except RegistryError as err:
            err_console.print(str(err), style="red", markup=False)
            raise typer.Exit(1) from None
        doing = f"scoring the open deals as of {moment:%Y-%m-%d}"
        with steps(1, doing) as bar:
            book = score_book(
                tables, explainer, as_of=moment, progress=bar.parts, fingerprint=fingerprint, **on
            )
    write_book(book, out)
    request_id = f"book-{uuid.uuid4().hex}"
    log = log and not book.empty and _log(book, request_id)
    console.print(
        f"{len(book):,} open deals scored as of {moment:%Y-%m-%d} by "
        f"{explainer.model_label} -> {out}" + (f"; logged as request {request_id}" if log else "")
    )
    if explainer.forced:
        err_console.print(explainer.forced, style="yellow", markup=False, highlight=False)


def _log(book: pd.DataFrame, request_id: str) -> bool:
    """Write the book (of deals or accounts) to the service's prediction log, through the
    writer the service package registers (entry point group `forecast.prediction_log`: the
    library does not import the service); False, said, when none is installed."""
    from importlib.metadata import entry_points

    writers = entry_points(group="forecast.prediction_log", name="book")
    if not writers:
        err_console.print("no prediction log installed (the service package writes it)")
        return False
    next(iter(writers)).load()(book, request_id)
    return True


@score_app.command("accounts")
def score_accounts_command(
    every: Annotated[
        bool, typer.Option("--all", help="Every account (customer) the churn model can score.")
    ] = False,
    out: OutOpt = Path("account-scores.parquet"),
    as_of: AsOfOpt = None,
    log: LogOpt = True,
    scheduler: SchedulerOpt = None,
    local_cluster: LocalClusterOpt = None,
) -> None:
    """Score every account with the churn champion: churn probability, a year's revenue,
    revenue at risk, drivers (signed, most telling first) and top retention action, with the
    churn definition, model version, as-of and data fingerprint on every row.

    Under subscription churn the accounts billed recurring revenue in the last ended month;
    under inactivity churn every customer with a purchase in the year before the as-of. With a
    Dask cluster, its workers compute the accounts' features, reading a store in parts
    themselves (docs/scale.md)."""
    from forecast.data.store import StoreEmptyError, current_path, read_store, store_manifest
    from forecast.explain.book import account_reason_columns, write_book
    from forecast.revenue.churn import revenue_at_risk, revenue_at_risk_of_parts
    from forecast.training.churn_task import MODEL_NAME, definition_of

    if not every:
        err_console.print("name what to score: --all (every account)", style="red")
        raise typer.Exit(2)
    _check_suffix(out)
    version, model = _churn_champion()
    definition = definition_of(model).name
    with cluster(scheduler, local_cluster) as client:
        parts = parts_read_by_workers(client)
        try:
            tables = read_store(tables=("reps", "products") if parts else None)
            folder, fingerprint = current_path(), store_manifest()["fingerprint"]
        except StoreEmptyError as err:
            err_console.print(str(err), style="red")
            raise typer.Exit(1) from None
        moment = pd.Timestamp(as_of) if as_of else tables.as_of
        reasons = account_reason_columns(tables, model, as_of=moment, client=client, parts=parts)
        with steps(1, f"scoring the accounts as of {moment:%Y-%m-%d}") as bar:
            if parts:
                book = revenue_at_risk_of_parts(
                    client, folder, tables, model, as_of=moment, progress=bar.parts,
                    reasons=reasons,
                )  # fmt: skip
            else:
                book = revenue_at_risk(
                    tables, model, as_of=moment, client=client, progress=bar.parts,
                    reasons=reasons,
                )  # fmt: skip
    book = book.assign(
        definition=definition,
        model=MODEL_NAME,
        model_version=version,
        data_fingerprint=fingerprint,
    )
    write_book(book, out)
    request_id = f"accounts-{uuid.uuid4().hex}"
    log = log and not book.empty and _log(book, request_id)
    at_risk = book["revenue_at_risk"].sum()
    console.print(
        f"{len(book):,} accounts scored as of {moment:%Y-%m-%d} by {MODEL_NAME} v{version} "
        f"({definition} churn); revenue at risk {at_risk:,.0f} -> {out}"
        + (f"; logged as request {request_id}" if log else "")
    )


def _churn_champion() -> tuple[str, Any]:
    """The churn champion's version and model, or exit 1 saying how to train one."""
    from forecast.training.churn_task import MODEL_NAME
    from forecast.training.registry import (
        RegistryError,
        champion_version,
        load_champion,
        no_champion,
    )

    version = champion_version(MODEL_NAME)
    try:
        if version is None:
            raise RegistryError(no_champion(MODEL_NAME, "forecast train churn"))
        return version, load_champion(MODEL_NAME, version)
    except RegistryError as err:
        err_console.print(str(err), style="red", markup=False)
        raise typer.Exit(1) from None


def _check_suffix(out: Path) -> None:
    if out.suffix not in (".parquet", ".csv"):
        err_console.print(f"--out {out}: write .parquet or .csv", style="red")
        raise typer.Exit(2)
