"""Renewals still to come: renewal rates, bill growth, each account's chain of decisions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables
from forecast.revenue.bookings import (
    MONTH,
    UNASSIGNED,
    decisions_from_months,
    recurring_months,
    renewal_multiplier,
)
from forecast.revenue.params import DAY, RenewalProbability, RevenueParams, Window


@dataclass(frozen=True)
class RenewalRates:
    """Historical share of renewal decisions passed, per segment (decisions known by as_of).

    Each segment's rate is a Beta posterior: its passed and failed decisions of the last
    `renewal_months` plus `prior_weight` pseudo-decisions at the rate of its kind of term (SMB
    monthly, others annual; with few annual decisions seen, the annual prior leans on the monthly
    rate compounded over twelve months). The simulation draws the rate from the posterior in each
    draw, so a rate learned from few decisions widens the forecast.

    Within a segment, an account's rate also depends on the whole years it has been billed
    (`tenure`: 0, 1, 2, 3 or more, each pulled towards the segment's rate by `prior_weight`):
    accounts that passed earlier renewals are the healthier ones (on the default world
    mid-market and enterprise accounts pass their third annual renewal at 0.87 against 0.79-0.81
    for the first two), so as a book ages a rate by segment alone falls behind.

    Bills grow between the last known month and a decision (accounts buy more): `growth` is the
    ratio of the bill at a decision to the bill k months before it, for SMB and annual terms,
    learned from the same decisions (k = 0..12, compounding the one-month ratio where few were
    seen).
    """

    alpha: pd.Series  # segment -> passed + prior pseudo-passes
    beta: pd.Series  # segment -> failed + prior pseudo-failures
    monthly: float
    annual: float
    decisions: int
    growth: pd.DataFrame = field(default_factory=pd.DataFrame)  # k x {"smb", "annual"}
    ratio_pools: tuple[np.ndarray, ...] = ()  # per (kind, k): bill ratios with mean 1
    tenure: pd.Series = field(default_factory=pd.Series)  # (segment, years billed) -> rate
    first_bill: pd.Series = field(default_factory=pd.Series)  # account -> first month number

    @property
    def rates(self) -> pd.Series:
        return self.alpha / (self.alpha + self.beta)

    @classmethod
    def fit(
        cls, decisions: pd.DataFrame, months: pd.DataFrame, params: RevenueParams
    ) -> RenewalRates:
        """`decisions` and `months` (recurring bills) as known at as_of."""
        known = decisions[decisions["outcome"] != "pending"]
        if known.empty:
            empty = pd.Series(dtype=float)
            return cls(empty, empty, 1.0, 1.0, 0)
        w = params.prior_weight
        since = known["month"].max() - pd.DateOffset(months=params.renewal_months - 1)
        recent = known[known["month"] >= since]
        passed = (recent["outcome"] == "renewed").astype(float)
        segment = recent["segment"].astype(object).fillna("unknown").to_numpy()
        is_monthly = segment == "smb"
        monthly = float(passed[is_monthly].mean()) if is_monthly.any() else 1.0
        annual_seen = passed[~is_monthly]
        annual = float((annual_seen.sum() + w * monthly**12) / (len(annual_seen) + w))
        grouped = passed.groupby(segment)
        hits, n = grouped.sum(), grouped.size()
        prior = pd.Series(np.where(n.index == "smb", monthly, annual), index=n.index)
        alpha = hits + w * prior
        beta = (n - hits) + w * (1 - prior)
        growth, pools = _bill_growth(months, recent)
        first_bill = _first_bill(months)
        rates = alpha / (alpha + beta)
        # accounts that passed earlier renewals are the healthier ones: a segment's rate by
        # years billed, each pulled towards the segment's rate
        years = _years_billed(recent, first_bill)
        keyed = pd.DataFrame({"segment": segment, "years": years, "passed": passed.to_numpy()})
        sums = keyed.groupby(["segment", "years"])["passed"].agg(["sum", "size"])
        parent = rates.reindex(sums.index.get_level_values(0)).to_numpy()
        tenure = (sums["sum"] + w * parent) / (sums["size"] + w)
        return cls(alpha, beta, monthly, annual, len(recent), growth, pools, tenure, first_bill)

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        segment = frame["segment"].astype(object).fillna("unknown").to_numpy()
        values = self.rates.reindex(segment).to_numpy(dtype=float)
        default = np.where(segment == "smb", self.monthly, self.annual)
        out = np.where(np.isnan(values), default, values)
        if self.tenure.empty or not {"account_id", "month"} <= set(frame.columns):
            return out
        years = _years_billed(frame, self.first_bill)
        found = self.tenure.reindex(pd.MultiIndex.from_arrays([segment, years])).to_numpy(float)
        return np.where(np.isnan(found), out, found)

    def posterior(self, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters of each segment's rate (a weak prior for a segment never seen)."""
        segment = np.asarray(segment, object)
        a = self.alpha.reindex(segment).to_numpy(dtype=float)
        b = self.beta.reindex(segment).to_numpy(dtype=float)
        default = np.where(segment == "smb", self.monthly, self.annual)
        return np.where(np.isnan(a), 10 * default, a), np.where(np.isnan(b), 10 * (1 - default), b)

    def pool_index(self, segment: np.ndarray, months_ahead: np.ndarray) -> np.ndarray:
        """Index in `ratio_pools` of the bill change k months ahead (-1 when none was learned)."""
        if not self.ratio_pools:
            return np.full(len(months_ahead), -1)
        horizon = len(self.ratio_pools) // 2 - 1
        k = np.clip(np.asarray(months_ahead, int), 0, horizon)
        annual = np.asarray(segment, object) != "smb"
        return (annual * (horizon + 1) + k).astype(np.int64)

    def bill_growth(self, segment: np.ndarray, months_ahead: np.ndarray) -> np.ndarray:
        """Expected bill at a decision `months_ahead` after the last known bill, as a ratio."""
        if self.growth.empty:
            return np.ones(len(months_ahead))
        kind = np.where(np.asarray(segment, object) == "smb", "smb", "annual")
        k = np.clip(np.asarray(months_ahead, int), 0, len(self.growth) - 1)
        table = self.growth.to_numpy()
        column = np.where(kind == "smb", 0, 1)
        return table[k, column]


MAX_YEARS = 3  # renewal rates by years billed: 0, 1, 2 and 3 or more


def _first_bill(months: pd.DataFrame) -> pd.Series:
    """Account -> month number of its first recurring bill."""
    if months.empty:
        return pd.Series(dtype=float)
    number = months["period"].dt.year * 12 + months["period"].dt.month - 1
    return number.groupby(months["account_id"].to_numpy()).min()


def _years_billed(frame: pd.DataFrame, first_bill: pd.Series) -> np.ndarray:
    """Whole years between each row's account's first bill and the row's month (capped)."""
    month = frame["month"].dt.year * 12 + frame["month"].dt.month - 1
    first = first_bill.reindex(frame["account_id"].to_numpy()).to_numpy(dtype=float)
    years = np.floor((month.to_numpy(float) - first) / 12)
    return np.clip(np.nan_to_num(years, nan=0.0), 0, MAX_YEARS).astype(int)


def _bill_growth(
    months: pd.DataFrame, decisions: pd.DataFrame, horizon: int = 12
) -> tuple[pd.DataFrame, tuple[np.ndarray, ...]]:
    """Bill at a decision / bill k months earlier, k = 0..horizon, for SMB and annual terms.

    Returns the value-weighted mean ratio (k x kind) and, per kind and k (SMB first), the
    accounts' ratios scaled to mean 1: most bills do not move, a few jump (an expansion).
    """
    growth = pd.DataFrame(
        1.0, index=pd.RangeIndex(horizon + 1, name="k"), columns=["smb", "annual"]
    )
    pools: list[np.ndarray] = [np.ones(1) for _ in range(2 * (horizon + 1))]
    if months.empty or decisions.empty:
        return growth, tuple(pools)
    number = months["period"].dt.year * 12 + months["period"].dt.month - 1
    bill = pd.Series(months["bill"].to_numpy(float), index=[months["account_id"], number])
    at = decisions["month"].dt.year * 12 + decisions["month"].dt.month - 1
    now = decisions["bill"].to_numpy(float)
    smb = (decisions["segment"] == "smb").to_numpy()
    for column, (kind, mask) in enumerate((("smb", smb), ("annual", ~smb))):
        for k in range(1, horizon + 1):
            before = bill.reindex(pd.MultiIndex.from_arrays([decisions["account_id"], at - k]))
            ok = mask & before.notna().to_numpy() & (before.to_numpy() > 0)
            if ok.sum() >= 30:
                growth.loc[k, kind] = now[ok].sum() / before.to_numpy()[ok].sum()
                ratio = now[ok] / before.to_numpy()[ok]
                pools[column * (horizon + 1) + k] = ratio / ratio.mean()
            else:
                growth.loc[k, kind] = growth.loc[1, kind] ** k if k > 1 else 1.0
    return growth, tuple(pools)


@dataclass(frozen=True)
class RenewalBook:
    """The renewals of a quarter as seen at as_of: rates, decisions already passed, and the
    chains of decisions still to come with their probabilities (chains x steps) and values
    (`steps` holds each decision with its probability, `prob`)."""

    rates: RenewalRates
    booked: pd.DataFrame
    chains: pd.DataFrame
    steps: pd.DataFrame
    prob: np.ndarray
    value: np.ndarray


def renewal_book(
    months: pd.DataFrame,
    window: Window,
    params: RevenueParams,
    renewal_probability: RenewalProbability | None = None,
) -> RenewalBook:
    """Renewals from `recurring_months` rows (only those ended by the window's as_of are read)."""
    as_of = window.as_of
    known = months[months["period"] + MONTH <= as_of]
    decisions = decisions_from_months(known, as_of.to_period("M").start_time)
    rates = RenewalRates.fit(decisions, known, params)
    inside = (decisions["month"] >= window.q_start) & (decisions["month"] < window.end)
    booked = decisions[inside & (decisions["outcome"] == "renewed")].reset_index(drop=True)
    chains, steps = _pending_from_months(known, window)
    # SMB months renew at one bill (grown to the first decision in the quarter): small and alike
    first = (
        steps["months_ahead"].where(steps["in_quarter"]).groupby(steps["chain"]).transform("min")
    )
    ahead = np.where(steps["segment"] == "smb", first.fillna(0), steps["months_ahead"])
    steps["value"] = steps["value"] * rates.bill_growth(steps["segment"], ahead)
    prob = np.clip(np.asarray(rates(steps), dtype=float), 0, 1) if len(steps) else np.zeros(0)
    if renewal_probability is not None and len(steps):
        scored = np.clip(np.asarray(renewal_probability(steps), dtype=float), 0, 1)
        prob = _at_rate_level(scored, prob, steps["segment"])
    steps["prob"] = prob
    chain_prob, chain_value = _chain_matrices(chains, steps, prob)
    return RenewalBook(rates, booked, chains, steps, chain_prob, chain_value)


def _at_rate_level(scored: np.ndarray, rates: np.ndarray, segment: pd.Series) -> np.ndarray:
    """Renewal probabilities of a churn model with each segment's churn brought to the level of
    the segment rates (its churn probabilities scaled, at most 1): the model says which accounts
    are at risk, the rates how many fail. The churn model alone overrated renewals on the
    default world's backtest (company bias +2 %, week-13 P10-P90 coverage 45 %, against -1 % and
    91 % for the rates: benchmarks/renewal_calibration.py, `forecast revenue-backtest`)."""
    churn, out = 1 - scored, scored.copy()
    names = segment.astype(object).fillna("unknown").to_numpy()
    for name in pd.unique(names):
        here = names == name
        modelled = churn[here].mean()
        if modelled > 0:
            out[here] = 1 - np.minimum(churn[here] * (1 - rates[here]).mean() / modelled, 1.0)
    return out


def unbilled_renewals(
    months: pd.DataFrame, window: Window, earlier: Sequence[Window], params: RevenueParams
) -> pd.Series:
    """Expected renewals inside the quarter of accounts with no bill in the last month ended by
    as_of, per owner: SMB subscriptions that start after it renew monthly inside the quarter,
    and the renewal book (accounts billed in that month) cannot see them.

    Learned at the same point of the latest `level_quarters` earlier quarters whose decisions are
    all known by as_of: the renewals those quarters booked from accounts not billed in their own
    last ended month, averaged (a quarter with none counts as none). On the default world this
    is 1-6 % of a quarter's renewals, always missing from the book.
    """
    settled = [w for w in earlier if w.end + MONTH <= window.as_of][: params.level_quarters]
    if not settled or months.empty:
        return pd.Series(dtype=float)
    decisions = decisions_from_months(months, window.as_of.to_period("M").start_time)
    renewed = decisions[decisions["outcome"] == "renewed"]
    owner = renewed["owner"].astype(object).where(renewed["owner"].notna(), UNASSIGNED)
    parts = []
    for past in settled:
        last_ended = (past.as_of.to_period("M") - 1).start_time
        billed = months.loc[months["period"] == last_ended, "account_id"]
        # the quarter's decisions after that month (none once the quarter is over)
        inside = (renewed["month"] > max(last_ended, past.q_start - MONTH)) & (
            renewed["month"] < past.end
        )
        unseen = inside & ~renewed["account_id"].isin(billed)
        parts.append(renewed.loc[unseen, "value"].groupby(owner[unseen]).sum())
    return (pd.concat(parts).groupby(level=0).sum() / len(settled)).rename("value")


def pending_renewals(tables: CrmTables, window: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Renewal decisions not yet known at as_of, up to the quarter's last month (see
    `_pending_from_months`)."""
    return _pending_from_months(recurring_months(tables, window.as_of), window)


def _pending_from_months(months: pd.DataFrame, window: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Renewal decisions not yet known at as_of, up to the quarter's last month.

    Every account billed in the last month that had ended by as_of decides at the end of its
    current term: SMB accounts every month, others in the month of `contract_end` and then every
    12 months. Decisions before the quarter only decide whether the account is still there.

    Returns:
        chains (one row per account with a decision inside the quarter: account_id, owner,
        segment, bill) and steps (one row per decision up to the quarter's end: chain, step,
        account_id, owner, segment, month, months_ahead (after the last known bill), bill (the
        last known one), value (what passing books at that bill; 0 outside the quarter),
        in_quarter, as_of).
    """
    as_of = window.as_of
    last_ended = as_of.to_period("M") - 1
    live = months[months["period"] == last_ended.start_time].reset_index(drop=True)
    first_in_quarter = _month_number(window.q_start)
    last_in_quarter = _month_number(window.end - DAY)
    m0 = _month_number(last_ended.start_time)
    if live.empty or last_in_quarter < m0:
        return _no_chains()
    smb = (live["segment"] == "smb").to_numpy()
    term = np.where(smb, 1, 12)
    ends = live["contract_end"]
    end_month = (ends.dt.year * 12 + ends.dt.month - 1).to_numpy(dtype=float)
    first = np.where(np.isnan(end_month), np.where(smb, m0, np.nan), np.maximum(end_month, m0))
    ok = ~np.isnan(first) & (first <= last_in_quarter)
    count = np.where(ok, (last_in_quarter - np.nan_to_num(first)) // term + 1, 0).astype(int)
    chain = np.repeat(np.arange(len(live)), count)
    step = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    month = first[chain].astype(int) + step * term[chain]
    in_quarter = month >= first_in_quarter
    # an account whose last decision before the quarter's end falls before the quarter is out
    reaches = np.zeros(len(live), dtype=bool)
    reaches[chain[in_quarter]] = True
    keep = reaches[chain]
    chain, step, month, in_quarter = chain[keep], step[keep], month[keep], in_quarter[keep]
    chain_ids = np.flatnonzero(reaches)
    chains = live.iloc[chain_ids][["account_id", "owner", "segment", "bill"]].reset_index(drop=True)
    chains["owner"] = chains["owner"].astype(object).where(chains["owner"].notna(), UNASSIGNED)
    local = np.searchsorted(chain_ids, chain)
    steps = chains.iloc[local].reset_index(drop=True)
    steps.insert(0, "chain", local)
    steps.insert(1, "step", step)
    steps["month"] = pd.to_datetime(
        {"year": month // 12, "month": month % 12 + 1, "day": np.ones(len(month), dtype=int)}
    )
    steps["value"] = np.where(in_quarter, steps["bill"] * renewal_multiplier(steps["segment"]), 0.0)
    steps["in_quarter"] = in_quarter
    steps["months_ahead"] = month - m0
    steps["as_of"] = as_of
    return chains, steps[list(STEP_COLUMNS)]


def _month_number(moment: pd.Timestamp) -> int:
    return moment.year * 12 + moment.month - 1


STEP_COLUMNS = (
    "chain", "step", "account_id", "owner", "segment", "month", "months_ahead", "bill", "value",
    "in_quarter", "as_of",
)  # fmt: skip


def _no_chains() -> tuple[pd.DataFrame, pd.DataFrame]:
    chains = pd.DataFrame(columns=["account_id", "owner", "segment", "bill"])
    steps = pd.DataFrame({c: pd.Series([], dtype=object) for c in STEP_COLUMNS})
    steps["months_ahead"] = steps["months_ahead"].astype(int)
    steps["value"] = steps["value"].astype(float)
    return chains, steps


def _chain_matrices(
    chains: pd.DataFrame, steps: pd.DataFrame, prob: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """chains x steps probabilities (padding 1) and values (padding 0)."""
    n_steps = int(steps["step"].max()) + 1 if len(steps) else 0
    p = np.ones((len(chains), n_steps))
    v = np.zeros((len(chains), n_steps))
    if len(steps):
        rows, cols = steps["chain"].to_numpy(int), steps["step"].to_numpy(int)
        p[rows, cols] = prob
        v[rows, cols] = steps["value"].to_numpy(float)
    return p, v
