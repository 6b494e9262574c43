"""The world's revenue, signals and targets tables (targets from the bookings reps can expect)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.data.world.columns import date_column, id_column, string_column, timestamp_column
from forecast.data.world.parameters import PRODUCTS, RENEWAL_RATE_FOR_QUOTAS


def revenue_table(cal, deals, subs, account_ids, product_ids, horizon) -> pd.DataFrame:
    n_months = int(cal.month_of(np.array([horizon]))[0])
    rec = subs["revenue"]
    ended = rec["month"] < n_months
    contract_end_days = cal.month_starts[rec["contract_end"][ended]] - 1
    recurring = pd.DataFrame(
        {
            "account_id": account_ids.take(rec["account"][ended]).reset_index(drop=True),
            "product_id": string_column(product_ids[rec["product"][ended]]),
            "period": date_column(cal.origin, cal.month_starts[rec["month"][ended]]),
            "kind": "recurring",
            "amount": rec["amount"][ended],
            "contract_end": date_column(cal.origin, contract_end_days),
        }
    )
    one_time_product = np.array([p[4] == "one_time" for p in PRODUCTS])
    month = cal.month_of(deals["closed"])
    sold = deals["won"] & one_time_product[deals["product"]] & (month < n_months)
    idx = np.flatnonzero(sold)
    final_amount = deals["amount0"] * deals["scope_change"] * (1 - np.nan_to_num(deals["discount"]))
    one_time = pd.DataFrame(
        {
            "account_id": account_ids.take(deals["account"][idx]).reset_index(drop=True),
            "product_id": string_column(product_ids[deals["product"][idx]]),
            "period": date_column(cal.origin, cal.month_starts[month[idx]]),
            "kind": "one_time",
            "amount": np.round(final_amount[idx], -2).clip(min=500),
        }
    )
    one_time = one_time.groupby(
        ["account_id", "product_id", "period", "kind"], as_index=False, sort=False
    )["amount"].sum()
    return pd.concat([recurring, one_time], ignore_index=True)


def signals_table(origin, horizon, subs, account_ids, prefix: str = "S") -> pd.DataFrame:
    sig = subs["signals"]
    keep = sig["t"] <= horizon
    order = np.argsort(sig["t"][keep], kind="stable")
    frame = pd.DataFrame(
        {
            "account_id": account_ids.take(sig["account"][keep][order]).reset_index(drop=True),
            "at": timestamp_column(origin, sig["t"][keep][order]),
            "kind": string_column(sig["kind"][keep][order]),
            "value": sig["value"][keep][order],
        }
    )
    frame.insert(0, "signal_id", id_column(prefix, np.arange(1, len(frame) + 1), 8))
    return frame


def targets_table(cal, org, deals, *, reps, rep_ids, horizon, subs, account_frame) -> pd.DataFrame:
    """Quotas per rep and quarter, rolled up to teams, regions and the company.

    A rep's quota is what a ramped rep books in new business on average (scaled by ramp and
    time worked) plus the renewals falling due on the rep's accounts at the usual renewal rate.
    """
    quarter_starts = cal.quarter_starts
    current = int(np.searchsorted(quarter_starts, horizon, side="right"))
    quarters = np.arange(0, current + 1)  # through the quarter after the as-of
    won = deals["won"] & (deals["closed"] <= horizon)
    booked = deals["amount0"] * deals["scope_change"] * (1 - np.nan_to_num(deals["discount"]))
    per_rep_quarter = booked[won].sum() / max(
        1.0, _rep_quarters_worked(org, quarter_starts, horizon)
    )
    q_start = quarter_starts[quarters]
    q_end = quarter_starts[quarters + 1]
    hired = org["hired"][:, None]
    share_worked = (
        (q_end[None, :] - np.maximum(hired, q_start[None, :])) / (q_end - q_start)
    ).clip(0, 1)
    ramp = 1 - 0.7 * np.exp(-np.maximum(q_start[None, :] - hired, 0) / 90)
    quota = 1.05 * per_rep_quarter * share_worked * ramp + _renewals_due(
        cal, subs, account_frame, rep_ids, quarters
    )
    quota = np.round(quota, -3)
    labels = pd.Series(date_column(cal.origin, q_start)).dt.to_period("Q").astype(str).to_numpy()
    rep_rows = pd.DataFrame(
        {
            "level": "rep",
            "owner": np.repeat(rep_ids.to_numpy(), len(quarters)),
            "period": np.tile(labels, org["n_reps"]),
            "amount": quota.ravel(),
        }
    )
    rep_rows = rep_rows[rep_rows["amount"] > 0]
    info = (
        reps.set_index("rep_id").loc[rep_rows["owner"], ["team", "region"]].reset_index(drop=True)
    )
    rep_rows = rep_rows.reset_index(drop=True)
    rolled = [rep_rows]
    for level, key in (("team", info["team"]), ("region", info["region"]), ("company", None)):
        owner = key if key is not None else pd.Series("company", index=rep_rows.index)
        rolled.append(
            rep_rows.groupby([owner.rename("owner"), rep_rows["period"]], sort=True)["amount"]
            .sum()
            .reset_index()
            .assign(level=level)
        )
    return pd.concat(rolled, ignore_index=True)[["level", "owner", "period", "amount"]]


def _renewals_due(cal, subs, account_frame, rep_ids, quarters) -> np.ndarray:
    """Expected renewal bookings per rep (rows) and quarter (columns)."""
    ren = subs["renewals"]
    month_start = cal.month_starts[ren["month"]]
    quarter = np.searchsorted(cal.quarter_starts, month_start, side="right") - 1
    owner = account_frame["owner_rep_id"].to_numpy()[ren["account"]]
    rep = pd.Index(rep_ids.to_numpy()).get_indexer(owner)
    keep = (rep >= 0) & np.isin(quarter, quarters)
    due = np.zeros((len(rep_ids), len(quarters)))
    column = np.searchsorted(quarters, quarter[keep])
    np.add.at(due, (rep[keep], column), ren["value"][keep] * RENEWAL_RATE_FOR_QUOTAS)
    return due


def _rep_quarters_worked(org: dict, quarter_starts: np.ndarray, horizon: float) -> float:
    """Rep-quarters of ramped capacity between the origin and the as-of."""
    grid = np.arange(0, horizon, 7.0)
    tenure = grid[None, :] - org["hired"][:, None]
    capacity = np.where(tenure >= 0, 1 - 0.7 * np.exp(-tenure.clip(min=0) / 90), 0.0)
    return capacity.sum() * 7.0 / 91.3
