"""Point-in-time deal features on a Dask cluster: the single-process code, per partition of
deals, so the same numbers (docs/scale.md).

The records that span deals (`DealContext`: wins and closes by rep, account, product and
product-in-industry, first quotes, revenue, as of any date) are small aggregates: built once and
sent to every worker. Deals are split by a hash of their id; each partition carries its deals'
own rows (the deal, its history, activities and attributes) and their snapshots, and computes
`deal_features` against that context, as one process does for all deals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables
from forecast.features.deal_context import DealContext
from forecast.features.deal_facts import DealFacts
from forecast.features.deals import deal_features

if TYPE_CHECKING:
    from distributed import Client

OWN_ROWS = ("deal_history", "activities", "deal_attributes")  # a deal's own, by deal_id
Progress = Callable[[int, int], None]  # (parts done, parts)


def deal_features_on(
    client: Client,
    tables: CrmTables,
    snapshots: pd.DataFrame,
    *,
    partitions: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """`deal_features(tables, snapshots)`, computed by the cluster's workers in `partitions`
    parts (default: two per worker); the rows in the order of `snapshots`. `progress` hears
    (parts done, parts) as they finish."""
    if snapshots.empty:
        return deal_features(tables, snapshots)
    count = partitions or 2 * max(1, len(client.scheduler_info()["workers"]))
    context = client.scatter(DealContext.of(tables), broadcast=True)
    part = partition_of(snapshots["deal_id"].to_numpy(), count)
    futures = []
    for p in np.unique(part):
        rows = snapshots[part == p]
        own = own_tables(tables, rows["deal_id"].unique())
        # sent as data, not inside the task graph (which the scheduler keeps and copies)
        own_rows = client.scatter([own, rows])
        futures.append(client.submit(_features, *own_rows, context, pure=False))
    made = pd.concat(gathered(futures, progress))
    return made.loc[snapshots.index]


def gathered(futures: list, progress: Progress | None = None) -> list:
    """The futures' results in their order, `progress` told as each finishes."""
    from distributed import as_completed

    if progress is not None:
        for done, _ in enumerate(as_completed(futures), 1):
            progress(done, len(futures))
    return [future.result() for future in futures]


def partition_of(deal_ids: np.ndarray, count: int) -> np.ndarray:
    """Each deal id's partition, by a hash that is the same in every process and run."""
    hashed = pd.util.hash_array(np.asarray(deal_ids, dtype=object), categorize=True)
    return (hashed % np.uint64(count)).astype(np.int64)


def own_tables(tables: CrmTables, deal_ids: np.ndarray) -> CrmTables:
    """The deals of `deal_ids` with their own rows; what spans deals is the context's."""
    keep = pd.Index(deal_ids)
    return tables.replace(
        deals=tables.deals[tables.deals["deal_id"].isin(keep)],
        **{name: tables[name][tables[name]["deal_id"].isin(keep)] for name in OWN_ROWS},
    )


def _features(own: CrmTables, rows: pd.DataFrame, context: DealContext) -> pd.DataFrame:
    return deal_features(DealFacts.of(own), rows, context=context)
