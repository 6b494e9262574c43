"""Benchmark: training the deal win model on about 100,000 and 1,000,000 labelled snapshots.

Each size runs in its own subprocess (so peak memory is that size's alone), with its own
temporary FORECAST_HOME (the real store and MLflow are not touched). Prints seconds per step of
`train_win` (features, candidates, calibration and evaluation, MLflow logging) and peak memory;
asserts nothing.

    python benchmarks/train_win.py                 # 100,000 and 1,000,000 snapshots
    python benchmarks/train_win.py --snapshots 100000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# labelled weekly snapshots per generated deal over the default 2023-01-01 .. 2026-11-15 world,
# train + calibration + test (measured on make_crm(30_000): 130,942)
SNAPSHOTS_PER_DEAL = 4.36


def child(deals: int, seed: int) -> None:
    """Generate a world, train once, print one line of figures."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from forecast.data.world import make_crm
    from forecast.training.win import train_win

    started = time.perf_counter()
    world = make_crm(deals, seed=seed)
    generated = time.perf_counter() - started
    rss_world = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    marks: list[tuple[str, float]] = []
    started = time.perf_counter()
    result = train_win(
        world.tables,
        truth=world.truth,
        card_dir=Path(os.environ["FORECAST_HOME"]) / "models",  # never the repo's card
        on_step=lambda name: marks.append((name, time.perf_counter())),
    )
    ended = time.perf_counter()
    steps = [
        (name, (marks[i + 1][1] if i + 1 < len(marks) else ended) - at)
        for i, (name, at) in enumerate(marks)
    ]
    s = result.slices
    snapshots = len(s.train) + len(s.calibration) + len(s.test)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"deals {deals:,}: world generated in {generated:.1f} s ({rss_world:,.0f} MB)")
    print(
        f"snapshots {snapshots:,} (train {len(s.train):,}, calibration {len(s.calibration):,},"
        f" test {len(s.test):,}); chosen {result.candidate} + {result.calibration_method}"
    )
    for name, seconds in steps:
        print(f"  {name:<26}{seconds:>8.1f} s")
    print(f"  {'train_win total':<26}{ended - started:>8.1f} s")
    print(f"  {'peak memory':<26}{peak:>8,.0f} MB")
    # other work on the machine slows 2-thread LightGBM a lot (see FIELD-NOTES): show it
    print(f"  load average at the end {os.getloadavg()[0]:.1f} (cores: {os.cpu_count()})")
    print(f"  test AUC {result.metrics.loc['model', 'auc']:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deals", type=int, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.deals:
        child(args.deals, args.seed)
        return
    for target in args.snapshots:
        deals = round(target / SNAPSHOTS_PER_DEAL)
        load = os.getloadavg()[0]
        print(f"--- about {target:,} snapshots (load average {load:.1f} at start)", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-train-win-") as home:
            env = os.environ | {"FORECAST_HOME": home, "MLFLOW_DISABLE_TELEMETRY": "true"}
            command = [sys.executable, __file__, "--deals", str(deals), "--seed", str(args.seed)]
            subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    main()
