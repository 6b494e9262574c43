"""Realism figures of a generated world (ranges in docs/generated-world.md)."""

from __future__ import annotations

import pandas as pd

from forecast.data.describe import stage_conversion
from forecast.data.world import CrmWorld


def realism_figures(world: CrmWorld) -> dict[str, float]:
    t = world.tables
    deals = t.deals
    closed = deals[deals["outcome"] != "open"].set_index("deal_id")
    won = closed["outcome"] == "won"
    figures: dict[str, float] = {}

    conversion = stage_conversion(t).set_index("from")["rate"]
    for stage, rate in conversion.items():
        figures[f"conversion_{stage}"] = float(rate)
    figures["win_rate"] = float(won.mean())

    by_rep = won.groupby(closed["rep_id"])
    rates = by_rep.mean()[by_rep.size() >= 100]
    figures["rep_win_rate_p10"] = float(rates.quantile(0.1))
    figures["rep_win_rate_p90"] = float(rates.quantile(0.9))

    segment = closed["account_id"].map(t.accounts.set_index("account_id")["segment"])
    seg_rate = won.groupby(segment.to_numpy()).mean()
    figures["win_rate_smb_minus_enterprise"] = float(seg_rate["smb"] - seg_rate["enterprise"])

    acts = t.activities.dropna(subset=["deal_id"])
    per_deal = acts.groupby("deal_id").size().reindex(closed.index).fillna(0)
    open_days = ((closed["closed_at"] - closed["created_at"]).dt.total_seconds() / 86400).clip(
        lower=1
    )
    rate = per_deal / open_days
    figures["touches_per_day_won_over_lost"] = float(rate[won].mean() / rate[~won].mean())
    # recency a week before the close: days since the last touch
    cutoff = closed["closed_at"] - pd.Timedelta(days=7)
    a = acts.merge(cutoff.rename("cutoff"), left_on="deal_id", right_index=True)
    last = a[a["at"] <= a["cutoff"]].groupby("deal_id")["at"].max()
    recency = ((cutoff - last.reindex(closed.index)).dt.total_seconds() / 86400).dropna()
    figures["recency_days_lost_over_won"] = float(
        recency[~won.reindex(recency.index)].mean() / recency[won.reindex(recency.index)].mean()
    )

    quarter_end = closed["closed_at"].dt.to_period("Q").dt.end_time
    last_two_weeks = (quarter_end - closed["closed_at"]).dt.days < 14
    figures["wins_in_last_two_weeks_of_quarter"] = float(last_two_weeks[won].mean())

    hired = t.reps.set_index("rep_id")["hired_at"]
    tenure = (closed["created_at"] - closed["rep_id"].map(hired).astype("datetime64[ns]")).dt.days
    figures["win_rate_new_reps_minus_veterans"] = float(
        won[tenure < 90].mean() - won[tenure >= 365].mean()
    )

    history = t.deal_history
    pushes = history.groupby("deal_id")["expected_close"].nunique() - 1
    reached_negotiation = history.loc[history["stage"] == "negotiation", "deal_id"].unique()
    p = pushes.reindex(closed.index.intersection(reached_negotiation))
    w = won.reindex(p.index)
    figures["negotiation_win_rate_pushed_twice_or_more"] = float(w[p >= 2].mean())
    figures["negotiation_win_rate_not_pushed"] = float(w[p == 0].mean())

    figures.update(_churn_figures(world))
    truth = world.truth.win_probability(
        closed.index.to_series(), pd.Series(["prospecting"] * len(closed))
    )
    figures["truth_mean_minus_win_rate"] = float(truth.mean() - won.mean())
    return figures


def _churn_figures(world: CrmWorld) -> dict[str, float]:
    """Signals in the 90 days before an account's recurring revenue stopped, versus renewals."""
    t = world.tables
    recurring = t.revenue[t.revenue["kind"] == "recurring"]
    last_month = recurring.groupby("account_id")["period"].max()
    final = recurring["period"].max()
    churned = last_month[last_month < final]
    stop = churned + pd.offsets.MonthBegin(1)
    signals = t.signals.merge(
        stop.rename("stop"), left_on="account_id", right_index=True, how="left"
    )
    before_stop = (signals["at"] <= signals["stop"]) & (
        signals["at"] > signals["stop"] - pd.Timedelta(days=90)
    )
    churn_rows = signals[before_stop]
    retained_rows = t.signals[~t.signals["account_id"].isin(churned.index)]
    out = {}
    for kind in ("satisfaction", "usage"):
        c = churn_rows.loc[churn_rows["kind"] == kind, "value"].mean()
        r = retained_rows.loc[retained_rows["kind"] == kind, "value"].mean()
        out[f"{kind}_retained_minus_churned"] = float(r - c)
    n_accounts = recurring["account_id"].nunique()
    months = recurring.groupby("account_id").size()
    out["tickets_per_month_churned_over_retained"] = float(
        (churn_rows["kind"] == "support_ticket").sum()
        / (len(churned) * 3)
        / (
            (retained_rows["kind"] == "support_ticket").sum()
            / months.drop(churned.index, errors="ignore").sum()
        )
    )
    out["churned_accounts_per_account_year"] = float(len(churned) / (months.sum() / 12))
    out["subscribed_accounts"] = float(n_accounts)
    return out
