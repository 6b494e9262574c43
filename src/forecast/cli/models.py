"""`forecast models`: the registry's versions, and promotion or rollback by hand."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from forecast.cli.common import (
    JsonOpt,
    console,
    fail,
)

models_app = typer.Typer(help="The model registry: list, promote, roll back.", no_args_is_help=True)


def _registry_call(action, *args, **kwargs) -> str:
    from forecast.training.registry import RegistryError

    try:
        return action(*args, **kwargs)
    except RegistryError as err:
        raise fail(str(err)) from None


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
