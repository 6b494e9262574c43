"""The data stage: the contract, reading exports, validation, the versioned store, and the
generated world.

Modules: `schema` (the contract), `tables` (the tables in memory), `sources` (files, SQL,
mappings and presets), `validate` (the rules applied, rows set aside) with `cells`,
`table_checks`, `rules` and `violations` (what it reports), `derive` (the history a deals-only
export lacks), `store`, `ingest` (import or generate, then store), `world` (the generated CRM),
`describe` and `doctor` (what the data holds and supports).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forecast.lazy import lazy_names

if TYPE_CHECKING:
    from forecast.data.doctor import diagnose
    from forecast.data.ingest import ImportResult, generate, import_raw, read_world, store_world
    from forecast.data.store import StoreEmptyError, read_store, rollback_store, write_store
    from forecast.data.tables import CrmTables
    from forecast.data.validate import check
    from forecast.data.violations import ValidationError, Violation
    from forecast.data.world import CrmWorld, WorldTruth, make_crm

_PUBLIC = {
    "ImportResult": "forecast.data.ingest",
    "generate": "forecast.data.ingest",
    "import_raw": "forecast.data.ingest",
    "read_world": "forecast.data.ingest",
    "store_world": "forecast.data.ingest",
    "CrmWorld": "forecast.data.world",
    "WorldTruth": "forecast.data.world",
    "make_crm": "forecast.data.world",
    "StoreEmptyError": "forecast.data.store",
    "read_store": "forecast.data.store",
    "rollback_store": "forecast.data.store",
    "write_store": "forecast.data.store",
    "CrmTables": "forecast.data.tables",
    "ValidationError": "forecast.data.violations",
    "Violation": "forecast.data.violations",
    "check": "forecast.data.validate",
    "diagnose": "forecast.data.doctor",
}
__all__ = [
    "CrmTables",
    "CrmWorld",
    "ImportResult",
    "StoreEmptyError",
    "ValidationError",
    "Violation",
    "WorldTruth",
    "check",
    "diagnose",
    "generate",
    "import_raw",
    "make_crm",
    "read_store",
    "read_world",
    "rollback_store",
    "store_world",
    "write_store",
]
__getattr__, __dir__ = lazy_names(__name__, _PUBLIC)
