"""Cells parsed by their contract type, text or typed, vectorised with pyarrow compute: each
column's values and the rows that are not what the contract says."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forecast.data.contract import Column
from forecast.data.tables import STRING
from forecast.data.violations import EXPECTED, FORMULA_HINT, is_missing_value

# RE2 patterns (pyarrow compute), applied to trimmed cells; _FORMULA and _ID_SUSPECT see raw ones.
_FORMULA = r"^(?:[=@\t\r]|[+-][^0-9])"

_ID_SUSPECT = r"^\s|\s$|[\r\n]|^[=@+-]"

_FLOAT = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"

_INT = r"^[+-]?\d+(?:\.0*)?$"

_WHOLE_AS_FLOAT = r"^[0-9]+\.0+$"

_DATETIME = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)

_ZONE = r"(?:Z|[+-]\d{2}:?\d{2})$"

_MONTH = r"^\d{4}-\d{2}$"

_QUARTER = r"^\d{4}Q[1-4]$"

_Problems = list[tuple[np.ndarray, str, str]]

log = logging.getLogger(__name__)


def parse_column(
    col: Column, series: pd.Series, *, where: str = ""
) -> tuple[pd.Series, np.ndarray, _Problems]:
    """The column as canonical values (NA where empty or invalid), its empty cells and problems.

    Text (CSV, text columns of typed sources) is parsed with the contract's formats; typed values
    from Parquet or SQL are accepted when they already have the right kind.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    text = _as_text(series)
    if text is None and col.type in ("float", "int"):
        return _typed_number(col, series)
    if text is None and col.type in ("datetime", "date", "month"):
        typed = _typed_time(col, series)
        if typed is not None:
            return typed
    if text is None:
        text = _stringify(series)
    return _parse_text(col, text, where or col.name)


def _parse_text(
    col: Column, text: pa.ChunkedArray, where: str
) -> tuple[pd.Series, np.ndarray, _Problems]:
    trimmed = pc.utf8_trim_whitespace(text)
    empty = mask_of(pc.equal(trimmed, ""), null=True)
    problems: _Problems = []
    if col.type == "id" and _whole_numbers_as_floats(text, empty):
        log.info("%s: every id is a whole number written as a float (%s): read without the "
                 "'.0'", where, _first(text, empty))  # fmt: skip
        text = trimmed = pc.replace_substring_regex(text, r"\.0+$", "")
    if col.type in ("id", "text"):
        formula = odd = np.zeros(len(text), dtype=bool)
        # The detailed tests run only when some cell looks odd: the happy path is one regex.
        if (mask_of(pc.match_substring_regex(text, _ID_SUSPECT)) & ~empty).any():
            formula = mask_of(pc.match_substring_regex(text, _FORMULA)) & ~empty
            if col.type == "id":
                padded = mask_of(pc.not_equal(text, trimmed))
                odd = (padded | mask_of(pc.match_substring_regex(text, "[\r\n]"))) & ~empty
                odd &= ~formula
        problems.append((formula, "formula", FORMULA_HINT))
        if col.type == "id":
            # Ids are kept exactly: a padded id would silently fail to join, so it is refused.
            problems.append((odd, "type", EXPECTED["id"]))
            return _strings(text, empty | formula | odd), empty, problems
        # Padding around free text carries no meaning (exports add it), so it is trimmed.
        return _strings(trimmed, empty | formula), empty, problems
    if col.type == "enum":
        bad = ~mask_of(pc.is_in(trimmed, value_set=pa.array(col.allowed))) & ~empty
        problems.append((bad, "allowed", f"one of {', '.join(col.allowed)}"))
        return _strings(trimmed, empty | bad), empty, problems
    if col.type == "quarter":
        bad = ~mask_of(pc.match_substring_regex(trimmed, _QUARTER)) & ~empty
        problems.append((bad, "type", EXPECTED["quarter"]))
        return _strings(trimmed, empty | bad), empty, problems
    if col.type in ("float", "int"):
        values, bad = _text_number(col, trimmed, empty)
    else:
        values, bad = _text_time(col, trimmed, empty)
    problems.append((bad, "type", EXPECTED[col.type]))
    return values, empty, problems


def _whole_numbers_as_floats(text: pa.ChunkedArray, empty: np.ndarray) -> bool:
    """Every id of the column is a whole number written as a float (`17850.0`): what Spark,
    or pandas reading integer ids beside blanks, writes. Ids are otherwise kept exactly; these
    would match no id of the CRM (17850), nor one written elsewhere without the `.0`."""
    if empty.all():
        return False
    floats = mask_of(pc.match_substring_regex(text, _WHOLE_AS_FLOAT))
    return bool((floats | empty).all())


def _first(text: pa.ChunkedArray, empty: np.ndarray) -> str:
    return str(text[int(np.flatnonzero(~empty)[0])])


def _text_number(
    col: Column, trimmed: pa.ChunkedArray, empty: np.ndarray
) -> tuple[pd.Series, np.ndarray]:
    pattern = _INT if col.type == "int" else _FLOAT
    ok = mask_of(pc.match_substring_regex(trimmed, pattern)) & ~empty
    candidates = _keep(trimmed, ok)
    if col.type == "int":
        # `12.0` is whole; Arrow's integer cast wants neither the `.0` nor a leading `+`.
        candidates = pc.replace_substring_regex(candidates, r"\.0*$|^\+", "")
        try:
            numbers = pc.cast(candidates, pa.int64())
        except pa.ArrowInvalid:  # beyond int64: only those cells are invalid
            numbers = pa.array(
                [
                    None if v is None or abs(int(v)) >= 2**63 else int(v)
                    for v in candidates.to_pylist()
                ],
                pa.int64(),
            )
        missing = mask_of(pc.is_null(numbers), null=True)
        values = pd.Series(pd.arrays.IntegerArray(_np(pc.fill_null(numbers, 0)), missing))
        return values, missing & ~empty
    numbers = _np(pc.fill_null(pc.cast(candidates, pa.float64()), np.nan)).astype("float64")
    bad = ~np.isfinite(numbers) & ~empty  # a 400-digit exponent parses to inf
    numbers[bad] = np.nan
    return pd.Series(numbers), bad


def _text_time(
    col: Column, trimmed: pa.ChunkedArray, empty: np.ndarray
) -> tuple[pd.Series, np.ndarray]:
    if col.type == "month":
        short = mask_of(pc.match_substring_regex(trimmed, _MONTH))
        trimmed = pc.if_else(
            pa.array(short),
            pc.binary_join_element_wise(
                trimmed, pa.scalar("01", trimmed.type), pa.scalar("-", trimmed.type)
            ),
            trimmed,
        )
    ok = mask_of(pc.match_substring_regex(trimmed, _DATETIME)) & ~empty
    zoned = mask_of(pc.match_substring_regex(trimmed, _ZONE)) & ok
    nanos = np.full(len(ok), np.iinfo("int64").min, dtype="int64")  # NaT
    for part, arrow_type in ((ok & ~zoned, pa.timestamp("ns")), (zoned, pa.timestamp("ns", "UTC"))):
        if part.any():
            nanos[part] = _cast_times(pc.filter(trimmed, pa.array(part)), arrow_type)
    values = pd.Series(nanos.view("datetime64[ns]"))
    bad = values.isna().to_numpy() & ~empty
    if col.type == "datetime":
        return values, bad
    # Dates and months carry no time of day (or zone); months also start on the 1st.
    fits = (values == values.dt.normalize()).to_numpy() & ~zoned
    if col.type == "month":
        fits &= (values.dt.day == 1).to_numpy()
    bad |= ~fits & ~empty
    return values.where(~bad), bad


def _cast_times(text: pa.ChunkedArray, arrow_type: pa.DataType) -> np.ndarray:
    """ISO 8601 text to UTC nanoseconds; impossible dates (2024-02-30, year 9999) become NaT."""
    try:
        return _np(pc.cast(pc.cast(text, arrow_type), pa.int64()))
    except pa.ArrowInvalid:  # rare: fall back to a forgiving parser for this subset only
        parsed = pd.to_datetime(_np_object(text), format="ISO8601", utc=True, errors="coerce")
        return parsed.tz_localize(None).as_unit("ns").asi8


def _typed_number(col: Column, series: pd.Series) -> tuple[pd.Series, np.ndarray, _Problems]:
    empty = series.isna().to_numpy()
    numeric = pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_object_dtype(
        series.dtype
    )
    if pd.api.types.is_bool_dtype(series.dtype) or not numeric:
        numbers = np.full(len(series), np.nan)  # e.g. true/false or times: not numbers
    else:
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = ~np.isfinite(numbers) & ~empty
    if col.type == "int":
        with np.errstate(invalid="ignore"):
            bad |= (np.floor(numbers) != numbers) & ~empty & ~bad
            bad |= np.abs(numbers) >= 2.0**63
    numbers = np.where(bad | empty, np.nan, numbers)
    if col.type == "int":
        mask = np.isnan(numbers)
        values = pd.Series(pd.arrays.IntegerArray(np.nan_to_num(numbers).astype("int64"), mask))
    else:
        values = pd.Series(numbers)
    return values, empty, [(bad, "type", EXPECTED[col.type])]


def _typed_time(col: Column, series: pd.Series) -> tuple[pd.Series, np.ndarray, _Problems] | None:
    """Datetime values from Parquet or SQL; None when they are not times at all."""
    empty = series.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        values = series
        if values.dt.tz is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        # Units coarser than ns can hold years ns cannot (e.g. 9999-12-31): those are invalid.
        low, high = pd.Timestamp.min, pd.Timestamp.max
        inside = ((values >= low) & (values <= high)).to_numpy()
        values = pd.Series(values.where(inside).to_numpy().astype("datetime64[ns]"))
    elif pd.api.types.is_object_dtype(series.dtype) and pd.api.types.infer_dtype(
        series, skipna=True
    ) in (
        "datetime",
        "datetime64",
        "date",
    ):
        values = pd.to_datetime(series, utc=True, errors="coerce").dt.tz_localize(None)
        values = values.dt.as_unit("ns").reset_index(drop=True)
    else:
        return None
    bad = values.isna().to_numpy() & ~empty
    if col.type != "datetime":
        fits = (values == values.dt.normalize()).to_numpy()
        if col.type == "month":
            fits &= (values.dt.day == 1).to_numpy()
        bad |= ~fits & ~empty
    return values.where(~bad), empty, [(bad, "type", EXPECTED[col.type])]


def _as_text(series: pd.Series) -> pa.ChunkedArray | None:
    """The column as Arrow large strings when it holds text, else None."""
    dtype = series.dtype
    is_text = isinstance(dtype, pd.StringDtype) or (
        isinstance(dtype, pd.ArrowDtype) and pa.types.is_string(dtype.pyarrow_dtype)
    )
    if not is_text and pd.api.types.is_object_dtype(dtype):
        is_text = pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")
    if not is_text:
        return None
    arr = pa.array(
        series if pd.api.types.is_object_dtype(dtype) else series.array, from_pandas=True
    )
    arr = arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])
    return arr.cast(pa.large_string())


def _stringify(series: pd.Series) -> pa.ChunkedArray:
    """Typed values (e.g. integer ids from SQL) as text, so text rules apply to them."""
    if pd.api.types.is_integer_dtype(series.dtype):
        series = series.astype("Int64").astype(STRING)
    elif pd.api.types.is_float_dtype(series.dtype):
        whole = series.dropna()
        if (whole == np.floor(whole)).all() and (whole.abs() < 2.0**53).all():
            series = series.astype("Int64").astype(STRING)  # 12.0 is the id 12
    if not isinstance(series.dtype, pd.StringDtype):
        series = pd.Series(
            [None if is_missing_value(v) else str(v) for v in series.tolist()], dtype=STRING
        )
    return _as_text(series) or pa.chunked_array([pa.nulls(len(series), pa.large_string())])


def _strings(text: pa.ChunkedArray, drop: np.ndarray) -> pd.Series:
    """Canonical string Series; NA where `drop`."""
    return pd.Series(pd.arrays.ArrowStringArray(_keep(text, ~drop)))


def _keep(values: pa.ChunkedArray, keep: np.ndarray) -> pa.ChunkedArray:
    """`values` with null wherever `keep` is false."""
    kept = pc.if_else(pa.array(keep), values, pa.scalar(None, values.type))
    return kept if isinstance(kept, pa.ChunkedArray) else pa.chunked_array([kept])


def null_column(col: Column, n: int) -> pd.Series:
    """An all-empty canonical column, for optional columns the source does not have."""
    if col.type in ("float",):
        return pd.Series(np.full(n, np.nan))
    if col.type == "int":
        return pd.Series(pd.arrays.IntegerArray(np.zeros(n, "int64"), np.ones(n, bool)))
    if col.type in ("datetime", "date", "month"):
        return pd.Series(np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"))
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([pa.nulls(n, pa.large_string())])))


def _np(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(
        array.to_numpy(zero_copy_only=False) if isinstance(array, pa.Array) else array.to_numpy()
    )


def mask_of(array: pa.Array | pa.ChunkedArray, *, null: bool = False) -> np.ndarray:
    """A boolean Arrow result as a numpy mask; nulls become `null`."""
    return _np(pc.fill_null(array, null)).astype(bool)


def as_arrow(series: pd.Series) -> pa.ChunkedArray:
    """A canonical string Series as its Arrow data (no copy)."""
    return pa.chunked_array(series.array.__arrow_array__())


def lookup_codes(values: pa.ChunkedArray, known: pa.ChunkedArray) -> np.ndarray:
    """For each value, the position of its first occurrence in `known`; -1 if absent or null."""
    found = pc.index_in(values, value_set=known.combine_chunks(), skip_nulls=True)
    return _np(pc.fill_null(found, -1)).astype("int64")


def _np_object(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.to_pylist(), dtype=object)


def naive_utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def iso_moment(text: str) -> pd.Timestamp:
    """An ISO 8601 date or moment (2026-11-15, 2026-11-15 09:00, 2026-11-15T09:00Z) as the store
    keeps moments: UTC, no zone. Only ISO: 01/02/2017 is the 2nd of January to some and the 1st
    of February to others.

    Raises:
        ValueError: anything else, or a day that does not exist.
    """
    if not re.match(_DATETIME, text.strip()):
        raise ValueError(f"{text!r} is not an ISO date: year-month-day, e.g. 2026-11-15")
    return naive_utc(pd.Timestamp(text.strip()))
