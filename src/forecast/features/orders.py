"""Point-in-time customer features and inactivity churn labels from the `orders` table.

For a business that sells by the order, not by subscription, a customer churns when they stop
buying: the label of a snapshot (account_id, as_of) is 1 when the customer places no purchase
in (as_of, as_of + horizon], 0 when they do, NaN when the export does not reach as_of + horizon
(a customer quiet at the end of the data is censored, not churned).

- A purchase is an order whose lines sum to more than zero; an order that sums to zero or less
  (a cancellation, a return) is not one. Its time is the order's first line.
- Returns and cancellations are lines with a negative amount, on their own date: a return dated
  after an as-of changes nothing known at that as-of, and spend is net of the returns known.
- Snapshots: customers with a purchase in the `ACTIVE_DAYS` before as_of; one long gone is not
  a customer at risk but one already lost.
- The horizon, unless set, comes from the data's gaps between a customer's purchases
  (`inactivity_horizon`).

Features read only lines with `at <= as_of` (the contract's known-at), whatever the as-of.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables, Featurize
from forecast.features.deal_schema import Feature

ACTIVE_DAYS = 365  # a customer with no purchase in this long before as_of is not scored
HORIZON_QUANTILE = 0.8  # the horizon covers this share of the gaps between purchases
HORIZON_STEP = 30  # ... rounded up to whole months of 30 days
HORIZON_BOUNDS = (30, 365)
WINDOWS = (90, 365)

INACTIVITY_FEATURES: tuple[Feature, ...] = (
    Feature("days_since_last_purchase"),
    Feature("days_since_first_purchase"),
    Feature("purchases"),
    Feature("purchases_90d"),
    Feature("purchases_365d"),
    Feature("purchases_change_90d"),
    Feature("spend_90d"),
    Feature("spend_365d"),
    Feature("mean_purchase_value"),
    Feature("mean_days_between_purchases"),
    Feature("recency_over_gap"),
    Feature("returns_share_365d"),
    Feature("products_365d"),
    # the customer's own attributes where the export has them (an accounts table, or one mapped
    # from the order lines with `one_row_per`); empty otherwise
    *(Feature(name, "categorical") for name in ("segment", "industry", "region")),
)
INACTIVITY_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in INACTIVITY_FEATURES)


def purchases(tables: CrmTables, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """One row per purchase: account_id, order_id, at (the order's first line), amount (net).

    Orders without a customer, and orders that sum to zero or less, are not purchases. With
    `as_of`, from the lines known then only: an order whose lines span the as-of (a line
    cancelled a day later under the same id) is what its known lines make it.
    """
    lines = tables.orders[tables.orders["account_id"].notna()]
    if as_of is not None:
        lines = lines[lines["at"] <= as_of]
    orders = lines.groupby(
        ["account_id", "order_id"], as_index=False, observed=True, sort=False
    ).agg(at=("at", "min"), amount=("amount", "sum"))
    bought = orders[orders["amount"] > 0]
    return bought.sort_values(["account_id", "at"], ignore_index=True)


def inactivity_horizon(tables: CrmTables) -> int:
    """Days without a purchase that count as churn: HORIZON_QUANTILE of the gaps between a
    customer's consecutive purchases, rounded up to HORIZON_STEP, within HORIZON_BOUNDS.

    Raises:
        ValueError: no customer bought twice, so there is no gap to learn from.
    """
    return horizon_of_gaps(purchase_gaps(tables))


def purchase_gaps(tables: CrmTables) -> np.ndarray:
    """Whole days between each customer's consecutive purchases on different days."""
    bought = purchases(tables)
    days = bought["at"].dt.normalize()
    gaps = (days - days.groupby(bought["account_id"]).shift(1)).dt.days
    return gaps[gaps > 0].to_numpy(dtype=np.int64)


def horizon_of_gaps(gaps: np.ndarray) -> int:
    """`inactivity_horizon` from the gaps (`purchase_gaps`, of one export or all its parts)."""
    if not len(gaps):
        raise ValueError("no customer bought on two different days: no gap to set a horizon by")
    quantile = float(np.quantile(gaps, HORIZON_QUANTILE))  # linear, as pandas
    step = np.ceil(quantile / HORIZON_STEP) * HORIZON_STEP
    return int(np.clip(step, *HORIZON_BOUNDS))


def customer_snapshots(tables: CrmTables, as_of_dates: Sequence[pd.Timestamp]) -> pd.DataFrame:
    """(account_id, as_of) for customers with a purchase in the ACTIVE_DAYS up to as_of."""
    frames = []
    for as_of in pd.DatetimeIndex(sorted(set(pd.DatetimeIndex(as_of_dates)))).as_unit("ns"):
        bought = purchases(tables, as_of)
        recent = bought["at"] >= as_of - pd.Timedelta(days=ACTIVE_DAYS)
        active = bought.loc[recent, "account_id"].unique()
        frames.append(
            pd.DataFrame({"account_id": np.asarray(active, dtype=object), "as_of": as_of})
        )
    if not frames:
        return pd.DataFrame({"account_id": [], "as_of": pd.Series([], dtype="datetime64[ns]")})
    out = pd.concat(frames, ignore_index=True)
    return out.astype({"account_id": tables.orders["account_id"].dtype})


def inactivity_labels(
    tables: CrmTables, snapshots: pd.DataFrame, *, horizon_days: int
) -> pd.Series:
    """1 if the customer makes no purchase in (as_of, as_of + horizon], 0 if they do, NaN when
    the export ends before as_of + horizon."""
    bought = purchases(tables)[["account_id", "at"]].rename(columns={"at": "next_at"})
    keys = snapshots[["account_id", "as_of"]].assign(
        account_id=snapshots["account_id"].astype(bought["account_id"].dtype),
        row=np.arange(len(snapshots)),
    )
    merged = pd.merge_asof(
        keys.sort_values("as_of"),
        bought.sort_values("next_at"),
        left_on="as_of",
        right_on="next_at",
        by="account_id",
        direction="forward",
        allow_exact_matches=False,
    ).sort_values("row")
    horizon = pd.Timedelta(days=horizon_days)
    churned = ~(merged["next_at"] <= merged["as_of"] + horizon).to_numpy()
    knowable = (merged["as_of"] + horizon <= tables.as_of).to_numpy()
    label = np.where(knowable, churned.astype(float), np.nan)
    return pd.Series(label, index=snapshots.index, name="churned")


def inactivity_features(tables: CrmTables, snapshots: pd.DataFrame) -> pd.DataFrame:
    """Features for each (account_id, as_of) row of `snapshots`, in the same order."""
    lines = tables.orders[tables.orders["account_id"].notna()]
    parts = []
    for as_of, rows in snapshots.groupby("as_of", sort=False).groups.items():
        stamp = pd.Timestamp(as_of)
        known = _at_as_of(purchases(tables, stamp), lines, stamp)
        ids = snapshots.loc[rows, "account_id"]
        parts.append(known.reindex(ids.to_numpy()).set_axis(rows))
    frame = (
        pd.concat(parts).reindex(snapshots.index)
        if parts
        else pd.DataFrame(columns=list(INACTIVITY_FEATURE_NAMES), index=snapshots.index)
    )
    keys = snapshots[["account_id", "as_of"]]
    numeric = [f.name for f in INACTIVITY_FEATURES if f.kind == "numeric"]
    return pd.concat(
        [keys, frame[numeric].astype(float), _attributes_known(tables, snapshots)], axis=1
    )[[*keys.columns, *INACTIVITY_FEATURE_NAMES]]


def inactivity_training_frame(
    tables: CrmTables,
    as_of_dates: Sequence[pd.Timestamp],
    *,
    horizon_days: int,
    features: Featurize | None = None,
) -> pd.DataFrame:
    """Labelled customer snapshots: their features and the `churned` label. `features`: how the
    features are computed (default `inactivity_features`; on a cluster, `account_features_on`)."""
    snapshots = customer_snapshots(tables, as_of_dates)
    frame = (features or inactivity_features)(tables, snapshots)
    frame["churned"] = inactivity_labels(tables, snapshots, horizon_days=horizon_days).to_numpy()
    return frame[frame["churned"].notna()].reset_index(drop=True)


# --- building blocks -------------------------------------------------------------------------


def _attributes_known(tables: CrmTables, snapshots: pd.DataFrame) -> pd.DataFrame:
    """Each snapshot's customer attributes (INACTIVITY_FEATURES' categorical ones) from the
    accounts table, where the account was created by the snapshot's as_of (empty otherwise)."""
    names = [f.name for f in INACTIVITY_FEATURES if f.kind == "categorical"]
    accounts = tables.accounts.drop_duplicates("account_id").set_index("account_id")
    ids = snapshots["account_id"].astype(object).to_numpy()
    rows = accounts.reindex(pd.Index(ids, dtype=object).astype(accounts.index.dtype))
    known = (rows["created_at"].to_numpy() <= snapshots["as_of"].to_numpy()) & rows[
        "created_at"
    ].notna().to_numpy()
    # None, not pd.NA, for what is not known: scikit-learn's imputers cannot test pd.NA
    values = np.where(known[:, None], rows[names].to_numpy(dtype=object, na_value=None), None)
    return pd.DataFrame(values, columns=names, index=snapshots.index)


def _at_as_of(known: pd.DataFrame, lines: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Every customer's features from the purchases (`known`: as `purchases` makes them at
    `as_of`) and the lines known at `as_of`, by account."""
    days_ago = (as_of - known["at"]).dt.total_seconds().to_numpy() / 86400
    by = known["account_id"].to_numpy()
    recent = {w: days_ago <= w for w in WINDOWS}
    previous = (days_ago > 90) & (days_ago <= 180)
    frame = pd.DataFrame(
        {
            "account_id": by,
            "days_ago": days_ago,
            "day": known["at"].dt.normalize().to_numpy(),
            **{f"in_{w}": recent[w].astype(float) for w in WINDOWS},
            "in_previous_90": previous.astype(float),
        }
    )
    g = frame.groupby("account_id", sort=False)
    out = pd.DataFrame(
        {
            "days_since_last_purchase": g["days_ago"].min(),
            "days_since_first_purchase": g["days_ago"].max(),
            "purchases": g.size().astype(float),
            "purchases_90d": g["in_90"].sum(),
            "purchases_365d": g["in_365"].sum(),
        }
    )
    out["purchases_change_90d"] = out["purchases_90d"] - g["in_previous_90"].sum()
    # two invoices on one day are one visit: counted as two, they make a gap of 0 days
    days = g["day"].nunique()
    span = out["days_since_first_purchase"] - out["days_since_last_purchase"]
    gap = (span / (days - 1)).where(days > 1)
    out["mean_days_between_purchases"] = gap
    # two purchases hours apart make a gap near zero: a ratio over it says nothing
    out["recency_over_gap"] = out["days_since_last_purchase"] / gap.where(gap >= 1)
    seen = lines[lines["at"] <= as_of]
    line_days = (as_of - seen["at"]).dt.total_seconds().to_numpy() / 86400
    amount = seen["amount"].to_numpy(dtype=float)
    window = pd.DataFrame({"account_id": seen["account_id"].to_numpy(), "amount": amount})
    for w in WINDOWS:
        inside = window[line_days <= w]
        out[f"spend_{w}d"] = inside.groupby("account_id")["amount"].sum().reindex(out.index)
    year = window[line_days <= 365].assign(
        gross=lambda f: f["amount"].clip(lower=0), returned=lambda f: (-f["amount"]).clip(lower=0)
    )
    sums = year.groupby("account_id")[["gross", "returned"]].sum().reindex(out.index)
    out["returns_share_365d"] = sums["returned"] / sums["gross"].where(sums["gross"] > 0)
    products = seen.loc[line_days <= 365].groupby("account_id")["product_id"].nunique()
    out["products_365d"] = products.reindex(out.index)
    out[["spend_90d", "spend_365d"]] = out[["spend_90d", "spend_365d"]].fillna(0.0)
    # net of every return known: an order returned in full was no purchase of value
    net = window.groupby("account_id")["amount"].sum().reindex(out.index)
    out["mean_purchase_value"] = (net / out["purchases"]).clip(lower=0.0)
    return out
