"""A CRM's deal records as the tables a deal's own features are read from.

A CRM holds the opportunity record (owner, account, product, stage, amount, dates, next step),
perhaps its changes and activities; never the model's features. `record_tables` turns records
into the arrays a deal's own features are read from (`forecast.features.deals.DealFacts`, as
training builds from canonical tables); `forecast.features.deals.deal_features`, given the stored
CRM's `DealContext`, then computes the features with the code training uses, so a stored deal
sent as the CRM holds it scores exactly as the nightly score of that deal.

A record is a mapping with the `deals` fields (`deal_id`, `stage`, `created_at`, and optionally
`rep_id`, `account_id`, `product_id`, `amount`, `expected_close`, `next_step`), `attributes`
(name: value, known at creation), and optionally `history` (changes: `changed_at`, `stage`,
`amount`, `expected_close`, `next_step`) and `activities` (`kind`, `at`). For a deal the store
holds, history and activities not sent are the store's; for a new deal, none beyond the record.

A CRM's own values (a CRM whose stages are "Engaging" and "Won" sends "Engaging") become the
store's by `canonical_records`, as the store's import translated them (`CrmTables.translations`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from forecast.data.contract import ACTIVITY_KINDS, OPEN_STAGES, STAGES
from forecast.data.sources.conversions import stripped_keys
from forecast.data.tables import CrmTables
from forecast.explain.catalogue import display_names
from forecast.features.deal_codes import blank
from forecast.features.deal_context import DealContext
from forecast.features.deal_facts import STAGE_CODES, DealFacts
from forecast.features.deal_schema import ATTRIBUTE_PREFIX

IDS = ("rep_id", "account_id", "product_id")


class RecordError(ValueError):
    """A record that cannot be scored: `where` names the field, as a request body path."""

    def __init__(self, where: tuple[str | int, ...], message: str, value: object = None):
        super().__init__(f"{'.'.join(map(str, where))}: {message}")
        self.where, self.message, self.value = where, message, value


@dataclass(frozen=True)
class StoredCrm:
    """The stored CRM ready to score records against: its tables, the records that span
    deals (built once, the slow part), its deals' own facts as arrays, and where each stored
    deal's rows are among them."""

    tables: CrmTables
    context: DealContext
    facts: DealFacts  # the store's deals' own facts (`DealFacts.of(tables)`)
    next_step: pd.api.extensions.ExtensionArray  # per history row, the next step's text
    history_rows: Mapping[str, np.ndarray]  # per deal id, its rows among `facts`' changes
    activity_rows: Mapping[str, np.ndarray]
    attribute_rows: Mapping[str, np.ndarray]
    known: Mapping[str, frozenset[str]]  # ids the store holds, per id field
    display: Mapping[str, Mapping[str, str]]  # names of categorical values, for reasons

    @classmethod
    def of(cls, tables: CrmTables) -> StoredCrm:
        facts = DealFacts.of(tables)

        def rows(deal: np.ndarray) -> Mapping[str, np.ndarray]:
            # positions of each deal's rows; rows of no stored deal in no group
            groups = pd.Series(deal).groupby(deal, sort=False).indices if len(deal) else {}
            return {facts.deal_id[code]: at for code, at in groups.items() if code >= 0}

        deals = tables.deals
        known = {
            "rep_id": {*tables.reps["rep_id"], *deals["rep_id"].dropna()},
            "account_id": {*tables.accounts["account_id"], *deals["account_id"].dropna()},
            "product_id": {*tables.products["product_id"], *deals["product_id"].dropna()},
        }
        return cls(
            tables=tables,
            context=DealContext.of(tables, facts=facts),
            facts=facts,
            next_step=tables.deal_history["next_step"].array,  # read one at a time
            history_rows=rows(facts.history_deal),
            activity_rows=rows(facts.activity_deal),
            attribute_rows=rows(facts.attribute_deal),
            known={name: frozenset(ids) for name, ids in known.items()},
            display=display_names(tables),
        )

    def attribute_names(self) -> list[str]:
        """The attributes known at creation a record may carry (the model's `attr_*`)."""
        return [f.name.removeprefix(ATTRIBUTE_PREFIX) for f in self.context.attributes]

    def new_ids(self, facts: DealFacts, i: int) -> list[str]:
        """The fields of the `i`-th record of `facts` (`record_tables`: its ids as the store
        names them) naming something the store has never seen (scored as new)."""
        new = [] if facts.deal_id[i] in self.history_rows else ["deal_id"]
        named = {f: getattr(facts, f)[i] for f in IDS}
        return new + [f for f, v in named.items() if isinstance(v, str) and v not in self.known[f]]


def record_tables(
    records: Sequence[Mapping[str, Any]], stored: StoredCrm, as_of: pd.Timestamp
) -> DealFacts:
    """The deals, history, activities and attributes of `records` (in canonical values: a
    CRM's own are translated first by `canonical_records`), as known at `as_of`: the
    `DealFacts` `forecast.features.deals.deal_features` reads (with `stored.context`).

    Raises:
        RecordError: a stage or activity kind is not a canonical one, a record's dates are out
            of order or after `as_of`, an attribute is not one the store knows, or a deal id
            is sent twice.
    """
    as_of = moment(as_of)
    records = [_in_utc(record) for record in _canonical(records, {})]  # checked, not translated
    _check(records, stored, as_of)
    parts = [_Deal.of(record, i, stored, as_of) for i, record in enumerate(records)]

    def joined(field: str, dtype: npt.DTypeLike) -> np.ndarray:
        arrays = [getattr(part, field) for part in parts]
        return np.concatenate(arrays) if arrays else np.array([], dtype=dtype)

    def ids(field: str) -> np.ndarray:
        return np.array([_id(record.get(field)) for record in records], dtype=object)

    return DealFacts(
        deal_id=ids("deal_id"),
        account_id=ids("account_id"),
        rep_id=ids("rep_id"),
        product_id=ids("product_id"),
        created_at=np.array([r["created_at"].asm8 for r in records], dtype="datetime64[ns]"),
        history_deal=joined("history_deal", np.int64),
        changed_at=joined("changed_at", "datetime64[ns]"),
        stage=joined("stage", np.int64),
        amount=joined("amount", float),
        expected_close=joined("expected_close", "datetime64[ns]"),
        has_next_step=joined("has_next_step", float),
        activity_deal=joined("activity_deal", np.int64),
        activity_at=joined("activity_at", "datetime64[ns]"),
        activity_kind=joined("activity_kind", object),
        attribute_deal=joined("attribute_deal", np.int64),
        attribute_name=joined("attribute_name", object),
        attribute_value=joined("attribute_value", object),
    )


def moment(value: object) -> pd.Timestamp:
    """A moment as the store keeps it: UTC without a zone (a naive one is taken as UTC)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


@dataclass(frozen=True)
class _Values:
    """A field's canonical values, and the export's own names the import translated."""

    canonical: tuple[str, ...]
    exported: Mapping[str, str]  # export name -> canonical value

    @classmethod
    def of(cls, canonical: tuple[str, ...], *maps: Mapping[str, str]) -> _Values:
        return cls(canonical, {k: v for m in maps for k, v in stripped_keys(m).items()})

    def canonical_of(self, value: object, where: tuple[str | int, ...]) -> str:
        """`value` as the store holds it: an export name as the import translated it (a name
        the map holds is read as the map says, even when it is also a canonical value)."""
        if not isinstance(value, str):
            raise RecordError(where, f"not text: one of {self._allowed()}", value)
        translated = self.exported.get(value.strip(), value)
        if translated in self.canonical:
            return translated
        if translated in STAGES:
            named = translated if translated == value else f"{value} ({translated})"
            message = f"{named} is a closed stage: only open deals are scored "
            raise RecordError(where, f"{message}({self._allowed()})", value)
        raise RecordError(where, f"not one of {self._allowed()}", value)

    def _allowed(self) -> str:
        names = [n for n, v in self.exported.items() if v in self.canonical]
        own = f", or as the CRM names them: {', '.join(names)}" if names else ""
        return f"{', '.join(self.canonical)}{own}"


def canonical_records(
    records: Sequence[Mapping[str, Any]], stored: StoredCrm
) -> list[dict[str, Any]]:
    """The records in the store's values: the export's own names (stages, activity kinds, rep,
    account and product ids) translated once, as the store's import translated them
    (`CrmTables.translations`); stages and activity kinds checked.

    Raises:
        RecordError: a stage or activity kind that is neither canonical nor a name the import
            translated, naming the field and the allowed values.
    """
    return _canonical(records, stored.tables.translations)


def _canonical(
    records: Sequence[Mapping[str, Any]],
    translations: Mapping[str, Mapping[str, Mapping[str, str]]],
) -> list[dict[str, Any]]:
    """The records with the export's own values translated by `translations` (none: only
    checked); stages and activity kinds checked (a value in no map must be a canonical one)."""
    deals, history = translations.get("deals", {}), translations.get("deal_history", {})
    stages = _Values.of(OPEN_STAGES, deals.get("stage", {}), history.get("stage", {}))
    kinds = _Values.of(ACTIVITY_KINDS, translations.get("activities", {}).get("kind", {}))
    ids = {name: _Values.of((), deals.get(name, {})) for name in IDS}
    out = []
    for i, record in enumerate(records):
        row = {**record, "stage": stages.canonical_of(record["stage"], ("deals", i, "stage"))}
        for name, values in ids.items():
            if isinstance(value := record.get(name), str):
                row[name] = values.exported.get(value.strip(), value)
        if record.get("history") is not None:
            row["history"] = [
                {**c, "stage": stages.canonical_of(c["stage"], ("deals", i, "history", j, "stage"))}
                for j, c in enumerate(record["history"])
            ]
        if record.get("activities") is not None:
            row["activities"] = [
                {**t, "kind": kinds.canonical_of(t["kind"], ("deals", i, "activities", j, "kind"))}
                for j, t in enumerate(record["activities"])
            ]
        out.append(row)
    return out


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


_NAT = np.datetime64("NaT", "ns")


def _id(value: object) -> object:
    """An id as canonical tables hold it: text, or NA when missing."""
    return pd.NA if blank(value) else str(value)


def _ns(value: object) -> np.datetime64:
    """A moment or date as datetime64[ns] (NaT when missing)."""
    return _NAT if blank(value) else moment(value).to_datetime64().astype("datetime64[ns]")


def _amount(value: Any) -> float:
    return np.nan if blank(value) else float(value)


@dataclass(frozen=True)
class _Deal:
    """One record's rows of each `DealFacts` table (its deal being the `deal`-th)."""

    history_deal: np.ndarray
    changed_at: np.ndarray
    stage: np.ndarray
    amount: np.ndarray
    expected_close: np.ndarray
    has_next_step: np.ndarray
    activity_deal: np.ndarray
    activity_at: np.ndarray
    activity_kind: np.ndarray
    attribute_deal: np.ndarray
    attribute_name: np.ndarray
    attribute_value: np.ndarray

    @classmethod
    def of(cls, record: Mapping[str, Any], deal: int, stored: StoredCrm, as_of: pd.Timestamp):
        history = _changes(record, stored, as_of)
        touches, attributes = _touches(record, stored), _attributes(record, stored)
        return cls(
            history_deal=np.full(len(history["changed_at"]), deal, dtype=np.int64),
            **history,
            activity_deal=np.full(len(touches["activity_at"]), deal, dtype=np.int64),
            **touches,
            attribute_deal=np.full(len(attributes["attribute_name"]), deal, dtype=np.int64),
            **attributes,
        )


def _changes(
    record: Mapping[str, Any], stored: StoredCrm, as_of: pd.Timestamp
) -> dict[str, np.ndarray]:
    """The deal's changes up to `as_of` (as sent, else the store's, else a creation row at
    `created_at`), then the record's own state as a change at `as_of` where it differs from
    the last change."""
    sent = record.get("history")
    if sent is None:
        facts = stored.facts
        at = stored.history_rows.get(record["deal_id"], np.array([], dtype=np.int64))
        rows = {
            "changed_at": facts.changed_at[at],
            "stage": facts.stage[at],
            "amount": facts.amount[at],
            "expected_close": facts.expected_close[at],
            "has_next_step": facts.has_next_step[at],
        }
        next_step = at  # where the store's texts are (only the last change's is read)
    else:
        rows = {
            "changed_at": np.array([c["changed_at"].asm8 for c in sent], dtype="datetime64[ns]"),
            "stage": np.array([STAGE_CODES[c["stage"]] for c in sent], dtype=np.int64),
            "amount": np.array([_amount(c.get("amount")) for c in sent], dtype=float),
            "expected_close": np.array(
                [_ns(c.get("expected_close")) for c in sent], dtype="datetime64[ns]"
            ),
        }
        next_step = np.array([c.get("next_step") for c in sent], dtype=object)
        rows["has_next_step"] = np.array([not blank(v) for v in next_step], dtype=float)
    kept = rows["changed_at"] <= as_of.to_datetime64()
    if not kept.all():
        rows, next_step = {k: v[kept] for k, v in rows.items()}, next_step[kept]

    now = {
        "stage": STAGE_CODES[record["stage"]],
        "amount": _amount(record.get("amount")),
        "expected_close": _ns(record.get("expected_close")),
        "has_next_step": float(not blank(record.get("next_step"))),
    }
    if not len(next_step):  # a deal new to the store, sent without changes
        changed_at = record["created_at"].to_datetime64().astype("datetime64[ns]")
        return _appended(rows, now, changed_at)
    # the last change (of those at the same moment, the last given)
    times = rows["changed_at"].view(np.int64)
    last = len(times) - 1 - int(np.argmax(times[::-1]))
    text = next_step[last] if sent is not None else stored.next_step[next_step[last]]
    same = (
        rows["stage"][last] == now["stage"]
        and _same(rows["amount"][last], now["amount"])
        and _same(rows["expected_close"][last], now["expected_close"])
        and _same(text, record.get("next_step"))
    )
    if same:
        return rows
    # a change sent at `as_of` itself is replaced by the record's state, not doubled
    at_as_of = rows["changed_at"] == as_of.to_datetime64()
    if at_as_of.any():
        rows = {k: v[~at_as_of] for k, v in rows.items()}
    return _appended(rows, now, as_of.to_datetime64())


def _appended(
    rows: dict[str, np.ndarray], state: dict[str, object], changed_at: np.datetime64
) -> dict[str, np.ndarray]:
    values = {"changed_at": changed_at, **state}
    return {k: np.append(v, np.array([values[k]], dtype=v.dtype)) for k, v in rows.items()}


def _same(stored: object, sent: object) -> bool:
    """Equal, or both missing."""
    if blank(stored) or blank(sent):
        return blank(stored) and blank(sent)
    return bool(stored == sent)


def _touches(record: Mapping[str, Any], stored: StoredCrm) -> dict[str, np.ndarray]:
    """The deal's activities: as sent, else the store's."""
    sent = record.get("activities")
    if sent is None:
        at = stored.activity_rows.get(record["deal_id"], np.array([], dtype=np.int64))
        return {
            "activity_at": stored.facts.activity_at[at],
            "activity_kind": stored.facts.activity_kind[at],
        }
    return {
        "activity_at": np.array([t["at"].asm8 for t in sent], dtype="datetime64[ns]"),
        "activity_kind": np.array([t["kind"] for t in sent], dtype=object),
    }


def _attributes(record: Mapping[str, Any], stored: StoredCrm) -> dict[str, np.ndarray]:
    """The deal's attributes known at creation: as sent, else the store's."""
    sent = record.get("attributes")
    if not sent:
        at = stored.attribute_rows.get(record["deal_id"], np.array([], dtype=np.int64))
        return {
            "attribute_name": stored.facts.attribute_name[at],
            "attribute_value": stored.facts.attribute_value[at],
        }
    return {
        "attribute_name": np.array(list(sent), dtype=object),
        "attribute_value": np.array(
            [None if blank(v) else str(v) for v in sent.values()], dtype=object
        ),
    }
