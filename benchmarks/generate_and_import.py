"""Benchmark: generate a large world, then import it from canonical CSV and Parquet folders.

Each phase runs in its own process so its peak memory is its own. Prints figures; asserts nothing.

    python benchmarks/generate_and_import.py --deals 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_generate(deals: int, out: Path) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from forecast.data.world import make_crm

    started = time.perf_counter()
    world = make_crm(deals, seed=0)
    seconds = time.perf_counter() - started
    rows = {name: len(frame) for name, frame in world.tables.items()}
    for fmt in ("csv", "parquet"):
        (out / fmt).mkdir(parents=True, exist_ok=True)
    for name, frame in world.tables.items():
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, out / "parquet" / f"{name}.parquet")
        pacsv.write_csv(table, out / "csv" / f"{name}.csv")
    (out / "as_of.txt").write_text(world.tables.as_of.isoformat())
    return {"seconds": seconds, "peak_mb": _peak_mb(), "rows": rows}


def phase_import(folder: Path, as_of: str, home: Path) -> dict:
    import os

    import pandas as pd

    os.environ["FORECAST_HOME"] = str(home)
    from forecast.data.ingest import import_raw
    from forecast.data.sources.files import read_folder

    started = time.perf_counter()
    raw = read_folder(folder)
    read_seconds = time.perf_counter() - started
    result = import_raw(
        raw,
        as_of=pd.Timestamp(as_of),
        source=str(folder),
        imported_at=pd.Timestamp("2026-11-15"),
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "read_seconds": read_seconds,
        "peak_mb": _peak_mb(),
        "rows": result.write.rows,
    }


def _run(args: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--phase", choices=["generate", "import"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--as-of", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "generate":
        print(json.dumps(phase_generate(args.deals, args.folder)))
        return
    if args.phase == "import":
        print(json.dumps(phase_import(args.folder, args.as_of, args.home)))
        return

    with tempfile.TemporaryDirectory(prefix="forecast-bench-") as tmp:
        work = Path(tmp)
        gen = _run(["--phase", "generate", "--deals", str(args.deals), "--folder", str(work)])
        as_of = (work / "as_of.txt").read_text()
        rows = gen["rows"]
        print(f"world: {args.deals:,} deals, " + ", ".join(f"{k} {v:,}" for k, v in rows.items()))
        print(f"{'phase':<24}{'seconds':>10}{'peak MB':>10}")
        print(f"{'generate (make_crm)':<24}{gen['seconds']:>10.1f}{gen['peak_mb']:>10.0f}")
        for fmt in ("parquet", "csv"):
            result = _run(
                [
                    "--phase",
                    "import",
                    "--folder",
                    str(work / fmt),
                    "--as-of",
                    as_of,
                    "--home",
                    str(work / f"home-{fmt}"),
                ]
            )
            label = f"import {fmt} folder"
            print(f"{label:<24}{result['seconds']:>10.1f}{result['peak_mb']:>10.0f}")
            print(f"{'  of which reading':<24}{result['read_seconds']:>10.1f}")


if __name__ == "__main__":
    main()
