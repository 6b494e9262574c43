"""Benchmark: point-in-time deal features for about 1,000,000 weekly snapshots.

Prints the world size, the snapshot count, seconds per step and peak memory; asserts nothing.
With `--local-cluster N`, the same features again on a Dask LocalCluster of N worker processes
(each with `--memory-limit`): wall time, each worker's peak memory, and whether every column
and row is the single process's (docs/scale.md).

    python benchmarks/features.py --deals 200000 [--local-cluster 2 --memory-limit 4GB]
"""

from __future__ import annotations

import argparse
import resource
import time

from forecast.data.world import make_crm
from forecast.features.deals import deal_features, deal_snapshots, snapshot_dates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--local-cluster", type=int, default=0, help="workers (0: none)")
    parser.add_argument("--memory-limit", default="4GB", help="per worker")
    args = parser.parse_args()

    started = time.perf_counter()
    world = make_crm(args.deals, seed=args.seed)
    tables = world.tables
    generated = time.perf_counter() - started
    dates = snapshot_dates(tables.deals["created_at"].min(), tables.as_of)

    started = time.perf_counter()
    snapshots = deal_snapshots(tables, dates)
    snapshot_seconds = time.perf_counter() - started
    started = time.perf_counter()
    features = deal_features(tables, snapshots)
    feature_seconds = time.perf_counter() - started

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"world: {args.deals:,} deals, {len(tables.deal_history):,} history rows, "
        f"{len(tables.activities):,} activities (generated in {generated:.1f} s)"
    )
    print(f"snapshots: {len(snapshots):,} (deal, as_of) pairs over {len(dates)} weekly dates")
    print(f"{'step':<28}{'seconds':>10}")
    print(f"{'open deals per as_of':<28}{snapshot_seconds:>10.1f}")
    print(f"{'features':<28}{feature_seconds:>10.1f}")
    print(f"{'total (goal: < 60 s)':<28}{snapshot_seconds + feature_seconds:>10.1f}")
    print(f"features: {features.shape[1] - 2} columns; peak memory {peak_mb:,.0f} MB")
    if args.local_cluster:
        on_cluster(tables, snapshots, features, args.local_cluster, args.memory_limit)


def on_cluster(tables, snapshots, features, workers: int, memory_limit: str) -> None:
    import pandas as pd
    import psutil

    from forecast.cluster import dask_client
    from forecast.features.on_dask import deal_features_on

    with dask_client(local_cluster=workers, memory_limit=memory_limit) as client:
        started = time.perf_counter()
        made = deal_features_on(client, tables, snapshots)
        seconds = time.perf_counter() - started
        held = client.run(lambda: psutil.Process().memory_info().rss / 2**20)
    pd.testing.assert_frame_equal(made, features, check_exact=True)
    after = ", ".join(f"{mb:,.0f}" for mb in sorted(held.values()))
    print(
        f"on a LocalCluster of {workers} workers ({memory_limit} each): features in "
        f"{seconds:.1f} s (single process: see above); memory held by each worker after "
        f"{after} MB; every column "
        "and row identical to the single process's"
    )


if __name__ == "__main__":
    main()
