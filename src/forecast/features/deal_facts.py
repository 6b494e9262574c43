"""A deal's own recorded facts as arrays (its record, stage and amount history, activities), and
what each snapshot reads from them as of its date."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.data.contract import CLOSED_STAGES, OPEN_STAGES
from forecast.data.tables import STRING, CrmTables
from forecast.features.asof import Running, Timeline, running_of
from forecast.features.deal_codes import FEW
from forecast.features.deal_schema import (
    ACTIVITY_WINDOWS,
    ATTRIBUTE_PREFIX,
    COUNTED_KINDS,
    STAGE_PROGRESS,
)

if TYPE_CHECKING:  # a deal's own values are read from its facts
    from forecast.features.deal_own import Own


@dataclass(frozen=True)
class DealFacts:
    """What `deal_features` reads of the deals it describes, as arrays.

    Per deal: its id, account, rep, product and creation time. Per change (`deal_history`),
    activity and attribute known at creation: a row naming its deal by position among those
    (`*_deal`; -1 for a deal not among them). Built from canonical tables (`DealFacts.of`) or
    from a CRM's records (`forecast.features.records.record_tables`): the features of one record are
    computed by the code that computes a million training snapshots, without a frame per step.
    """

    deal_id: np.ndarray  # object; a missing id is NA, as canonical tables give it
    account_id: np.ndarray
    rep_id: np.ndarray
    product_id: np.ndarray
    created_at: np.ndarray  # datetime64[ns]
    history_deal: np.ndarray  # int64
    changed_at: np.ndarray  # datetime64[ns]
    stage: np.ndarray  # int64: the position in STAGE_ORDER
    amount: np.ndarray  # float
    expected_close: np.ndarray  # datetime64[ns]
    has_next_step: np.ndarray  # float: 1 when a next step is recorded
    activity_deal: np.ndarray  # int64
    activity_at: np.ndarray  # datetime64[ns]
    activity_kind: np.ndarray  # object
    attribute_deal: np.ndarray  # int64
    attribute_name: np.ndarray  # object
    attribute_value: np.ndarray  # object; None when empty

    @classmethod
    def of(cls, tables: CrmTables) -> DealFacts:
        deals = tables.deals
        deal_index = pd.Index(deals["deal_id"].to_numpy())
        acts = tables.activities
        acts = acts[acts["deal_id"].notna()]
        attributes = tables.deal_attributes
        created = attributes[attributes["known_at"] == "created"]
        if created.duplicated(["deal_id", "name"]).any():
            raise ValueError("deal_attributes: a deal has an attribute known at creation twice")
        value = created["value"]
        return cls(
            deal_id=deals["deal_id"].to_numpy(),
            account_id=deals["account_id"].to_numpy(),
            rep_id=deals["rep_id"].to_numpy(),
            product_id=deals["product_id"].to_numpy(),
            created_at=deals["created_at"].to_numpy("datetime64[ns]"),
            **history_arrays(tables, deal_index),
            activity_deal=deal_index.get_indexer(acts["deal_id"].to_numpy()),
            activity_at=acts["at"].to_numpy("datetime64[ns]"),
            # kinds as categories: the array refers to a few strings, not a million copies
            activity_kind=acts["kind"].astype("category").to_numpy(),
            attribute_deal=deal_index.get_indexer(created["deal_id"].to_numpy()),
            attribute_name=created["name"].to_numpy(),
            attribute_value=value.astype(object).where(value.notna(), None).to_numpy(),
        )

    def rows(self, deal_ids: np.ndarray) -> np.ndarray:
        """Each deal id's position (KeyError naming the first that is not here)."""
        ids = np.asarray(deal_ids, dtype=object)
        if len(self.deal_id) <= FEW:  # a dict of a few beats a pandas Index's hash table
            position = {d: i for i, d in enumerate(self.deal_id.tolist())}
            rows = np.array([position.get(d, -1) for d in ids.tolist()], dtype=np.int64)
        else:
            rows = pd.Index(self.deal_id).get_indexer(ids)
        if (rows < 0).any():
            missing = ids[rows < 0][0]
            raise KeyError(f"snapshot deal_id {missing!r} is not in the deals table")
        return rows


STAGE_ORDER: tuple[str, ...] = (*OPEN_STAGES, *CLOSED_STAGES)

STAGE_CODES: dict[str, int] = {stage: i for i, stage in enumerate(STAGE_ORDER)}

"""A history row's stage as `DealFacts` holds it: its position in STAGE_ORDER."""

_STAGE_NAMES = np.array(STAGE_ORDER, dtype=object)

_NAT = np.datetime64("NaT", "ns")


def in_days(delta: np.ndarray) -> np.ndarray:
    """Days of a timedelta64 array as pandas' `total_seconds() / 86400` gives them (NaN: NaT)."""
    ns = delta.astype("timedelta64[ns]")
    return np.where(np.isnat(ns), np.nan, ns.view(np.int64) / 10**9) / 86400


def history_arrays(tables: CrmTables, deal_index: pd.Index) -> dict[str, np.ndarray]:
    """The history columns a deal's state is read from (`DealFacts`' `history_deal` ... )."""
    history = tables.deal_history
    return {
        "history_deal": deal_index.get_indexer(history["deal_id"].to_numpy()),
        "changed_at": history["changed_at"].to_numpy("datetime64[ns]"),
        "stage": history["stage"].map(STAGE_CODES).to_numpy(dtype=np.int64),
        "amount": history["amount"].to_numpy(dtype=float),
        "expected_close": history["expected_close"].to_numpy("datetime64[ns]"),
        "has_next_step": history["next_step"].notna().to_numpy(dtype=float),
    }


@dataclass(frozen=True)
class State:
    """History rows in (deal, time) order with the running facts a snapshot looks up."""

    line: Timeline  # codes: the deal's row
    first: np.ndarray  # the deal's first row
    stage: np.ndarray
    amount: np.ndarray
    expected_close: np.ndarray
    has_next_step: np.ndarray
    stage_entered_at: np.ndarray
    close_pushes: np.ndarray  # how often the expected close moved later, so far
    amount_changes: np.ndarray  # how often the amount changed, so far
    first_amount: np.ndarray  # the deal's first amount recorded

    @classmethod
    def of_facts(cls, facts: DealFacts) -> State:
        """The state rows of the deals' recorded history in `facts`."""
        return cls.of(
            facts.history_deal,
            facts.changed_at,
            facts.stage,
            facts.amount,
            facts.expected_close,
            facts.has_next_step,
        )

    @classmethod
    def of(
        cls,
        history_deal: np.ndarray,
        changed_at: np.ndarray,
        stage: np.ndarray,
        amount: np.ndarray,
        expected_close: np.ndarray,
        has_next_step: np.ndarray,
    ) -> State:
        order = np.lexsort((changed_at.view(np.int64), history_deal))  # stable
        deal, times = history_deal[order], changed_at[order]
        stage, amount, expected = stage[order], amount[order], expected_close[order]
        n = len(deal)
        first = np.ones(n, dtype=bool)
        first[1:] = deal[1:] != deal[:-1]
        new_stage = first.copy()
        new_stage[1:] |= stage[1:] != stage[:-1]
        rows = np.arange(n)
        deal_start = np.maximum.accumulate(np.where(first, rows, 0)) if n else rows
        stage_start = np.maximum.accumulate(np.where(new_stage, rows, 0)) if n else rows
        # the deal's previous row's expected close and amount (none on its first row)
        previous_close, previous_amount = np.empty_like(expected), np.empty_like(amount)
        previous_close[1:], previous_amount[1:] = expected[:-1], amount[:-1]
        previous_close[first], previous_amount[first] = _NAT, np.nan
        changed = ~np.isnan(previous_amount) & (amount != previous_amount)
        return cls(
            line=Timeline.of(deal, times),
            first=first,
            stage=stage,
            amount=amount,
            expected_close=expected,
            has_next_step=has_next_step[order],
            stage_entered_at=times[stage_start],
            close_pushes=_count_so_far(expected > previous_close, deal_start),
            amount_changes=_count_so_far(changed, deal_start),
            first_amount=_first_where(amount, ~np.isnan(amount), deal, deal_start),
        )

    def first_quotes(self, n_deals: int) -> tuple[np.ndarray, np.ndarray]:
        """Per deal (of `n_deals`), its first positive amount and when it was recorded (NaN
        and NaT when it has none)."""
        positive = self.amount > 0
        starts = np.flatnonzero(self.first & (self.line.codes >= 0))
        found = np.flatnonzero(positive)
        at = np.searchsorted(found, starts)
        row = found[np.clip(at, 0, max(len(found) - 1, 0))] if len(found) else starts
        ok = (at < len(found)) & (self.line.codes[row] == self.line.codes[starts])
        amount, when = np.full(n_deals, np.nan), np.full(n_deals, _NAT)
        deals = self.line.codes[starts[ok]]
        amount[deals], when[deals] = self.amount[row[ok]], self.line.times[row[ok]]
        return amount, when


def _count_so_far(flags: np.ndarray, start: np.ndarray) -> np.ndarray:
    """How many of each deal's rows so far are flagged (rows grouped by deal)."""
    total = np.cumsum(flags, dtype=np.int64)
    return total - (total[start] - flags[start]) if len(flags) else total


def _first_where(
    values: np.ndarray, where: np.ndarray, deal: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """Per row, its deal's first value where `where` holds (NaN if none)."""
    found = np.flatnonzero(where)
    if not len(found):
        return np.full(len(values), np.nan)
    at = np.searchsorted(found, start)
    row = found[np.clip(at, 0, len(found) - 1)]
    return np.where((at < len(found)) & (deal[row] == deal), values[row], np.nan)


def add_state(out: dict, state: State, at: np.ndarray, as_of: np.ndarray) -> None:
    out["stage"] = _STAGE_NAMES[state.stage[at]]
    out["days_in_stage"] = in_days(as_of - state.stage_entered_at[at])
    amount, first = state.amount[at], state.first_amount[at]
    out["amount"] = amount
    out["amount_change_ratio"] = np.where(first > 0, amount / np.where(first > 0, first, 1), 1.0)
    out["amount_changes"] = state.amount_changes[at].astype(float)
    out["close_pushes"] = state.close_pushes[at].astype(float)
    out["expected_close"] = state.expected_close[at]
    out["days_to_expected_close"] = in_days(state.expected_close[at] - as_of)
    out["has_next_step"] = state.has_next_step[at]


def activity_sums(facts: DealFacts) -> Running:
    """Each deal's activities as running sums: all (`n`) and of each counted kind."""
    kinds = facts.activity_kind
    columns = {"n": np.ones(len(kinds))} | {k: (kinds == k).astype(float) for k in COUNTED_KINDS}
    return running_of(facts.activity_deal, facts.activity_at, columns)


def add_activities(out: dict, own: Own, deal: np.ndarray, as_of: np.ndarray) -> None:
    last, sums = own.activities.at_each(deal, as_of, (0, *ACTIVITY_WINDOWS))
    within = sums[0] - sums[1:]  # per window, snapshot and column (n, then each kind)
    for w, window in enumerate(ACTIVITY_WINDOWS):
        out[f"activities_{window}d"] = within[w, :, 0]
    for j, kind in enumerate(COUNTED_KINDS, start=1):
        out[f"{kind}s_90d"] = within[ACTIVITY_WINDOWS.index(90), :, j]
    # a deal never touched is as stale as it is old
    since_last = in_days(as_of - last[0])
    out["days_since_last_activity"] = np.where(
        np.isnan(since_last), out["deal_age_days"], since_last
    )
    age_weeks = np.maximum(out["deal_age_days"] / 7, 1.0)
    out["activities_per_week"] = sums[0, :, 0] / age_weeks


def close_events(tables: CrmTables) -> pd.DataFrame:
    """One row per recorded close (from deal_history), with the deal's account, rep, product
    and the furthest open stage it reached, in the order of the close times."""
    history = tables.deal_history
    closes = history[history["stage"].isin(CLOSED_STAGES)]
    closes = closes.sort_values("changed_at", kind="stable").drop_duplicates("deal_id")
    # how far each deal got by its close (rows after the close are not part of that record)
    close_at = closes.set_index("deal_id")["changed_at"]
    until_close = (
        history["changed_at"] <= close_at.reindex(history["deal_id"].to_numpy()).to_numpy()
    )
    before = history[until_close]
    reached = before["stage"].map(STAGE_PROGRESS).groupby(before["deal_id"]).max()
    deals = tables.deals.set_index("deal_id")
    ids = closes["deal_id"].to_numpy()
    return pd.DataFrame(
        {
            # ids as compact text: a large CRM's closes are millions of rows (they travel
            # from each part of a store in parts to the process building `DealContext`)
            "account_id": pd.array(deals["account_id"].reindex(ids), dtype=STRING),
            "rep_id": pd.array(deals["rep_id"].reindex(ids), dtype=STRING),
            "product_id": pd.array(deals["product_id"].reindex(ids), dtype=STRING),
            "furthest": reached.reindex(ids).to_numpy(),
            "at": closes["changed_at"].to_numpy(),
            "won": (closes["stage"] == "closed_won").to_numpy(dtype=float),
            "lost": (closes["stage"] == "closed_lost").to_numpy(dtype=float),
        }
    )


def attribute_values(facts: DealFacts, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per deal, each attribute known at creation, as text (None when it has none)."""
    out = {}
    for name in names:
        per_deal = np.full(len(facts.deal_id), None, dtype=object)
        mine = (facts.attribute_name == name.removeprefix(ATTRIBUTE_PREFIX)) & (
            facts.attribute_deal >= 0
        )
        per_deal[facts.attribute_deal[mine]] = facts.attribute_value[mine]
        out[name] = per_deal
    return out
