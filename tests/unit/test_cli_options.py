"""A bad `--as-of` is a usage error naming the option, in every command that takes one."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from forecast.cli import app


@pytest.mark.parametrize(
    "command",
    [
        ["explain", "deal", "D1"],
        ["coach", "rep", "R1"],
        ["coach", "team", "NA 1"],
        ["revenue"],
        ["score", "deals", "--all"],
        ["data", "generate", "--deals", "100"],
        ["data", "import", "export/"],
        ["data", "validate", "export/"],
    ],
)
# a day-first or month-first date is refused, not guessed: 01/02/2017 is either
@pytest.mark.parametrize("bad", ["garbage", "2026-13-45", "yesterday", "01/02/2017", "31/12/2017"])
def test_a_bad_as_of_is_a_usage_error_not_a_traceback(command, bad):
    done = CliRunner().invoke(app, [*command, "--as-of", bad])
    assert done.exit_code == 2, done.output
    assert "--as-of" in done.output and bad in done.output
    assert "Traceback" not in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2017-12-31", "2017-12-31T00:00:00"),
        ("2017-12-31 09:30", "2017-12-31T09:30:00"),
        ("2017-12-31T09:30+02:00", "2017-12-31T07:30:00"),
        ("2017-12-31T09:30:00Z", "2017-12-31T09:30:00"),
    ],
)
def test_an_iso_as_of_is_kept_as_the_store_keeps_moments(given, stored):
    from forecast.cli.common import moment_option

    assert moment_option(given) == stored


def test_library_chatter_stays_out_of_a_command_unless_verbose(tmp_path):
    """A first command in a new home: MLflow's "Creating initial MLflow database tables" is
    noise to a person (it is there with --verbose)."""
    import os

    env = {**os.environ, "FORECAST_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_LOGGING_LEVEL", None)
    command = [sys.executable, "-m", "forecast.cli", "models", "list"]
    quiet = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "no registered models yet" in quiet.stdout + quiet.stderr
    assert "mlflow" not in quiet.stderr.lower()
    loud = subprocess.run(
        [*command[:3], "-v", *command[3:]],
        env={**env, "FORECAST_HOME": str(tmp_path / "h2")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Creating initial MLflow database tables" in loud.stderr


def test_the_command_line_starts_without_the_model_libraries():
    """`forecast --help`, `data ...` and `keys ...` answer in under a second: sklearn (and
    SciPy behind it) is imported by the commands that train or score, not by the CLI itself."""
    code = (
        "import sys, forecast.cli; "
        "print([m for m in ('sklearn', 'scipy', 'lightgbm', 'shap') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
