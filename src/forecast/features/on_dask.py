"""Point-in-time features on a Dask cluster: the single-process code, per partition, so the
same numbers (docs/scale.md).

Deals (or accounts) are split by a hash of their id; each partition carries its units' own rows
(a deal's history, activities and attributes; an account's revenue, signals, orders, touches and
deals) and their snapshots, and computes the features as one process does for all. What spans
deals (`DealContext`: wins and closes by rep, account, product and product-in-industry, first
quotes, revenue, as of any date) is built once and sent to every worker. Account features read
nothing beyond the account's own rows.

On a store written in parts (`on_parts`), each worker reads its own parts of the deals and their
rows from the store's folder, and the calling process holds only `CONTEXT_TABLES`: the context
is then built from each part's summary of its deals' rows (`OwnRows`), made by the workers."""

from __future__ import annotations

import functools
import pickle
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from forecast.cluster import Progress, gathered
from forecast.data.parts import partition_of
from forecast.data.store import read_part, scratch_folder, store_parts
from forecast.data.tables import CrmTables, Featurize
from forecast.features.deal_context import DealContext, OwnRows
from forecast.features.deal_facts import DealFacts
from forecast.features.deals import deal_features, training_frame

if TYPE_CHECKING:
    from distributed import Client

DEAL_ROWS = ("deal_history", "activities", "deal_attributes")  # a deal's own, by deal_id
OWN_TABLES = ("deals", *DEAL_ROWS)  # what a worker reads of its part of a store in parts
# what the records that span deals read beside the deals' own rows: the calling process's share
# of a store in parts (`deal_frames_of_parts`)
CONTEXT_TABLES = ("deals", "accounts", "reps", "products", "revenue")
T = TypeVar("T")
ACCOUNT_ROWS = ("revenue", "signals", "activities", "orders", "deals")  # by account_id
# what a worker reads of its part of a store in parts for its accounts' features
ACCOUNT_TABLES = ("accounts", *ACCOUNT_ROWS, "deal_history")


def deal_features_on(
    client: Client,
    tables: CrmTables,
    snapshots: pd.DataFrame,
    *,
    partitions: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """`deal_features(tables, snapshots)`, computed by the cluster's workers in `partitions`
    parts (default: `partition_count`); the rows in the order of `snapshots`. `progress` hears
    (parts done, parts) as they finish."""
    if snapshots.empty:
        return deal_features(tables, snapshots)
    context = client.scatter(DealContext.of(tables), broadcast=True)
    return _on_partitions(
        client, tables, snapshots, _deal_part, context, "deal_id", partitions, progress
    )


def on_parts(
    client: Client,
    folder: Path,
    tables: Sequence[str],
    work: Callable[..., T],
    *args: Any,
    progress: Progress | None = None,
) -> list[T]:
    """`work(part, *args)` for each part of the store in parts at `folder` (a version folder,
    `current_path`), each on a worker that reads its part's `tables` itself (`read_part`: the
    calling process never holds them); the results in part order. `args` may be futures (a
    scattered context). `progress` hears (parts done, parts)."""
    count = store_parts(folder)
    if not count:
        raise ValueError(f"{folder} was not written in parts (forecast data generate --partitions)")
    futures = [
        client.submit(_on_part, folder, n, tuple(tables), work, *args, pure=False)
        for n in range(count)
    ]
    return gathered(futures, progress)


def deal_frames_of_parts(
    client: Client,
    folder: Path,
    tables: CrmTables,
    dates: Sequence[pd.Timestamp],
    then: Callable[[pd.DataFrame, CrmTables], T],
    *,
    context: DealContext | None = None,
    progress: Progress | None = None,
) -> tuple[DealContext, list[T]]:
    """Every deal snapshot at `dates` of the store in parts at `folder` with its features and
    `won` label, as `training_frame(..., labelled_only=False)` makes them, each part's by a
    worker that reads the part itself. `tables` is what the calling process holds of the store:
    at least `CONTEXT_TABLES` (`read_version(folder, CONTEXT_TABLES)`); the records that span
    deals are built from them and each part's `OwnRows`, once, and sent to every worker.

    `then(frame, part)` runs on each part's frame on its worker, with the part's tables (keep
    it, sample it, hash it: at scale the frames together do not fit in the calling process).
    Returns the context (its unavailable features, its attributes) and `then`'s results in
    part order (`context`: `own_context` when already made); `progress` hears the features'
    parts finish."""
    context = context or own_context(client, folder, tables)
    dates = list(pd.DatetimeIndex(dates))
    with shipped(context, folder) as path:
        made = on_parts(
            client, folder, OWN_TABLES, _frame_of_part, dates, path, then, progress=progress
        )
    return context, made


def deal_features_with(client: Client | None, progress: Progress | None = None) -> Featurize:
    """`deal_features` in this process, or by the workers of `client` (the same numbers;
    `progress` hears their parts finish)."""
    if client is None:
        return deal_features
    return partial(deal_features_on, client, progress=progress)


def account_features_with(
    client: Client | None, featurize: Featurize, progress: Progress | None = None
) -> Featurize:
    """`featurize` (account or customer features) in this process, or by the workers of
    `client` (the same numbers; `progress` hears their parts finish)."""
    if client is None:
        return featurize
    return partial(account_features_on, client, featurize=featurize, progress=progress)


def account_features_on(
    client: Client,
    tables: CrmTables,
    snapshots: pd.DataFrame,
    featurize: Featurize,
    *,
    partitions: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """`featurize(tables, snapshots)` for (account_id, as_of) snapshots (`account_features`,
    `inactivity_features`), by the cluster's workers; the rows in the order of `snapshots`."""
    if snapshots.empty:
        return featurize(tables, snapshots)
    return _on_partitions(
        client, tables, snapshots, _account_part, featurize, "account_id", partitions, progress
    )


PART_ROWS = 200_000  # snapshots a part holds at most by default: a worker's memory stays small


def partition_count(client: Client, rows: int) -> int:
    """Two parts per worker, more when that would put over `PART_ROWS` rows in a part (a
    million deals' weekly snapshots in four parts took a worker past 6 GB)."""
    workers = max(1, len(client.scheduler_info()["workers"]))
    return max(2 * workers, -(-rows // PART_ROWS))


def own_context(client: Client, folder: Path, tables: CrmTables) -> DealContext:
    """The records that span deals of the store in parts at `folder`: from `tables` (at least
    `CONTEXT_TABLES`) and each part's `OwnRows`, made by the workers."""
    own = OwnRows.joined(on_parts(client, folder, OWN_TABLES, OwnRows.of))
    return DealContext.of_own(tables, own)


@contextmanager
def shipped(context: DealContext, folder: Path) -> Iterator[Path]:
    """`context` written once where the workers read the store in parts at `folder`, for each
    worker to load once (`shipped_context`); removed after. At millions of deals the context is
    gigabytes: sent through the scheduler to every worker, a worker holds it twice while it
    arrives (a 6 GB worker was restarted so at 5,000,000 deals); read from a file, once.

    Inside a `shipped` of the same context (a command that reads it for several stages), the
    file already written is used again."""
    if id(context) in _SHIPPED:
        yield _SHIPPED[id(context)]
        return
    path = scratch_folder(folder) / f"context-{uuid.uuid4().hex}.pickle"
    try:
        with path.open("wb") as handle:
            pickle.dump(context, handle, protocol=pickle.HIGHEST_PROTOCOL)
        _SHIPPED[id(context)] = path
        yield path
    finally:
        _SHIPPED.pop(id(context), None)
        path.unlink(missing_ok=True)


_SHIPPED: dict[int, Path] = {}  # id of a context being shipped (alive meanwhile): its file


@functools.lru_cache(maxsize=1)  # one context per worker: the last job's, until the next
def shipped_context(path: Path) -> DealContext:
    """On a worker: the context `shipped` wrote at `path`."""
    with path.open("rb") as handle:
        context: DealContext = pickle.load(handle)
    return context


def own_tables(tables: CrmTables, deal_ids: np.ndarray) -> CrmTables:
    """The deals of `deal_ids` with their own rows; what spans deals is the context's."""
    keep = pd.Index(deal_ids)
    return tables.replace(
        deals=tables.deals[tables.deals["deal_id"].isin(keep)],
        **{name: tables[name][tables[name]["deal_id"].isin(keep)] for name in DEAL_ROWS},
    )


def account_tables(tables: CrmTables, account_ids: np.ndarray) -> CrmTables:
    """The accounts of `account_ids` with their own rows, their deals' histories too."""
    keep = pd.Index(account_ids)
    own = {name: tables[name][tables[name]["account_id"].isin(keep)] for name in ACCOUNT_ROWS}
    history = tables.deal_history
    return tables.replace(
        accounts=tables.accounts[tables.accounts["account_id"].isin(keep)],
        deal_history=history[history["deal_id"].isin(pd.Index(own["deals"]["deal_id"]))],
        **own,
    )


def _on_partitions(
    client: Client,
    tables: CrmTables,
    snapshots: pd.DataFrame,
    work: Callable[[CrmTables, pd.DataFrame, Any], pd.DataFrame],
    shared: Any,
    key: str,
    partitions: int | None,
    progress: Progress | None,
) -> pd.DataFrame:
    count = partitions or partition_count(client, len(snapshots))
    own = own_tables if key == "deal_id" else account_tables
    part = partition_of(snapshots[key].to_numpy(), count)
    futures = []
    for p in np.unique(part):
        rows = snapshots[part == p]
        # sent as data, not inside the task graph (which the scheduler keeps and copies)
        piece = client.scatter([own(tables, rows[key].unique()), rows])
        futures.append(client.submit(work, *piece, shared, pure=False))
    made = pd.concat(gathered(futures, progress))
    return made.loc[snapshots.index]


def _deal_part(own: CrmTables, rows: pd.DataFrame, context: DealContext) -> pd.DataFrame:
    return deal_features(DealFacts.of(own), rows, context=context)


def _on_part(folder: Path, number: int, tables: Sequence[str], work: Callable, *args: Any) -> Any:
    return work(read_part(folder, number, tables), *args)


def _frame_of_part(
    own: CrmTables,
    dates: list[pd.Timestamp],
    context: Path,
    then: Callable[[pd.DataFrame, CrmTables], T],
) -> T:
    features = partial(_deal_part, context=shipped_context(context))
    return then(training_frame(own, dates, labelled_only=False, features=features), own)


def _account_part(own: CrmTables, rows: pd.DataFrame, featurize: Featurize) -> pd.DataFrame:
    return featurize(own, rows)
