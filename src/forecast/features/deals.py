"""Point-in-time deal features: one row per (deal, as_of), built only from what was known then.

The rule: a feature at `as_of` reads only rows whose time is at or before `as_of`. A deal's stage,
amount and expected close come from `deal_history`, never from the `deals` row (its final state);
other deals' wins and losses come from their close rows in `deal_history`. From `deals` only the
fixed facts are read: ids, account, rep, product and creation time.

Every lookup "as of" a moment is a binary search (backward, exact matches allowed; see
`forecast.features.asof`) over a deal's history or over running sums, on arrays, so a million
snapshots take seconds and one CRM record (`DealFacts` from `forecast.features.records`) a fraction
of a millisecond, with the same code. `slow_deal_features` in the tests is the obviously-right loop
this is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from forecast.data import derive
from forecast.data.schema import CLOSED_STAGES, OPEN_STAGES
from forecast.data.tables import CrmTables
from forecast.features.asof import Running, Timeline, running_of, running_sums

ACTIVITY_WINDOWS = (7, 30, 90)
COUNTED_KINDS = ("call", "email", "meeting", "demo", "proposal")
TRAILING_DAYS = 365
# win rates (rep, rep from a stage, product in an industry) look back two years: with about 130
# deals a rep a year, one year of closes leaves a rep's rate too noisy to tell skill from luck
RECORD_DAYS = 730
SHRINK_DEALS = 20  # a rep's win rate counts as this many deals of the team's rate
STAGE_PROGRESS = {
    **{stage: i for i, stage in enumerate(OPEN_STAGES)},
    "closed_won": len(OPEN_STAGES),
    "closed_lost": -1,
}
DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Feature:
    """One model input: its name, whether it is categorical, and a direction true by design."""

    name: str
    kind: Literal["numeric", "categorical"] = "numeric"
    monotone: int = 0  # +1: more never lowers the model's probability; -1: never raises it


DEAL_FEATURES: tuple[Feature, ...] = (
    Feature("stage", "categorical"),
    Feature("days_in_stage"),
    Feature("deal_age_days"),
    Feature("amount"),
    Feature("amount_change_ratio"),
    Feature("amount_changes"),
    Feature("amount_vs_typical"),
    Feature("close_pushes", monotone=-1),
    Feature("days_to_expected_close"),
    Feature("expected_close_in_quarter"),
    Feature("has_next_step"),
    *(Feature(f"activities_{w}d") for w in ACTIVITY_WINDOWS),
    *(Feature(f"{kind}s_90d") for kind in COUNTED_KINDS),
    Feature("days_since_last_activity"),
    Feature("activities_per_week"),
    Feature("account_prior_wins"),
    Feature("account_prior_losses"),
    Feature("account_tenure_days"),
    Feature("account_revenue_365d"),
    Feature("rep_win_rate", monotone=+1),
    Feature("rep_stage_win_rate", monotone=+1),
    Feature("fit_win_rate", monotone=+1),
    Feature("rep_closed_deals_365d"),
    Feature("rep_tenure_days"),
    Feature("product_id", "categorical"),
    Feature("product_family", "categorical"),
    Feature("industry", "categorical"),
    Feature("region", "categorical"),
    Feature("segment", "categorical"),
    Feature("days_into_quarter"),
    Feature("days_left_in_quarter"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in DEAL_FEATURES)
ATTRIBUTE_PREFIX = "attr_"
"""Deal attributes known at creation (`deal_attributes`) become categorical features so named."""
CATEGORICAL: tuple[str, ...] = tuple(f.name for f in DEAL_FEATURES if f.kind == "categorical")
KEY_COLUMNS = ("deal_id", "as_of")


_ACTIVITY_FEATURES = (
    *(f"activities_{w}d" for w in ACTIVITY_WINDOWS),
    *(f"{kind}s_90d" for kind in COUNTED_KINDS),
    "days_since_last_activity",
    "activities_per_week",
)
_STAGE_HISTORY_FEATURES = (
    "stage",
    "days_in_stage",
    "amount_change_ratio",
    "amount_changes",
    "close_pushes",
    "has_next_step",
    "rep_stage_win_rate",
)
_REP_FEATURES = ("rep_win_rate", "rep_stage_win_rate", "rep_closed_deals_365d", "rep_tenure_days")
_ACCOUNT_TABLE_FEATURES = ("account_tenure_days", "industry", "region", "segment")


def unavailable_features(tables: CrmTables) -> dict[str, str]:
    """The deal features the data cannot give, each with the reason, in DEAL_FEATURES order.

    They stay in the model's input, empty on every row, so that a model trained on a thin
    export and one trained on a full CRM take the same input; the trees and the logistic
    model learn nothing from a column that is always empty.
    """
    deals = tables.deals
    reasons: dict[str, str] = {}

    def off(names: Sequence[str], why: str) -> None:
        for name in names:
            reasons.setdefault(name, why)

    def blank(column: str) -> bool:
        return not deals[column].notna().any()

    if derive.history_is_derived(tables.deal_history):
        off(_STAGE_HISTORY_FEATURES, "no stage history in the export (deal_history derived)")
    if blank("rep_id"):
        off(_REP_FEATURES, "no deal owner (deals.rep_id empty)")
    if not len(tables.reps):
        off(("rep_tenure_days",), "no reps table (hire dates unknown)")
    if blank("account_id"):
        off(
            ("account_prior_wins", "account_prior_losses", "account_revenue_365d"),
            "no account on any deal (deals.account_id empty)",
        )
        off(_ACCOUNT_TABLE_FEATURES, "no account on any deal (deals.account_id empty)")
    if not len(tables.accounts):
        off(_ACCOUNT_TABLE_FEATURES, "no accounts table")
    if not len(tables.revenue):
        off(("account_revenue_365d",), "no revenue table")
    if blank("product_id"):
        off(("product_id", "product_family", "fit_win_rate"), "no product on any deal")
    if not len(tables.products):
        off(("product_family",), "no products table")
    if not len(tables.activities):
        off(_ACTIVITY_FEATURES, "no activities table")
    if blank("expected_close"):
        off(("days_to_expected_close", "expected_close_in_quarter"), "no expected close dates")
    if blank("amount"):
        off(("amount", "amount_vs_typical"), "no amounts")
    return {name: reasons[name] for name in FEATURE_NAMES if name in reasons}


def attribute_features(tables: CrmTables) -> tuple[Feature, ...]:
    """A categorical feature per deal attribute known at creation, e.g. `attr_lead_source`.

    Attributes filled at or after the close (`known_at: closed`) never become features.
    """
    attributes = tables.deal_attributes
    created = attributes.loc[attributes["known_at"] == "created", "name"]
    return tuple(
        Feature(f"{ATTRIBUTE_PREFIX}{name}", "categorical") for name in sorted(set(created))
    )


def model_features(model: object, known: Sequence[Feature]) -> tuple[Feature, ...]:
    """The features `model` was fitted on, in its order: the pipeline's own and its attributes.

    Raises:
        ValueError: the model was fitted on features this pipeline does not make (a model of
            another pipeline, say): it cannot be served here.
    """
    names = [str(n) for n in getattr(model, "feature_names_in_", [])]
    if not names:
        return tuple(known)
    by_name = {f.name: f for f in known}
    foreign = [n for n in names if n not in by_name and not n.startswith(ATTRIBUTE_PREFIX)]
    if foreign:
        raise ValueError(
            f"the model expects {len(foreign)} features this pipeline does not make "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}): it was trained "
            "for another pipeline"
        )
    return tuple(by_name.get(n, Feature(n, "categorical")) for n in names)


def snapshot_dates(
    start: pd.Timestamp | str, end: pd.Timestamp | str, *, freq: str = "W-SUN"
) -> pd.DatetimeIndex:
    """Regular as-of moments (weekly on Sunday midnight by default) between start and end."""
    return pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=freq, normalize=True)


def deal_snapshots(tables: CrmTables, as_of_dates: Sequence[pd.Timestamp]) -> pd.DataFrame:
    """(deal_id, as_of) for every deal open at each as-of, judged from its history then."""
    deal_ids = tables.deals["deal_id"].to_numpy()
    state = _State.of(**_history_arrays(tables, pd.Index(deal_ids)))
    dates = pd.DatetimeIndex(sorted(set(pd.DatetimeIndex(as_of_dates)))).as_unit("ns")
    # each deal's first change (the rows are in deal order, each deal's in time order)
    starts = np.flatnonzero(state.first & (state.line.codes >= 0))
    created_deal, created_at = state.line.codes[starts], state.line.times[starts]
    deal_parts, as_of_parts = [], []
    for as_of in dates.to_numpy():
        candidates = created_deal[created_at <= as_of]
        if len(candidates):
            deal_parts.append(candidates)
            as_of_parts.append(np.full(len(candidates), as_of))
    if not deal_parts:
        return pd.DataFrame(
            {
                "deal_id": pd.Series([], dtype="string"),
                "as_of": pd.Series([], dtype="datetime64[ns]"),
            }
        )
    deal, as_of = np.concatenate(deal_parts), np.concatenate(as_of_parts)
    open_now = state.stage[state.line.last(deal, as_of)] < len(OPEN_STAGES)
    return pd.DataFrame({"deal_id": deal_ids[deal[open_now]], "as_of": as_of[open_now]})


def won_labels(tables: CrmTables, snapshots: pd.DataFrame) -> pd.Series:
    """1 if the deal was eventually won, 0 if lost, NaN if still open at the export's as-of."""
    outcome = tables.deals.set_index("deal_id")["outcome"]
    values = outcome.reindex(snapshots["deal_id"].to_numpy()).to_numpy()
    return pd.Series(
        np.where(values == "won", 1.0, np.where(values == "lost", 0.0, np.nan)),
        index=snapshots.index,
        name="won",
    )


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
            **_history_arrays(tables, deal_index),
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
        if len(self.deal_id) <= _FEW:  # a dict of a few beats a pandas Index's hash table
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
_FEW = 32  # below this many deals, Python containers beat building a pandas Index
_NAT = np.datetime64("NaT", "ns")


def deal_features(
    tables: CrmTables | DealFacts, snapshots: pd.DataFrame, *, context: DealContext | None = None
) -> pd.DataFrame:
    """Features for each (deal_id, as_of) row of `snapshots`, in the same order.

    Only rows dated at or before each row's as_of are read; see the module docstring. A deal's
    own facts (its row, history, activities and attributes) come from `tables`; the records
    that span deals (wins by rep, account and product, usual quotes, revenue, firmographics)
    from `context`, by default built from `tables` too. The service passes the stored CRM's
    context with a CRM's records as `tables` (`DealFacts`): the same code scores a record and
    trains.
    """
    as_of = pd.DatetimeIndex(snapshots["as_of"]).as_unit("ns").to_numpy()
    columns = feature_columns(tables, snapshots["deal_id"].to_numpy(), as_of, context=context)
    data = {key: snapshots[key].array for key in KEY_COLUMNS}
    return pd.DataFrame(data | columns, index=snapshots.index)


def feature_columns(
    tables: CrmTables | DealFacts,
    deal_ids: np.ndarray,
    as_of: np.ndarray,
    *,
    context: DealContext | None = None,
) -> dict[str, np.ndarray]:
    """`deal_features` as arrays (no frame), for (deal_ids[i], as_of[i]) (datetime64[ns]):
    one per feature, in FEATURE_NAMES order, then the attributes'. What the service reads for
    a CRM's record, where building a frame would cost more than the features."""
    if isinstance(tables, DealFacts):
        if context is None:
            raise TypeError("DealFacts are read against a DealContext: pass context=")
        facts = tables
    else:
        facts = DealFacts.of(tables)
        context = context or DealContext.of(tables, facts=facts)
    out = _feature_columns(facts, facts.rows(deal_ids), as_of, context)
    return {name: out[name] for name in (*FEATURE_NAMES, *(f.name for f in context.attributes))}


def training_frame(
    tables: CrmTables, as_of_dates: Sequence[pd.Timestamp], *, labelled_only: bool = True
) -> pd.DataFrame:
    """Snapshots, their features and the `won` label; unlabeled (still open) rows dropped."""
    snapshots = deal_snapshots(tables, as_of_dates)
    frame = deal_features(tables, snapshots)
    frame["won"] = won_labels(tables, snapshots).to_numpy()
    if labelled_only:
        frame = frame[frame["won"].notna()].reset_index(drop=True)
    return frame


# --- building blocks -------------------------------------------------------------------------
#
# Everything below works on arrays: a snapshot is a deal's row in `DealFacts` (`deal`) and a
# moment (`as_of`, datetime64[ns]); what does not change over a deal's life is worked out per
# deal (`_Own`) and read per snapshot by position.


_CHUNK = 250_000  # snapshots computed at a time: the lookups' scratch arrays stay small


def _feature_columns(
    facts: DealFacts, deal: np.ndarray, as_of: np.ndarray, context: DealContext
) -> dict[str, np.ndarray]:
    own = _Own.of(facts, context)
    if len(deal) <= _CHUNK:
        return _columns(own, deal, as_of, context)
    parts = [
        _columns(own, deal[i : i + _CHUNK], as_of[i : i + _CHUNK], context)
        for i in range(0, len(deal), _CHUNK)
    ]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _columns(
    own: _Own, deal: np.ndarray, as_of: np.ndarray, context: DealContext
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    state = own.state
    at = state.line.last(deal, as_of)
    if (at < 0).any():
        first = np.flatnonzero(at < 0)[0]
        raise ValueError(
            f"deal {own.deal_id[deal[first]]!r} has no recorded state at or before "
            f"{pd.Timestamp(as_of[first])}"
        )
    stage = state.stage[at]
    _add_state(out, state, at, as_of)
    out["deal_age_days"] = _days(as_of - own.created_at[deal])
    _add_activities(out, own, deal, as_of)
    _add_account(out, own, deal, as_of, context)
    _add_rep(out, own, deal, as_of, stage, context)
    _add_size(out, own, deal, as_of, context)
    _add_quarter(out, as_of)
    for name, values in own.fixed.items():  # what does not change over a deal's life
        out[name] = values[deal]
    for name in context.unavailable:
        out[name] = np.full(len(deal), None) if name in CATEGORICAL else np.full(len(deal), np.nan)
    return out


def _days(delta: np.ndarray) -> np.ndarray:
    """Days of a timedelta64 array as pandas' `total_seconds() / 86400` gives them (NaN: NaT)."""
    ns = delta.astype("timedelta64[ns]")
    return np.where(np.isnat(ns), np.nan, ns.view(np.int64) / 10**9) / 86400


def _history_arrays(tables: CrmTables, deal_index: pd.Index) -> dict[str, np.ndarray]:
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
class _State:
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
    def of_facts(cls, facts: DealFacts) -> _State:
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
    ) -> _State:
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


def _add_state(out: dict, state: _State, at: np.ndarray, as_of: np.ndarray) -> None:
    out["stage"] = _STAGE_NAMES[state.stage[at]]
    out["days_in_stage"] = _days(as_of - state.stage_entered_at[at])
    amount, first = state.amount[at], state.first_amount[at]
    out["amount"] = amount
    out["amount_change_ratio"] = np.where(first > 0, amount / np.where(first > 0, first, 1), 1.0)
    out["amount_changes"] = state.amount_changes[at].astype(float)
    out["close_pushes"] = state.close_pushes[at].astype(float)
    out["expected_close"] = state.expected_close[at]
    out["days_to_expected_close"] = _days(state.expected_close[at] - as_of)
    out["has_next_step"] = state.has_next_step[at]


def _activity_sums(facts: DealFacts) -> Running:
    """Each deal's activities as running sums: all (`n`) and of each counted kind."""
    kinds = facts.activity_kind
    columns = {"n": np.ones(len(kinds))} | {k: (kinds == k).astype(float) for k in COUNTED_KINDS}
    return running_of(facts.activity_deal, facts.activity_at, columns)


def _add_activities(out: dict, own: _Own, deal: np.ndarray, as_of: np.ndarray) -> None:
    last, sums = own.activities.at_each(deal, as_of, (0, *ACTIVITY_WINDOWS))
    within = sums[0] - sums[1:]  # per window, snapshot and column (n, then each kind)
    for w, window in enumerate(ACTIVITY_WINDOWS):
        out[f"activities_{window}d"] = within[w, :, 0]
    for j, kind in enumerate(COUNTED_KINDS, start=1):
        out[f"{kind}s_90d"] = within[ACTIVITY_WINDOWS.index(90), :, j]
    # a deal never touched is as stale as it is old
    since_last = _days(as_of - last[0])
    out["days_since_last_activity"] = np.where(
        np.isnan(since_last), out["deal_age_days"], since_last
    )
    age_weeks = np.maximum(out["deal_age_days"] / 7, 1.0)
    out["activities_per_week"] = sums[0, :, 0] / age_weeks


def _close_events(tables: CrmTables) -> pd.DataFrame:
    """One row per recorded close (from deal_history), with the deal's account, rep and fit."""
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
    account = deals["account_id"].reindex(ids).to_numpy()
    industry = tables.accounts.set_index("account_id")["industry"].reindex(account).to_numpy()
    return pd.DataFrame(
        {
            "account_id": account,
            "rep_id": deals["rep_id"].reindex(ids).to_numpy(),
            "furthest": reached.reindex(ids).to_numpy(),
            "fit": _fit_key(deals["product_id"].reindex(ids).to_numpy(), industry),
            "at": closes["changed_at"].to_numpy(),
            "won": (closes["stage"] == "closed_won").to_numpy(dtype=float),
            "lost": (closes["stage"] == "closed_lost").to_numpy(dtype=float),
        }
    )


def _take(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """`values[codes]`, missing where a code is -1 (not found): never the last row by accident."""
    series = pd.Series(values)
    return series.reindex(codes).to_numpy() if len(codes) else series.iloc[:0].to_numpy()


def _fit_key(product: np.ndarray, industry: np.ndarray) -> np.ndarray:
    """One key per product sold into an industry (empty industry kept as its own key).

    No key (None) without a product: deals of unknown products are not one product's record.
    """
    no_product, no_industry = pd.isna(product).tolist(), pd.isna(industry).tolist()
    return np.array(
        [
            None if blank_p else f"{p}|{'' if blank_i else i}"
            for p, i, blank_p, blank_i in zip(
                product.tolist(), industry.tolist(), no_product, no_industry, strict=True
            )
        ],
        dtype=object,
    )


def blank(value: object) -> bool:
    """Whether one value is missing as tables and records carry it: None, NA, NaN or NaT."""
    return value is None or value is pd.NA or value != value


class _Ids:
    """Distinct ids and their positions: pandas' hash table for many lookups, a dict for a few
    (one pandas call costs more than a few Python lookups: one CRM record makes a dozen)."""

    def __init__(self, ids: Sequence[object] | np.ndarray):
        self.index = pd.Index(ids)
        self._positions: dict[object, int] | None = None  # made on the first small lookup

    def __len__(self) -> int:
        return len(self.index)

    def positions(self, values: np.ndarray) -> np.ndarray:
        """Each value's position, -1 when it is not here (or missing)."""
        if len(values) > _FEW:
            return self.index.get_indexer(values)
        if self._positions is None:
            self._positions = {v: i for i, v in enumerate(self.index.tolist())}
        get = self._positions.get
        return np.array([-1 if blank(v) else get(v, -1) for v in values.tolist()], np.int64)


def _codes(ids: _Ids, values: np.ndarray) -> np.ndarray:
    """Each value's position in `ids`; a value not there gets len(ids), a code with no record
    (as a deal's own rep or account has none yet, had the store held the deal); a missing
    value -1."""
    codes = ids.positions(values)
    new = (codes < 0) & ~pd.isna(values)
    return np.where(new, len(ids), codes)


def _by_code(column: pd.Series, ids: _Ids, dtype: str | None = None) -> np.ndarray:
    """`column` (indexed by id) per position in `ids`, then one more value: a missing id's
    (so code -1, or len(ids) for an id not there, reads as `reindex` reads a missing id)."""
    values = column.reindex(ids.index.append(pd.Index([None], dtype=object)))
    return values.to_numpy(dtype) if dtype else values.to_numpy()


# the kinds of record (`_Records`): a rep's, a team's, a product's in an industry, a product's,
# then a rep's and a team's from each open stage on (closes of deals that reached it)
_REP, _TEAM, _FIT, _PRODUCT = range(4)
_REP_FROM_STAGE = 4
_TEAM_FROM_STAGE = _REP_FROM_STAGE + len(OPEN_STAGES)


@dataclass(frozen=True)
class _Records:
    """Wins and closes per key of each kind of record (a rep, a team, a product...) as running
    sums over time, in one table: a snapshot's records of every kind are one lookup."""

    running: Running  # keyed by the kind's first code + the key's code
    first: np.ndarray  # per kind, its first code

    @classmethod
    def of(cls, closes: pd.DataFrame, kinds: Sequence[tuple[np.ndarray, int]]) -> _Records:
        """`kinds`: per kind, each close's key code (-1: nobody's record) and the count of
        codes (one more is kept free: a key the closes do not have, as a new rep)."""
        first = np.cumsum([0] + [size + 1 for _, size in kinds[:-1]])
        keys = np.concatenate(
            [np.where(codes >= 0, first[k] + codes, -1) for k, (codes, _) in enumerate(kinds)]
        )
        at = np.tile(closes["at"].to_numpy("datetime64[ns]"), len(kinds))
        won = np.tile(closes["won"].to_numpy(dtype=float), len(kinds))
        kept = keys >= 0
        values = {"won": won[kept], "n": np.ones(int(kept.sum()))}
        return cls(running_of(keys[kept], at[kept], values), first)

    def trailing(
        self, kinds: np.ndarray, codes: np.ndarray, as_of: np.ndarray, days: np.ndarray
    ) -> np.ndarray:
        """Wins and closes of each (kind, code) in (as_of - days, as_of], per lookup: shape
        (lookups, 2: won, closed); NaN for code or kind -1 (a blank rep or product is
        nobody's record, not one shared record)."""
        known = (codes >= 0) & (kinds >= 0)
        keys = np.where(known, self.first[kinds] + codes, -1)
        then = as_of - (days * (86400 * 10**9)).astype("timedelta64[ns]")
        _, sums = self.running.at_each(
            np.concatenate([keys, keys]), np.concatenate([as_of, then]), (0,)
        )
        now, before = sums[0, : len(keys)], sums[0, len(keys) :]
        return np.where(known[:, None], now - before, np.nan)


@dataclass(frozen=True)
class DealContext:
    """The records that span deals, ready for as-of lookups: wins and closes by account, rep,
    team, rep from each stage, product and product-in-industry; first quotes by product and
    segment; revenue by account; firmographics, hire dates and product families; and which
    features the stored CRM cannot give. Built once per store (`DealContext.of`).

    Ids are coded by position in the indexes (`_codes`); the per-code arrays have one more
    value at the end, a missing id's."""

    account_index: _Ids
    account_created: np.ndarray  # per account code
    firmographics: dict[str, np.ndarray]  # industry, region, segment per account code
    account_closes: Running  # won and lost per account code
    account_revenue: Running  # revenue per account code, a month known once ended
    rep_index: _Ids
    rep_team: np.ndarray  # team code per rep code (a rep not in the index: the blank team's)
    hired: np.ndarray  # per rep code
    records: _Records  # wins and closes by rep, team, fit, product, rep and team from a stage
    fit_index: _Ids
    product_index: _Ids
    product_family: np.ndarray  # per product code
    quote_index: _Ids
    quotes: Running  # log first quotes per (product, segment) code
    quoted: _Ids  # deals whose first quote the quotes hold
    unavailable: dict[str, str]
    attributes: tuple[Feature, ...]

    @classmethod
    def of(cls, tables: CrmTables, *, facts: DealFacts | None = None) -> DealContext:
        """The context of `tables` (`facts`: `DealFacts.of(tables)` when already made)."""
        deals, reps, accounts = tables.deals, tables.reps, tables.accounts
        products = tables.products
        facts = facts or DealFacts.of(tables)
        closes = _close_events(tables)

        known = pd.concat([accounts["account_id"], deals["account_id"]]).dropna()
        account_index = _Ids(pd.unique(known.to_numpy()))
        close_account = account_index.index.get_indexer(closes["account_id"].to_numpy())
        by_account = accounts.set_index("account_id")
        revenue = tables.revenue
        month_ended = revenue["period"] + pd.offsets.MonthBegin(1)

        # reps may be absent from an export: the deals still say who owns them (one team then)
        known = pd.concat([reps["rep_id"], deals["rep_id"]]).dropna()
        rep_index = _Ids(pd.unique(known.to_numpy()))
        team_of = (
            reps.set_index("rep_id")["team"].reindex(rep_index.index).fillna("").to_numpy(object)
        )
        team_index = pd.Index(pd.unique(team_of))
        close_rep = rep_index.index.get_indexer(closes["rep_id"].to_numpy())
        close_team = team_index.get_indexer(_take(team_of, close_rep))
        # a rep the store has not seen is in no team: the blank team's record, if there is one
        blank_team = team_index.get_indexer([""])[0]
        rep_team = np.append(
            team_index.get_indexer(team_of), blank_team if blank_team >= 0 else len(team_index)
        )

        fit_index = _Ids(pd.unique(closes["fit"].dropna()))
        known = pd.concat([products["product_id"], deals["product_id"]]).dropna()
        product_index = _Ids(pd.unique(known.to_numpy()))
        close_product = np.array(
            [None if key is None else key.split("|")[0] for key in closes["fit"]], dtype=object
        )
        reached = [closes["furthest"].to_numpy() >= code for code in range(len(OPEN_STAGES))]
        quote_index, quotes, quoted = _first_quotes(tables, facts, account_index, by_account)
        return cls(
            account_index=account_index,
            account_created=_by_code(by_account["created_at"], account_index, "datetime64[ns]"),
            firmographics={
                column: _by_code(by_account[column], account_index)
                for column in ("industry", "region", "segment")
            },
            account_closes=running_sums(
                closes.assign(account=close_account),
                "account",
                "at",
                {"won": closes["won"].to_numpy(), "lost": closes["lost"].to_numpy()},
            ),
            account_revenue=running_sums(
                pd.DataFrame(
                    {
                        "account": account_index.index.get_indexer(
                            revenue["account_id"].to_numpy()
                        ),
                        "at": month_ended.to_numpy(),
                    }
                ),
                "account",
                "at",
                {"amount": revenue["amount"].to_numpy(dtype=float)},
            ),
            rep_index=rep_index,
            rep_team=rep_team,
            hired=_by_code(reps.set_index("rep_id")["hired_at"], rep_index, "datetime64[ns]"),
            records=_Records.of(
                closes,
                [
                    (close_rep, len(rep_index)),
                    (close_team, len(team_index)),
                    (fit_index.index.get_indexer(closes["fit"]), len(fit_index)),
                    (product_index.index.get_indexer(close_product), len(product_index)),
                    *((np.where(r, close_rep, -1), len(rep_index)) for r in reached),
                    *((np.where(r, close_team, -1), len(team_index)) for r in reached),
                ],
            ),
            fit_index=fit_index,
            product_index=product_index,
            product_family=_by_code(products.set_index("product_id")["family"], product_index),
            quote_index=quote_index,
            quotes=quotes,
            quoted=quoted,
            unavailable=unavailable_features(tables),
            attributes=attribute_features(tables),
        )


@dataclass(frozen=True)
class _Own:
    """What each deal of `DealFacts` brings, worked out once per deal (a snapshot reads its
    deal's by position): its history state and activities, ready for as-of lookups; its codes
    in the context's indexes; its first quote; and the facts that do not change over its life
    (product, firmographics, attributes known at creation)."""

    deal_id: np.ndarray
    created_at: np.ndarray
    state: _State
    activities: Running  # per deal row: all activities (`n`), then each counted kind
    account: np.ndarray  # account code (`_codes`)
    rep: np.ndarray
    team: np.ndarray  # team code; -1 without a rep
    product: np.ndarray
    fit: np.ndarray  # (product, industry) code; -1 when never closed
    quote_key: np.ndarray  # (product, segment) code (`_codes`)
    quoted: np.ndarray  # whether the context's first quotes hold the deal's
    first_quote: tuple[np.ndarray, np.ndarray]  # log of the first positive amount, and when
    fixed: dict[str, np.ndarray]  # product_id, product_family, industry, region, segment, attr_*

    @classmethod
    def of(cls, facts: DealFacts, context: DealContext) -> _Own:
        state = _State.of_facts(facts)
        amount, recorded = state.first_quotes(len(facts.deal_id))
        account = _codes(context.account_index, facts.account_id)
        rep = _codes(context.rep_index, facts.rep_id)
        product = _codes(context.product_index, facts.product_id)
        firm = {name: values[account] for name, values in context.firmographics.items()}
        return cls(
            deal_id=facts.deal_id,
            created_at=facts.created_at,
            state=state,
            activities=_activity_sums(facts),
            account=account,
            rep=rep,
            team=np.where(rep < 0, -1, context.rep_team[rep]),
            product=product,
            fit=context.fit_index.positions(_fit_key(facts.product_id, firm["industry"])),
            quote_key=_codes(context.quote_index, _fit_key(facts.product_id, firm["segment"])),
            quoted=context.quoted.positions(facts.deal_id) >= 0,
            first_quote=(np.log(amount), recorded),
            fixed={
                "product_id": facts.product_id,
                "product_family": context.product_family[product],
                **firm,
                **_attributes(facts, [f.name for f in context.attributes]),
            },
        )


def _add_account(
    out: dict, own: _Own, deal: np.ndarray, as_of: np.ndarray, context: DealContext
) -> None:
    account = own.account[deal]
    _, closes = context.account_closes.at_each(account, as_of, (0,))
    no_account = account < 0
    out["account_prior_wins"] = np.where(no_account, np.nan, closes[0, :, 0])
    out["account_prior_losses"] = np.where(no_account, np.nan, closes[0, :, 1])
    tenure = (as_of - context.account_created[account]) / np.timedelta64(1, "D")
    out["account_tenure_days"] = np.where(no_account, np.nan, tenure)
    _, revenue = context.account_revenue.at_each(account, as_of, (0, TRAILING_DAYS))
    out["account_revenue_365d"] = np.where(no_account, np.nan, revenue[0, :, 0] - revenue[1, :, 0])


def _add_rep(
    out: dict,
    own: _Own,
    deal: np.ndarray,
    as_of: np.ndarray,
    stage: np.ndarray,
    context: DealContext,
) -> None:
    n = len(deal)
    rep, team = own.rep[deal], own.team[deal]
    # a deal at an open stage reads the records from that stage on; a closed one none
    at_open = stage < len(OPEN_STAGES)
    kinds = np.concatenate(
        [
            np.repeat([_REP, _TEAM, _FIT, _PRODUCT, _REP], n),
            np.where(at_open, _REP_FROM_STAGE + stage, -1),
            np.where(at_open, _TEAM_FROM_STAGE + stage, -1),
        ]
    )
    codes = np.concatenate([rep, team, own.fit[deal], own.product[deal], rep, rep, team])
    days = np.repeat([RECORD_DAYS] * 4 + [TRAILING_DAYS] + [RECORD_DAYS] * 2, n)
    record = context.records.trailing(kinds, codes, np.tile(as_of, 7), days)
    won, closed = record[:, 0].reshape(7, n), record[:, 1].reshape(7, n)
    rep_of, team_of, fit_of, product_of, rep_last_year, mine, theirs = range(7)

    team_rate = (won[team_of] + 1) / (closed[team_of] + 3)  # a weak prior when a team is new
    out["rep_win_rate"] = (won[rep_of] + SHRINK_DEALS * team_rate) / (closed[rep_of] + SHRINK_DEALS)
    out["rep_closed_deals_365d"] = closed[rep_last_year]
    out["rep_tenure_days"] = (as_of - context.hired[rep]) / np.timedelta64(1, "D")

    # the rep's record from the deal's current stage on: of closed deals that reached it, the
    # share won (shrunk toward the team's), so a rep weak at one stage shows at that stage
    prior = (won[theirs] + 1) / (closed[theirs] + 2)
    out["rep_stage_win_rate"] = (won[mine] + SHRINK_DEALS * prior) / (closed[mine] + SHRINK_DEALS)

    # how this product has been selling into this industry lately, shrunk toward the product
    prior = (won[product_of] + 1) / (closed[product_of] + 3)
    out["fit_win_rate"] = (won[fit_of] + SHRINK_DEALS * prior) / (closed[fit_of] + SHRINK_DEALS)


def _first_quotes(
    tables: CrmTables, facts: DealFacts, account_index: _Ids, by_account: pd.DataFrame
) -> tuple[_Ids, Running, _Ids]:
    """First quotes as running sums of their logs per (product, segment): the keys, the sums,
    and the deals they hold."""
    state = _State.of_facts(facts)
    amount, when = state.first_quotes(len(facts.deal_id))
    # in the order of the deals' ids (rows first quoted at the same moment sum in that order)
    deals = np.flatnonzero(~np.isnan(amount))
    deals = deals[np.argsort(facts.deal_id[deals].astype(str), kind="stable")]
    segment = by_account["segment"].reindex(facts.account_id[deals]).to_numpy()
    keys = _fit_key(facts.product_id[deals], segment)
    key_index = _Ids(pd.unique(pd.Series(keys, dtype=object).dropna()))
    values = {"log_amount": np.log(amount[deals]), "n": np.ones(len(deals))}
    running = running_of(key_index.index.get_indexer(keys), when[deals], values)
    return key_index, running, _Ids(facts.deal_id[deals])


def _add_size(
    out: dict, own: _Own, deal: np.ndarray, as_of: np.ndarray, context: DealContext
) -> None:
    """How big the first quote is against the usual first quote of the product in the segment.

    The usual one is the geometric mean over deals of the same product and segment first
    quoted in (as_of - TRAILING_DAYS, as_of]; a ratio (1 = usual), NaN without a first amount.
    """
    key = own.quote_key[deal]
    _, sums = context.quotes.at_each(key, as_of, (0, TRAILING_DAYS))
    total, n = (sums[0] - sums[1]).T  # columns: log_amount, n
    own_log, recorded = own.first_quote[0][deal], own.first_quote[1][deal]
    # the deal's own first quote counts only once it was recorded
    own_log = np.where(recorded <= as_of, own_log, np.nan)
    # a deal the context has not seen (a CRM's new record) adds its own quote to the usual one,
    # as it would once imported
    unseen = (
        ~own.quoted[deal]
        & ~np.isnan(own_log)
        & (recorded > as_of - np.timedelta64(TRAILING_DAYS, "D"))
    )
    n, total = n + unseen, total + np.where(unseen, own_log, 0.0)
    typical = np.where(n > 0, total / np.where(n > 0, n, 1), np.nan)
    out["amount_vs_typical"] = np.exp(np.where(key >= 0, own_log - typical, np.nan))


def _add_quarter(out: dict, as_of: np.ndarray) -> None:
    """Where the as-of falls in its calendar quarter, and whether the expected close does too."""
    month = as_of.astype("datetime64[M]").astype(np.int64)  # months since 1970-01
    start = (month - month % 3).astype("datetime64[M]").astype("datetime64[ns]")
    following = (month - month % 3 + 3).astype("datetime64[M]").astype("datetime64[ns]")
    day = np.timedelta64(1, "D")
    out["days_into_quarter"] = ((as_of - start) // day).astype(np.int64)
    out["days_left_in_quarter"] = ((following - day - as_of) // day).astype(np.int64)
    expected = out.pop("expected_close")
    in_quarter = (expected <= following - np.timedelta64(1, "ns")).astype(float)
    out["expected_close_in_quarter"] = np.where(np.isnat(expected), np.nan, in_quarter)


def _attributes(facts: DealFacts, names: Sequence[str]) -> dict[str, np.ndarray]:
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
