"""When won deals close: the close-timing model, the open deals' chance of closing inside."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables
from forecast.revenue.bookings import UNASSIGNED, won_deals
from forecast.revenue.params import RevenueParams, Window, WinScorer, close_buckets
from forecast.revenue.spread import pooled_excess, relative_excess, shrunk


def _bands(stage: pd.Series, p_win: pd.Series, edges: pd.DataFrame) -> np.ndarray:
    """low / mid / high: each p_win against its stage's terciles (mid when the stage is unseen)."""
    if edges.empty:
        return np.full(len(stage), "mid", dtype=object)
    at = edges.reindex(np.asarray(stage, object))
    p = np.asarray(p_win, float)
    low, high = at.iloc[:, 0].to_numpy(float), at.iloc[:, 1].to_numpy(float)
    band = np.where(p < low, "low", np.where(p > high, "high", "mid"))
    return np.where(np.isnan(low), "mid", band).astype(object)


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
    # days from creation to close of a typical won deal (`typical_cycle_days`): when a deal
    # without an expected close is due (`expected_inside`); NaN when not known
    cycle_days: float = float("nan")

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
            levels.append(shrunk(sums["won_inside"], sums["p_win"], prior, w).clip(0, 1))
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
        return relative_excess(self.misses(history, params))

    def misses(self, history: pd.DataFrame, params: RevenueParams | None = None) -> pd.DataFrame:
        """The open deals' misses (`forecast.revenue.spread.misses_frame`) per earlier window
        number, each judged as in `spread`."""
        return self._residuals(history, params, ["window"])

    def team_spread(
        self, history: pd.DataFrame, params: RevenueParams | None, company: float
    ) -> float:
        """Relative spread of a team's own quarter: how far each team's open-deal bookings of
        the earlier quarters moved beyond its deals' chance (judged out of sample as `spread`),
        pooled over teams and quarters (sum of excess over sum of expected squared), less what
        the whole company's quarter (`company`) explains. `history` needs a `team` column."""
        if "team" not in history:
            return 0.0
        sums = self._residuals(history, params, ["window", "team"]).query("e > 0")
        return pooled_excess(sums["r"] - sums["e"], sums["v"], sums["e"], less=company)

    def _residuals(
        self, history: pd.DataFrame, params: RevenueParams | None, by: list[str]
    ) -> pd.DataFrame:
        """Expected (e), chance variance (v) and realised (r) bookings of the earlier quarters'
        open deals per `by` group, each window judged by a model fitted without it
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
        return frame.groupby(by)[["e", "v", "r"]].sum()

    def ratio(self, stage: np.ndarray) -> np.ndarray:
        values = self.amount_ratio.reindex(np.asarray(stage, object)).to_numpy(dtype=float)
        return np.where(np.isnan(values), 1.0, values)


def score_with(win_scorer: WinScorer, frame: pd.DataFrame) -> np.ndarray:
    if frame.empty:
        return np.zeros(0)
    p = np.asarray(win_scorer(frame), dtype=float)
    if p.shape != (len(frame),) or np.isnan(p).any():
        raise ValueError(
            f"win_scorer returned {p.shape} values (NaN: {np.isnan(p).any()}) for "
            f"{len(frame)} deals; expected one probability per row"
        )
    return np.clip(p, 0.0, 1.0)


def expected_close_of(frame: pd.DataFrame) -> pd.Series:
    return frame["as_of"] + pd.to_timedelta(frame["days_to_expected_close"], unit="D")


def timing_history(
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
                    "bucket": close_buckets(expected_close_of(rows), window, params),
                    "segment": rows["segment"].astype(object).fillna("unknown").to_numpy(),
                    "p_win": score_with(win_scorer, rows),
                    "won_inside": inside.astype(float),
                    "amount": rows["amount"].to_numpy(float),
                    "booked": closes["amount"].reindex(rows["deal_id"].to_numpy()).to_numpy(),
                    "window": number,
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def with_team(history: pd.DataFrame, tables: CrmTables) -> pd.DataFrame:
    """`history` with the team of each deal's owner (UNASSIGNED when it has none)."""
    if history.empty:
        return history
    rep = tables.deals.set_index("deal_id")["rep_id"].reindex(history["deal_id"].to_numpy())
    team = tables.reps.set_index("rep_id")["team"].reindex(rep.to_numpy()).to_numpy(object)
    return history.assign(team=np.where(pd.isna(team), UNASSIGNED, team))


def score_open_deals(
    snapshots: pd.DataFrame,
    window: Window,
    tables: CrmTables,
    win_scorer: WinScorer,
    timing: CloseTiming,
    params: RevenueParams,
    scores: pd.Series | None = None,
) -> pd.DataFrame:
    """The deals open at the window's as-of with their P(won) (from `scores`, by deal id, when
    given: a scored book) and their timing."""
    frame = snapshots[snapshots["as_of"] == window.as_of].reset_index(drop=True)
    rep = tables.deals.set_index("deal_id")["rep_id"]
    frame.insert(1, "rep_id", rep.reindex(frame["deal_id"].to_numpy()).to_numpy(object))
    if scores is None:
        frame["p_win"] = score_with(win_scorer, frame)
    else:
        frame["p_win"] = _scored(scores, frame["deal_id"], window.as_of)
    return with_timing(frame, window, timing, params)


class UnscoredDealsError(ValueError):
    """Open deals a scored book holds no score for."""


def _scored(scores: pd.Series, deal_ids: pd.Series, as_of: pd.Timestamp) -> np.ndarray:
    """Each open deal's P(won) from a scored book; every one must be there."""
    p = scores.reindex(deal_ids.astype(str).to_numpy()).to_numpy(float)
    unscored = deal_ids[np.isnan(p)]
    if len(unscored):
        raise UnscoredDealsError(
            f"{len(unscored):,} of the {len(deal_ids):,} deals open at {as_of:%Y-%m-%d} have no "
            f"score in the book (first: {unscored.iloc[0]}): score the book at that moment"
        )
    return p


def with_timing(
    frame: pd.DataFrame, window: Window, timing: CloseTiming, params: RevenueParams
) -> pd.DataFrame:
    """Add expected_close, bucket, P(close inside | won), expected amount and P(won inside)."""
    out = frame.copy()
    out["expected_close"] = expected_close_of(out)
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
    out["in_quarter_pipeline"] = expected_inside(out, window.end, timing.cycle_days)
    return out


def typical_cycle_days(tables: CrmTables, as_of: pd.Timestamp) -> float:
    """Median days from creation to the close of the deals won by `as_of` (NaN when none)."""
    won = won_deals(tables)
    won = won[won["closed_at"] <= as_of]
    created = tables.deals.set_index("deal_id")["created_at"].reindex(won["deal_id"].to_numpy())
    days = (won["closed_at"].to_numpy() - created.to_numpy()) / np.timedelta64(1, "D")
    return float(np.nanmedian(days)) if len(days) else float("nan")


def expected_inside(deals: pd.DataFrame, end: pd.Timestamp, cycle_days: float) -> np.ndarray:
    """Whether each open deal is expected to close before `end`: by its expected close, or, where
    the CRM has none, by the typical cycle (a deal older than it is due now)."""
    expected = deals["expected_close"]
    if not np.isnan(cycle_days):
        remaining = np.maximum(cycle_days - deals["deal_age_days"].to_numpy(float), 0.0)
        by_cycle = deals["as_of"] + pd.to_timedelta(np.nan_to_num(remaining), unit="D")
        expected = expected.fillna(by_cycle)
    return (expected < end).to_numpy()
