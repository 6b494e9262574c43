"""`make team` (docs/deploy.md): an MLflow tracking server on PostgreSQL, two service instances
sharing it and the PostgreSQL service database; a champion moved by hand and one instance asked
to reload, both serve the new version."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_two_instances_switch_champions_together(postgres_url, tmp_path):
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORECAST_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy.team",
            "--postgres",
            admin,
            "--deals",
            "1600",
            "--workdir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = re.findall(r"^\| (\d) \| \d+ \| (\d+) \| (\d+) \|$", done.stdout, re.M)
    assert len(rows) == 2 and all(before != after for _, before, after in rows), done.stdout
    assert len({after for _, _, after in rows}) == 1, "both serve the same new version"
    assert "runs in PostgreSQL" in done.stdout
