"""The as-of lookups every feature reads through (`forecast.features.asof`): the last event at
or before a moment, never a later one, and the same sums however the table was built."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.features.asof import Timeline, running_in_order, running_of

DAY = np.timedelta64(1, "D")


def _events(seed: int, rows: int = 5_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys, times (with many ties) and whole-number values in no particular order."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 40, rows)
    times = np.datetime64("2025-01-01", "ns") + rng.integers(0, 200, rows) * DAY
    return keys, times, rng.integers(0, 2, rows).astype(float)


def _brute_force(keys, times, values, key, moment) -> float:
    """The sum of the key's values at or before the moment, by looking at every row."""
    return float(values[(keys == key) & (times <= moment)].sum())


def test_running_sums_count_only_what_was_known_at_each_moment():
    keys, times, won = _events(0)
    running = running_of(keys, times, {"won": won, "n": np.ones(len(keys))})
    rng = np.random.default_rng(1)
    ask_keys = rng.integers(-1, 45, 2_000)  # -1 and 40-44: keys without events
    moments = np.datetime64("2024-12-01", "ns") + rng.integers(0, 260, 2_000) * DAY
    found = running.at(ask_keys, moments)
    expected = [
        _brute_force(keys, times, won, k, m) for k, m in zip(ask_keys, moments, strict=True)
    ]
    np.testing.assert_array_equal(found["won"], expected)
    assert found["won"].dtype == np.float64  # counts are stored small, read as floats
    last = found["at"]
    known = ~np.isnat(last)
    assert (last[known] <= moments[known]).all()  # never an event after the moment
    assert np.isnat(last[ask_keys < 0]).all() and np.isnat(last[ask_keys >= 40]).all()


def test_rows_in_key_order_give_the_same_table_as_sorting_them():
    keys, times, won = _events(2)
    order = np.lexsort((times.view(np.int64), keys))
    values = {"won": won, "n": np.ones(len(keys))}
    sorted_once = running_in_order(
        keys[order], times[order], {c: v[order] for c, v in values.items()}
    )
    sorted_here = running_of(keys, times, values)
    np.testing.assert_array_equal(sorted_once.keys, sorted_here.keys)
    np.testing.assert_array_equal(sorted_once.line.order, sorted_here.line.order)
    np.testing.assert_array_equal(sorted_once.sums, sorted_here.sums)
    assert sorted_here.sums.dtype == np.int32  # counts: half a float's memory, exact


def test_a_timeline_reads_back_each_rows_code_and_time():
    codes = np.array([-1, -1, 0, 0, 0, 3, 7, 7])
    times = pd.to_datetime(
        ["2025-01-02", "2025-03-01", "2025-01-01", "2025-01-01", "2025-02-01", "2025-01-02",
         "2025-01-01", "2025-03-01"]
    ).to_numpy("datetime64[ns]")  # fmt: skip
    line = Timeline.of(codes, times)
    np.testing.assert_array_equal(line.codes, codes)
    np.testing.assert_array_equal(line.times, times)
    at = np.datetime64("2025-01-15", "ns")
    # of two rows at the same time the last; a code without rows then, none; -1 is nobody
    np.testing.assert_array_equal(
        line.last(np.array([0, 3, 7, 5, -1]), np.full(5, at)), [3, 5, 6, -1, -1]
    )


def test_large_or_fractional_values_keep_their_float_sums():
    keys, times, _ = _events(3)
    amounts = np.random.default_rng(4).gamma(2.0, 1_000.0, len(keys)).round(2)
    running = running_of(keys, times, {"amount": amounts, "big": np.full(len(keys), 2.0**40)})
    assert running.sums.dtype == np.float64
    moment = np.datetime64("2025-04-01", "ns")
    found = running.at(np.array([5]), np.array([moment]))
    assert found["big"][0] == 2.0**40 * ((keys == 5) & (times <= moment)).sum()
    np.testing.assert_allclose(found["amount"][0], _brute_force(keys, times, amounts, 5, moment))
