"""Ids as integer codes: the deals, reps, accounts and products a snapshot refers to, looked up
by position instead of by key."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

FEW = 32  # below this many deals, Python containers beat building a pandas Index


def take(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """`values[codes]`, missing where a code is -1 (not found): never the last row by accident."""
    series = pd.Series(values)
    return series.reindex(codes).to_numpy() if len(codes) else series.iloc[:0].to_numpy()


def fit_key(product: np.ndarray, industry: np.ndarray) -> np.ndarray:
    """One key per product sold into an industry (empty industry kept as its own key).

    No key (None) without a product: deals of unknown products are not one product's record.
    """
    no_product, no_industry = pd.isna(product).tolist(), pd.isna(industry).tolist()
    return np.array(
        [
            None if blank_p else f"{p}|{'' if blank_i else i}"
            for p, i, blank_p, blank_i in zip(
                product.tolist(), industry.tolist(), no_product, no_industry, strict=True
            )
        ],
        dtype=object,
    )


def blank(value: object) -> bool:
    """Whether one value is missing as tables and records carry it: None, NA, NaN or NaT."""
    return value is None or value is pd.NA or value != value


class Ids:
    """Distinct ids and their positions: pandas' hash table for many lookups, a dict for a few
    (one pandas call costs more than a few Python lookups: one CRM record makes a dozen)."""

    def __init__(self, ids: Sequence[object] | np.ndarray):
        self.index = pd.Index(ids)
        self._positions: dict[object, int] | None = None  # made on the first small lookup

    def __len__(self) -> int:
        return len(self.index)

    def positions(self, values: np.ndarray) -> np.ndarray:
        """Each value's position, -1 when it is not here (or missing)."""
        if len(values) > FEW:
            return self.index.get_indexer(values)
        if self._positions is None:
            self._positions = {v: i for i, v in enumerate(self.index.tolist())}
        get = self._positions.get
        return np.array([-1 if blank(v) else get(v, -1) for v in values.tolist()], np.int64)


def codes_of(ids: Ids, values: np.ndarray) -> np.ndarray:
    """Each value's position in `ids`; a value not there gets len(ids), a code with no record
    (as a deal's own rep or account has none yet, had the store held the deal); a missing
    value -1."""
    codes = ids.positions(values)
    new = (codes < 0) & ~pd.isna(values)
    return np.where(new, len(ids), codes)


def by_code(column: pd.Series, ids: Ids, dtype: str | None = None) -> np.ndarray:
    """`column` (indexed by id) per position in `ids`, then one more value: a missing id's
    (so code -1, or len(ids) for an id not there, reads as `reindex` reads a missing id)."""
    values = column.reindex(ids.index.append(pd.Index([None], dtype=object)))
    return values.to_numpy(dtype) if dtype else values.to_numpy()
