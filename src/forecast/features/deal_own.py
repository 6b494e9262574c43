"""What does not change over a deal's life, worked out once per deal (`Own`), and the columns
each snapshot adds from it and from the context: account, rep, size, quarter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecast.data.contract import OPEN_STAGES
from forecast.features.asof import Running
from forecast.features.deal_codes import codes_of, fit_key
from forecast.features.deal_context import (
    FIT,
    PRODUCT,
    REP,
    REP_FROM_STAGE,
    TEAM,
    TEAM_FROM_STAGE,
    DealContext,
)
from forecast.features.deal_facts import DealFacts, State, activity_sums, attribute_values
from forecast.features.deal_schema import RECORD_DAYS, SHRINK_DEALS, TRAILING_DAYS


@dataclass(frozen=True)
class Own:
    """What each deal of `DealFacts` brings, worked out once per deal (a snapshot reads its
    deal's by position): its history state and activities, ready for as-of lookups; its codes
    in the context's indexes; its first quote; and the facts that do not change over its life
    (product, firmographics, attributes known at creation)."""

    deal_id: np.ndarray
    created_at: np.ndarray
    state: State
    activities: Running  # per deal row: all activities (`n`), then each counted kind
    account: np.ndarray  # account code (`codes_of`)
    rep: np.ndarray
    team: np.ndarray  # team code; -1 without a rep
    product: np.ndarray
    fit: np.ndarray  # (product, industry) code; -1 when never closed
    quote_key: np.ndarray  # (product, segment) code (`codes_of`)
    quoted: np.ndarray  # whether the context's first quotes hold the deal's
    first_quote: tuple[np.ndarray, np.ndarray]  # log of the first positive amount, and when
    fixed: dict[str, np.ndarray]  # product_id, product_family, industry, region, segment, attr_*

    @classmethod
    def of(cls, facts: DealFacts, context: DealContext) -> Own:
        state = State.of_facts(facts)
        amount, recorded = state.first_quotes(len(facts.deal_id))
        account = codes_of(context.account_index, facts.account_id)
        rep = codes_of(context.rep_index, facts.rep_id)
        product = codes_of(context.product_index, facts.product_id)
        firm = {name: values[account] for name, values in context.firmographics.items()}
        return cls(
            deal_id=facts.deal_id,
            created_at=facts.created_at,
            state=state,
            activities=activity_sums(facts),
            account=account,
            rep=rep,
            team=np.where(rep < 0, -1, context.rep_team[rep]),
            product=product,
            fit=context.fit_index.positions(fit_key(facts.product_id, firm["industry"])),
            quote_key=codes_of(context.quote_index, fit_key(facts.product_id, firm["segment"])),
            quoted=context.quoted.positions(facts.deal_id) >= 0,
            first_quote=(np.log(amount), recorded),
            fixed={
                "product_id": facts.product_id,
                "product_family": context.product_family[product],
                **firm,
                **attribute_values(facts, [f.name for f in context.attributes]),
            },
        )


def add_account(
    out: dict, own: Own, deal: np.ndarray, as_of: np.ndarray, context: DealContext
) -> None:
    account = own.account[deal]
    _, closes = context.account_closes.at_each(account, as_of, (0,))
    no_account = account < 0
    out["account_prior_wins"] = np.where(no_account, np.nan, closes[0, :, 0])
    out["account_prior_losses"] = np.where(no_account, np.nan, closes[0, :, 1])
    tenure = (as_of - context.account_created[account]) / np.timedelta64(1, "D")
    out["account_tenure_days"] = np.where(no_account, np.nan, tenure)
    _, revenue = context.account_revenue.at_each(account, as_of, (0, TRAILING_DAYS))
    out["account_revenue_365d"] = np.where(no_account, np.nan, revenue[0, :, 0] - revenue[1, :, 0])


def add_rep(
    out: dict,
    own: Own,
    deal: np.ndarray,
    as_of: np.ndarray,
    stage: np.ndarray,
    context: DealContext,
) -> None:
    n = len(deal)
    rep, team = own.rep[deal], own.team[deal]
    # a deal at an open stage reads the records from that stage on; a closed one none
    at_open = stage < len(OPEN_STAGES)
    kinds = np.concatenate(
        [
            np.repeat([REP, TEAM, FIT, PRODUCT, REP], n),
            np.where(at_open, REP_FROM_STAGE + stage, -1),
            np.where(at_open, TEAM_FROM_STAGE + stage, -1),
        ]
    )
    codes = np.concatenate([rep, team, own.fit[deal], own.product[deal], rep, rep, team])
    days = np.repeat([RECORD_DAYS] * 4 + [TRAILING_DAYS] + [RECORD_DAYS] * 2, n)
    record = context.records.trailing(kinds, codes, np.tile(as_of, 7), days)
    won, closed = record[:, 0].reshape(7, n), record[:, 1].reshape(7, n)
    rep_of, team_of, fit_of, product_of, rep_last_year, mine, theirs = range(7)

    team_rate = (won[team_of] + 1) / (closed[team_of] + 3)  # a weak prior when a team is new
    out["rep_win_rate"] = (won[rep_of] + SHRINK_DEALS * team_rate) / (closed[rep_of] + SHRINK_DEALS)
    out["rep_closed_deals_365d"] = closed[rep_last_year]
    out["rep_tenure_days"] = (as_of - context.hired[rep]) / np.timedelta64(1, "D")

    # the rep's record from the deal's current stage on: of closed deals that reached it, the
    # share won (shrunk toward the team's), so a rep weak at one stage shows at that stage
    prior = (won[theirs] + 1) / (closed[theirs] + 2)
    out["rep_stage_win_rate"] = (won[mine] + SHRINK_DEALS * prior) / (closed[mine] + SHRINK_DEALS)

    # how this product has been selling into this industry lately, shrunk toward the product
    prior = (won[product_of] + 1) / (closed[product_of] + 3)
    out["fit_win_rate"] = (won[fit_of] + SHRINK_DEALS * prior) / (closed[fit_of] + SHRINK_DEALS)


def add_size(
    out: dict, own: Own, deal: np.ndarray, as_of: np.ndarray, context: DealContext
) -> None:
    """How big the first quote is against the usual first quote of the product in the segment.

    The usual one is the geometric mean over deals of the same product and segment first
    quoted in (as_of - TRAILING_DAYS, as_of]; a ratio (1 = usual), NaN without a first amount.
    """
    key = own.quote_key[deal]
    _, sums = context.quotes.at_each(key, as_of, (0, TRAILING_DAYS))
    total, n = (sums[0] - sums[1]).T  # columns: log_amount, n
    own_log, recorded = own.first_quote[0][deal], own.first_quote[1][deal]
    # the deal's own first quote counts only once it was recorded
    own_log = np.where(recorded <= as_of, own_log, np.nan)
    # a deal the context has not seen (a CRM's new record) adds its own quote to the usual one,
    # as it would once imported
    unseen = (
        ~own.quoted[deal]
        & ~np.isnan(own_log)
        & (recorded > as_of - np.timedelta64(TRAILING_DAYS, "D"))
    )
    n, total = n + unseen, total + np.where(unseen, own_log, 0.0)
    typical = np.where(n > 0, total / np.where(n > 0, n, 1), np.nan)
    out["amount_vs_typical"] = np.exp(np.where(key >= 0, own_log - typical, np.nan))


def add_quarter(out: dict, as_of: np.ndarray) -> None:
    """Where the as-of falls in its calendar quarter, and whether the expected close does too."""
    month = as_of.astype("datetime64[M]").astype(np.int64)  # months since 1970-01
    start = (month - month % 3).astype("datetime64[M]").astype("datetime64[ns]")
    following = (month - month % 3 + 3).astype("datetime64[M]").astype("datetime64[ns]")
    day = np.timedelta64(1, "D")
    out["days_into_quarter"] = ((as_of - start) // day).astype(np.int64)
    out["days_left_in_quarter"] = ((following - day - as_of) // day).astype(np.int64)
    expected = out.pop("expected_close")
    in_quarter = (expected <= following - np.timedelta64(1, "ns")).astype(float)
    out["expected_close_in_quarter"] = np.where(np.isnat(expected), np.nan, in_quarter)
