"""`forecast log export`: the prediction log of a date range, for audits and replays."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

log_app = typer.Typer(help="The service's prediction log.", no_args_is_help=True)

PAGE = 10_000  # rows read at a time: memory stays flat whatever the range


def _day(text: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        typer.echo(f"{option} {text!r}: give a date, e.g. 2026-12-01", err=True)
        raise typer.Exit(2) from None


@log_app.command("export")
def export(
    start: Annotated[str, typer.Option("--from", help="First day (UTC), e.g. 2026-12-01.")],
    end: Annotated[str, typer.Option("--to", help="Last day (UTC), included.")],
    out: Annotated[
        Path, typer.Option("--out", help="A .jsonl file (one prediction per line).")
    ] = Path("predictions.jsonl"),
) -> None:
    """Every logged prediction made from --from to --to: when, who asked, model and version,
    the deal, the input's hash, and the answer (probability, grade, reasons)."""
    from forecast.settings import get_settings
    from service.keys import engine_for, ensure_tables
    from service.predlog import read_predictions

    first, last = _day(start, "--from"), _day(end, "--to") + timedelta(days=1)
    if last <= first:
        typer.echo(f"--to {end} is before --from {start}", err=True)
        raise typer.Exit(2)
    engine = engine_for(get_settings().service_database_url)
    ensure_tables(engine)
    partial = out.with_name(f".{out.name}.partial")
    rows, after = 0, 0
    with partial.open("w") as sink:
        while page := read_predictions(engine, first, last, after_id=after, limit=PAGE):
            for row in page:
                sink.write(json.dumps(row, default=str) + "\n")
            rows, after = rows + len(page), page[-1]["id"]
    partial.replace(out)
    typer.echo(f"{rows:,} predictions from {start} to {end} -> {out}")
