"""A bad `--as-of` is a usage error naming the option, in every command that takes one."""

from __future__ import annotations

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
@pytest.mark.parametrize("bad", ["garbage", "2026-13-45", "yesterday"])
def test_a_bad_as_of_is_a_usage_error_not_a_traceback(command, bad):
    done = CliRunner().invoke(app, [*command, "--as-of", bad])
    assert done.exit_code == 2, done.output
    assert "--as-of" in done.output and bad in done.output
    assert "Traceback" not in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)
