"""Point-in-time deal features: one row per (deal, as_of), built only from what was known then.

The rule: a feature at `as_of` reads only rows whose time is at or before `as_of`. A deal's stage,
amount and expected close come from `deal_history`, never from the `deals` row (its final state);
other deals' wins and losses come from their close rows in `deal_history`. From `deals` only the
fixed facts are read: ids, account, rep, product and creation time.

Every lookup "as of" a moment is a `pandas.merge_asof` (backward, exact matches allowed) over
cumulative counts, so a million snapshots take seconds. `slow_deal_features` in the tests is the
obviously-right loop this is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from forecast import derive
from forecast.asof import Running, asof_join, running_at, running_sums
from forecast.schema import CLOSED_STAGES, OPEN_STAGES
from forecast.tables import CrmTables

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
    state = _history_state(tables)
    dates = pd.DatetimeIndex(sorted(set(pd.DatetimeIndex(as_of_dates)))).as_unit("ns")
    frames = []
    created = state.groupby("deal")["changed_at"].min()
    for as_of in dates:
        candidates = created.index[created.to_numpy() <= as_of.to_datetime64()]
        if len(candidates) == 0:
            continue
        frames.append(pd.DataFrame({"deal": candidates, "as_of": as_of}))
    if not frames:
        return pd.DataFrame(
            {
                "deal_id": pd.Series([], dtype="string"),
                "as_of": pd.Series([], dtype="datetime64[ns]"),
            }
        )
    pairs = pd.concat(frames, ignore_index=True)
    at = asof_join(
        pairs, state[["deal", "changed_at", "stage_code"]], "deal", "as_of", "changed_at"
    )
    open_now = at["stage_code"].to_numpy() < len(OPEN_STAGES)
    pairs = pairs[open_now].reset_index(drop=True)
    deal_ids = tables.deals["deal_id"].to_numpy()
    return pd.DataFrame({"deal_id": deal_ids[pairs["deal"].to_numpy()], "as_of": pairs["as_of"]})


def won_labels(tables: CrmTables, snapshots: pd.DataFrame) -> pd.Series:
    """1 if the deal was eventually won, 0 if lost, NaN if still open at the export's as-of."""
    outcome = tables.deals.set_index("deal_id")["outcome"]
    values = outcome.reindex(snapshots["deal_id"].to_numpy()).to_numpy()
    return pd.Series(
        np.where(values == "won", 1.0, np.where(values == "lost", 0.0, np.nan)),
        index=snapshots.index,
        name="won",
    )


def deal_features(
    tables: CrmTables, snapshots: pd.DataFrame, *, context: DealContext | None = None
) -> pd.DataFrame:
    """Features for each (deal_id, as_of) row of `snapshots`, in the same order.

    Only rows dated at or before each row's as_of are read; see the module docstring. A deal's
    own facts (its row, history, activities and attributes) come from `tables`; the records
    that span deals (wins by rep, account and product, usual quotes, revenue, firmographics)
    from `context`, by default built from `tables` too. The service passes the stored CRM's
    context with a CRM's records as `tables`: the same code scores a record and trains.
    """
    context = context or DealContext.of(tables)
    deals = tables.deals
    deal_index = pd.Index(deals["deal_id"].to_numpy())
    pairs = pd.DataFrame(
        {
            "row": np.arange(len(snapshots)),
            "deal": deal_index.get_indexer(snapshots["deal_id"].to_numpy()),
            "as_of": pd.DatetimeIndex(snapshots["as_of"]).as_unit("ns").to_numpy(),
        }
    )
    if (pairs["deal"] < 0).any():
        missing = snapshots["deal_id"][pairs["deal"].to_numpy() < 0].iloc[0]
        raise KeyError(f"snapshot deal_id {missing!r} is not in the deals table")
    pairs = pairs.sort_values("as_of", kind="stable").reset_index(drop=True)
    out = pd.DataFrame({"row": pairs["row"]})
    as_of = pairs["as_of"]
    own = _Own.of(deals, pairs)

    _add_state(out, pairs, _history_state(tables))
    out["deal_age_days"] = (
        as_of - deals["created_at"].to_numpy()[pairs["deal"]]
    ).dt.total_seconds() / 86400
    _add_activities(out, pairs, tables, deal_index)
    _add_account(out, pairs, own, context)
    _add_rep(out, pairs, own, context)
    _add_fixed(out, own, context)
    _add_size(out, pairs, tables, own, context)
    quarter = as_of.dt.to_period("Q")
    out["days_into_quarter"] = (as_of - quarter.dt.start_time).dt.days.to_numpy()
    out["days_left_in_quarter"] = (quarter.dt.end_time.dt.normalize() - as_of).dt.days.to_numpy()
    expected = out.pop("expected_close")
    out["expected_close_in_quarter"] = (
        (expected <= quarter.dt.end_time).astype(float).where(expected.notna())
    )
    attributes = [f.name for f in context.attributes]
    _add_attributes(out, pairs, tables, attributes)  # while `out` is in the order of `pairs`
    out = out.sort_values("row").reset_index(drop=True).drop(columns="row")
    for name in context.unavailable:
        out[name] = None if name in CATEGORICAL else np.nan
    features = out[[*FEATURE_NAMES, *attributes]]
    return pd.concat(
        [snapshots[list(KEY_COLUMNS)].reset_index(drop=True), features], axis=1
    ).set_index(snapshots.index)


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


def _history_state(tables: CrmTables) -> pd.DataFrame:
    """History rows with integer deal codes and running facts a snapshot can look up."""
    history = tables.deal_history
    deal_index = pd.Index(tables.deals["deal_id"].to_numpy())
    stage_order = {s: i for i, s in enumerate((*OPEN_STAGES, *CLOSED_STAGES))}
    frame = pd.DataFrame(
        {
            "deal": deal_index.get_indexer(history["deal_id"].to_numpy()),
            "changed_at": history["changed_at"].to_numpy(),
            "stage_code": history["stage"].map(stage_order).to_numpy(dtype=np.int64),
            "amount": history["amount"].to_numpy(dtype=float),
            "expected_close": history["expected_close"].to_numpy(),
            "has_next_step": history["next_step"].notna().to_numpy(dtype=float),
        }
    ).sort_values(["deal", "changed_at"], kind="stable", ignore_index=True)
    by_deal = frame.groupby("deal", sort=False)
    new_stage = by_deal["stage_code"].diff().fillna(1).ne(0)
    run = new_stage.cumsum()
    frame["stage_entered_at"] = frame["changed_at"].groupby(run).transform("min")
    previous_close = by_deal["expected_close"].shift()
    frame["close_pushes"] = (
        (frame["expected_close"] > previous_close).astype(int).groupby(frame["deal"]).cumsum()
    )
    previous_amount = by_deal["amount"].shift()
    changed = previous_amount.notna() & (frame["amount"] != previous_amount)
    frame["amount_changes"] = changed.astype(int).groupby(frame["deal"]).cumsum()
    frame["first_amount"] = by_deal["amount"].transform("first")
    return frame


def _add_state(out: pd.DataFrame, pairs: pd.DataFrame, state: pd.DataFrame) -> None:
    at = asof_join(pairs, state, "deal", "as_of", "changed_at")
    stage_names = np.array((*OPEN_STAGES, *CLOSED_STAGES), dtype=object)
    out["stage"] = stage_names[at["stage_code"].to_numpy()]
    out["days_in_stage"] = (at["as_of"] - at["stage_entered_at"]).dt.total_seconds() / 86400
    out["amount"] = at["amount"].to_numpy()
    first = at["first_amount"].to_numpy()
    out["amount_change_ratio"] = np.where(
        first > 0, at["amount"].to_numpy() / np.where(first > 0, first, 1), 1.0
    )
    out["amount_changes"] = at["amount_changes"].to_numpy(dtype=float)
    out["close_pushes"] = at["close_pushes"].to_numpy(dtype=float)
    out["expected_close"] = at["expected_close"].to_numpy()
    out["days_to_expected_close"] = (at["expected_close"] - at["as_of"]).dt.total_seconds() / 86400
    out["has_next_step"] = at["has_next_step"].to_numpy()


def _add_activities(
    out: pd.DataFrame, pairs: pd.DataFrame, tables: CrmTables, deal_index: pd.Index
) -> None:
    acts = tables.activities
    acts = acts[acts["deal_id"].notna()]
    frame = pd.DataFrame(
        {
            "deal": deal_index.get_indexer(acts["deal_id"].to_numpy()),
            "at": acts["at"].to_numpy(),
        }
    )
    kinds = acts["kind"].to_numpy()
    columns = {"n": np.ones(len(frame))} | {k: (kinds == k).astype(float) for k in COUNTED_KINDS}
    running = running_sums(frame, "deal", "at", columns)
    now = running_at(pairs, running, "deal", "at")
    for window in ACTIVITY_WINDOWS:
        before = running_at(pairs, running, "deal", "at", shift_days=window)
        out[f"activities_{window}d"] = (now["n"] - before["n"]).to_numpy()
        if window == 90:
            for kind in COUNTED_KINDS:
                out[f"{kind}s_90d"] = (now[kind] - before[kind]).to_numpy()
    # a deal never touched is as stale as it is old
    since_last = (pairs["as_of"] - now["at"]).dt.total_seconds() / 86400
    out["days_since_last_activity"] = since_last.fillna(out["deal_age_days"]).to_numpy()
    age_weeks = np.maximum(out["deal_age_days"].to_numpy() / 7, 1.0)
    out["activities_per_week"] = now["n"].to_numpy() / age_weeks


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
    products = pd.Series(product, dtype=object)
    keys = (
        products.astype(str).to_numpy()
        + "|"
        + pd.Series(industry, dtype=object).fillna("").astype(str).to_numpy()
    )
    return np.where(products.isna().to_numpy(), None, keys)


def _extended(index: pd.Index, values: np.ndarray) -> pd.Index:
    """`index` with the values it lacks appended: a deal's own rep or account counts as known
    (with no record yet), as it would had the deal been in the store the index was built from."""
    present = pd.Series(values, dtype=object).dropna()
    new = pd.unique(present[~present.isin(index)].to_numpy())
    return index.append(pd.Index(new)) if len(new) else index


@dataclass(frozen=True)
class _Record:
    """Wins and closes per key (a rep, a team, a product...) as running sums over time."""

    running: Running

    @classmethod
    def of(cls, closes: pd.DataFrame, event_codes: np.ndarray) -> _Record:
        values = {"won": closes["won"].to_numpy(), "n": np.ones(len(closes))}
        return cls(running_sums(closes.assign(key=event_codes), "key", "at", values))

    def trailing(
        self, pairs: pd.DataFrame, codes: np.ndarray, days: int | None = None
    ) -> pd.DataFrame:
        """Wins and closes per key in (as_of - days, as_of] (RECORD_DAYS by default), per
        snapshot; NaN for code -1."""
        # an unknown key (-1: a blank rep or product) is nobody's record, not one shared record
        left = pairs.assign(key=np.where(codes < 0, -2, codes))
        now = running_at(left, self.running, "key", "at")
        window = RECORD_DAYS if days is None else days
        then = running_at(left, self.running, "key", "at", shift_days=window)
        known = np.asarray(codes) >= 0
        counts = {
            c: np.where(known, now[c].to_numpy() - then[c].to_numpy(), np.nan) for c in ("won", "n")
        }
        return pd.DataFrame(counts, index=now.index)


@dataclass(frozen=True)
class DealContext:
    """The records that span deals, ready for as-of lookups: wins and closes by account, rep,
    team, rep from each stage, product and product-in-industry; first quotes by product and
    segment; revenue by account; firmographics, hire dates and product families; and which
    features the stored CRM cannot give. Built once per store (`DealContext.of`)."""

    accounts: pd.DataFrame  # indexed by account_id
    account_index: pd.Index
    account_closes: Running  # won and lost per account code
    account_revenue: Running  # revenue per account code, a month known once ended
    rep_index: pd.Index
    team_of: np.ndarray  # per rep code ("" when the rep has no team)
    team_index: pd.Index
    hired: pd.Series  # by rep_id
    rep: _Record
    team: _Record
    rep_from_stage: tuple[_Record, ...]  # per open stage: closes of deals that reached it
    team_from_stage: tuple[_Record, ...]
    fit_index: pd.Index
    fit: _Record
    product_index: pd.Index
    product: _Record
    product_family: pd.Series  # by product_id
    quote_index: pd.Index
    quotes: Running  # log first quotes per (product, segment) code
    quoted: pd.Index  # deals whose first quote the quotes hold
    unavailable: dict[str, str]
    attributes: tuple[Feature, ...]

    @classmethod
    def of(cls, tables: CrmTables) -> DealContext:
        deals, reps, accounts = tables.deals, tables.reps, tables.accounts
        closes = _close_events(tables)

        known = pd.concat([accounts["account_id"], deals["account_id"]]).dropna()
        account_index = pd.Index(pd.unique(known.to_numpy()))
        close_account = account_index.get_indexer(closes["account_id"].to_numpy())
        revenue = tables.revenue
        month_ended = revenue["period"] + pd.offsets.MonthBegin(1)

        # reps may be absent from an export: the deals still say who owns them (one team then)
        known = pd.concat([reps["rep_id"], deals["rep_id"]]).dropna()
        rep_index = pd.Index(pd.unique(known.to_numpy()))
        team_of = reps.set_index("rep_id")["team"].reindex(rep_index).fillna("").to_numpy(object)
        team_index = pd.Index(pd.unique(team_of))
        close_rep = rep_index.get_indexer(closes["rep_id"].to_numpy())
        close_team = team_index.get_indexer(_take(team_of, close_rep))

        fit_index = pd.Index(pd.unique(closes["fit"].dropna()))
        product_index = pd.Index(deals["product_id"].dropna().unique())
        close_product = np.array(
            [None if key is None else key.split("|")[0] for key in closes["fit"]], dtype=object
        )
        reached = [closes["furthest"].to_numpy() >= code for code in range(len(OPEN_STAGES))]
        quote_index, quotes, quoted = _first_quotes(tables)
        return cls(
            accounts=accounts.set_index("account_id"),
            account_index=account_index,
            account_closes=running_sums(
                closes.assign(account=close_account),
                "account",
                "at",
                {"won": closes["won"].to_numpy(), "lost": closes["lost"].to_numpy()},
            ),
            account_revenue=running_sums(
                pd.DataFrame(
                    {
                        "account": account_index.get_indexer(revenue["account_id"].to_numpy()),
                        "at": month_ended.to_numpy(),
                    }
                ),
                "account",
                "at",
                {"amount": revenue["amount"].to_numpy(dtype=float)},
            ),
            rep_index=rep_index,
            team_of=team_of,
            team_index=team_index,
            hired=reps.set_index("rep_id")["hired_at"],
            rep=_Record.of(closes, close_rep),
            team=_Record.of(closes, close_team),
            rep_from_stage=tuple(_Record.of(closes[r], close_rep[r]) for r in reached),
            team_from_stage=tuple(_Record.of(closes[r], close_team[r]) for r in reached),
            fit_index=fit_index,
            fit=_Record.of(closes, fit_index.get_indexer(closes["fit"])),
            product_index=product_index,
            product=_Record.of(closes, product_index.get_indexer(close_product)),
            product_family=tables.products.set_index("product_id")["family"],
            quote_index=quote_index,
            quotes=quotes,
            quoted=quoted,
            unavailable=unavailable_features(tables),
            attributes=attribute_features(tables),
        )


@dataclass(frozen=True)
class _Own:
    """Each snapshot's deal: its id, account, rep and product (from the deals being scored)."""

    deal_id: np.ndarray
    account: np.ndarray
    rep: np.ndarray
    product: np.ndarray

    @classmethod
    def of(cls, deals: pd.DataFrame, pairs: pd.DataFrame) -> _Own:
        at = pairs["deal"].to_numpy()
        return cls(
            deal_id=deals["deal_id"].to_numpy()[at],
            account=deals["account_id"].to_numpy()[at],
            rep=deals["rep_id"].to_numpy()[at],
            product=deals["product_id"].to_numpy()[at],
        )


def _add_account(out: pd.DataFrame, pairs: pd.DataFrame, own: _Own, context: DealContext) -> None:
    account_index = _extended(context.account_index, own.account)
    left = pairs.assign(account=account_index.get_indexer(own.account))
    at = running_at(left, context.account_closes, "account", "at")
    no_account = pd.isna(own.account)
    out["account_prior_wins"] = np.where(no_account, np.nan, at["won"].to_numpy())
    out["account_prior_losses"] = np.where(no_account, np.nan, at["lost"].to_numpy())
    created = context.accounts["created_at"].reindex(own.account).to_numpy("datetime64[ns]")
    tenure = (pairs["as_of"].to_numpy() - created) / np.timedelta64(1, "D")
    out["account_tenure_days"] = np.where(no_account, np.nan, tenure)
    now = running_at(left, context.account_revenue, "account", "at")
    year_ago = running_at(left, context.account_revenue, "account", "at", shift_days=TRAILING_DAYS)
    out["account_revenue_365d"] = np.where(
        no_account, np.nan, (now["amount"] - year_ago["amount"]).to_numpy()
    )


def _add_rep(out: pd.DataFrame, pairs: pd.DataFrame, own: _Own, context: DealContext) -> None:
    rep_index = _extended(context.rep_index, own.rep)
    team_of = np.concatenate(
        [context.team_of, np.full(len(rep_index) - len(context.rep_index), "", dtype=object)]
    )
    deal_rep = rep_index.get_indexer(own.rep)
    rep_team = _take(team_of, deal_rep)
    deal_team = _extended(context.team_index, rep_team).get_indexer(rep_team)
    rep_counts = context.rep.trailing(pairs, deal_rep)
    team_counts = context.team.trailing(pairs, deal_team)
    team_rate = (team_counts["won"] + 1) / (team_counts["n"] + 3)  # a weak prior when a team is new
    shrunk = (rep_counts["won"] + SHRINK_DEALS * team_rate) / (rep_counts["n"] + SHRINK_DEALS)
    out["rep_win_rate"] = shrunk.to_numpy()
    last_year = context.rep.trailing(pairs, deal_rep, days=TRAILING_DAYS)
    out["rep_closed_deals_365d"] = last_year["n"].to_numpy()
    hired = context.hired.reindex(own.rep).to_numpy("datetime64[ns]")
    out["rep_tenure_days"] = (pairs["as_of"].to_numpy() - hired) / np.timedelta64(1, "D")

    # the rep's record from the deal's current stage on: of closed deals that reached it, the
    # share won (shrunk toward the team's), so a rep weak at one stage shows at that stage
    stage = pd.Series(out["stage"].to_numpy()).map(STAGE_PROGRESS).to_numpy()
    from_stage = np.full(len(pairs), np.nan)
    for code in range(len(OPEN_STAGES)):
        here = stage == code
        if not here.any():
            continue
        mine = context.rep_from_stage[code].trailing(pairs[here], deal_rep[here])
        team = context.team_from_stage[code].trailing(pairs[here], deal_team[here])
        prior = (team["won"] + 1) / (team["n"] + 2)
        from_stage[here] = (mine["won"] + SHRINK_DEALS * prior) / (mine["n"] + SHRINK_DEALS)
    out["rep_stage_win_rate"] = from_stage

    # how this product has been selling into this industry lately, shrunk toward the product
    industry = context.accounts["industry"].reindex(own.account).to_numpy()
    fit = context.fit.trailing(
        pairs, context.fit_index.get_indexer(_fit_key(own.product, industry))
    )
    product_index = _extended(context.product_index, own.product)
    by_product = context.product.trailing(pairs, product_index.get_indexer(own.product))
    prior = (by_product["won"] + 1) / (by_product["n"] + 3)
    out["fit_win_rate"] = (
        (fit["won"] + SHRINK_DEALS * prior) / (fit["n"] + SHRINK_DEALS)
    ).to_numpy()


def _first_quote(tables: CrmTables) -> pd.DataFrame:
    """Each deal's first positive amount in its history, with when it was recorded."""
    history = tables.deal_history
    first = history.sort_values(["deal_id", "changed_at"], kind="stable")
    first = first[first["amount"].notna() & (first["amount"] > 0)]
    return first.drop_duplicates("deal_id")


def _size_key(product: np.ndarray, account: np.ndarray, accounts: pd.DataFrame) -> np.ndarray:
    return _fit_key(product, accounts["segment"].reindex(account).to_numpy())


def _first_quotes(tables: CrmTables) -> tuple[pd.Index, Running, pd.Index]:
    """First quotes as running sums of their logs per (product, segment): the keys, the sums,
    and the deals they hold."""
    first = _first_quote(tables)
    deals = tables.deals.set_index("deal_id")
    ids = first["deal_id"].to_numpy()
    keys = _size_key(
        deals["product_id"].reindex(ids).to_numpy(),
        deals["account_id"].reindex(ids).to_numpy(),
        tables.accounts.set_index("account_id"),
    )
    key_index = pd.Index(pd.unique(pd.Series(keys, dtype=object).dropna()))
    events = pd.DataFrame(
        {"key": key_index.get_indexer(keys), "at": first["changed_at"].to_numpy()}
    )
    values = {
        "log_amount": np.log(first["amount"].to_numpy(dtype=float)),
        "n": np.ones(len(first)),
    }
    return key_index, running_sums(events, "key", "at", values), pd.Index(ids)


def _add_size(
    out: pd.DataFrame, pairs: pd.DataFrame, tables: CrmTables, own: _Own, context: DealContext
) -> None:
    """How big the first quote is against the usual first quote of the product in the segment.

    The usual one is the geometric mean over deals of the same product and segment first
    quoted in (as_of - TRAILING_DAYS, as_of]; a ratio (1 = usual), NaN without a first amount.
    """
    keys = _size_key(own.product, own.account, context.accounts)
    key_index = _extended(context.quote_index, keys)
    left = pairs.assign(key=key_index.get_indexer(keys))
    now = running_at(left, context.quotes, "key", "at")
    then = running_at(left, context.quotes, "key", "at", shift_days=TRAILING_DAYS)
    n = (now["n"] - then["n"]).to_numpy()
    total = (now["log_amount"] - then["log_amount"]).to_numpy()
    first = _first_quote(tables).set_index("deal_id")
    own_log = np.log(first["amount"].reindex(own.deal_id).to_numpy(dtype=float))
    # the deal's own first quote counts only once it was recorded
    recorded = first["changed_at"].reindex(own.deal_id).to_numpy()
    as_of = pairs["as_of"].to_numpy()
    own_log = np.where(recorded <= as_of, own_log, np.nan)
    # a deal the context has not seen (a CRM's new record) adds its own quote to the usual one,
    # as it would once imported
    unseen = (
        ~pd.Index(own.deal_id).isin(context.quoted)
        & ~np.isnan(own_log)
        & (recorded > as_of - np.timedelta64(TRAILING_DAYS, "D"))
    )
    n, total = n + unseen, total + np.where(unseen, own_log, 0.0)
    typical = np.where(n > 0, total / np.where(n > 0, n, 1), np.nan)
    out["amount_vs_typical"] = np.exp(
        np.where(left["key"].to_numpy() >= 0, own_log - typical, np.nan)
    )


def _add_attributes(
    out: pd.DataFrame, pairs: pd.DataFrame, tables: CrmTables, names: Sequence[str]
) -> None:
    """Each attribute known at creation, as text: a fixed fact from the deal's creation on."""
    if not names:
        return
    attributes = tables.deal_attributes
    created = attributes[attributes["known_at"] == "created"]
    table = created.pivot(index="deal_id", columns="name", values="value")
    deal_ids = tables.deals["deal_id"].to_numpy()[pairs["deal"]]
    for name in names:
        column = name.removeprefix(ATTRIBUTE_PREFIX)
        if column not in table.columns:
            out[name] = None
            continue
        values = table[column].reindex(deal_ids)
        out[name] = values.astype(object).where(values.notna(), None).to_numpy()


def _add_fixed(out: pd.DataFrame, own: _Own, context: DealContext) -> None:
    """Facts that do not change over a deal's life: product and the account's firmographics."""
    out["product_id"] = own.product
    out["product_family"] = context.product_family.reindex(own.product).to_numpy()
    for column in ("industry", "region", "segment"):
        out[column] = context.accounts[column].reindex(own.account).to_numpy()
