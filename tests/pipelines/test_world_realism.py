"""The default world behaves like a real pipeline (ranges in docs/generated-world.md)."""

from __future__ import annotations

import pytest

from forecast.data.world import make_crm
from tests.pipelines.realism import realism_figures

# figure: (low, high); measured values for seeds 0 and 1 are in docs/generated-world.md
RANGES = {
    "conversion_prospecting": (0.55, 0.75),
    "conversion_qualification": (0.6, 0.85),
    "conversion_proposal": (0.6, 0.85),
    "conversion_negotiation": (0.7, 0.92),
    "win_rate": (0.2, 0.4),
    "rep_win_rate_p10": (0.1, 0.25),
    "rep_win_rate_p90": (0.33, 0.55),
    "win_rate_smb_minus_enterprise": (0.05, 0.2),
    "touches_per_day_won_over_lost": (1.6, 3.5),
    "recency_days_lost_over_won": (1.3, 2.5),
    "wins_in_last_two_weeks_of_quarter": (0.17, 0.3),
    "win_rate_new_reps_minus_veterans": (-0.2, -0.05),
    "negotiation_win_rate_not_pushed": (0.8, 0.95),
    "negotiation_win_rate_pushed_twice_or_more": (0.5, 0.78),
    "satisfaction_retained_minus_churned": (1.0, 3.0),
    "usage_retained_minus_churned": (0.1, 0.4),
    "tickets_per_month_churned_over_retained": (1.8, 4.0),
    "churned_accounts_per_account_year": (0.08, 0.25),
    "truth_mean_minus_win_rate": (-0.02, 0.02),
}


@pytest.fixture(scope="module")
def figures():
    return realism_figures(make_crm(30_000, seed=0))


@pytest.mark.parametrize("name", sorted(RANGES))
def test_figure_in_documented_range(figures, name):
    low, high = RANGES[name]
    assert low <= figures[name] <= high, f"{name} = {figures[name]:.3f}, expected {low}..{high}"
