"""The rules a churn model must beat: churn rates by contract and usage, or by purchase recency."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

RATE_PRIOR = 20.0  # pseudo-rows pulling a rate-table cell towards the overall rate

CONTRACT_BUCKETS = (0, 30, 90, 180)  # days to contract end: <=0, 1-30, 31-90, 91-180, >180

LOW_USAGE_QUANTILE = 0.25

RECENCY_BUCKETS = (30, 60, 90, 180)  # days since the last purchase: <=30, 31-60, ..., > 180


def _contract_bucket(days: pd.Series) -> np.ndarray:
    values = pd.to_numeric(days, errors="coerce").to_numpy(dtype=float)
    bucket = np.searchsorted(np.asarray(CONTRACT_BUCKETS, dtype=float), values, side="left")
    return np.where(np.isnan(values), -1, bucket)


@dataclass(frozen=True)
class RateTable:
    """Baseline: churn rate by days-to-contract-end bucket x low-usage flag (see module doc)."""

    rates: Mapping[tuple[int, bool], float]
    overall: float
    low_usage_below: float

    @classmethod
    def learn(cls, frame: pd.DataFrame, churned: np.ndarray) -> RateTable:
        usage = pd.to_numeric(frame["usage_last"], errors="coerce")
        threshold = float(usage.quantile(LOW_USAGE_QUANTILE)) if usage.notna().any() else 0.0
        y = np.asarray(churned, dtype=float)
        overall = float(y.mean())
        cells = pd.DataFrame(
            {"bucket": _contract_bucket(frame["days_to_contract_end"]), "y": y}
        ).assign(low=cls._low(usage, threshold))
        grouped = cells.groupby(["bucket", "low"])["y"].agg(["sum", "count"])
        shrunk = (grouped["sum"] + RATE_PRIOR * overall) / (grouped["count"] + RATE_PRIOR)
        rates = {(int(b), bool(low)): float(r) for (b, low), r in shrunk.items()}
        return cls(MappingProxyType(rates), overall, threshold)

    @staticmethod
    def _low(usage: pd.Series, threshold: float) -> np.ndarray:
        return (usage.isna() | (usage < threshold)).to_numpy()

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        usage = pd.to_numeric(frame["usage_last"], errors="coerce")
        keys = zip(
            _contract_bucket(frame["days_to_contract_end"]),
            self._low(usage, self.low_usage_below),
            strict=True,
        )
        return np.array([self.rates.get((int(b), bool(low)), self.overall) for b, low in keys])


@dataclass(frozen=True)
class RecencyTable:
    """Baseline for inactivity churn: churn rate by days since the last purchase (<= 30,
    31-60, 61-90, 91-180, > 180) x one purchase only, shrunk like `RateTable`."""

    rates: Mapping[tuple[int, bool], float]
    overall: float

    @staticmethod
    def _cells(frame: pd.DataFrame) -> pd.DataFrame:
        days = frame["days_since_last_purchase"].to_numpy(dtype=float)
        bucket = np.searchsorted(np.asarray(RECENCY_BUCKETS, dtype=float), days, side="left")
        return pd.DataFrame({"bucket": bucket, "once": frame["purchases"].to_numpy() <= 1})

    @classmethod
    def learn(cls, frame: pd.DataFrame, churned: np.ndarray) -> RecencyTable:
        y = np.asarray(churned, dtype=float)
        overall = float(y.mean())
        grouped = cls._cells(frame).assign(y=y).groupby(["bucket", "once"])["y"]
        sums = grouped.agg(["sum", "count"])
        shrunk = (sums["sum"] + RATE_PRIOR * overall) / (sums["count"] + RATE_PRIOR)
        rates = {(int(b), bool(once)): float(r) for (b, once), r in shrunk.items()}
        return cls(MappingProxyType(rates), overall)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        cells = self._cells(frame)
        keys = zip(cells["bucket"], cells["once"], strict=True)
        return np.array([self.rates.get((int(b), bool(once)), self.overall) for b, once in keys])
