"""Reasons and actions over the default world's whole open book, as `make run` leaves it.

The default world is generated and both champions trained through the CLI (as the README's
`make run` does), then `make book-checks` (benchmarks/book_checks.py) scores every open deal and
every billed account as the service does and counts each property's violations.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from forecast.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _count(text: str, label: str) -> int:
    match = re.search(rf"{re.escape(label)}:? ([\d,]+)", text)
    assert match, f"{label!r} not in:\n{text}"
    return int(match.group(1).replace(",", ""))


def test_no_reason_or_action_contradicts_the_evidence_over_the_default_book(forecast_home):
    runner = CliRunner()
    for command in (["data", "generate"], ["train", "win"], ["train", "churn"]):
        done = runner.invoke(app, command)
        assert done.exit_code == 0, (command, done.output)
    checked = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "book_checks.py")],
        env={**os.environ, "FORECAST_HOME": str(forecast_home)},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    assert _count(checked, "open deals checked") > 900
    assert _count(checked, "actions advised") > 500
    assert _count(checked, "reasons from a missing value") == 0
    assert _count(checked, "reasons against their yardstick") == 0
    assert _count(checked, "product reasons naming the id, not the name") == 0
    assert _count(checked, "actions the deal already does (meets won deals at its stage)") == 0
    assert _count(checked, "billed accounts checked") > 1000
    assert _count(checked, "retention actions advised") > 100
    assert _count(checked, "actions the account already does (meets accounts that stayed)") == 0
    assert _count(checked, "drivers against their yardstick") == 0
    lifts = re.search(r"distinct lifts per action: (.*)", checked).group(1)
    assert all(int(n) > 1 for n in re.findall(r" (\d+)", lifts)), lifts
