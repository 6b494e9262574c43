"""Scores with their reasons and the actions people can take.

Modules: `catalogue` (labels, reason groups and actions, from `catalogue.yaml`), `scorers` (the
logged pipeline's scores and contributions, fast, and the checks that they are the pipeline's),
`wording` (reasons and recommendations in words), `actions` (what a deal does not already do),
`reasons` (contributions turned into reasons and recommendations), `scoring` and `account_scoring`
(deals and accounts scored with reasons, the whole book).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forecast.lazy import lazy_names

if TYPE_CHECKING:
    from forecast.explain.account_scoring import score_accounts
    from forecast.explain.book import score_book
    from forecast.explain.catalogue import load_catalogue
    from forecast.explain.reasons import explain
    from forecast.explain.scoring import load_deal_explainer, score_deals, score_records
    from forecast.explain.wording import Explanation, Reason, Recommendation

_PUBLIC = {
    "Explanation": "forecast.explain.wording",
    "Reason": "forecast.explain.wording",
    "Recommendation": "forecast.explain.wording",
    "explain": "forecast.explain.reasons",
    "load_deal_explainer": "forecast.explain.scoring",
    "score_accounts": "forecast.explain.account_scoring",
    "score_book": "forecast.explain.book",
    "score_deals": "forecast.explain.scoring",
    "score_records": "forecast.explain.scoring",
    "load_catalogue": "forecast.explain.catalogue",
}
__all__ = [
    "Explanation",
    "Reason",
    "Recommendation",
    "explain",
    "load_catalogue",
    "load_deal_explainer",
    "score_accounts",
    "score_book",
    "score_deals",
    "score_records",
]
__getattr__, __dir__ = lazy_names(__name__, _PUBLIC)
