"""Point-in-time features: every value as it was known at its snapshot's `as_of`.

Modules: `asof` (the as-of lookups every builder uses), `deals` (deal snapshots and features,
built from `deal_schema` (the feature list), `deal_facts` (a deal's own record),
`deal_context` (what was known around it), `deal_own` and `deal_codes`),
`accounts` (subscription churn), `orders` (inactivity churn of order exports), `records` (a
CRM's deal records as the tables a deal's features are read from).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forecast.lazy import lazy_names

if TYPE_CHECKING:
    from forecast.features.accounts import account_features, account_snapshots
    from forecast.features.asof import asof_join, tables_as_of
    from forecast.features.deal_schema import Feature
    from forecast.features.deals import deal_features, deal_snapshots, training_frame
    from forecast.features.orders import customer_snapshots, inactivity_features
    from forecast.features.records import record_tables

_PUBLIC = {
    "asof_join": "forecast.features.asof",
    "tables_as_of": "forecast.features.asof",
    "Feature": "forecast.features.deal_schema",
    "deal_features": "forecast.features.deals",
    "deal_snapshots": "forecast.features.deals",
    "training_frame": "forecast.features.deals",
    "account_features": "forecast.features.accounts",
    "account_snapshots": "forecast.features.accounts",
    "customer_snapshots": "forecast.features.orders",
    "inactivity_features": "forecast.features.orders",
    "record_tables": "forecast.features.records",
}
__all__ = [
    "Feature",
    "account_features",
    "account_snapshots",
    "asof_join",
    "customer_snapshots",
    "deal_features",
    "deal_snapshots",
    "inactivity_features",
    "record_tables",
    "tables_as_of",
    "training_frame",
]
__getattr__, __dir__ = lazy_names(__name__, _PUBLIC)
