"""`make drill`, short: every fault under load, each line holding its rule (docs/deploy.md)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_every_fault_holds_its_rule(trained_home, postgres_url, tmp_path):
    home = tmp_path / "home"  # the drill registers a wrong model: not in the shared home
    shutil.copytree(trained_home, home, symlinks=True)
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORECAST_")}
    command = [sys.executable, "-m", "deploy.drill", "--home", str(home), "--postgres", admin]
    done = subprocess.run(
        [*command, "--seconds", "4"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    lines = re.findall(r"^\| (.+?) \| ([\d,]+) \| ([\d,]+) \|", done.stdout, re.M)
    assert len(lines) == 7, done.stdout  # one line per fault
    assert "7 of 7 faults held" in done.stdout
    answered = {fault: int(n.replace(",", "")) for fault, _, n in lines}
    assert all(n > 0 for n in answered.values()), answered
