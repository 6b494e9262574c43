"""The spreads of the revenue forecast's shared factors are judged out of sample: a quarter's
residual is measured against a model that did not learn from that quarter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.revenue import CloseTiming, NewDeals, RenewalRates, RevenueParams
from forecast.revenue.renewals import RenewalBook
from forecast.revenue.spread import churn_shock, joint_scale, lognormal_sd, rate_variance

PARAMS = RevenueParams()


def timing_history(wins_per_window: list[int], deals: int = 200) -> pd.DataFrame:
    """Earlier quarters' snapshots of alike deals (p_win 0.5): `wins` of each window's deals
    were won and closed inside it."""
    frames = []
    for number, wins in enumerate(wins_per_window):
        won = np.zeros(deals)
        won[:wins] = 1.0
        frames.append(
            pd.DataFrame(
                {
                    "stage": "proposal",
                    "bucket": "early",
                    "segment": "smb",
                    "p_win": 0.5,
                    "won_inside": won,
                    "amount": 1_000.0,
                    "booked": 1_000.0,
                    "window": number,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_quarters_that_move_beyond_chance_widen_more_out_of_sample():
    history = timing_history([160, 40, 160, 40])
    timing = CloseTiming.fit(history, PARAMS)
    in_sample = timing.spread(history)
    out_of_sample = timing.spread(history, PARAMS)
    # in sample the fitted ratio sits between the quarters: each residual is 0.6 of a quarter's
    # expectation; left out, a quarter is judged against the others' ratio and misses by more
    assert in_sample == pytest.approx(4 * (0.6**2 - 0.005) / 5, rel=0.05)
    assert out_of_sample > 1.5 * in_sample


def test_quarters_that_move_by_chance_alone_add_no_spread():
    history = timing_history([100, 100, 100, 100])
    timing = CloseTiming.fit(history, PARAMS)
    assert timing.spread(history, PARAMS) == 0.0


def test_new_deals_are_judged_at_the_level_known_before_each_quarter():
    quarters = pd.period_range("2024Q1", periods=6, freq="Q")
    # a team whose new deals double every quarter: each quarter lands far above the level of
    # the ones before it, even though today's level (the last four) sits amid them
    counts = pd.DataFrame([[10, 20, 40, 80, 160, 320]], index=["t1"], columns=quarters)
    pool = np.full(50, 1_000.0)
    growing = NewDeals(
        counts=counts,
        seasonal=pd.Series(1.0, index=[1, 2, 3, 4]),
        rate=pd.Series({"t1": 150.0}),
        pools={"t1": pool},
        level=pd.Series({"t1": 150.0}),
        amounts=counts.iloc[0] * 1_000.0,
        level_quarters=4,
    )
    # each quarter against the mean of up to four before it: 2x, 2.67x, 3.43x, 4.27x, 4.27x
    ratios = np.array([2.0, 8 / 3, 24 / 7, 64 / 15, 64 / 15])
    expected_n = counts.iloc[0].to_numpy(float)[1:] / ratios
    terms = ((ratios - 1) ** 2) - 1 / expected_n  # Poisson chance of equal amounts
    assert growing.spread() == pytest.approx(terms.sum() / (len(terms) + 1), rel=1e-9)


def test_renewal_rates_follow_the_years_an_account_has_been_billed():
    # mid-market accounts at their first renewal pass 70 %, those at their second 95 %: a rate
    # by segment alone would forecast 82.5 % for both
    month = pd.Timestamp("2026-06-01")
    rows, bills = [], []
    for i in range(400):
        years = 1 + i % 2
        passed = (i // 2) % 20 < (14 if years == 1 else 19)
        account = f"A{i:04d}"
        rows.append((account, month, "mid_market", "renewed" if passed else "churned"))
        first = month - pd.DateOffset(months=12 * years)
        bills.append((account, first, 1_000.0))
        bills.append((account, month, 1_000.0))
    decisions = pd.DataFrame(rows, columns=["account_id", "month", "segment", "outcome"])
    decisions["bill"] = 1_000.0
    decisions["value"] = 12_000.0
    months = pd.DataFrame(bills, columns=["account_id", "period", "bill"])
    months["segment"] = "mid_market"
    rates = RenewalRates.fit(decisions, months, PARAMS)
    assert float(rates.rates["mid_market"]) == pytest.approx(0.825, abs=0.01)
    ahead = decisions[["account_id", "segment"]].assign(month=month + pd.DateOffset(months=1))
    p = rates(ahead)
    first, second = p[::2], p[1::2]
    assert first == pytest.approx(np.full(200, 0.70), abs=0.01)
    assert second == pytest.approx(np.full(200, 0.95), abs=0.015)
    # without the account and month only the segment is known
    assert rates(ahead[["segment"]]) == pytest.approx(np.full(400, 0.825), abs=0.01)


def renewal_book_of(decisions_per_segment: int, chains: int = 20) -> RenewalBook:
    """`chains` mid-market accounts each renewing 12,000 once this quarter at a rate learned
    from `decisions_per_segment` past decisions, 80 % of them renewed."""
    month = pd.Timestamp("2026-06-01")
    renewed = int(0.8 * decisions_per_segment)
    decisions = pd.DataFrame(
        {
            "account_id": [f"A{i:04d}" for i in range(decisions_per_segment)],
            "month": month,
            "segment": "mid_market",
            "outcome": ["renewed"] * renewed + ["churned"] * (decisions_per_segment - renewed),
            "bill": 1_000.0,
            "value": 12_000.0,
        }
    )
    months = pd.DataFrame({"account_id": ["A0000"], "period": [month], "bill": [1_000.0]})
    rates = RenewalRates.fit(decisions, months.assign(segment="mid_market"), PARAMS)
    return RenewalBook(
        rates=rates,
        booked=decisions.iloc[:0],
        chains=pd.DataFrame({"segment": ["mid_market"] * chains}),
        steps=pd.DataFrame(),
        prob=np.full((chains, 1), 0.8),
        value=np.full((chains, 1), 12_000.0),
    )


def test_a_rate_learned_from_few_decisions_moves_every_chain_of_its_segment():
    few, many = renewal_book_of(20), renewal_book_of(2_000)
    alpha, beta = few.rates.posterior(np.array(["mid_market"]))
    n, churn = alpha + beta, beta / (alpha + beta)
    relative = alpha * beta / (n**2 * (n + 1)) / churn**2
    loss = 20 * 12_000 * 0.2  # the value the 20 chains are expected to lose
    assert rate_variance(few) == pytest.approx(float(relative[0]) * loss**2, rel=1e-6)
    assert rate_variance(many) < rate_variance(few) / 10


def test_the_churn_factor_adds_the_quarters_spread_to_the_rates_uncertainty():
    book = renewal_book_of(200)
    loss, mean = 20 * 12_000 * 0.2, 20 * 12_000 * 0.8
    from_rates = rate_variance(book)
    assert churn_shock(book, 0.0) == pytest.approx(lognormal_sd(from_rates / loss**2))
    # a spread measured beyond the earlier rates' own uncertainty adds to today's, not max()
    both = churn_shock(book, 0.001)
    assert both == pytest.approx(lognormal_sd((0.001 * mean**2 + from_rates) / loss**2))
    assert both > max(churn_shock(book, 0.0), lognormal_sd(0.001 * mean**2 / loss**2))


def misses(realised: list[float], quarters: list[str] | None = None) -> pd.DataFrame:
    """A part that expected 100 each quarter, with no chance variance, and booked `realised`."""
    index = pd.PeriodIndex(quarters or ["2025Q1", "2025Q2", "2025Q3", "2025Q4"], freq="Q")
    return pd.DataFrame({"e": 100.0, "v": 0.0, "r": realised}, index=index)


def test_parts_that_miss_in_opposite_directions_share_less_spread():
    # each part misses by 10 every quarter, the other way from the other: the total never moved
    up_down, down_up = misses([110, 90, 110, 90]), misses([90, 110, 90, 110])
    # the total's excess (0) with one pseudo-quarter at 1 (200) over the parts' own (800 + 200)
    assert joint_scale([up_down, down_up]) == pytest.approx(0.2)
    # the same misses in step: the total moved by 20, twice what independent parts allow
    assert joint_scale([up_down, up_down]) == pytest.approx((1_600 + 200) / (800 + 200))


def test_one_part_alone_keeps_its_spread():
    assert joint_scale([misses([130, 80, 100, 95])]) == pytest.approx(1.0)
    nothing = misses([100, 100, 100, 100]).iloc[:0]  # no renewals in this business
    assert joint_scale([misses([130, 80, 100, 95]), nothing]) == pytest.approx(1.0)


def test_only_the_quarters_every_part_was_judged_in_count():
    # the renewals of the latest quarter are not settled yet: that quarter is left out
    open_deals = misses([110, 90, 110, 150])
    renewals = misses([90, 110, 90], ["2025Q1", "2025Q2", "2025Q3"])
    assert joint_scale([open_deals, renewals]) == pytest.approx(
        joint_scale([open_deals.iloc[:3], renewals])
    )
    assert joint_scale([open_deals, renewals.iloc[:1]]) == 1.0  # one shared quarter: no evidence


def test_parts_within_chance_are_not_scaled():
    steady = misses([110, 90, 110, 90]).assign(v=400.0)
    assert joint_scale([steady, steady]) == 1.0


def test_a_part_that_expected_nothing_still_counts_in_the_total():
    # new deals at the last week of a quarter: none expected, none booked; the quarters stay
    from forecast.revenue.spread import relative_excess

    nothing = misses([0, 0, 0, 0]).assign(e=0.0)
    assert relative_excess(nothing) == 0.0
    up_down, down_up = misses([110, 90, 110, 90]), misses([90, 110, 90, 110])
    assert joint_scale([up_down, down_up, nothing]) == pytest.approx(0.2)
