"""The real-shaped sets in ../shared/data, through the path a user takes: a mapping, the CLI.

For each mapping in docs/examples/shared-data/ it imports the set into a fresh FORECAST_HOME
(`forecast data import ... --mapping ...`), asks `forecast data doctor`, trains
(`forecast train win --json`) and prints what happened: the out-of-time metrics of the model,
the base rate and the best simple rule on the same test rows, and the gate's verdict; or the
refusal, as the user reads it.

    .venv/bin/python benchmarks/shared_data.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# run as a script, this folder comes first on sys.path, and its service.py would shadow the
# project's `service` package that the CLI imports
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
MAPPINGS = ROOT / "docs" / "examples" / "shared-data"
# mapping file -> (data folder in shared/, bad-row flag a user needs for it)
RUNS = {
    "maven-crm/mapping.yaml": ("maven-crm", "quarantine"),
    "maven-crm/mapping-careless.yaml": ("maven-crm", "quarantine"),
    "ibm-sales-win-loss/mapping.yaml": ("ibm-sales-win-loss", "refuse"),
}


@dataclass
class Outcome:
    """What a user saw for one mapping."""

    mapping: str
    imported: bool
    trained: bool = False
    message: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    promoted: bool = False
    reason: str = ""


def run(mapping: str, shared: Path) -> Outcome:
    """Import, doctor and train one mapping in a fresh FORECAST_HOME (restored after)."""
    from typer.testing import CliRunner

    from forecast.cli import app
    from forecast.settings import get_settings

    folder, bad_rows = RUNS[mapping]
    runner = CliRunner()
    previous = os.environ.get("FORECAST_HOME")
    with tempfile.TemporaryDirectory() as home:
        os.environ["FORECAST_HOME"] = home
        get_settings.cache_clear()
        try:
            args = ["data", "import", str(shared / folder), "--mapping", str(MAPPINGS / mapping)]
            imported = runner.invoke(app, [*args, "--bad-rows", bad_rows])
            if imported.exit_code != 0:
                return Outcome(mapping, False, message=_last_lines(imported.output))
            trained = runner.invoke(app, ["train", "win", "--json"])
            if trained.exit_code != 0:
                return Outcome(mapping, True, message=_last_lines(trained.output))
            result = json.loads(trained.stdout[trained.stdout.index("{") :])
            return Outcome(
                mapping,
                True,
                trained=True,
                metrics=result["metrics"],
                promoted=result["promoted"],
                reason=result["reason"],
            )
        finally:
            if previous is None:
                os.environ.pop("FORECAST_HOME", None)
            else:
                os.environ["FORECAST_HOME"] = previous
            get_settings.cache_clear()


def _last_lines(output: str, n: int = 12) -> str:
    return "\n".join(output.strip().splitlines()[-n:])


def table(outcome: Outcome) -> str:
    """The model against the base rate and the best rule, same rows, as markdown."""
    rows = ["| contender | AUC | log loss | ECE |", "| --- | --- | --- | --- |"]
    for name, m in outcome.metrics.items():
        if name == "model" or name == "base_rate" or name.startswith(("rule_", "stage_")):
            rows.append(f"| {name} | {m['auc']:.3f} | {m['log_loss']:.4f} | {m['ece']:.3f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for mapping in RUNS:
        outcome = run(mapping, args.shared)
        print(f"\n## {mapping}\n")
        if outcome.trained:
            print(table(outcome))
            verdict = "promoted" if outcome.promoted else "not promoted"
            print(f"\n{verdict}: {outcome.reason}")
        else:
            stage = "training" if outcome.imported else "import"
            print(f"{stage} refused:\n\n```text\n{outcome.message}\n```")


if __name__ == "__main__":
    main()
