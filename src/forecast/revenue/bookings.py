"""Bookings: what the quarterly revenue forecast predicts, computed from the canonical tables.

The bookings of a quarter are

- **won deals**: the amount of every deal won (a `closed_won` row in `deal_history`) with its
  close inside the quarter. The amount is the one on the close row (for subscriptions, the annual
  contract value); the deal belongs to its rep (`deals.rep_id`).
- **renewals**: every renewal decision of a subscribed account falling in the quarter that the
  account passes (its recurring revenue goes on), worth 12 x the account's monthly recurring bill
  for an annual (non-SMB) contract and 1 x the bill for an SMB monthly contract. A renewal belongs
  to the account's owner (`accounts.owner_rep_id`).

A renewal decision falls in the month where the current term ends: the month whose recurring
rows carry a `contract_end` inside that same month (every month for SMB monthly contracts, the
last month of the term for annual ones). It is passed when the next month is billed (for annual
contracts `contract_end` then moves a year out) and failed when the next month has ended without
recurring revenue. It becomes known when the next month has ended (a month's revenue is known
once the month has ended), so a decision is still open for up to two months after it falls.

The targets table (`level` rep/team/region/company, `period` "2024Q3") is on the same basis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables

MONTH = pd.offsets.MonthBegin(1)
ANNUAL_MONTHS = 12


def parse_quarter(quarter: str | pd.Period) -> pd.Period:
    """`"2026Q4"` (or a Period) as a quarterly Period; a clear error for anything else."""
    if isinstance(quarter, pd.Period):
        return quarter.asfreq("Q")
    text = str(quarter).strip().upper()
    try:
        period = pd.Period(text, freq="Q")
    except (ValueError, TypeError) as err:
        raise ValueError(f"quarter {quarter!r}: expected a calendar quarter like 2026Q4") from err
    if str(period) != text:
        raise ValueError(f"quarter {quarter!r}: expected a calendar quarter like 2026Q4")
    return period


def quarter_bounds(quarter: str | pd.Period) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of a calendar quarter as timestamps (end = next quarter's first moment)."""
    period = parse_quarter(quarter)
    return period.start_time, (period + 1).start_time


def won_deals(tables: CrmTables) -> pd.DataFrame:
    """One row per won deal, from its `closed_won` row in deal_history.

    Columns: deal_id, rep_id, closed_at, amount (the amount on the close row).
    """
    history = tables.deal_history
    won = history[history["stage"] == "closed_won"]
    won = won.sort_values("changed_at", kind="stable").drop_duplicates("deal_id")
    rep = tables.deals.set_index("deal_id")["rep_id"]
    return pd.DataFrame(
        {
            "deal_id": won["deal_id"].to_numpy(),
            "rep_id": rep.reindex(won["deal_id"].to_numpy()).to_numpy(),
            "closed_at": won["changed_at"].to_numpy(),
            "amount": won["amount"].to_numpy(dtype=float),
        }
    )


def recurring_months(tables: CrmTables, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """Recurring bill per account and month, with the term end, segment and owner.

    Columns: account_id, period (month start), bill (sum over products), contract_end (latest over
    products), segment, owner (rep_id or missing). With `as_of`, only months that had ended by
    then are read.
    """
    rev = tables.revenue[tables.revenue["kind"] == "recurring"]
    if as_of is not None:
        rev = rev[rev["period"] + MONTH <= as_of]
    months = (
        rev.groupby(["account_id", "period"], as_index=False, observed=True, sort=True)
        .agg(bill=("amount", "sum"), contract_end=("contract_end", "max"))
        .reset_index(drop=True)
    )
    accounts = tables.accounts.set_index("account_id")
    ids = months["account_id"].to_numpy()
    months["segment"] = accounts["segment"].reindex(ids).to_numpy()
    months["owner"] = accounts["owner_rep_id"].reindex(ids).to_numpy()
    return months


def renewal_multiplier(segment: pd.Series | np.ndarray) -> np.ndarray:
    """Months of the bill a renewal books: 1 for SMB monthly contracts, 12 for annual ones."""
    return np.where(np.asarray(segment, dtype=object) == "smb", 1.0, float(ANNUAL_MONTHS))


def renewal_decisions(tables: CrmTables, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """Every renewal decision the revenue table shows, with its outcome when it is known.

    With `as_of`, only what was known then is read: months that had ended, and outcomes whose
    following month had ended (later ones are "pending").

    Columns: account_id, month (start of the month the decision falls in), segment, owner, bill
    (that month's recurring bill), value (bill x 1 for SMB, x 12 otherwise), known_at (when the
    following month has ended), outcome ("renewed", "churned" or "pending" when the table does not
    reach `known_at`).
    """
    return decisions_from_months(recurring_months(tables, as_of), _recorded_until(tables, as_of))


def decisions_from_months(months: pd.DataFrame, recorded_until: pd.Timestamp) -> pd.DataFrame:
    """`renewal_decisions` from `recurring_months` rows recorded up to `recorded_until` (the
    first month not recorded)."""
    months = months[months["period"] < recorded_until]
    if months.empty:
        return _empty_decisions()
    month_end = months["period"] + pd.offsets.MonthEnd(0)
    ends = months["contract_end"]
    # a term ending inside the billed month is a decision; SMB bills are monthly terms even when
    # the export leaves contract_end blank
    deciding = (ends.notna() & (ends >= months["period"]) & (ends <= month_end)) | (
        ends.isna() & (months["segment"] == "smb")
    )
    nxt = months.groupby("account_id", sort=False)["period"].shift(-1)
    following = months["period"] + MONTH
    renewed = nxt.eq(following).fillna(False).to_numpy(dtype=bool)
    known_at = following + MONTH
    known = renewed | (known_at <= recorded_until).to_numpy()
    outcome = np.where(renewed, "renewed", np.where(known, "churned", "pending"))
    out = pd.DataFrame(
        {
            "account_id": months["account_id"].to_numpy(),
            "month": months["period"].to_numpy(),
            "segment": months["segment"].to_numpy(),
            "owner": months["owner"].to_numpy(),
            "bill": months["bill"].to_numpy(dtype=float),
            "value": months["bill"].to_numpy(dtype=float) * renewal_multiplier(months["segment"]),
            "known_at": known_at.to_numpy(),
            "outcome": outcome,
        }
    )
    return out[deciding.to_numpy()].reset_index(drop=True)


def _recorded_until(tables: CrmTables, as_of: pd.Timestamp | None = None) -> pd.Timestamp:
    """The moment up to which monthly revenue is recorded: the start of the as-of's month."""
    moment = pd.Timestamp(tables.as_of) if as_of is None else min(as_of, tables.as_of)
    return moment.to_period("M").start_time


def _empty_decisions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": pd.Series([], dtype=object),
            "month": pd.Series([], dtype="datetime64[ns]"),
            "segment": pd.Series([], dtype=object),
            "owner": pd.Series([], dtype=object),
            "bill": pd.Series([], dtype=float),
            "value": pd.Series([], dtype=float),
            "known_at": pd.Series([], dtype="datetime64[ns]"),
            "outcome": pd.Series([], dtype=object),
        }
    )


def realised_bookings(
    tables: CrmTables, quarters: Sequence[str | pd.Period] | None = None
) -> pd.DataFrame:
    """Realised bookings per rep and quarter: won deals plus passed renewals.

    Args:
        tables: the CRM; only what it records is counted (renewal decisions whose outcome the
            table does not reach yet are reported in `renewals_pending`, not counted).
        quarters: quarters to report (every quarter with any booking when None).

    Returns:
        One row per (quarter, rep_id) with `won` (deal bookings), `renewals` (passed renewals),
        `bookings` (their sum), `renewals_pending` (value of decisions not yet known).
    """
    won = won_deals(tables)
    won_part = pd.DataFrame(
        {
            "quarter": won["closed_at"].dt.to_period("Q").astype(str).to_numpy(),
            "rep_id": won["rep_id"].to_numpy(),
            "won": won["amount"].to_numpy(),
        }
    )
    decisions = renewal_decisions(tables)
    renewal_part = pd.DataFrame(
        {
            "quarter": decisions["month"].dt.to_period("Q").astype(str).to_numpy(),
            "rep_id": decisions["owner"].to_numpy(),
            "renewals": np.where(decisions["outcome"] == "renewed", decisions["value"], 0.0),
            "renewals_pending": np.where(
                decisions["outcome"] == "pending", decisions["value"], 0.0
            ),
        }
    )
    frame = pd.concat([won_part, renewal_part], ignore_index=True)
    frame["rep_id"] = frame["rep_id"].astype(object).where(frame["rep_id"].notna(), UNASSIGNED)
    out = (
        frame.groupby(["quarter", "rep_id"], as_index=False, sort=True)[
            ["won", "renewals", "renewals_pending"]
        ]
        .sum(min_count=0)
        .fillna(0.0)
    )
    out["bookings"] = out["won"] + out["renewals"]
    if quarters is not None:
        wanted = [str(parse_quarter(q)) for q in quarters]
        out = out[out["quarter"].isin(wanted)].reset_index(drop=True)
    return out[["quarter", "rep_id", "won", "renewals", "bookings", "renewals_pending"]]


UNASSIGNED = "(unassigned)"
