"""The `forecast` command: thin Typer wrappers around the library's pipeline stages, one module
per group (`data`, `train`, `models`, `revenue`, `explain`, `score`; `common` holds what they
share). Other installed packages add theirs through the `forecast.commands` entry points."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer
from rich.logging import RichHandler

from forecast.cli.common import err_console
from forecast.cli.data import data_app
from forecast.cli.explain import coach_app, explain_app
from forecast.cli.models import models_app
from forecast.cli.revenue import register as register_revenue
from forecast.cli.score import score_app
from forecast.cli.train import retrain, train_app
from forecast.settings import SettingsError, disable_telemetry, get_settings

app = typer.Typer(
    help="Calibrated sales forecasts and coaching from CRM history.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.command("retrain")(retrain)
app.add_typer(models_app, name="models")
app.add_typer(explain_app, name="explain")
app.add_typer(coach_app, name="coach")
app.add_typer(score_app, name="score")
register_revenue(app)


QUIET_LIBRARIES = ("mlflow", "alembic", "matplotlib")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs.")] = False):
    """Set up logging and keep MLflow offline; nothing of this happens at import time."""
    disable_telemetry()
    try:
        get_settings()
    except SettingsError as err:  # named here, before any command reads a setting
        err_console.print(f"[red]A setting cannot be used:[/] {err}")
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )
    if not verbose:  # the libraries' chatter ("Creating initial MLflow database tables...")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when MLflow is imported
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)


def run() -> None:
    """The `forecast` script: `app` with an edge that no traceback crosses. An error no command
    names ends in a short message (`--verbose` shows the traceback); a tracking server that
    stops answering is said to be that."""
    try:
        app()
    except Exception as err:  # a command's own exits are SystemExit, not caught here
        if {"--verbose", "-v"} & set(sys.argv[1:]):
            raise
        err_console.print(_unexpected(err), style="red", markup=False, highlight=False)
        raise SystemExit(1) from None


def _unexpected(err: Exception) -> str:
    first_line = (str(err).strip().splitlines() or [""])[0][:300]
    if _unreachable_server(err):
        return (
            "The MLflow tracking server did not answer, so the command stopped part-way (any "
            "MLflow run it had begun stays unfinished). Check that the server is running and "
            f"that FORECAST_TRACKING_URI points at it.\n{first_line}"
        )
    return (
        f"forecast stopped on an unexpected error: {type(err).__name__}: {first_line}\n"
        "Run the command again with --verbose for the details, and please report it."
    )


def _unreachable_server(err: BaseException | None) -> bool:
    """Whether a connection failure from `requests` (MLflow's client) is behind `err`."""
    seen = 0
    while err is not None and seen < 20:
        if type(err).__module__.startswith(("requests", "urllib3")):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


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
