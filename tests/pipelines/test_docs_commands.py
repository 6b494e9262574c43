"""The `forecast data` commands the README and docs/importing.md print, run as printed.

Each document's commands run in order in one fresh FORECAST_HOME, from the repository root (as
a reader types them after `make venv`). A command naming a file or folder that is not in the
repository or in ../shared/data is a placeholder for the reader's own data (`path/to/folder`,
`export/`, a SQL server): those are listed here by hand, so a mistyped path in the docs fails
instead of being skipped.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forecast.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/importing.md")
PLACEHOLDERS = {
    "forecast data import path/to/folder",
    "forecast data import export/ --mapping mapping.yaml",
    "forecast data import export/ --mapping m.yaml --bad-rows quarantine",
    "forecast data import --sql-spec sources.yaml",
    "forecast data validate path/to/folder",
    'forecast data import --sql "postgresql+psycopg://forecast@warehouse:5432/crm"',
    "CRM_DB_PASSWORD=... forecast data import --sql-spec crm-sql.yaml --as-of 2024-06-30",
}
SLOW = {"forecast data generate --deals 30000 --seed 0"}  # the default world: `make run` runs it
COMMAND = re.compile(r"^(?:CRM_DB_PASSWORD=\.\.\. )?forecast data \S.*$")


def printed_commands(doc: str, command: re.Pattern[str] = COMMAND) -> list[str]:
    """The lines of the document's bash blocks matching `command` (`forecast data ...`), without
    trailing comments."""
    commands, in_bash = [], False
    for line in (ROOT / doc).read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        text = re.split(r"\s{2,}#", line.strip())[0].strip()
        if in_bash and command.match(text):
            commands.append(text)
    return commands


def _variants(command: str) -> list[list[str]]:
    """`[--json]` in a command means: run it without, then with, the option."""
    if "[--json]" not in command:
        return [shlex.split(command)[1:]]
    bare = shlex.split(command.replace(" [--json]", ""))[1:]
    return [bare, [*bare, "--json"]]


@pytest.mark.parametrize("doc", DOCS)
def test_every_printed_data_command_runs_as_printed(doc, shared_data, monkeypatch):
    monkeypatch.chdir(ROOT)
    commands = printed_commands(doc)
    assert commands, f"{doc} prints no forecast data command"
    ran = []
    for command in commands:
        if command in PLACEHOLDERS or command in SLOW:
            continue
        for args in _variants(command):
            paths = [a for a in args if "/" in a and not a.startswith("-")]
            assert all(Path(p).exists() for p in paths), f"{doc}: {command}: missing {paths}"
            result = CliRunner().invoke(app, args)
            assert "Traceback" not in result.output, f"{doc}: {command}\n{result.output}"
            assert result.exception is None or isinstance(result.exception, SystemExit)
            # the doctor exits 1 when it finds something that blocks training, and says what
            allowed = {0, 1} if args[:2] == ["data", "doctor"] else {0}
            assert result.exit_code in allowed, f"{doc}: {command}\n{result.output}"
            ran.append(command)
    assert ran, f"{doc}: every command was a placeholder"


def test_placeholders_are_still_printed():
    printed = {c for doc in DOCS for c in printed_commands(doc)}
    assert printed >= PLACEHOLDERS | SLOW
