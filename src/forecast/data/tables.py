"""The canonical tables in memory: typed pandas frames, one per contract table, plus the as-of."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from typing import Any

import pandas as pd

from forecast.data.contract import ColumnType, Table
from forecast.data.schema import TABLES

STRING = pd.StringDtype("pyarrow")

PANDAS_DTYPES: dict[ColumnType, object] = {
    "id": STRING,
    "text": STRING,
    "enum": STRING,
    "quarter": STRING,
    "float": "float64",
    "int": "Int64",
    "datetime": "datetime64[ns]",
    "date": "datetime64[ns]",
    "month": "datetime64[ns]",
}


def empty_frame(table: Table) -> pd.DataFrame:
    """A frame with the table's columns and dtypes and no rows."""
    # made once per table: a CRM record scored alone needs six of them per request
    return _empty(table.name).copy(deep=False)


@cache
def _empty(name: str) -> pd.DataFrame:
    table = TABLES[name]
    return pd.DataFrame({c.name: pd.Series([], dtype=PANDAS_DTYPES[c.type]) for c in table.columns})


def conform(frame: pd.DataFrame, table: Table) -> pd.DataFrame:
    """The canonical column order and dtypes for a valid frame (optional columns added)."""
    out = {}
    for col in table.columns:
        dtype = PANDAS_DTYPES[col.type]
        if col.name in frame:
            out[col.name] = frame[col.name].reset_index(drop=True).astype(dtype)
        else:
            out[col.name] = pd.Series(pd.array([None] * len(frame), dtype=dtype))
    return pd.DataFrame(out)


@dataclass(frozen=True)
class CrmTables:
    """All canonical tables of one CRM, as recorded up to `as_of` (the export's as-of), and
    the export's own values the import translated (`translations`: table -> column -> export
    value -> canonical value; empty for canonical files and generated worlds)."""

    reps: pd.DataFrame
    targets: pd.DataFrame
    accounts: pd.DataFrame
    products: pd.DataFrame
    deals: pd.DataFrame
    deal_history: pd.DataFrame
    deal_attributes: pd.DataFrame
    activities: pd.DataFrame
    revenue: pd.DataFrame
    signals: pd.DataFrame
    orders: pd.DataFrame
    as_of: pd.Timestamp
    translations: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in TABLES:
            raise KeyError(f"no canonical table {name!r}; tables are {', '.join(TABLES)}")
        return getattr(self, name)

    def items(self) -> Iterator[tuple[str, pd.DataFrame]]:
        for f in fields(self):
            if f.name in TABLES:
                yield f.name, getattr(self, f.name)

    def replace(self, **changes: Any) -> CrmTables:
        return replace(self, **changes)

    @classmethod
    def from_frames(
        cls,
        frames: dict[str, pd.DataFrame],
        *,
        as_of: pd.Timestamp,
        translations: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
    ) -> CrmTables:
        """Build from valid frames; missing tables become empty, dtypes made canonical."""
        conformed = {
            name: conform(frames[name], table) if name in frames else empty_frame(table)
            for name, table in TABLES.items()
        }
        return cls(**conformed, as_of=pd.Timestamp(as_of), translations=translations or {})


Featurize = Callable[[CrmTables, pd.DataFrame], pd.DataFrame]
"""(tables, snapshots) -> one feature row per snapshot: `deal_features` and the account
features in this process, or their `forecast.features.on_dask` versions on a cluster."""


def no_features(tables: CrmTables, snapshots: pd.DataFrame) -> pd.DataFrame:
    """A `Featurize` that computes none: the snapshots, for their labels alone (what training
    refuses can be checked without the features' cost)."""
    return snapshots.copy()
