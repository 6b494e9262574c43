"""A CRM's deal records as the tables a deal's own features are read from.

A CRM holds the opportunity record (owner, account, product, stage, amount, dates, next step),
perhaps its changes and activities; never the model's features. `record_tables` turns records
into canonical tables; `forecast.features.deal_features`, given the stored CRM's
`DealContext`, then computes the features with the code training uses, so a stored deal sent
as the CRM holds it scores exactly as the nightly score of that deal.

A record is a mapping with the `deals` fields (`deal_id`, `stage`, `created_at`, and optionally
`rep_id`, `account_id`, `product_id`, `amount`, `expected_close`, `next_step`), `attributes`
(name: value, known at creation), and optionally `history` (changes: `changed_at`, `stage`,
`amount`, `expected_close`, `next_step`) and `activities` (`kind`, `at`). For a deal the store
holds, history and activities not sent are the store's; for a new deal, none beyond the record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forecast.catalogue import display_names
from forecast.features import ATTRIBUTE_PREFIX, DealContext
from forecast.tables import CrmTables

STATE = ("stage", "amount", "expected_close", "next_step")
"""What a history row records of a deal after a change."""
IDS = ("rep_id", "account_id", "product_id")


class RecordError(ValueError):
    """A record that cannot be scored: `where` names the field, as a request body path."""

    def __init__(self, where: tuple[str | int, ...], message: str, value: object = None):
        super().__init__(f"{'.'.join(map(str, where))}: {message}")
        self.where, self.message, self.value = where, message, value


@dataclass(frozen=True)
class StoredCrm:
    """The stored CRM ready to score records against: its tables, the records that span
    deals (built once, the slow part), and where each stored deal's rows are."""

    tables: CrmTables
    context: DealContext
    history_rows: Mapping[str, np.ndarray]
    activity_rows: Mapping[str, np.ndarray]
    attribute_rows: Mapping[str, np.ndarray]
    known: Mapping[str, frozenset[str]]  # ids the store holds, per id field
    display: Mapping[str, Mapping[str, str]]  # names of categorical values, for reasons

    @classmethod
    def of(cls, tables: CrmTables) -> StoredCrm:
        def rows(frame: pd.DataFrame) -> Mapping[str, np.ndarray]:
            # positions in `frame`; rows without a deal (account-level activities) in no group
            return frame.groupby("deal_id", sort=False).indices if len(frame) else {}

        deals = tables.deals
        known = {
            "rep_id": {*tables.reps["rep_id"], *deals["rep_id"].dropna()},
            "account_id": {*tables.accounts["account_id"], *deals["account_id"].dropna()},
            "product_id": {*tables.products["product_id"], *deals["product_id"].dropna()},
        }
        return cls(
            tables=tables,
            context=DealContext.of(tables),
            history_rows=rows(tables.deal_history.reset_index(drop=True)),
            activity_rows=rows(tables.activities.reset_index(drop=True)),
            attribute_rows=rows(tables.deal_attributes.reset_index(drop=True)),
            known={name: frozenset(ids) for name, ids in known.items()},
            display=display_names(tables),
        )

    def attribute_names(self) -> list[str]:
        """The attributes known at creation a record may carry (the model's `attr_*`)."""
        return [f.name.removeprefix(ATTRIBUTE_PREFIX) for f in self.context.attributes]

    def new_ids(self, record: Mapping[str, Any]) -> list[str]:
        """The record's fields naming something the store has never seen (scored as new)."""
        new = [] if record["deal_id"] in self.history_rows else ["deal_id"]
        named = {f: record.get(f) for f in IDS}
        return new + [f for f, v in named.items() if isinstance(v, str) and v not in self.known[f]]


def record_tables(
    records: Sequence[Mapping[str, Any]], stored: StoredCrm, as_of: pd.Timestamp
) -> CrmTables:
    """The deals, history, activities and attributes of `records`, as known at `as_of`.

    Raises:
        RecordError: a record's dates are out of order or after `as_of`, an attribute is not
            one the store knows, or a deal id is sent twice.
    """
    as_of = moment(as_of)
    records = [_in_utc(record) for record in records]
    _check(records, stored, as_of)
    deals = pd.DataFrame(
        [{f: r.get(f) for f in ("deal_id", *IDS, "created_at", *STATE)} for r in records]
    )
    deals["created_at"] = pd.to_datetime(deals["created_at"])
    deals["expected_close"] = pd.to_datetime(deals["expected_close"])
    frames = {
        "deals": deals[["deal_id", *IDS, "created_at"]],
        "deal_history": _history(records, deals, stored, as_of),
        "activities": _activities(records, stored),
        "deal_attributes": _attributes(records, stored),
    }
    return CrmTables.from_frames(frames, as_of=as_of)


def moment(value: object) -> pd.Timestamp:
    """A moment as the store keeps it: UTC without a zone (a naive one is taken as UTC)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _in_utc(record: Mapping[str, Any]) -> dict[str, Any]:
    def dated(rows: Sequence[Mapping[str, Any]] | None, field: str) -> list[dict] | None:
        return None if rows is None else [{**r, field: moment(r[field])} for r in rows]

    return {
        **record,
        "created_at": moment(record["created_at"]),
        "history": dated(record.get("history"), "changed_at"),
        "activities": dated(record.get("activities"), "at"),
    }


def _check(records: Sequence[Mapping[str, Any]], stored: StoredCrm, as_of: pd.Timestamp) -> None:
    seen: dict[str, int] = {}
    allowed = stored.attribute_names()
    for i, record in enumerate(records):
        if (first := seen.setdefault(record["deal_id"], i)) != i:
            raise RecordError(("deals", i, "deal_id"), f"sent twice (also deals[{first}])")
        created = record["created_at"]
        if created > as_of:
            raise RecordError(
                ("deals", i, "created_at"), f"after the as-of {as_of:%Y-%m-%d %H:%M}", str(created)
            )
        for j, change in enumerate(record.get("history") or ()):
            at = change["changed_at"]
            if not created <= at <= as_of:
                raise RecordError(
                    ("deals", i, "history", j, "changed_at"),
                    "must fall between the deal's created_at and the as-of",
                    str(at),
                )
        for j, touch in enumerate(record.get("activities") or ()):
            if touch["at"] > as_of:
                raise RecordError(
                    ("deals", i, "activities", j, "at"), "after the as-of", str(touch["at"])
                )
        for name in record.get("attributes") or {}:
            if name not in allowed:
                raise RecordError(
                    ("deals", i, "attributes", name),
                    "not an attribute the model reads; allowed: " + (", ".join(allowed) or "none"),
                )


def _stored_rows(
    table: pd.DataFrame, rows: Mapping[str, np.ndarray], deal_ids: Sequence[str]
) -> pd.DataFrame:
    """The stored rows of these deals (one `iloc` for all of them)."""
    found = [rows[d] for d in deal_ids if d in rows]
    return table.iloc[np.concatenate(found) if found else np.array([], dtype=int)]


def _sent(records: Sequence[Mapping[str, Any]], field: str, columns: list[str]) -> pd.DataFrame:
    """The rows sent under `field` in each record, with the record's deal_id."""
    rows = [{**row, "deal_id": r["deal_id"]} for r in records if r.get(field) for row in r[field]]
    return pd.DataFrame(rows, columns=["deal_id", *columns])


def _history(
    records: Sequence[Mapping[str, Any]],
    deals: pd.DataFrame,
    stored: StoredCrm,
    as_of: pd.Timestamp,
) -> pd.DataFrame:
    """Each deal's changes up to `as_of` (as sent, else the store's, else a creation row at
    `created_at`), then the record's own state as a change at `as_of` where it differs from
    the last change."""
    columns = ["deal_id", "changed_at", *STATE]
    kept = [r["deal_id"] for r in records if r.get("history") is None]
    from_store = _stored_rows(stored.tables.deal_history, stored.history_rows, kept)[columns]
    changes = pd.concat(
        [frame for frame in (from_store, _sent(records, "history", columns[1:])) if len(frame)]
        or [pd.DataFrame(columns=columns)],
        ignore_index=True,
    )
    changes["changed_at"] = pd.to_datetime(changes["changed_at"])
    changes["expected_close"] = pd.to_datetime(changes["expected_close"])
    changes = changes[changes["changed_at"] <= as_of]
    changes = changes.sort_values(["deal_id", "changed_at"], kind="stable", ignore_index=True)

    last = changes.groupby("deal_id", sort=False).tail(1).set_index("deal_id")
    last = last.reindex(deals["deal_id"].to_numpy())
    now = deals.set_index("deal_id")[list(STATE)]
    unchanged = np.logical_and.reduce([_same(last[f], now[f]) for f in STATE])
    new = last["changed_at"].isna().to_numpy()
    created = now.assign(changed_at=deals["created_at"].to_numpy())[new]
    moved = now.assign(changed_at=as_of)[~new & ~unchanged]
    # a change sent at `as_of` itself is replaced by the record's state, not doubled
    replaced = changes["deal_id"].isin(moved.index) & (changes["changed_at"] == as_of)
    added = created if moved.empty else moved if created.empty else pd.concat([created, moved])
    added = added.rename_axis("deal_id").reset_index()[columns]
    kept = changes[~replaced]
    parts = [part for part in (kept, added) if len(part)]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _same(stored: pd.Series, sent: pd.Series) -> np.ndarray:
    """Row by row: equal, or both missing."""
    a, b = stored.to_numpy(dtype=object), sent.to_numpy(dtype=object)
    missing_a, missing_b = pd.isna(stored).to_numpy(), pd.isna(sent).to_numpy()
    both = ~missing_a & ~missing_b
    equal = np.zeros(len(a), dtype=bool)
    equal[both] = [x == y for x, y in zip(a[both], b[both], strict=True)]
    return (missing_a & missing_b) | equal


def _activities(records: Sequence[Mapping[str, Any]], stored: StoredCrm) -> pd.DataFrame:
    """Each deal's activities: as sent, else the store's."""
    kept = [r["deal_id"] for r in records if r.get("activities") is None]
    from_store = _stored_rows(stored.tables.activities, stored.activity_rows, kept)
    sent = _sent(records, "activities", ["kind", "at"])
    sent["activity_id"] = [f"{d}#{j}" for j, d in enumerate(sent["deal_id"])]
    columns = ["activity_id", "deal_id", "kind", "at"]
    frames = [frame[columns] for frame in (from_store, sent) if len(frame)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _attributes(records: Sequence[Mapping[str, Any]], stored: StoredCrm) -> pd.DataFrame:
    """Each deal's attributes: as sent (known at creation), else the store's."""
    kept = [r["deal_id"] for r in records if not r.get("attributes")]
    from_store = _stored_rows(stored.tables.deal_attributes, stored.attribute_rows, kept)
    sent = pd.DataFrame(
        [
            {"deal_id": r["deal_id"], "name": name, "value": value, "known_at": "created"}
            for r in records
            for name, value in (r.get("attributes") or {}).items()
        ],
        columns=["deal_id", "name", "value", "known_at"],
    )
    frames = [frame[sent.columns] for frame in (from_store, sent) if len(frame)]
    return pd.concat(frames, ignore_index=True) if frames else sent
