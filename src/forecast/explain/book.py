"""The book: every open deal's score as a CRM re-imports it, in one process or by a Dask
cluster's workers (the same scores, in the same order; docs/scale.md); the reasons of the
accounts' book; the book's file written and read back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.cluster import Progress, gathered
from forecast.data.parts import partition_of
from forecast.data.tables import CrmTables
from forecast.explain.account_scoring import retained_account_yardsticks
from forecast.explain.reasons import explain
from forecast.explain.scorers import Scorer, scorer_for
from forecast.explain.scoring import DealExplainer, DealScore, open_deal_ids, score_deals
from forecast.explain.wording import Reason
from forecast.features.deal_context import DealContext
from forecast.features.deal_schema import model_features
from forecast.features.on_dask import (
    OWN_TABLES,
    on_parts,
    own_context,
    own_tables,
    partition_count,
    shipped,
    shipped_context,
)

if TYPE_CHECKING:
    from distributed import Client
    from sklearn.base import BaseEstimator


def score_book(
    tables: CrmTables,
    explainer: DealExplainer,
    *,
    as_of: pd.Timestamp | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
    parts: Path | None = None,
    context: DealContext | None = None,
    fingerprint: str | None = None,
) -> pd.DataFrame:
    """Every open deal's score at `as_of` (default: the export's), one row per deal, as a CRM
    re-imports it: probability, grade, trend, reasons (signed, most telling first), actions,
    and on every row the model version, the as-of and the stored data's `fingerprint` (default:
    `fingerprint_tables(tables)`). With a Dask `client`, its cluster scores the deals
    (`scores_on`, or `scores_of_parts` reading a store in `parts`: the same scores)."""
    from forecast.data.store import fingerprint_tables

    scores = _book_scores(
        tables, explainer, as_of, client=client, progress=progress, parts=parts, context=context
    )
    reasons = [[_signed(r) for r in s.explanation.reasons] for s in scores]
    actions = [s.explanation.recommendations for s in scores]
    return pd.DataFrame(
        {
            "deal_id": [s.deal_id for s in scores],
            "as_of": [s.as_of for s in scores],
            "probability": [s.probability for s in scores],
            "grade": [s.grade for s in scores],
            "trend_points": [s.trend_points for s in scores],
            "reasons": ["\n".join(r) for r in reasons],
            "top_action": [a[0].text if a else None for a in actions],
            "top_action_lift_points": [a[0].lift_points if a else None for a in actions],
            "model": explainer.model_name,
            "model_version": explainer.model_version,
            "data_fingerprint": fingerprint or fingerprint_tables(tables),
        }
    )


def _book_scores(
    tables: CrmTables,
    explainer: DealExplainer,
    as_of: pd.Timestamp | None,
    *,
    client: Client | None,
    progress: Progress | None,
    parts: Path | None,
    context: DealContext | None,
) -> list[DealScore]:
    if client is None:
        return score_deals(tables, explainer.scorer, as_of=as_of, typical=explainer.typical)
    if parts is not None:
        return scores_of_parts(
            client, parts, tables, explainer, as_of=as_of, context=context, progress=progress
        )
    return scores_on(client, tables, explainer, as_of=as_of, progress=progress)


def _signed(reason: Reason) -> str:
    """A reason as one line: + raises the chance, - lowers it."""
    return f"{'+' if reason.direction == 'raises' else '-'} {reason.text}"


def scores_on(
    client: Client,
    tables: CrmTables,
    explainer: DealExplainer,
    *,
    as_of: pd.Timestamp | None = None,
    partitions: int | None = None,
    progress: Progress | None = None,
) -> list[DealScore]:
    """`score_deals` for every open deal, by the workers of `client`'s cluster: the open deals
    split by a hash of their id (`forecast.features.on_dask`), the records that span deals and
    the scorer sent once to every worker; the scores in the order one process gives them.
    `progress` hears (parts done, parts) as they finish."""
    as_of = pd.Timestamp(as_of) if as_of is not None else tables.as_of
    open_now = open_deal_ids(tables, as_of).to_numpy()
    if not len(open_now):
        return []
    count = partitions or partition_count(client, len(open_now))
    shared = client.scatter(
        {"context": DealContext.of(tables), "scorer": explainer.scorer}, broadcast=True
    )
    part = partition_of(open_now, count)
    futures = []
    for p in np.unique(part):
        [own] = client.scatter([own_tables(tables, open_now[part == p])])  # data, not graph
        task = (_score_part, own, shared, as_of, explainer.typical)
        futures.append(client.submit(*task, pure=False))
    by_deal = {s.deal_id: s for scores in gathered(futures, progress) for s in scores}
    return [by_deal[str(deal_id)] for deal_id in open_now]


def scores_of_parts(
    client: Client,
    folder: Path,
    tables: CrmTables,
    explainer: DealExplainer,
    *,
    as_of: pd.Timestamp | None = None,
    context: DealContext | None = None,
    progress: Progress | None = None,
) -> list[DealScore]:
    """`score_deals` for every open deal of the store in parts at `folder` (its version folder),
    each part's by a worker that reads the part itself; `tables`: what the calling process holds
    (`CONTEXT_TABLES`), `context`: `own_context` when already made. The scores in the order one
    process gives them (the parts' deals in turn)."""
    as_of = pd.Timestamp(as_of) if as_of is not None else tables.as_of
    context = context or own_context(client, folder, tables)
    shared = client.scatter(
        {"scorer": explainer.scorer, "products": tables.products}, broadcast=True
    )
    with shipped(context, folder) as path:
        task = (_score_of_part, path, shared, as_of, explainer.typical)
        made = on_parts(client, folder, OWN_TABLES, *task, progress=progress)
    return [score for scores in made for score in scores]


def _score_of_part(
    own: CrmTables, context: Path, shared: dict, as_of: pd.Timestamp, typical: pd.DataFrame | None
) -> list[DealScore]:
    if open_deal_ids(own, as_of).empty:
        return []
    # the products' names, for reasons (a store keeps its products in one part)
    own = own.replace(products=shared["products"])
    shared = shared | {"context": shipped_context(context)}
    return _score_part(own, shared, as_of, typical)


def _score_part(
    own: CrmTables, shared: dict, as_of: pd.Timestamp, typical: pd.DataFrame | None
) -> list[DealScore]:
    return score_deals(
        own, shared["scorer"], as_of=as_of, typical=typical, context=shared["context"]
    )


BOOK_COLUMNS = ("deal_id", "as_of", "probability", "model", "model_version", "data_fingerprint")


@dataclass(frozen=True)
class AccountReasonColumns:
    """The churn champion's drivers and top retention action for each scored account, as the
    accounts' book holds them (`forecast.revenue.churn.revenue_at_risk`'s `reasons`; sent to
    the workers with the model on a cluster)."""

    scorer: Scorer
    typical: pd.DataFrame | None  # what retained accounts show (`retained_account_yardsticks`)

    def __call__(self, frame: pd.DataFrame, arr: np.ndarray) -> dict[str, list]:
        explained = (
            explain(self.scorer, frame, amount=arr, model="account", typical=self.typical)
            if len(frame)
            else []
        )
        actions = [e.recommendations for e in explained]
        return {
            "reasons": ["\n".join(_signed(r) for r in e.reasons) for e in explained],
            "top_action": [a[0].text if a else None for a in actions],
            "top_action_lift_points": [a[0].lift_points if a else None for a in actions],
        }


def account_reason_columns(
    tables: CrmTables,
    model: BaseEstimator,
    *,
    as_of: pd.Timestamp,
    client: Client | None = None,
    parts: Path | None = None,
) -> AccountReasonColumns:
    """The reasons of the churn `model` with the yardsticks of the stored CRM at `as_of` (made
    by the workers of `client` reading a store in `parts`, when given)."""
    from forecast.training.churn_task import definition_of  # the training module: when used

    definition = definition_of(model)
    typical = retained_account_yardsticks(
        tables, as_of=as_of, definition=definition, client=client, parts=parts
    )
    scorer = scorer_for(model, model_features(model, definition.features))
    return AccountReasonColumns(scorer, typical)


class BookFileError(ValueError):
    """A scored book's file that cannot be read as one (the message names the file and what)."""


@dataclass(frozen=True)
class BookScores:
    """What a scored book's file says about the open deals: P(won) by deal id, and the moment,
    model and data it was scored at."""

    path: Path
    probability: pd.Series
    as_of: pd.Timestamp
    model: str
    model_version: str
    fingerprint: str


def write_book(book: pd.DataFrame, out: Path) -> None:
    """`score_book`'s frame to `out` (.parquet or .csv), never half-written under that name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    if out.suffix == ".csv":
        book.to_csv(partial, index=False)
    else:
        book.to_parquet(partial, index=False)
    partial.replace(out)


def read_book_scores(path: Path) -> BookScores:
    """A file `write_book` wrote (`forecast score deals --all`), checked: one moment, one model
    version, one data fingerprint, a probability in [0, 1] for every deal once."""
    book = _read_book(path)
    missing = [c for c in BOOK_COLUMNS if c not in book.columns]
    if missing:
        raise BookFileError(f"{path}: not a scored book, no column {', '.join(missing)}")
    if book.empty:
        raise BookFileError(f"{path}: no scored deals")
    for column in ("as_of", "model", "model_version", "data_fingerprint"):
        if book[column].nunique(dropna=False) != 1:
            raise BookFileError(f"{path}: column {column} holds several values; one book holds one")
    deal_id = book["deal_id"].astype(str)
    if deal_id.duplicated().any():
        twice = deal_id[deal_id.duplicated()].iloc[0]
        raise BookFileError(f"{path}: deal {twice} is scored twice")
    probability = pd.to_numeric(book["probability"], errors="coerce")
    bad = ~probability.between(0.0, 1.0)  # NaN too
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        value = book["probability"].tolist()[row]  # a plain value, named as the file holds it
        raise BookFileError(
            f"{path} row {row + 1}, column probability: {value!r} — expected a number in [0, 1]"
        )
    try:
        as_of = pd.Timestamp(book["as_of"].iloc[0])
    except ValueError:
        raise BookFileError(
            f"{path}, column as_of: {book['as_of'].iloc[0]!r} is not a date"
        ) from None
    first = book.iloc[0]
    return BookScores(
        path=path,
        probability=pd.Series(probability.to_numpy(float), index=deal_id.to_numpy(object)),
        as_of=as_of,
        model=str(first["model"]),
        model_version=str(first["model_version"]),
        fingerprint=str(first["data_fingerprint"]),
    )


def _read_book(path: Path) -> pd.DataFrame:
    if path.suffix not in (".parquet", ".csv"):
        raise BookFileError(f"{path}: a scored book is a .parquet or .csv file")
    if not path.is_file():
        raise BookFileError(f"{path}: no such file (write one with `forecast score deals --all`)")
    try:
        if path.suffix == ".csv":
            return pd.read_csv(
                path, dtype={c: str for c in ("deal_id", "model_version", "data_fingerprint")}
            )
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's errors are both
        raise BookFileError(f"{path}: cannot be read as a {path.suffix[1:]} file ({err})") from None
