"""Quarterly revenue forecast: a deal-level simulation rolled up rep -> team -> region -> company.

**What is forecast: bookings.** The bookings of a quarter are the amounts of deals won
(closed_won) with their close inside the quarter (`deals.amount` of a won deal is its booked
amount; for subscription products the annual contract value) **plus renewal bookings**: each
renewal decision of a subscribed account falling in the quarter that the account passes (its
recurring revenue goes on), worth 12 x the monthly recurring bill for annual (non-SMB) contracts
and 1 x the bill for SMB monthly renewals. `forecast.revenue.bookings` computes the realised figure
from the tables; the targets table is on the same basis.

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
   passes the churn champion for the current and next quarter:
   `forecast.training.churn.live_renewals`; `renewals_source` says which was used). A renewal is
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

The simulation (`simulation`) draws every item together, 10,000 times by default, and sums the
draws up the org tree, so a parent's draws are exactly the sum of its children's. A
`Scenario` (remove or add deals, slip deals, change stages) is applied to the inputs and the
distribution is drawn again with the same random numbers for every unchanged item.

Point in time: nothing recorded after `as_of` is read (tests/pipelines/test_revenue.py forecasts
on the full tables and on `forecast.features.asof.tables_as_of(tables, as_of)` and gets the same
numbers).

Modules, in the order a forecast is built: `params` (parameters, the window), `timing` (close
timing, open deals), `new_deals`, `renewals`, `spread` (what moves a whole quarter), `inputs`
(all of it at `as_of`), `scenario`, `quarter` (draw and summarise), `nodes` (the answer's
tables); the Monte Carlo engine: `tree` (the org tree), `simulation`, `draws`, `sampling`.
"""

from forecast.revenue.inputs import SIMULATION, QuarterInputs, SeriesLean, prepare_quarter
from forecast.revenue.new_deals import NewDeals
from forecast.revenue.params import (
    BUCKETS,
    PARTS,
    SEGMENT_RATES,
    RenewalProbability,
    RevenueParams,
    Window,
    WinScorer,
    close_buckets,
)
from forecast.revenue.quarter import (
    QuarterForecast,
    expected_by_node,
    forecast_quarter,
    simulate_quarter,
    with_lean,
    with_revenue_at_risk,
)
from forecast.revenue.renewals import (
    RenewalBook,
    RenewalRates,
    pending_renewals,
    renewal_book,
    unbilled_renewals,
)
from forecast.revenue.scenario import AddedDeal, Scenario
from forecast.revenue.simulation import (
    DEFAULT_WORKERS,
    SimulationInputs,
    chain_moments,
    moments,
    simulate,
    summarise,
)
from forecast.revenue.spread import Spreads
from forecast.revenue.timing import CloseTiming
from forecast.revenue.tree import COMPANY, LEVELS, OrgTree

__all__ = [
    "BUCKETS",
    "COMPANY",
    "DEFAULT_WORKERS",
    "LEVELS",
    "PARTS",
    "SEGMENT_RATES",
    "SIMULATION",
    "AddedDeal",
    "CloseTiming",
    "NewDeals",
    "OrgTree",
    "QuarterForecast",
    "QuarterInputs",
    "RenewalBook",
    "RenewalProbability",
    "RenewalRates",
    "RevenueParams",
    "Scenario",
    "SeriesLean",
    "SimulationInputs",
    "Spreads",
    "WinScorer",
    "Window",
    "chain_moments",
    "close_buckets",
    "expected_by_node",
    "forecast_quarter",
    "moments",
    "pending_renewals",
    "prepare_quarter",
    "renewal_book",
    "simulate",
    "simulate_quarter",
    "summarise",
    "unbilled_renewals",
    "with_lean",
    "with_revenue_at_risk",
]
