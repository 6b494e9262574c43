"""forecast: calibrated sales forecasting and coaching from CRM history.

`import forecast` gives a notebook the calls it needs, each loaded on first use (importing the
package itself loads nothing else):

    tables = forecast.make_crm(5_000, seed=0).tables       # or forecast.load_store()
    result = forecast.train_win(tables)                      # MLflow run, card, evaluation
    book = forecast.score_book(tables, forecast.load_deal_explainer(tables, as_of=tables.as_of))
    quarter = forecast.forecast_quarter(tables, quarter="2026Q4", as_of=..., win_scorer=...)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> (module, name there); never a submodule's own name (importing the submodule
# would replace the function on the package)
_PUBLIC = {
    "make_crm": ("forecast.datasets", "make_crm"),
    "load_store": ("forecast.store", "read_store"),
    "train_win": ("forecast.train", "train_win"),
    "train_churn": ("forecast.churn", "train_churn"),
    "load_deal_explainer": ("forecast.scoring", "load_deal_explainer"),
    "score_book": ("forecast.scoring", "score_book"),
    "score_deals": ("forecast.scoring", "score_deals"),
    "score_accounts": ("forecast.scoring", "score_accounts"),
    "revenue_at_risk": ("forecast.churn", "revenue_at_risk"),
    "forecast_quarter": ("forecast.revenue", "forecast_quarter"),
    "Scenario": ("forecast.revenue", "Scenario"),
    "coach_rep": ("forecast.coaching", "coach_rep"),
    "coach_team": ("forecast.coaching", "coach_team"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'forecast' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # found once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
