"""What a quarter's forecast learns with: parameters, the quarter's window, scorer types."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.revenue.bookings import (
    parse_quarter,
)

WinScorer = Callable[[pd.DataFrame], np.ndarray]
"""Deal feature frame (`forecast.features.deals.deal_features`) -> P(won) per row."""
RenewalProbability = Callable[[pd.DataFrame], np.ndarray]
"""Pending renewal decisions (see `pending_renewals`) -> P(the account renews) per row."""
SEGMENT_RATES = "segment renewal rates"  # the renewals' source when no model is given

DAY = pd.Timedelta(days=1)
PARTS = ("closed", "open", "new", "recurring")
BUCKETS = ("unknown", "before", "early", "late", "next", "later")  # see `close_buckets`


@dataclass(frozen=True)
class RevenueParams:
    """What the forecast learns from, and how strongly small groups lean on larger ones.

    Attributes:
        history_quarters: earlier quarters (at the same point) the timing, amount and new-deal
            models learn from.
        level_quarters: the latest quarters that set a team's level of new deals.
        renewal_months: months of renewal decisions the renewal rates learn from.
        prior_weight: pseudo-observations pulling a small group towards its parent group.
        late_days: an expected close within this many days of the quarter's end is "late".
        next_days: an expected close within this many days after the quarter is "next".
        min_pool: fewest past amounts a team's pool needs before the region's is used instead.
        top_deals: deals listed per node as carrying the most uncertainty.
    """

    history_quarters: int = 8
    level_quarters: int = 4
    renewal_months: int = 12
    prior_weight: float = 10.0
    late_days: int = 30
    next_days: int = 45
    min_pool: int = 30
    top_deals: int = 5

    def flat(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Window:
    """The quarter and the part of it still ahead at `as_of`: [start, end)."""

    quarter: pd.Period
    as_of: pd.Timestamp
    start: pd.Timestamp
    end: pd.Timestamp

    @classmethod
    def of(cls, quarter: str | pd.Period, as_of: pd.Timestamp) -> Window:
        period = parse_quarter(quarter)
        q_start, q_end = period.start_time, (period + 1).start_time
        return cls(period, pd.Timestamp(as_of), max(pd.Timestamp(as_of), q_start), q_end)

    @property
    def q_start(self) -> pd.Timestamp:
        return self.quarter.start_time

    @property
    def offset(self) -> pd.Timedelta:
        """Where `as_of` sits against the quarter's start (negative before it)."""
        return self.as_of - self.q_start

    def earlier(self, n: int, since: pd.Timestamp | None = None) -> list[Window]:
        """The same point of up to `n` earlier quarters whose window had ended by `as_of`
        (and whose as_of is not before `since`, the start of the data)."""
        out: list[Window] = []
        period = self.quarter - 1
        while len(out) < n:
            window = Window.of(period, period.start_time + self.offset)
            if since is not None and window.as_of < since:
                break
            if window.end <= self.as_of:
                out.append(window)
            period -= 1
        return out


def close_buckets(expected: pd.Series, window: Window, params: RevenueParams) -> np.ndarray:
    """Where each expected close falls against the window: before, early, late, next, later."""
    e = pd.to_datetime(pd.Series(np.asarray(expected)))
    late = window.end - params.late_days * DAY
    nxt = window.end + params.next_days * DAY
    bucket = np.select(
        [e.isna(), e < window.start, e < late, e < window.end, e < nxt],
        ["unknown", "before", "early", "late", "next"],
        default="later",
    )
    return bucket.astype(object)
