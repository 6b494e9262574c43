"""What a CRM holds, in figures: counts, date ranges, win rates, stage conversion, revenue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.data.contract import OPEN_STAGES, REVENUE_KINDS, STAGES
from forecast.data.tables import CrmTables


@dataclass(frozen=True)
class Description:
    """A summary of one CRM, ready to print or to serialise."""

    as_of: pd.Timestamp
    rows: dict[str, int]
    date_ranges: dict[str, tuple[pd.Timestamp | None, pd.Timestamp | None]]
    deals_by_outcome: dict[str, int]
    win_rate: float
    stage_conversion: pd.DataFrame
    win_rate_by_segment: pd.Series
    revenue_by_quarter: pd.DataFrame
    orders: dict[str, float]  # order_summary: empty when the export has no orders

    def to_dict(self) -> dict:
        return {
            "as_of": self.as_of.isoformat(),
            "rows": self.rows,
            "date_ranges": {
                k: [None if v is None else v.isoformat() for v in pair]
                for k, pair in self.date_ranges.items()
            },
            "deals_by_outcome": self.deals_by_outcome,
            "win_rate": self.win_rate,
            "stage_conversion": self.stage_conversion.to_dict(orient="records"),
            "win_rate_by_segment": self.win_rate_by_segment.to_dict(),
            "revenue_by_quarter": self.revenue_by_quarter.reset_index().to_dict(orient="records"),
            "orders": self.orders,
        }


TIME_COLUMNS = {
    "deals": "created_at",
    "deal_history": "changed_at",
    "activities": "at",
    "revenue": "period",
    "signals": "at",
    "orders": "at",
}


def describe(tables: CrmTables) -> Description:
    """Summarise `tables`: what a person checks first after an import."""
    deals = tables.deals
    closed = deals[deals["outcome"] != "open"]
    ranges = {}
    for name, column in TIME_COLUMNS.items():
        values = tables[name][column]
        ranges[name] = (
            (values.min(), values.max()) if len(values) and values.notna().any() else (None, None)
        )
    return Description(
        as_of=tables.as_of,
        rows={name: len(frame) for name, frame in tables.items()},
        date_ranges=ranges,
        deals_by_outcome={str(k): int(v) for k, v in deals["outcome"].value_counts().items()},
        win_rate=float((closed["outcome"] == "won").mean()) if len(closed) else float("nan"),
        stage_conversion=stage_conversion(tables),
        win_rate_by_segment=win_rate_by_segment(tables),
        revenue_by_quarter=revenue_by_quarter(tables),
        orders=order_summary(tables.orders),
    )


def order_summary(orders: pd.DataFrame) -> dict[str, float]:
    """Lines, orders, customers, lines without a customer, and returns as a share of sales;
    empty for an export without orders."""
    if not len(orders):
        return {}
    amount = orders["amount"]
    sales = float(amount[amount > 0].sum())
    return {
        "lines": len(orders),
        "orders": int(orders["order_id"].nunique()),
        "customers": int(orders["account_id"].nunique()),
        "lines_without_customer": int(orders["account_id"].isna().sum()),
        "returned_share": float(-amount[amount < 0].sum() / sales) if sales > 0 else float("nan"),
    }


def furthest_stage(tables: CrmTables) -> pd.Series:
    """Index (in OPEN_STAGES) of the furthest open stage each deal reached; 4 means won."""
    history = tables.deal_history
    codes = pd.Categorical(history["stage"].astype(str), categories=STAGES).codes
    # closed_lost does not count as progress; closed_won counts as the step past negotiation
    progress = np.where(codes == STAGES.index("closed_lost"), -1, codes)
    return pd.Series(progress, index=history.index).groupby(history["deal_id"]).max()


def stage_conversion(tables: CrmTables, deal_ids: pd.Index | None = None) -> pd.DataFrame:
    """Share of closed deals reaching each open stage that moved on to the next one."""
    deals = tables.deals
    closed = deals.loc[deals["outcome"] != "open", "deal_id"]
    if deal_ids is not None:
        closed = closed[closed.isin(deal_ids)]
    reached = furthest_stage(tables).reindex(closed.to_numpy())
    rows = []
    for i, stage in enumerate(OPEN_STAGES):
        entered = int((reached >= i).sum())
        moved = int((reached >= i + 1).sum())
        nxt = OPEN_STAGES[i + 1] if i + 1 < len(OPEN_STAGES) else "closed_won"
        rows.append(
            {
                "from": stage,
                "to": nxt,
                "deals": entered,
                "converted": moved,
                "rate": moved / entered if entered else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def win_rate_by_segment(tables: CrmTables) -> pd.Series:
    deals = tables.deals
    closed = deals[deals["outcome"] != "open"]
    segment = (
        closed["account_id"]
        .map(tables.accounts.set_index("account_id")["segment"])
        .fillna("unknown")
    )
    return (closed["outcome"] == "won").groupby(segment.to_numpy()).mean().rename("win_rate")


def revenue_by_quarter(tables: CrmTables) -> pd.DataFrame:
    """Closed-won bookings by close quarter, billed revenue by kind and billing quarter, and
    order lines net of returns (`orders`) by order quarter.

    One column per revenue kind, always: an export without a revenue table (most have none)
    shows zeros there, not a missing column. `orders` is shown only for an export with orders.
    """
    deals = tables.deals
    won = deals[(deals["outcome"] == "won") & deals["closed_at"].notna()]
    bookings = won.groupby(won["closed_at"].dt.to_period("Q"))["amount"].sum(min_count=0)
    revenue = tables.revenue
    quarter = revenue["period"].dt.to_period("Q")
    billed = {
        kind: revenue[revenue["kind"] == kind].groupby(quarter)["amount"].sum()
        for kind in REVENUE_KINDS
    }
    orders = tables.orders
    if len(orders):
        billed["orders"] = orders.groupby(orders["at"].dt.to_period("Q"))["amount"].sum()
    frame = pd.DataFrame({"won_bookings": bookings, **billed}).fillna(0.0)
    frame.index = frame.index.astype(str)
    frame.index.name = "quarter"
    return frame.sort_index()
