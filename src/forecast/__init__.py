"""forecast: calibrated sales forecasting and coaching from CRM history.

`import forecast` gives a notebook the calls it needs, each loaded on first use (importing the
package itself loads nothing else):

    tables = forecast.make_crm(5_000, seed=0).tables       # or forecast.load_store()
    result = forecast.train_win(tables)                      # MLflow run, card, evaluation
    book = forecast.score_book(tables, forecast.load_deal_explainer(tables, as_of=tables.as_of))
    quarter = forecast.forecast_quarter(tables, quarter="2026Q4", as_of=..., win_scorer=...)
"""

from __future__ import annotations

from forecast.lazy import lazy_names

__version__ = "0.1.0"

_PUBLIC = {
    "make_crm": "forecast.data.world",
    "load_store": "forecast.data.store:read_store",
    "train_win": "forecast.training.win",
    "train_churn": "forecast.training.churn",
    "load_deal_explainer": "forecast.explain.scoring",
    "score_book": "forecast.explain.book",
    "score_deals": "forecast.explain.scoring",
    "score_accounts": "forecast.explain.account_scoring",
    "revenue_at_risk": "forecast.revenue.churn",
    "forecast_quarter": "forecast.revenue",
    "Scenario": "forecast.revenue",
    "coach_rep": "forecast.coaching",
    "coach_team": "forecast.coaching",
}
__all__ = [
    "Scenario",
    "coach_rep",
    "coach_team",
    "forecast_quarter",
    "load_deal_explainer",
    "load_store",
    "make_crm",
    "revenue_at_risk",
    "score_accounts",
    "score_book",
    "score_deals",
    "train_churn",
    "train_win",
]
__getattr__, __dir__ = lazy_names(__name__, _PUBLIC)
