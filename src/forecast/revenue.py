"""Quarterly revenue forecast: a deal-level simulation rolled up rep -> team -> region -> company.

**What is forecast: bookings.** The bookings of a quarter are the amounts of deals won
(closed_won) with their close inside the quarter (`deals.amount` of a won deal is its booked
amount; for subscription products the annual contract value) **plus renewal bookings**: each
renewal decision of a subscribed account falling in the quarter that the account passes (its
recurring revenue goes on), worth 12 x the monthly recurring bill for annual (non-SMB) contracts
and 1 x the bill for SMB monthly renewals. `forecast.bookings` computes the realised figure from
the tables; the targets table is on the same basis.

**How, at `as_of`, for a quarter** (every number learned from what was recorded by `as_of`):

1. *closed*: deals won inside the quarter up to `as_of` (from deal_history's close rows). Known.
2. *open*: every deal open at `as_of` pays its expected booked amount if it is won **and** closes
   inside the quarter: P = win probability x P(close inside | won). The win probability comes from
   `win_scorer` (the deal-win champion in production; the generator's truth or a small trained
   model in tests). The close-timing factor (`CloseTiming`) is learned at the same point of the
   earlier quarters: for the deals open then, the wins that closed inside that quarter divided by
   the wins the scorer expected of them, by stage, by where the expected close fell against the
   quarter's end (before / early / late / just after / later), by segment (bigger customers are
   slower) and by win-probability band (better deals move faster); each group leans on the one
   above it when small. Deals slip, and this is how much. The booked amount is the current amount
   times the stage's booked/current ratio (discounts and scope changes still ahead).
3. *new* (not yet created): deals created after `as_of` and won inside the quarter, learned per
   team from the same point of earlier quarters (`NewDeals`): a Poisson count at the team's level
   of the last four quarters times a quarter-of-year index, amounts drawn from the team's past
   ones, split over its reps by the deals each created in the last 91 days times the rep's
   win rate of the last year (pulled towards the team's).
4. *recurring*: the quarter's renewals already passed, plus the decisions still to come for every
   account billed in the last month that had ended by `as_of`: SMB accounts decide every month,
   others at the end of each 12-month term (the month of `contract_end`); an SMB account that
   churns makes no later decision. Each decision passes with its segment's renewal rate of the
   last 12 months for accounts billed as many whole years (`RenewalRates`, Beta posteriors) or
   with `renewal_probability(frame)` when given: the seam for the churn model (the live forecast
   passes the churn champion for the current and next quarter: `forecast.churn.live_renewals`;
   `renewals_source` says which was used). A renewal is
   worth the last known bill grown by the expansions seen between a bill and a decision (annual
   bills also draw their change from the past ones). Renewals belong to the account's owner
   (`accounts.owner_rep_id`). Accounts not billed yet in that month (SMB subscriptions starting
   since, which renew monthly inside the quarter) add what such accounts renewed at the same
   point of earlier quarters (`unbilled_renewals`).
5. *what moves a whole quarter at once* (`Spreads`): at the same point of earlier quarters, how far
   the open deals', new deals' and renewals' totals moved beyond their items' own chance, each
   quarter judged by a model that did not learn from it (out of sample). Each becomes a factor
   shared by all items of that part in a draw (for renewals, at least the uncertainty of the
   learned rates), so a company's distribution is wider than the sum of independent deals
   would make it: a bad quarter is bad for every team.

The simulation (`forecast.simulate`) draws every item together, 10,000 times by default, and sums
the draws up the org tree, so a parent's draws are exactly the sum of its children's. A
`Scenario` (remove or add deals, slip deals, change stages) is applied to the inputs and the
distribution is drawn again with the same random numbers for every unchanged item.

Point in time: nothing recorded after `as_of` is read (tests/pipelines/test_revenue.py forecasts
on the full tables and on `forecast.asof.tables_as_of(tables, as_of)` and gets the same numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from forecast.bookings import (
    MONTH,
    UNASSIGNED,
    decisions_from_months,
    parse_quarter,
    recurring_months,
    renewal_multiplier,
    won_deals,
)
from forecast.features import deal_features, deal_snapshots
from forecast.schema import CLOSED_STAGES, OPEN_STAGES
from forecast.simulate import (
    COMPANY,
    LEVELS,
    OrgTree,
    SimulationInputs,
    chain_moments,
    moments,
    simulate,
    summarise,
)
from forecast.tables import CrmTables

WinScorer = Callable[[pd.DataFrame], np.ndarray]
"""Deal feature frame (`forecast.features.deal_features`) -> P(won) per row."""
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


# --- the quarter and its window ------------------------------------------------------------------


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


# --- learned pieces ------------------------------------------------------------------------------


def _bands(stage: pd.Series, p_win: pd.Series, edges: pd.DataFrame) -> np.ndarray:
    """low / mid / high: each p_win against its stage's terciles (mid when the stage is unseen)."""
    if edges.empty:
        return np.full(len(stage), "mid", dtype=object)
    at = edges.reindex(np.asarray(stage, object))
    p = np.asarray(p_win, float)
    low, high = at.iloc[:, 0].to_numpy(float), at.iloc[:, 1].to_numpy(float)
    band = np.where(p < low, "low", np.where(p > high, "high", "mid"))
    return np.where(np.isnan(low), "mid", band).astype(object)


def _excess(values: Sequence[float]) -> float:
    """Relative variance beyond chance, averaged with one pseudo-quarter of none (>= 0)."""
    return max(0.0, float(np.sum(values))) / (len(values) + 1)


def _pooled_excess(
    residual: pd.Series, chance: pd.Series, expected: pd.Series, *, less: float = 0.0
) -> float:
    """Relative variance beyond chance pooled over groups: sum(residual^2 - chance) over
    sum(expected^2), less what a wider factor already explains (>= 0; 0 without groups)."""
    weight = float((expected**2).sum())
    if weight <= 0:
        return 0.0
    return max(0.0, float((residual**2 - chance).sum()) / weight - less)


def _lognormal_sd(relative_variance: float) -> float:
    """The log-scale sd of a mean-1 lognormal factor with this variance."""
    return float(np.sqrt(np.log1p(max(relative_variance, 0.0))))


def _shrunk(hits: pd.Series, expected: pd.Series, prior: pd.Series | float, weight: float):
    """(hits + weight x prior) / (expected + weight): a ratio pulled towards its prior."""
    return (hits + weight * prior) / (expected + weight)


@dataclass(frozen=True)
class CloseTiming:
    """P(a won deal closes inside the window), by stage, expected-close bucket, segment and band.

    Learned at the same point of earlier quarters: for deals open then, the wins that closed inside
    that quarter divided by the wins the scorer expected of them (so no eventual outcome needs to
    be known, and the factor stays calibrated to the scorer in use). Groups nest: stage, then x
    expected-close bucket, x segment (bigger customers close more slowly), x win-probability
    band (terciles within the stage: better deals move faster); each is pulled towards the group
    above it by `prior_weight` expected wins. Also learns each stage's booked / current amount
    ratio from the deals that were won.
    """

    factors: tuple[pd.Series, ...]  # P(close inside | won) by stage, + bucket, + segment, + band
    overall: float
    amount_ratio: pd.Series  # stage -> booked amount / amount at the snapshot
    band_edges: pd.DataFrame  # stage -> p_win terciles
    rows: int

    @classmethod
    def fit(cls, history: pd.DataFrame, params: RevenueParams) -> CloseTiming:
        """`history`: stage, bucket, segment, p_win, won_inside, amount, booked (rows of past
        snapshots)."""
        if history.empty:  # no earlier quarter yet: half of the wins inside, amounts as they are
            return cls((), 0.5, pd.Series(dtype=float), pd.DataFrame(), 0)
        w = params.prior_weight
        # likelier deals are better deals, and better deals move faster: band p_win by stage
        edges = history.groupby("stage")["p_win"].quantile([1 / 3, 2 / 3]).unstack()
        band = _bands(history["stage"], history["p_win"], edges)
        keyed = history.assign(band=band)
        wins, expect = keyed["won_inside"].sum(), keyed["p_win"].sum()
        overall = float(min(1.0, wins / expect)) if expect > 0 else 0.5
        prior: object = overall
        levels: list[pd.Series] = []
        for keys in (["stage"], ["stage", "bucket"], ["stage", "bucket", "segment"],
                     ["stage", "bucket", "segment", "band"]):  # fmt: skip
            sums = keyed.groupby(keys)[["won_inside", "p_win"]].sum()
            if levels:
                parent = sums.index.droplevel(-1) if len(keys) > 1 else None
                prior = levels[-1].reindex(parent).to_numpy()
            levels.append(_shrunk(sums["won_inside"], sums["p_win"], prior, w).clip(0, 1))
        won = history[history["won_inside"] > 0]
        sums = won.groupby("stage")[["booked", "amount"]].sum()
        counts = won.groupby("stage").size()
        raw = sums["booked"] / sums["amount"].where(sums["amount"] > 0)
        ratio = ((raw.fillna(1.0) * counts + w) / (counts + w)).rename("amount_ratio")
        return cls(tuple(levels), overall, ratio, edges, len(history))

    def probability(
        self, stage: np.ndarray, bucket: np.ndarray, segment: np.ndarray, p_win: np.ndarray
    ) -> np.ndarray:
        """P(close inside | won) of each deal, from its finest group that was seen."""
        stage = np.asarray(stage, object)
        keys = [
            stage,
            np.asarray(bucket, object),
            np.asarray(segment, object),
            _bands(pd.Series(stage), pd.Series(np.asarray(p_win, float)), self.band_edges),
        ]
        out = np.full(len(stage), self.overall)
        for depth, factor in enumerate(self.factors, start=1):
            index = keys[0] if depth == 1 else pd.MultiIndex.from_arrays(keys[:depth])
            found = factor.reindex(index).to_numpy(dtype=float)
            out = np.where(np.isnan(found), out, found)
        return out

    def spread(self, history: pd.DataFrame, params: RevenueParams | None = None) -> float:
        """Relative spread of the open deals' bookings beyond the deals' own chance, from how
        each earlier quarter's total moved around what the model expected of it.

        Each earlier quarter is judged by the model fitted on the other ones (leave one quarter
        out): judged by a model that learned from it, its residual would be too small, and the
        spread came out as none in most quarters of the default world while their totals still
        moved beyond chance. `params=None` judges every quarter by this model (in sample).
        """
        sums = self._residuals(history, params, ["window"])
        return _excess((((sums["r"] - sums["e"]) ** 2 - sums["v"]) / sums["e"] ** 2).tolist())

    def team_spread(
        self, history: pd.DataFrame, params: RevenueParams | None, company: float
    ) -> float:
        """Relative spread of a team's own quarter: how far each team's open-deal bookings of
        the earlier quarters moved beyond its deals' chance (judged out of sample as `spread`),
        pooled over teams and quarters (sum of excess over sum of expected squared), less what
        the whole company's quarter (`company`) explains. `history` needs a `team` column."""
        if "team" not in history:
            return 0.0
        sums = self._residuals(history, params, ["window", "team"])
        return _pooled_excess(sums["r"] - sums["e"], sums["v"], sums["e"], less=company)

    def _residuals(
        self, history: pd.DataFrame, params: RevenueParams | None, by: list[str]
    ) -> pd.DataFrame:
        """Expected (e), chance variance (v) and realised (r) bookings of the earlier quarters'
        open deals per `by` group with e > 0, each window judged by a model fitted without it
        (all by this one when `params` is None or there is one window)."""
        if history.empty:
            return pd.DataFrame(columns=["e", "v", "r"], dtype=float)
        windows = history["window"].unique()
        if params is None or len(windows) < 2:
            return self._sums(history, self, by)
        parts = []
        for number in windows:
            held_out = history["window"] == number
            model = CloseTiming.fit(history[~held_out], params)
            parts.append(self._sums(history[held_out], model, by))
        return pd.concat(parts)

    @staticmethod
    def _sums(history: pd.DataFrame, model: CloseTiming, by: list[str]) -> pd.DataFrame:
        stage = history["stage"].to_numpy(object)
        q = history["p_win"].to_numpy(float) * model.probability(
            stage, history["bucket"].to_numpy(), history["segment"].to_numpy(),
            history["p_win"].to_numpy(float),
        )  # fmt: skip
        a = history["amount"].to_numpy(float) * model.ratio(stage)
        realised = history["won_inside"].to_numpy(float) * np.nan_to_num(
            history["booked"].to_numpy(float)
        )
        frame = history[by].assign(e=q * a, v=a * a * q * (1 - q), r=realised)
        sums = frame.groupby(by)[["e", "v", "r"]].sum()
        return sums[sums["e"] > 0]

    def ratio(self, stage: np.ndarray) -> np.ndarray:
        values = self.amount_ratio.reindex(np.asarray(stage, object)).to_numpy(dtype=float)
        return np.where(np.isnan(values), 1.0, values)


@dataclass(frozen=True)
class NewDeals:
    """Deals created after `as_of` and won inside the quarter, per team.

    Attributes:
        counts: team x earlier quarter: such deals seen at the same point of that quarter.
        seasonal: quarter of year (1-4) -> index (mean 1).
        rate: expected count per team for the forecast quarter.
        pools: per team, the amounts to draw from (its own past amounts, else its region's, else
            everyone's when too few).
    """

    counts: pd.DataFrame
    seasonal: pd.Series
    rate: pd.Series
    pools: dict[str, np.ndarray]
    level: pd.Series = field(default_factory=pd.Series)  # team -> deseasonalised count
    amounts: pd.Series = field(default_factory=pd.Series)  # earlier quarter -> amount won
    level_quarters: int = 4  # the latest quarters that set the level (see `RevenueParams`)
    team_amounts: pd.DataFrame = field(default_factory=pd.DataFrame)  # team x earlier quarter

    def spread(self) -> float:
        """Relative spread of a quarter's new-deal bookings beyond Poisson chance, from how the
        earlier quarters' totals moved around the model (0 when they did not).

        Each earlier quarter is forecast as the model would have forecast it then: at the level
        of the `level_quarters` quarters before it (not at today's level, which learned from that
        quarter itself), so the spread includes what the level misses, e.g. growth since it
        was measured.
        """
        if self.counts.empty or not self.pools:
            return 0.0
        everyone = np.concatenate([v for v in self.pools.values() if len(v)] or [np.zeros(1)])
        mean, square = float(everyone.mean()), float((everyone**2).mean())
        quarters = list(self.counts.columns)  # oldest first
        totals = self.counts.sum(axis=0).to_numpy(float)
        index = np.array([float(self.seasonal.get(q.quarter, 1.0)) for q in quarters])
        deseasonal = totals / index
        excess = []
        for i, quarter in enumerate(quarters):
            if i == 0:  # nothing before it to forecast it from
                continue
            level = float(deseasonal[max(0, i - self.level_quarters) : i].mean())
            expected_n = level * index[i]
            expected, chance = expected_n * mean, expected_n * square
            actual = float(self.amounts.get(quarter, 0.0))
            if expected > 0:
                excess.append(((actual - expected) ** 2 - chance) / expected**2)
        return _excess(excess)

    def team_spread(self, company: float) -> float:
        """Relative spread of a team's own quarter of new deals: each team's earlier quarters
        against the level its quarters before them set (as `spread`), pooled over teams and
        quarters, less what the company's quarter (`company`) explains."""
        if self.counts.empty or self.team_amounts.empty or not self.pools:
            return 0.0
        quarters = list(self.counts.columns)
        index = np.array([float(self.seasonal.get(q.quarter, 1.0)) for q in quarters])
        deseasonal = self.counts.to_numpy(float) / index
        residual, chance, expected = [], [], []
        for t, team in enumerate(self.counts.index):
            pool = self.pools.get(team)
            if pool is None or not len(pool):
                continue
            mean, square = float(pool.mean()), float((pool**2).mean())
            for i in range(1, len(quarters)):
                n = float(deseasonal[t, max(0, i - self.level_quarters) : i].mean()) * index[i]
                actual = float(self.team_amounts.iloc[t, i])
                residual.append(actual - n * mean)
                chance.append(n * square)
                expected.append(n * mean)
        return _pooled_excess(
            pd.Series(residual, dtype=float),
            pd.Series(chance, dtype=float),
            pd.Series(expected, dtype=float),
            less=company,
        )


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
class Spreads:
    """How much whole quarters moved beyond the items' own chance, as relative variances.

    Measured at the same point of earlier quarters, for the open deals, the new deals and the
    renewals; each becomes one factor per draw shared by all items of that part, so a parent's
    distribution widens more than its children's (a bad quarter is bad for every team).
    """

    open: float = 0.0
    new: float = 0.0
    renewals: float = 0.0
    team_open: float = 0.0  # a team's own quarter, beyond the company's: open deals
    team_new: float = 0.0  # and new deals


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


def _renewal_spread(
    months: pd.DataFrame, window: Window, earlier: Sequence[Window], params: RevenueParams
) -> float:
    """Relative variance of earlier quarters' renewals beyond chance: at the same point of each
    (whose decisions are all known by as_of), the renewals still to come were forecast with the
    segment rates known then and compared with what they booked."""
    settled = [w for w in earlier if w.end + MONTH <= window.as_of]
    if not settled:
        return 0.0
    decisions = decisions_from_months(months, window.as_of.to_period("M").start_time)
    renewed = decisions[decisions["outcome"] == "renewed"]
    excess = []
    for past in settled:
        book = renewal_book(months, past, params)
        if book.chains.empty:
            continue
        mean, variance = chain_moments(book.prob, book.value)
        variance = variance + _bill_variance(book, mean, variance)
        expected = float(mean.sum())
        first = (past.as_of.to_period("M") - 1).start_time
        done = renewed[
            renewed["account_id"].isin(book.chains["account_id"])
            & (renewed["month"] >= first)
            & (renewed["month"] >= past.q_start)
            & (renewed["month"] < past.end)
        ]
        if expected > 0:
            excess.append(((done["value"].sum() - expected) ** 2 - variance.sum()) / expected**2)
    return _excess(excess)


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


def _bill_variance(book: RenewalBook, mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Extra variance of each chain from its bill's unknown change (the ratio pools)."""
    if book.chains.empty or not book.rates.ratio_pools:
        return np.zeros(len(mean))
    first = (
        book.steps[book.steps["in_quarter"]].groupby("chain")[["segment", "months_ahead"]].first()
    )
    pool = book.rates.pool_index(first["segment"].to_numpy(), first["months_ahead"].to_numpy())
    spread = np.array([float(np.var(p)) for p in book.rates.ratio_pools])[pool]
    spread = np.where(first["segment"].to_numpy(object) == "smb", 0.0, spread)
    return spread * (variance + mean**2)


def _churn_shock(
    book: RenewalBook,
    spread: float,
    group: np.ndarray | None,
    alpha: np.ndarray | None,
    beta: np.ndarray | None,
) -> float:
    """Log-sd of the quarter's churn factor (one per draw, shared by every chain).

    Its variance is the larger of what earlier quarters' renewals moved beyond chance
    (`spread`) and what the renewal rates' own uncertainty (their Beta posteriors) brings; the
    renewals' total moves by the expected lost value times the factor's deviation.
    """
    if book.chains.empty:
        return 0.0
    mean, _ = chain_moments(book.prob, book.value)
    loss = book.value.sum(axis=1) - mean  # expected value lost to churn, per chain
    total_loss = float(loss.sum())
    if total_loss <= 0:
        return 0.0
    wanted = spread * float(mean.sum()) ** 2
    from_rates = 0.0
    if group is not None and alpha is not None and beta is not None:
        n = alpha + beta
        churn = beta / n
        rate_var = alpha * beta / (n**2 * (n + 1))
        per_group = np.bincount(group, loss, minlength=len(alpha))
        from_rates = float((rate_var / np.maximum(churn, 1e-9) ** 2 * per_group**2).sum())
    return _lognormal_sd(max(wanted, from_rates) / total_loss**2)


# --- inputs at as_of -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesLean:
    """The nodes whose forecast leans on a time series: where the pipeline says little (no
    expected close dates, a thin history, few open deals) the revenue backtest erred less with
    the series than with the simulation. Such a node keeps the shape of the simulation's
    distribution: what it adds to the node's bookings so far is scaled so that the mean is the
    series' forecast (a series forecasting no more than is booked is not followed). A parent
    that does not lean stays the simulation's: where a child leans, the children's means no
    longer add up to it (each node is its own best estimate).

    Attributes:
        nodes: level, node, source (the series), scale (of the draws above what is booked).
        basis: where the choice came from (the backtest run), said with the forecast.
    """

    nodes: pd.DataFrame
    basis: str

    def at(self, level: str, names: pd.Index) -> tuple[np.ndarray, np.ndarray]:
        """Per node of `level` (in `names` order): its source ("simulation" where it does not
        lean) and the scale of its draws above what is booked (1 there)."""
        rows = self.nodes[self.nodes["level"] == level].set_index("node")
        source = rows["source"].reindex(names.astype(str)).fillna(SIMULATION).to_numpy(object)
        scale = rows["scale"].reindex(names.astype(str)).fillna(1.0).to_numpy(float)
        return source, scale


SIMULATION = "simulation"  # a node's source when it does not lean on a series


@dataclass(frozen=True)
class QuarterInputs:
    """Everything the simulation needs, as learned and scored at `as_of`.

    `open_deals` holds one row per open deal (its features, win probability, timing factor,
    expected booked amount, P(won inside the window)); `Scenario.apply` edits these rows.
    """

    window: Window
    tree: OrgTree
    targets: dict[str, pd.Series]
    won: pd.DataFrame
    renewals_booked: pd.DataFrame
    open_deals: pd.DataFrame
    chains: pd.DataFrame
    chain_prob: np.ndarray
    chain_value: np.ndarray
    new: NewDeals
    new_leaf_rate: np.ndarray
    new_leaf_pool: np.ndarray
    pool_names: tuple[str, ...]
    timing: CloseTiming
    renewal_rates: RenewalRates
    params: RevenueParams
    chain_pool: np.ndarray | None = None
    spreads: Spreads | None = None
    churn_shock_sd: float = 0.0
    scenario: str | None = None  # the name of the scenario applied, if any
    unbilled: pd.Series | None = None  # owner -> expected renewals of accounts not billed yet
    renewals_source: str = SEGMENT_RATES  # what gave the pending renewals their probabilities
    lean: SeriesLean | None = None  # nodes that lean on a time series (`with_lean`)

    def leaf_of(self, owners: pd.Series) -> np.ndarray:
        """Leaf of each owner (rep_id); owners not in the tree go to the unassigned leaf."""
        unassigned = int(self.tree.leaf_index(np.array([UNASSIGNED], dtype=object))[0])
        index = self.tree.leaf_index(owners)
        return np.where(index < 0, unassigned, index)

    def simulation_inputs(self) -> SimulationInputs:
        deals = self.open_deals
        leaf = self.leaf_of

        closed = np.bincount(
            leaf(self.won["rep_id"]), self.won["amount"], minlength=self.tree.n_leaves
        ) + np.bincount(
            leaf(self.renewals_booked["owner"]),
            self.renewals_booked["value"],
            minlength=self.tree.n_leaves,
        )
        return SimulationInputs(
            n_leaves=self.tree.n_leaves,
            closed=closed.astype(float),
            deal_leaf=leaf(deals["rep_id"]),
            deal_prob=deals["p_inside"].to_numpy(dtype=float),
            deal_amount=deals["expected_amount"].to_numpy(dtype=float),
            chain_leaf=leaf(self.chains["owner"]),
            chain_prob=self.chain_prob,
            chain_value=self.chain_value,
            new_rate=self.new_leaf_rate,
            new_pool=self.new_leaf_pool,
            pools=tuple(self.new.pools[name] for name in self.pool_names),
            chain_pool=self.chain_pool,
            ratio_pools=self.renewal_rates.ratio_pools,
            deal_shock_sd=_lognormal_sd(self.spreads.open) if self.spreads else 0.0,
            new_shock_sd=float(np.sqrt(self.spreads.new)) if self.spreads else 0.0,
            churn_shock_sd=self.churn_shock_sd,
            unbilled=self._unbilled_per_leaf(),
            leaf_group=self.tree.groups["team"][0],
            group_deal_sd=_lognormal_sd(self.spreads.team_open) if self.spreads else 0.0,
            group_new_sd=_lognormal_sd(self.spreads.team_new) if self.spreads else 0.0,
        )

    def _unbilled_per_leaf(self) -> np.ndarray | None:
        if self.unbilled is None or self.unbilled.empty:
            return None
        owners = pd.Series(self.unbilled.index.to_numpy(object))
        leaf = self.leaf_of(owners)
        return np.bincount(leaf, self.unbilled.to_numpy(float), minlength=self.tree.n_leaves)


def prepare_quarter(
    tables: CrmTables,
    *,
    quarter: str | pd.Period,
    as_of: pd.Timestamp | str,
    win_scorer: WinScorer,
    renewal_probability: RenewalProbability | None = None,
    params: RevenueParams | None = None,
    features: pd.DataFrame | None = None,
) -> QuarterInputs:
    """Learn and score everything the quarter's simulation needs, from what was known at as_of.

    Args:
        tables: the CRM (rows after `as_of` are never read).
        quarter: calendar quarter, e.g. "2026Q4".
        as_of: the moment of the forecast.
        win_scorer: deal feature frame -> P(won) per row.
        renewal_probability: pending renewal decisions -> P(renewed) per row; the historical
            rate of each segment when None.
        params: see `RevenueParams`.
        features: optional precomputed `deal_features` rows (deal_id, as_of, ...) covering the
            snapshots needed; they are recomputed when absent. Backtests pass them to save time.
    """
    params = params or RevenueParams()
    as_of = pd.Timestamp(as_of)
    if as_of > tables.as_of:
        raise ValueError(
            f"as_of {as_of:%Y-%m-%d} is after the data's as-of {tables.as_of:%Y-%m-%d}"
        )
    window = Window.of(quarter, as_of)
    start = tables.deals["created_at"].min()
    earlier = window.earlier(params.history_quarters, since=start if pd.notna(start) else as_of)
    snapshots = _snapshot_features(tables, [as_of, *(w.as_of for w in earlier)], features)
    won = won_deals(tables)
    won = won[won["closed_at"] <= as_of]

    history = _timing_history(snapshots, earlier, won, win_scorer, params)
    timing = CloseTiming.fit(history, params)
    open_deals = _open_deals(snapshots, window, tables, win_scorer, timing, params)
    tree = _tree(tables)
    new = _new_deals(tables, window, earlier, won, params)
    leaf_rate, leaf_pool, pool_names = _new_per_leaf(tables, tree, new, as_of, params)

    months = recurring_months(tables, as_of)
    book = renewal_book(months, window, params, renewal_probability)
    company_open, company_new = timing.spread(history, params), new.spread()
    spreads = Spreads(
        open=company_open,
        new=company_new,
        # earlier quarters judged by the segment rates each learned from what it knew then: a
        # churn model fitted later has seen those renewals, so its residuals there are too small
        renewals=_renewal_spread(months, window, earlier, params),
        team_open=timing.team_spread(_with_team(history, tables), params, company_open),
        team_new=new.team_spread(company_new),
    )
    rates, chains, steps = book.rates, book.chains, book.steps
    group = alpha = beta = None
    if len(chains):
        # the learned rates are uncertain: their posterior sets a floor on the churn factor (a
        # churn model, fitted on as few decisions per segment, is held to the same floor)
        segments = chains["segment"].astype(object).fillna("unknown").to_numpy()
        names, group = np.unique(segments, return_inverse=True)
        alpha, beta = rates.posterior(names)
    chain_pool = None
    if len(chains):
        # an annual bill may still change before its decision: draw the change from past ones
        # (SMB bills are small and renew monthly: their expected growth is enough)
        first = steps[steps["in_quarter"]].groupby("chain")[["segment", "months_ahead"]].first()
        chain_pool = rates.pool_index(first["segment"].to_numpy(), first["months_ahead"].to_numpy())
        chain_pool = np.where(first["segment"].to_numpy(object) == "smb", -1, chain_pool)
    churn_sd = _churn_shock(book, spreads.renewals, group, alpha, beta)
    unbilled = unbilled_renewals(months, window, earlier, params)

    return QuarterInputs(
        window=window,
        tree=tree,
        targets=_targets(tables, window.quarter),
        won=won[(won["closed_at"] >= window.q_start) & (won["closed_at"] < window.end)],
        renewals_booked=book.booked,
        open_deals=open_deals,
        chains=chains,
        chain_prob=book.prob,
        chain_value=book.value,
        new=new,
        new_leaf_rate=leaf_rate,
        new_leaf_pool=leaf_pool,
        pool_names=pool_names,
        timing=timing,
        renewal_rates=rates,
        params=params,
        chain_pool=chain_pool,
        spreads=spreads,
        churn_shock_sd=churn_sd,
        unbilled=unbilled,
        renewals_source=_source(renewal_probability),
    )


def _source(renewal_probability: RenewalProbability | None) -> str:
    if renewal_probability is None:
        return SEGMENT_RATES
    return str(getattr(renewal_probability, "source", "a renewal model"))


def _snapshot_features(
    tables: CrmTables, dates: Sequence[pd.Timestamp], features: pd.DataFrame | None
) -> pd.DataFrame:
    """Deal features of every deal open at each date (from the precomputed frame when given)."""
    index = pd.DatetimeIndex(sorted(set(dates)))
    if features is not None:
        have = pd.DatetimeIndex(features["as_of"].unique())
        if index.isin(have).all():
            return features[features["as_of"].isin(index)].reset_index(drop=True)
    snapshots = deal_snapshots(tables, list(index))
    return deal_features(tables, snapshots).reset_index(drop=True)


def _score(win_scorer: WinScorer, frame: pd.DataFrame) -> np.ndarray:
    if frame.empty:
        return np.zeros(0)
    p = np.asarray(win_scorer(frame), dtype=float)
    if p.shape != (len(frame),) or np.isnan(p).any():
        raise ValueError(
            f"win_scorer returned {p.shape} values (NaN: {np.isnan(p).any()}) for "
            f"{len(frame)} deals; expected one probability per row"
        )
    return np.clip(p, 0.0, 1.0)


def _expected_close(frame: pd.DataFrame) -> pd.Series:
    return frame["as_of"] + pd.to_timedelta(frame["days_to_expected_close"], unit="D")


def _timing_history(
    snapshots: pd.DataFrame,
    earlier: Sequence[Window],
    won: pd.DataFrame,
    win_scorer: WinScorer,
    params: RevenueParams,
) -> pd.DataFrame:
    """Rows of past snapshots: stage, bucket, p_win, won inside that window, amounts."""
    closes = won.set_index("deal_id")
    parts = []
    for number, window in enumerate(earlier):
        rows = snapshots[snapshots["as_of"] == window.as_of]
        if rows.empty:
            continue
        closed_at = closes["closed_at"].reindex(rows["deal_id"].to_numpy()).to_numpy()
        inside = (closed_at >= window.start.to_datetime64()) & (
            closed_at < window.end.to_datetime64()
        )
        parts.append(
            pd.DataFrame(
                {
                    "deal_id": rows["deal_id"].to_numpy(object),
                    "stage": rows["stage"].to_numpy(object),
                    "bucket": close_buckets(_expected_close(rows), window, params),
                    "segment": rows["segment"].astype(object).fillna("unknown").to_numpy(),
                    "p_win": _score(win_scorer, rows),
                    "won_inside": inside.astype(float),
                    "amount": rows["amount"].to_numpy(float),
                    "booked": closes["amount"].reindex(rows["deal_id"].to_numpy()).to_numpy(),
                    "window": number,
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _with_team(history: pd.DataFrame, tables: CrmTables) -> pd.DataFrame:
    """`history` with the team of each deal's owner (UNASSIGNED when it has none)."""
    if history.empty:
        return history
    rep = tables.deals.set_index("deal_id")["rep_id"].reindex(history["deal_id"].to_numpy())
    team = tables.reps.set_index("rep_id")["team"].reindex(rep.to_numpy()).to_numpy(object)
    return history.assign(team=np.where(pd.isna(team), UNASSIGNED, team))


def _open_deals(
    snapshots: pd.DataFrame,
    window: Window,
    tables: CrmTables,
    win_scorer: WinScorer,
    timing: CloseTiming,
    params: RevenueParams,
) -> pd.DataFrame:
    frame = snapshots[snapshots["as_of"] == window.as_of].reset_index(drop=True)
    rep = tables.deals.set_index("deal_id")["rep_id"]
    frame.insert(1, "rep_id", rep.reindex(frame["deal_id"].to_numpy()).to_numpy(object))
    frame["p_win"] = _score(win_scorer, frame)
    return _with_timing(frame, window, timing, params)


def _with_timing(
    frame: pd.DataFrame, window: Window, timing: CloseTiming, params: RevenueParams
) -> pd.DataFrame:
    """Add expected_close, bucket, P(close inside | won), expected amount and P(won inside)."""
    out = frame.copy()
    out["expected_close"] = _expected_close(out)
    out["bucket"] = close_buckets(out["expected_close"], window, params)
    stage = out["stage"].to_numpy(object)
    segment = out["segment"].astype(object).fillna("unknown").to_numpy()
    out["p_close_inside"] = timing.probability(
        stage, out["bucket"].to_numpy(), segment, out["p_win"].to_numpy(float)
    )
    if window.start >= window.end:
        out["p_close_inside"] = 0.0
    out["expected_amount"] = out["amount"].to_numpy(float) * timing.ratio(stage)
    out["p_inside"] = out["p_win"] * out["p_close_inside"]
    out["in_quarter_pipeline"] = (out["expected_close"] < window.end).to_numpy()
    return out


def _tree(tables: CrmTables) -> OrgTree:
    """Every person in reps is a leaf; owners missing from it book to an unassigned leaf."""
    extra = pd.DataFrame(
        {"rep_id": [UNASSIGNED], "name": [UNASSIGNED], "team": [UNASSIGNED], "region": [UNASSIGNED]}
    )
    return OrgTree.from_reps(tables.reps, extra=extra)


def _targets(tables: CrmTables, quarter: pd.Period) -> dict[str, pd.Series]:
    t = tables.targets
    t = t[t["period"].astype(str) == str(quarter)]
    return {
        level: t.loc[t["level"] == level].groupby("owner")["amount"].sum().rename(level)
        for level in LEVELS
    }


def _new_deals(
    tables: CrmTables,
    window: Window,
    earlier: Sequence[Window],
    won: pd.DataFrame,
    params: RevenueParams,
) -> NewDeals:
    """Count and amounts of deals created after the same point of earlier quarters and won
    inside them, per team; the team's level for the forecast quarter with seasonality."""
    deals = tables.deals.set_index("deal_id")
    team_of = tables.reps.set_index("rep_id")["team"]
    region_of = tables.reps.drop_duplicates("team").set_index("team")["region"]
    won = won.assign(
        created_at=deals["created_at"].reindex(won["deal_id"].to_numpy()).to_numpy(),
        team=team_of.reindex(won["rep_id"].to_numpy()).to_numpy(object),
    )
    teams = pd.Index(sorted(tables.reps["team"].dropna().unique()), name="team")
    counts, amounts = {}, []
    for w in earlier:
        later = won[
            (won["created_at"] > w.as_of)
            & (won["closed_at"] >= w.start)
            & (won["closed_at"] < w.end)
        ]
        counts[w.quarter] = later.groupby("team").size().reindex(teams, fill_value=0)
        amounts.append(later[["team", "amount"]].assign(quarter=w.quarter))
    if not counts:
        empty = pd.Series(0.0, index=teams)
        return NewDeals(pd.DataFrame(index=teams), pd.Series(1.0, index=[1, 2, 3, 4]), empty, {})
    table = pd.DataFrame(counts)[sorted(counts)]  # teams x quarters, oldest first
    seasonal = _seasonal_index(table.sum(axis=0))
    deseasonal = table / seasonal.reindex([q.quarter for q in table.columns]).to_numpy()
    level = deseasonal.iloc[:, -params.level_quarters :].mean(axis=1)
    rate = level * float(seasonal.get(window.quarter.quarter, 1.0))
    if window.start >= window.end:
        rate = rate * 0.0
    past = pd.concat(amounts, ignore_index=True)
    everyone = past["amount"].to_numpy(float)
    pools = {}
    for team in teams:
        own = past.loc[past["team"] == team, "amount"].to_numpy(float)
        region = region_of.get(team)
        nearby = past.loc[
            past["team"].map(region_of).to_numpy(object) == region, "amount"
        ].to_numpy(float)
        pools[team] = (
            own
            if len(own) >= params.min_pool
            else (nearby if len(nearby) >= params.min_pool else everyone)
        )
    totals = past.groupby("quarter")["amount"].sum().reindex(table.columns, fill_value=0.0)
    by_team = (
        past.groupby(["team", "quarter"])["amount"].sum().unstack("quarter")
        .reindex(index=teams, columns=table.columns).fillna(0.0)
    )  # fmt: skip
    return NewDeals(table, seasonal, rate, pools, level, totals, params.level_quarters, by_team)


def _seasonal_index(totals: pd.Series) -> pd.Series:
    """Quarter-of-year index from company totals: each quarter against its trailing year's mean,
    averaged by quarter of year, pulled towards 1 when seen once, normalised to mean 1."""
    quarters = list(totals.index)
    ratios: dict[int, list[float]] = {1: [], 2: [], 3: [], 4: []}
    values = totals.to_numpy(float)
    for i in range(3, len(values)):
        consecutive = quarters[i] - quarters[i - 3] == 3
        base = values[i - 3 : i + 1].mean()
        if consecutive and base > 0:
            ratios[quarters[i].quarter].append(values[i] / base)
    index = pd.Series(
        {q: 1 + (np.mean(r) - 1) * len(r) / (len(r) + 1) if r else 1.0 for q, r in ratios.items()}
    )
    return index / index.mean()


def _new_per_leaf(
    tables: CrmTables, tree: OrgTree, new: NewDeals, as_of: pd.Timestamp, params: RevenueParams
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Split each team's rate of new deals won over its reps by the deals each created in the
    last 91 days times the rep's win rate (evenly over the team's reps when it created none);
    every leaf draws from its team's pool.

    The win rate matters: a rep who opens many deals and wins few would otherwise be handed a
    large share of the team's wins (on a deals-only export of the default world, reps winning
    3 % of their deals were forecast ten times what they booked)."""
    deals = tables.deals
    recent = deals[(deals["created_at"] > as_of - 91 * DAY) & (deals["created_at"] <= as_of)]
    per_rep = recent.groupby("rep_id").size()
    leaves = tree.leaves
    team = leaves["team"].to_numpy(object)
    win_rate = _rep_win_rates(deals, leaves, as_of, params.prior_weight)
    share = per_rep.reindex(leaves["rep_id"].to_numpy()).fillna(0.0).to_numpy(float) * win_rate
    team_total = pd.Series(share).groupby(team).transform("sum").to_numpy()
    sellers = (leaves["rep_id"].isin(deals["rep_id"])).to_numpy()
    even = pd.Series(sellers.astype(float)).groupby(team).transform("sum").to_numpy()
    weight = np.where(
        team_total > 0,
        share / np.where(team_total > 0, team_total, 1),
        np.where(even > 0, sellers / np.where(even > 0, even, 1), 0.0),
    )
    rate = new.rate.reindex(team).fillna(0.0).to_numpy(float) * weight
    pool_names = tuple(sorted(new.pools))
    lookup = {name: i for i, name in enumerate(pool_names)}
    pool = np.array([lookup.get(t, 0) for t in team], dtype=np.int64)
    if not pool_names:
        return np.zeros(tree.n_leaves), np.zeros(tree.n_leaves, dtype=np.int64), ()
    return rate, pool, pool_names


def _rep_win_rates(
    deals: pd.DataFrame, leaves: pd.DataFrame, as_of: pd.Timestamp, prior_weight: float
) -> np.ndarray:
    """Each leaf rep's share of deals won among those closed in the year before `as_of`, pulled
    towards the team's rate (and the team's towards everyone's) by `prior_weight` deals."""
    closed = deals[(deals["closed_at"] > as_of - 365 * DAY) & (deals["closed_at"] <= as_of)]
    won = (closed["outcome"] == "won").astype(float)
    by_rep = won.groupby(closed["rep_id"]).agg(["sum", "size"])
    rep = by_rep.reindex(leaves["rep_id"].to_numpy()).fillna(0.0)
    overall = float(won.mean()) if len(won) else 0.5
    team_of = leaves.set_index("rep_id")["team"]
    by_team = by_rep.groupby(team_of.reindex(by_rep.index).to_numpy()).sum()
    team = by_team.reindex(leaves["team"].to_numpy()).fillna(0.0)
    team_rate = (team["sum"].to_numpy() + prior_weight * overall) / (
        team["size"].to_numpy() + prior_weight
    )
    return (rep["sum"].to_numpy() + prior_weight * team_rate) / (
        rep["size"].to_numpy() + prior_weight
    )


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


# --- scenarios -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddedDeal:
    """A deal the CRM does not hold yet (e.g. one a manager knows is coming).

    Without `win_probability` it is scored like an open deal of the same stage and rep: the
    median of such deals' features, with this deal's amount, stage and expected close.
    """

    deal_id: str
    rep_id: str
    amount: float
    stage: str
    expected_close: pd.Timestamp
    win_probability: float | None = None


@dataclass(frozen=True)
class Scenario:
    """Changes to the open deals at as_of; the distribution is then drawn again.

    Attributes:
        name: shown with the results.
        remove: deal ids taken out of the forecast (lost, or not to be counted).
        add: deals added to the pipeline.
        slip_days: deal id -> days its expected close moves (positive: later). A later date
            counts as a push of the close date for the win model (which never raises a win
            probability) and means the deal closes no earlier than its new date: past the
            quarter's end it cannot close inside the quarter, and a quarter it moves into
            counts on it at least as much as before (`_slipped_timing`).
        stage: deal id -> new stage; `closed_won` books it now, `closed_lost` removes it.
    """

    name: str = "scenario"
    remove: tuple[str, ...] = ()
    add: tuple[AddedDeal, ...] = ()
    slip_days: Mapping[str, int] = field(default_factory=dict)
    stage: Mapping[str, str] = field(default_factory=dict)

    def apply(self, inputs: QuarterInputs, win_scorer: WinScorer | None) -> QuarterInputs:
        """New inputs with the changes made; unchanged deals keep their place (and randomness)."""
        deals = inputs.open_deals.copy()
        known = set(deals["deal_id"])
        mentioned = set(self.remove) | set(self.slip_days) | set(self.stage)
        missing = sorted(mentioned - known)
        if missing:
            raise KeyError(f"scenario {self.name!r}: deals not open at as_of: {missing}")
        for stage in self.stage.values():
            if stage not in (*OPEN_STAGES, *CLOSED_STAGES):
                raise ValueError(f"scenario {self.name!r}: unknown stage {stage!r}")
        window = inputs.window
        changed = np.zeros(len(deals), dtype=bool)
        ids = deals["deal_id"].to_numpy(object)
        slipped = np.zeros(len(deals), dtype=bool)  # moved later: see `_slipped_timing`
        before = deals[["p_close_inside", "p_inside", "expected_close"]].copy()
        shifts = np.zeros(len(deals))
        for deal_id, days in self.slip_days.items():
            row = ids == deal_id
            shifts[row] = days
            if days > 0:
                # the win model hears of the push; the date itself moves only the timing, so
                # a later date can never make the deal likelier to be won
                deals.loc[row, "close_pushes"] += 1
                slipped |= row
            else:
                deals.loc[row, "days_to_expected_close"] += days
            changed |= row
        won_now = []
        for deal_id, stage in self.stage.items():
            row = ids == deal_id
            if stage in OPEN_STAGES:
                deals.loc[row, "stage"] = stage
                deals.loc[row, "days_in_stage"] = 0.0
                changed |= row
            elif stage == "closed_won":
                won_now.append(deal_id)
        quarter_end = window.as_of.to_period("Q").end_time
        expected = _expected_close(deals)
        deals["expected_close_in_quarter"] = (expected <= quarter_end).astype(float)
        if changed.any():
            if win_scorer is None:
                raise ValueError("re-scoring changed deals needs the win_scorer")
            deals.loc[changed, "p_win"] = _score(win_scorer, deals.loc[changed])
        deals.loc[slipped, "days_to_expected_close"] += shifts[slipped]
        if self.add:
            unknown = sorted({d.rep_id for d in self.add} - set(inputs.tree.leaves["rep_id"]))
            if unknown:
                raise KeyError(f"scenario {self.name!r}: added deals' reps not in reps: {unknown}")
            deals = pd.concat([deals, self._added(deals, window, win_scorer)], ignore_index=True)
        deals = _with_timing(deals, window, inputs.timing, inputs.params)
        if slipped.any():  # added deals come after the open ones, and never slipped
            extra = len(deals) - len(slipped)
            before = before.reset_index(drop=True).reindex(range(len(deals)))
            deals = _slipped_timing(
                deals.reset_index(drop=True),
                before,
                np.concatenate([slipped, np.zeros(extra, dtype=bool)]),
                window,
            )
        out = deals["deal_id"].to_numpy(object)
        gone = np.isin(
            out, [*self.remove, *[d for d, s in self.stage.items() if s in CLOSED_STAGES]]
        )
        deals.loc[gone, ["p_win", "p_inside"]] = 0.0
        deals["removed"] = gone
        won = inputs.won
        if won_now:
            inside = window.start < window.end and window.q_start <= window.as_of
            rows = deals[deals["deal_id"].isin(won_now)]
            if inside:
                booked = pd.DataFrame(
                    {
                        "deal_id": rows["deal_id"].to_numpy(),
                        "rep_id": rows["rep_id"].to_numpy(),
                        "closed_at": window.as_of,
                        "amount": rows["amount"].to_numpy(float),  # won now: as it stands
                    }
                )
                won = pd.concat([won, booked], ignore_index=True)
        return replace(inputs, open_deals=deals, won=won, scenario=self.name)

    def _added(
        self, deals: pd.DataFrame, window: Window, win_scorer: WinScorer | None
    ) -> pd.DataFrame:
        rows = []
        for deal in self.add:
            if deal.stage not in OPEN_STAGES:
                raise ValueError(f"added deal {deal.deal_id}: stage must be open, not {deal.stage}")
            if deal.deal_id in set(deals["deal_id"]):
                raise ValueError(f"added deal {deal.deal_id} is already in the pipeline")
            same = deals[(deals["stage"] == deal.stage) & (deals["rep_id"] == deal.rep_id)]
            if same.empty:
                same = deals[deals["stage"] == deal.stage]
            if same.empty:
                same = deals
            template = _typical_row(same)
            template.update(
                {
                    "deal_id": deal.deal_id,
                    "rep_id": deal.rep_id,
                    "as_of": window.as_of,
                    "stage": deal.stage,
                    "amount": float(deal.amount),
                    "amount_change_ratio": 1.0,
                    "amount_changes": 0.0,
                    "close_pushes": 0.0,
                    "days_in_stage": 0.0,
                    "days_to_expected_close": (pd.Timestamp(deal.expected_close) - window.as_of)
                    / DAY,
                }
            )
            rows.append(template)
        added = pd.DataFrame(rows)
        given = np.array([d.win_probability for d in self.add], dtype=object)
        scored = np.full(len(added), np.nan)
        need = np.array([p is None for p in given])
        if need.any():
            if win_scorer is None:
                raise ValueError("scoring added deals needs the win_scorer (or win_probability)")
            scored[need] = _score(win_scorer, added[need].reset_index(drop=True))
        scored[~need] = given[~need].astype(float)
        added["p_win"] = np.clip(scored, 0, 1)
        return added


def _slipped_timing(
    deals: pd.DataFrame, before: pd.DataFrame, slipped: np.ndarray, window: Window
) -> pd.DataFrame:
    """A slip is the manager's word that the deal closes no earlier than its new date.

    So a deal slipped past the window's end cannot close inside it (0); one still inside keeps
    at most its chance of closing inside from before (a later date never raises it); one moved
    into the window from before it keeps at least its chance from before (the window gains).
    A deal already overdue belongs to the window open now (it can close any day from the
    as-of): slipped, it stays in it, and its chance there never rises.
    """
    out = deals.copy()
    new_close = out["expected_close"]
    old_close = before["expected_close"]
    open_now = window.as_of >= window.q_start  # the current quarter: overdue deals are its own
    was_inside = ((old_close < window.end) & ((old_close >= window.start) | open_now)).to_numpy()
    past_end = slipped & (new_close >= window.end).to_numpy()
    kept = slipped & ~past_end & was_inside
    moved_in = slipped & ~past_end & ~was_inside & (new_close >= window.start).to_numpy()
    p_close = out["p_close_inside"].to_numpy(float).copy()
    old = before["p_close_inside"].to_numpy(float)
    p_close[past_end] = 0.0
    p_close[kept] = np.minimum(p_close[kept], old[kept])
    p_win = out["p_win"].to_numpy(float)
    # what the window counted on from the deal before, now that it arrives later (the push
    # may have lowered its win probability a little)
    floor = before["p_inside"].to_numpy(float) / np.where(p_win > 0, p_win, 1.0)
    p_close[moved_in] = np.clip(np.maximum(p_close[moved_in], floor[moved_in]), 0.0, 1.0)
    out["p_close_inside"] = p_close
    out["p_inside"] = out["p_win"] * out["p_close_inside"]
    return out


def _typical_row(frame: pd.DataFrame) -> dict:
    """Median of numeric columns, most frequent value of the others."""
    row: dict[str, object] = {}
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            row[column] = float(values.median()) if values.notna().any() else np.nan
        else:
            mode = values.dropna().mode()
            row[column] = mode.iloc[0] if len(mode) else None
    return row


# --- the forecast --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuarterForecast:
    """The quarter's distribution at every node of the org tree, and how it was made.

    Attributes:
        quarter, as_of, draws, seed, scenario: what was asked.
        nodes: one row per node (level, node, parent) with mean, p10, p50, p90, target,
            gap_to_target (target - mean), p_reach_target, closed, open, new, recurring (the
            decomposition of the mean; recurring includes renewals already booked), booked
            (closed + renewals already booked), open_pipeline (open deals expected to close by
            the quarter's end, unweighted), remaining_gap (what new business still has to
            bring: target - closed - recurring), coverage (open_pipeline / remaining_gap;
            inf when nothing remains), open_deals, std, top_deals and top_share (the deals
            carrying most of the variance, and their share of it), source ("simulation", or the
            time series the node leans on, see `SeriesLean`) and simulation_mean (the
            simulation's mean before leaning, which the parts above add up to).
        drivers: per node, the deals with the largest variance contribution (rank, deal_id, rep,
            stage, amount, p_inside, variance_share, cumulative_share).
        deals: every open deal with its probabilities and expected booked amount.
        node_draws: per level, (node names, nodes x draws array).
        inputs: the inputs (for scenarios).
    """

    quarter: str
    as_of: pd.Timestamp
    draws: int
    seed: int
    scenario: str | None
    nodes: pd.DataFrame
    drivers: pd.DataFrame
    deals: pd.DataFrame
    node_draws: dict[str, tuple[pd.Index, np.ndarray]]
    inputs: QuarterInputs

    def level(self, level: str) -> pd.DataFrame:
        """The rows of one level (rep, team, region or company)."""
        if level not in LEVELS:
            raise ValueError(f"level {level!r}: expected one of {', '.join(LEVELS)}")
        return self.nodes[self.nodes["level"] == level].reset_index(drop=True)

    def samples(self, level: str, node: str) -> np.ndarray:
        """The draws of one node."""
        names, values = self.node_draws[level]
        position = names.get_indexer([node])[0]
        if position < 0:
            raise KeyError(f"no {level} {node!r}")
        return values[position]

    def spread_sentence(self, level: str = COMPANY, node: str = COMPANY) -> str:
        """'These 5 deals carry 34 % of the uncertainty: ...' for one node."""
        top = self.drivers[(self.drivers["level"] == level) & (self.drivers["node"] == node)]
        if top.empty:
            return f"{node}: no open deal carries any uncertainty"
        share = float(top["variance_share"].sum())
        names = ", ".join(top["deal_id"].astype(str))
        return (
            f"{node}: these {len(top)} deals carry {share:.0%} of the uncertainty "
            f"(variance of the quarter's total): {names}"
        )

    def to_dict(self, level: str | None = None) -> dict:
        """JSON-ready: the question, the nodes (of one level or all) and their top deals."""
        nodes = self.nodes if level is None else self.level(level)
        drivers = self.drivers[self.drivers["node"].isin(nodes["node"])]
        if level is not None:
            drivers = drivers[drivers["level"] == level]
        return {
            "quarter": self.quarter,
            "as_of": self.as_of.isoformat(),
            "draws": self.draws,
            "seed": self.seed,
            "scenario": self.scenario,
            "definition": "bookings: won deals closing in the quarter + renewals passed in it",
            "renewals_from": self.inputs.renewals_source,
            "leaning": self.inputs.lean.basis if self.inputs.lean is not None else None,
            "nodes": _records(nodes.drop(columns=["top_deals"], errors="ignore")),
            "drivers": _records(drivers),
        }

    def node_view(
        self, level: str, node: str, *, reps: frozenset[str] | None = None
    ) -> dict | None:
        """One node, JSON-ready: its figures, its children's, and the deals carrying most of its
        uncertainty (only those of `reps` when given); None when the node is not in the forecast.
        """
        nodes = self.level(level)
        row = nodes[nodes["node"] == node]
        if row.empty:
            return None
        below = LEVELS[LEVELS.index(level) - 1] if level != "rep" else None
        children = self.nodes[(self.nodes["level"] == below) & (self.nodes["parent"] == node)]
        top = self.drivers[(self.drivers["level"] == level) & (self.drivers["node"] == node)]
        if reps is not None:
            top = top[top["rep_id"].isin(reps)]
            children = children[(children["level"] != "rep") | children["node"].isin(reps)]
        drop = ["top_deals"]
        return {
            "node": _records(row.drop(columns=drop, errors="ignore"))[0],
            "children": _records(children.drop(columns=drop, errors="ignore")),
            "drivers": _records(top.drop(columns=["level", "node"])),
        }


def with_revenue_at_risk(
    forecast: QuarterForecast, at_risk_by_owner: Mapping[str, float], reps: pd.DataFrame
) -> QuarterForecast:
    """The forecast with `revenue_at_risk` on every node: the churn model's probability (next
    90 days) x ARR, summed over the accounts owned under the node (by rep, the rep's team and
    region, and the company). A companion figure: the bookings distribution is not changed."""
    owners = pd.Series(at_risk_by_owner, dtype=float)
    by_rep = reps.set_index("rep_id")[["team", "region"]].reindex(owners.index)
    sums = {
        "rep": owners,
        "team": owners.groupby(by_rep["team"].to_numpy()).sum(),
        "region": owners.groupby(by_rep["region"].to_numpy()).sum(),
    }
    nodes = forecast.nodes
    at_risk = np.zeros(len(nodes))
    for level, total in sums.items():
        here = (nodes["level"] == level).to_numpy()
        at_risk[here] = total.reindex(nodes.loc[here, "node"].to_numpy()).fillna(0.0).to_numpy()
    at_risk[(nodes["level"] == "company").to_numpy()] = float(owners.sum())
    return replace(forecast, nodes=nodes.assign(revenue_at_risk=at_risk))


def _records(frame: pd.DataFrame) -> list[dict]:
    clean = frame.astype(object).where(pd.notna(frame), None)
    out = []
    for row in clean.to_dict(orient="records"):
        out.append(
            {
                k: (
                    v.isoformat()
                    if isinstance(v, pd.Timestamp)
                    else float(v)
                    if isinstance(v, np.floating)
                    else int(v)
                    if isinstance(v, np.integer)
                    else bool(v)
                    if isinstance(v, np.bool_)
                    else v
                )
                for k, v in row.items()
            }
        )
    return out


def forecast_quarter(
    tables: CrmTables,
    *,
    quarter: str,
    as_of: pd.Timestamp | str,
    win_scorer: WinScorer,
    draws: int = 10_000,
    seed: int = 0,
    level: str | None = None,
    renewal_probability: RenewalProbability | None = None,
    scenario: Scenario | None = None,
    params: RevenueParams | None = None,
    features: pd.DataFrame | None = None,
) -> QuarterForecast:
    """The bookings of `quarter` as seen at `as_of`: a distribution at every node of the org tree.

    Args:
        tables: the CRM; nothing recorded after `as_of` is read.
        quarter: calendar quarter, e.g. "2026Q4".
        as_of: the moment of the forecast (before, inside or after the quarter).
        win_scorer: deal feature frame -> P(won) per row (the deal-win champion in production).
        draws: simulated quarters (one seed: the same inputs give the same draws).
        seed: random seed.
        level: report only this level's nodes (rep, team, region or company); all when None.
            The whole tree is simulated either way.
        renewal_probability: pending renewal decisions -> P(renewed); segment rates when None.
        scenario: changes to the open deals (see `Scenario`).
        params: see `RevenueParams`.
        features: precomputed deal features (see `prepare_quarter`).

    Returns:
        The forecast; `nodes` has the figures per node, `drivers` the deals behind the spread.
    """
    inputs = prepare_quarter(
        tables,
        quarter=quarter,
        as_of=as_of,
        win_scorer=win_scorer,
        renewal_probability=renewal_probability,
        params=params,
        features=features,
    )
    if scenario is not None:
        inputs = scenario.apply(inputs, win_scorer)
    return simulate_quarter(inputs, draws=draws, seed=seed, level=level)


def simulate_quarter(
    inputs: QuarterInputs,
    *,
    draws: int = 10_000,
    seed: int = 0,
    level: str | None = None,
    workers: int | None = None,
) -> QuarterForecast:
    """Draw the quarter from prepared inputs (with a scenario applied, or not) and summarise
    every node. `workers`: threads drawing chunks (default: up to two; same result)."""
    if level is not None and level not in LEVELS:
        raise ValueError(f"level {level!r}: expected one of {', '.join(LEVELS)}")
    sim_inputs = inputs.simulation_inputs()
    result = simulate(sim_inputs, draws=draws, seed=seed, workers=workers)
    exact = moments(sim_inputs)
    tree = inputs.tree
    deals = _deal_table(inputs, sim_inputs, exact.deal_variance)
    won = np.bincount(
        inputs.leaf_of(inputs.won["rep_id"]), inputs.won["amount"], minlength=tree.n_leaves
    )
    leaf_parts = {
        "closed": won,
        "open": result.part_means["open"],
        "new": result.part_means["new"],
        # renewals already passed (in `closed` of the simulation) and those still to come
        "recurring": result.part_means["recurring"] + (sim_inputs.closed - won),
    }
    booked = sim_inputs.closed
    pipeline = np.bincount(
        deals["leaf"], deals["amount"] * deals["in_quarter_pipeline"], minlength=tree.n_leaves
    )
    n_open = np.bincount(deals["leaf"], ~deals["removed"], minlength=tree.n_leaves)
    frames, node_draws = [], {}
    levels = LEVELS if level is None else (level,)
    for lvl in LEVELS:
        names = tree.groups[lvl][1]
        values = tree.roll_up(result.leaf_draws, lvl)
        source, scale = _leaning(inputs.lean, lvl, names)
        simulation_mean = None
        if (scale != 1.0).any():
            # the series' mean, the simulation's shape above what is already booked
            simulation_mean = values.mean(axis=1, dtype=np.float64)
            floor = tree.roll_up(booked, lvl)[:, None].astype(values.dtype)
            values = floor + (values - floor) * scale[:, None].astype(values.dtype)
        node_draws[lvl] = (names, values)
        if lvl not in levels:
            continue
        frame = _node_frame(
            lvl, names, values, tree=tree, targets=inputs.targets.get(lvl),
            leaf_parts=leaf_parts, booked=booked, pipeline=pipeline, n_open=n_open,
        )  # fmt: skip
        frame["source"] = source
        frame["simulation_mean"] = frame["mean"] if simulation_mean is None else simulation_mean
        frames.append(frame)
    nodes = pd.concat(frames, ignore_index=True)
    drivers = _drivers(deals, nodes, tree, levels, inputs.params.top_deals)
    top = drivers.groupby(["level", "node"]).agg(
        top_deals=("deal_id", lambda s: ", ".join(map(str, s))),
        top_share=("variance_share", "sum"),
    )
    nodes = nodes.join(top, on=["level", "node"])
    nodes["top_share"] = nodes["top_share"].fillna(0.0)
    nodes = _hide_empty(nodes)
    return QuarterForecast(
        quarter=str(inputs.window.quarter),
        as_of=inputs.window.as_of,
        draws=draws,
        seed=seed,
        scenario=inputs.scenario,
        nodes=nodes,
        drivers=drivers[drivers["node"].isin(nodes["node"])].reset_index(drop=True),
        deals=deals.drop(columns=["leaf"]),
        node_draws=node_draws,
        inputs=inputs,
    )


def _leaning(lean: SeriesLean | None, level: str, names: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    if lean is None:
        return np.full(len(names), SIMULATION, dtype=object), np.ones(len(names))
    return lean.at(level, names)


def expected_by_node(inputs: QuarterInputs) -> pd.DataFrame:
    """The simulation's exact mean and what is already booked at every node (level, node,
    mean, booked), without drawing."""
    sim = inputs.simulation_inputs()
    exact = moments(sim)
    per_leaf = sim.closed + exact.mean["open"] + exact.mean["new"] + exact.mean["recurring"]
    frames = []
    for level in LEVELS:
        names = inputs.tree.groups[level][1]
        frames.append(
            pd.DataFrame(
                {
                    "level": level,
                    "node": names.astype(str),
                    "mean": inputs.tree.roll_up(per_leaf, level),
                    "booked": inputs.tree.roll_up(sim.closed, level),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def with_lean(inputs: QuarterInputs, forecasts: pd.DataFrame, basis: str) -> QuarterInputs:
    """`inputs` with the nodes of `forecasts` (level, node, source, forecast: a time series'
    forecast of the quarter) leaning on their series; see `SeriesLean`."""
    exact = expected_by_node(inputs)
    rows = forecasts.merge(exact, on=["level", "node"], how="inner")
    to_come = rows["mean"] - rows["booked"]
    # a series at or below what is booked, or a node with nothing left to come, is not followed
    rows = rows[(rows["forecast"] > rows["booked"]) & (to_come > 0)]
    rows = rows.assign(scale=(rows["forecast"] - rows["booked"]) / (rows["mean"] - rows["booked"]))
    if rows.empty:
        return replace(inputs, lean=None)
    return replace(inputs, lean=SeriesLean(rows[["level", "node", "source", "scale"]], basis))


def _deal_table(inputs: QuarterInputs, sim: SimulationInputs, variance: np.ndarray) -> pd.DataFrame:
    deals = inputs.open_deals
    leaves = inputs.tree.leaves
    columns = [
        "deal_id", "rep_id", "stage", "amount", "expected_close", "bucket", "p_win",
        "p_close_inside", "p_inside", "expected_amount", "in_quarter_pipeline",
    ]  # fmt: skip
    out = deals[columns].copy()
    out["removed"] = deals["removed"].to_numpy(bool) if "removed" in deals else False
    out["leaf"] = sim.deal_leaf
    out["team"] = leaves["team"].to_numpy(object)[sim.deal_leaf]
    out["region"] = leaves["region"].to_numpy(object)[sim.deal_leaf]
    out["expected_bookings"] = out["p_inside"] * out["expected_amount"]
    out["variance"] = variance
    return out


def _node_frame(
    level: str,
    names: pd.Index,
    values: np.ndarray,
    *,
    tree: OrgTree,
    targets: pd.Series | None,
    leaf_parts: dict[str, np.ndarray],
    booked: np.ndarray,
    pipeline: np.ndarray,
    n_open: np.ndarray,
    workers: int | None = None,
) -> pd.DataFrame:
    target = (targets if targets is not None else pd.Series(dtype=float)).reindex(names)
    target = target.to_numpy(dtype=float)
    stats = summarise(values, target, workers=workers)
    roll = {k: tree.roll_up(v, level) for k, v in leaf_parts.items()}
    booked_here = tree.roll_up(booked, level)
    # what new business still has to bring: the target less what is booked and the renewals
    # expected to come (recurring includes the renewals already booked)
    remaining = target - roll["closed"] - roll["recurring"]
    open_pipeline = tree.roll_up(pipeline, level)
    with np.errstate(divide="ignore", invalid="ignore"):
        coverage = np.where(remaining > 0, open_pipeline / remaining, np.inf)
    coverage = np.where(np.isnan(target), np.nan, coverage)
    frame = pd.DataFrame(
        {
            "level": level,
            "node": names.astype(str),
            "parent": tree.parent(level).reindex(names).to_numpy(object),
            "mean": stats["mean"],
            "std": stats["std"],
            "p10": stats["p10"],
            "p50": stats["p50"],
            "p90": stats["p90"],
            "target": target,
            "gap_to_target": target - stats["mean"],
            "p_reach_target": stats["reach"],
            **{part: roll[part] for part in PARTS},
            "booked": booked_here,
            "open_pipeline": open_pipeline,
            "remaining_gap": remaining,
            "coverage": coverage,
            "open_deals": tree.roll_up(n_open.astype(float), level).astype(int),
        }
    )
    return frame


def _drivers(
    deals: pd.DataFrame, nodes: pd.DataFrame, tree: OrgTree, levels: Sequence[str], k: int
) -> pd.DataFrame:
    """Per node, the k deals with the largest variance and their share of the node's variance."""
    live = deals[(deals["variance"] > 0) & ~deals["removed"]]
    node_var = nodes.set_index(["level", "node"])["std"] ** 2
    parts = []
    for level in levels:
        key = {
            "rep": live["rep_id"],
            "team": live["team"],
            "region": live["region"],
            COMPANY: pd.Series(COMPANY, index=live.index),
        }[level]
        ranked = live.assign(level=level, node=key.astype(str).to_numpy()).sort_values(
            ["node", "variance"], ascending=[True, False], kind="stable"
        )
        top = ranked.groupby("node", sort=False).head(k).copy()
        top["rank"] = top.groupby("node").cumcount() + 1
        total = node_var.reindex(pd.MultiIndex.from_arrays([top["level"], top["node"]]))
        top["variance_share"] = top["variance"].to_numpy() / np.where(
            total.to_numpy() > 0, total.to_numpy(), np.nan
        )
        top["cumulative_share"] = top.groupby("node")["variance_share"].cumsum()
        parts.append(top)
    columns = [
        "level", "node", "rank", "deal_id", "rep_id", "stage", "amount", "expected_close",
        "p_win", "p_inside", "expected_amount", "variance_share", "cumulative_share",
    ]  # fmt: skip
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def _hide_empty(nodes: pd.DataFrame) -> pd.DataFrame:
    """Drop leaves and groups with nothing at all: no target, no bookings, no pipeline."""
    empty = (
        nodes["target"].isna()
        & (nodes["mean"].abs() < 1e-9)
        & (nodes["open_deals"] == 0)
        & (nodes["level"] != COMPANY)
    )
    return nodes[~empty].reset_index(drop=True)
