"""Small builders of the world's columns: ids, strings, dates, categorical draws."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forecast.data.tables import STRING
from forecast.data.world.parameters import DAY_NS


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def id_column(prefix: str, numbers: np.ndarray, width: int) -> pd.Series:
    """`prefix` + zero-padded numbers, built in Arrow so millions of ids stay cheap."""
    digits = pc.utf8_lpad(pa.array(numbers, type=pa.int64()).cast(pa.string()), width, "0")
    joined = pc.binary_join_element_wise(prefix, digits, "")
    return pd.Series(pd.arrays.ArrowStringArray(joined), dtype=STRING)


def string_column(values: npt.ArrayLike) -> pd.Series:
    return pd.Series(values, dtype=STRING)


def pick_labels(choices: tuple[str, ...], codes: np.ndarray) -> pd.Series:
    """Strings from integer codes without building Python objects per row."""
    dictionary = pa.array(list(choices), type=pa.string())
    arr = pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), dictionary)
    return pd.Series(pd.arrays.ArrowStringArray(arr.cast(pa.string())), dtype=STRING)


def timestamp_column(origin: pd.Timestamp, days: np.ndarray) -> pd.Series:
    """Float day offsets from `origin` as timestamps rounded down to the second."""
    ns = origin.value + (days * DAY_NS).astype(np.int64)
    ns = ns - ns % 10**9
    return pd.Series(ns.astype("datetime64[ns]"))


def date_column(origin: pd.Timestamp, days: np.ndarray) -> pd.Series:
    ns = origin.value + (np.floor(days) * DAY_NS).astype(np.int64)
    return pd.Series(ns.astype("datetime64[ns]"))


def categorical_draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of `probs` (rows sum to 1), vectorised."""
    cum = probs.cumsum(axis=1)
    return (rng.random(len(probs))[:, None] > cum).sum(axis=1).clip(max=probs.shape[1] - 1)
