"""Benchmark: the quarterly revenue simulation, 100,000 open deals x 10,000 draws, whole org tree.

Takes the default world's 2026Q4 forecast inputs as of its export (real win probabilities,
close-timing factors, amounts, renewal chains, new-deal rates) and repeats them over copies of
the sales organisation until there are `--deals` open deals: k copies of every team (same
regions). Then times `simulate_quarter` (draws, roll-up to team, region and company, quantiles,
targets, the deals behind the spread) and prints seconds (wall clock and CPU: the engine runs on
one core, so on a busy machine the CPU time is the figure to compare) and the process's peak
memory.

    python benchmarks/revenue_simulation.py --deals 100000 --draws 10000
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time
from dataclasses import replace

import numpy as np
import pandas as pd

from forecast.data.world import make_crm
from forecast.revenue import DEFAULT_WORKERS, OrgTree, prepare_quarter, simulate, simulate_quarter
from forecast.revenue.bookings import UNASSIGNED
from forecast.revenue.win_scorers import truth_scorer


def scaled_inputs(inputs, copies: int, n_deals: int):
    """The inputs repeated over `copies` copies of every rep and team (ids suffixed)."""
    leaves = inputs.tree.leaves

    def suffix(values, i):
        values = pd.Series(values, dtype=object)
        return values.where(values == UNASSIGNED, values + f"~{i}").to_numpy(object)

    reps = pd.concat(
        [leaves.assign(rep_id=suffix(leaves["rep_id"], i), team=suffix(leaves["team"], i))
         for i in range(copies)],
        ignore_index=True,
    )  # fmt: skip
    tree = OrgTree.from_reps(reps[reps["rep_id"] != UNASSIGNED], extra=reps.iloc[:1].assign(
        rep_id=UNASSIGNED, team=UNASSIGNED, region=UNASSIGNED))  # fmt: skip
    deals = pd.concat(
        [inputs.open_deals.assign(
            deal_id=inputs.open_deals["deal_id"] + f"~{i}",
            rep_id=suffix(inputs.open_deals["rep_id"], i)) for i in range(copies)],
        ignore_index=True,
    ).head(n_deals)  # fmt: skip
    chains = pd.concat(
        [inputs.chains.assign(owner=suffix(inputs.chains["owner"], i)) for i in range(copies)],
        ignore_index=True,
    )
    won = pd.concat(
        [inputs.won.assign(rep_id=suffix(inputs.won["rep_id"], i)) for i in range(copies)],
        ignore_index=True,
    )
    booked = pd.concat(
        [inputs.renewals_booked.assign(owner=suffix(inputs.renewals_booked["owner"], i))
         for i in range(copies)],
        ignore_index=True,
    )  # fmt: skip
    # per-leaf arrays follow the new tree's leaf order: look each leaf's original up
    original = pd.Series(np.arange(inputs.tree.n_leaves), index=leaves["rep_id"].to_numpy())
    base_id = tree.leaves["rep_id"].str.replace(r"~\d+$", "", regex=True).to_numpy()
    position = original.reindex(base_id).to_numpy()
    targets = {}
    for level, series in inputs.targets.items():
        if level in ("rep", "team"):
            targets[level] = pd.concat(
                [series.rename(index=lambda k, i=i: f"{k}~{i}") for i in range(copies)]
            )
        else:
            targets[level] = series * copies
    tile = lambda values: None if values is None else np.tile(values, copies)  # noqa: E731
    return replace(
        inputs,
        tree=tree,
        targets=targets,
        won=won,
        renewals_booked=booked,
        open_deals=deals,
        chains=chains,
        chain_prob=np.tile(inputs.chain_prob, (copies, 1)),
        chain_value=np.tile(inputs.chain_value, (copies, 1)),
        new_leaf_rate=inputs.new_leaf_rate[position],
        new_leaf_pool=inputs.new_leaf_pool[position],
        chain_pool=tile(inputs.chain_pool),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="threads (default: up to 2)")
    args = parser.parse_args()

    started = time.perf_counter()
    world = make_crm(30_000, seed=args.seed)
    tables = world.tables
    base = prepare_quarter(
        tables, quarter="2026Q4", as_of=tables.as_of, win_scorer=truth_scorer(world.truth)
    )
    copies = math.ceil(args.deals / len(base.open_deals))
    inputs = scaled_inputs(base, copies, args.deals)
    prepared = time.perf_counter() - started
    sim_inputs = inputs.simulation_inputs()

    started, cpu = time.perf_counter(), time.process_time()
    simulate(sim_inputs, draws=args.draws, seed=args.seed, workers=args.workers)
    engine = (time.perf_counter() - started, time.process_time() - cpu)
    started, cpu = time.perf_counter(), time.process_time()
    forecast = simulate_quarter(inputs, draws=args.draws, seed=args.seed, workers=args.workers)
    total = (time.perf_counter() - started, time.process_time() - cpu)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()[0]

    company = forecast.level("company").iloc[0]
    levels = forecast.nodes["level"].value_counts()
    print(
        f"inputs: {len(inputs.open_deals):,} open deals, {len(inputs.chains):,} renewal chains "
        f"({inputs.chain_prob.shape[1]} steps), {inputs.tree.n_leaves:,} leaves; "
        f"{args.draws:,} draws, {args.workers or DEFAULT_WORKERS} threads "
        f"(inputs prepared in {prepared:.1f} s)"
    )
    print(
        "nodes: " + ", ".join(f"{levels.get(level, 0):,} {level}" for level in
                               ("rep", "team", "region", "company"))
    )  # fmt: skip
    print(f"{'step':<46}{'wall s':>10}{'CPU s':>10}")
    print(f"{'engine: draws per leaf (simulate)':<46}{engine[0]:>10.2f}{engine[1]:>10.2f}")
    print(f"{'whole tree: simulate_quarter (goal < 10 s)':<46}{total[0]:>10.2f}{total[1]:>10.2f}")
    print(f"peak memory {peak_mb:,.0f} MB (goal < 2,048 MB); load average at the end {load:.1f}")
    print(
        f"company: mean {company['mean'] / 1e6:,.1f}M, P10 {company['p10'] / 1e6:,.1f}M, "
        f"P90 {company['p90'] / 1e6:,.1f}M"
    )


if __name__ == "__main__":
    main()
