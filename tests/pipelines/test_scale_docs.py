"""docs/scale.md's commands run as printed: a scheduler and workers started from the shell,
a store in parts trained on, scored and forecast through them (own file: it takes minutes, and
`--dist loadfile` runs a file whole on one worker)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def test_docs_scale_commands_run_as_printed(forecast_home):
    """docs/scale.md's bash block, in order, in a fresh FORECAST_HOME: `&` lines are the
    scheduler and workers (stopped at the end), every other line must exit 0."""
    lines, in_bash = [], False
    for line in (ROOT / "docs" / "scale.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
        elif in_bash and line.strip():
            lines.append(line.strip())
    assert any(line.endswith("&") for line in lines) and len(lines) >= 5
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    forecast_home.mkdir(parents=True, exist_ok=True)  # where the reader's files land
    started, outputs = [], []
    try:
        for line in lines:
            if line.endswith("&"):
                command = line.removesuffix("&").strip()
                started.append(
                    subprocess.Popen(
                        ["bash", "-c", f"exec {command}"],
                        cwd=forecast_home,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
                continue
            done = subprocess.run(
                ["bash", "-c", line],
                cwd=forecast_home,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            outputs.append((line, done.stdout))
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    trainings = [
        [row for row in out.splitlines() if row.startswith("│")]
        for line, out in outputs
        if "forecast train win" in line
    ]
    assert len(trainings) == 2 and trainings[0], outputs
    same = [
        [row for row in rows if not row.startswith(("│ model", "│ lightgbm"))] for rows in trainings
    ]
    # base rate, stage rates, rule, logistic (an import carries no generator's truth row)
    assert len(same[0]) == 5 and same[0] == same[1], "the references, the same"
    assert len(pd.read_parquet(forecast_home / "deal-scores.parquet")) > 15
