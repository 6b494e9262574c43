"""Each family of checks in `forecast.data.validate`, on tiny hand-made frames."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import forecast.data.violations as violations
from forecast.data.schema import TABLES
from forecast.data.sources import RawTable
from forecast.data.tables import PANDAS_DTYPES, STRING
from forecast.data.validate import check, validate
from forecast.data.violations import ValidationError, Violation

AS_OF = pd.Timestamp("2024-06-30")

# A consistent little world, as text cells the way a CSV reader hands them over.
WORLD: dict[str, dict[str, list[str]]] = {
    "reps": {
        "rep_id": ["E1", "R1", "R2"],
        "manager_id": ["", "E1", "E1"],
        "role": ["executive", "rep", "rep"],
        "team": ["Top", "East", "West"],
        "region": ["Global", "NA", "NA"],
        "hired_at": ["2020-01-01", "2021-01-01", "2021-01-01"],
    },
    "accounts": {
        "account_id": ["A1", "A2"],
        "industry": ["Software", "Retail"],
        "region": ["NA", "NA"],
        "segment": ["smb", "enterprise"],
        "employees": ["10", ""],
        "created_at": ["2022-01-01", "2022-02-01"],
    },
    "products": {
        "product_id": ["P1"],
        "family": ["Core"],
        "list_price": ["100"],
        "billing": ["one_time"],
    },
    "deals": {
        "deal_id": ["D1", "D2", "D3"],
        "account_id": ["A1", "A2", ""],
        "rep_id": ["R1", "R1", "R2"],
        "product_id": ["P1", "P1", "P1"],
        "created_at": ["2024-01-01 10:00", "2024-02-01 10:00", "2024-03-01 10:00"],
        "amount": ["100", "200", "300"],
        "expected_close": ["2024-03-31", "", "2024-09-30"],
        "stage": ["closed_won", "closed_lost", "proposal"],
        "closed_at": ["2024-03-01 12:00", "2024-04-01 12:00", ""],
        "outcome": ["won", "lost", "open"],
    },
    "deal_history": {
        "deal_id": ["D1", "D1", "D2", "D3"],
        "changed_at": ["2024-01-01 10:00", "2024-03-01 12:00", "2024-04-01 12:00", "2024-03-02"],
        "stage": ["prospecting", "closed_won", "closed_lost", "proposal"],
        "amount": ["100", "100", "200", "300"],
        "expected_close": ["", "", "", ""],
    },
}


def raw(name: str, columns: dict[str, object]) -> RawTable:
    """A raw table; lists of str become text columns, anything else is kept as given."""
    frame = pd.DataFrame(
        {
            k: pd.Series(v, dtype=STRING) if _all_text(v) else pd.Series(v)
            for k, v in columns.items()
        }
    )
    return RawTable(name, frame, f"{name}.csv")


def _all_text(values: object) -> bool:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def world(**changes: dict[str, object] | None) -> dict[str, RawTable]:
    """The little world with some tables' columns replaced (None drops the table)."""
    tables: dict[str, dict[str, object]] = {k: dict(v) for k, v in WORLD.items()}
    for name, columns in changes.items():
        if columns is None:
            tables.pop(name, None)
        else:
            tables.setdefault(name, {}).update(columns)
    return {name: raw(name, columns) for name, columns in tables.items()}


def problems(tables: dict[str, RawTable], as_of: pd.Timestamp = AS_OF) -> list[Violation]:
    try:
        validate(tables, as_of=as_of)
    except ValidationError as err:
        return err.violations
    return []


def found(tables: dict[str, RawTable]) -> set[tuple[str, str, str, str]]:
    """(table, location, column, check) of each violation."""
    return {(v.table, v.location, v.column, v.check) for v in problems(tables)}


def test_the_little_world_is_valid_and_canonical() -> None:
    tables = validate(world(), as_of=AS_OF)

    for name, frame in tables.items():
        assert list(frame.columns) == TABLES[name].column_names
        for col in TABLES[name].columns:
            assert frame[col.name].dtype == PANDAS_DTYPES[col.type], (name, col.name)
    assert tables.targets.empty  # absent tables are empty
    assert tables.deals.discount.isna().all()  # an absent optional float column is empty
    assert tables.deals.closed_at.iloc[0] == pd.Timestamp("2024-03-01 12:00")
    assert tables.accounts.employees.tolist() == [10, pd.NA]
    assert isinstance(tables.deals.index, pd.RangeIndex)


# --- columns ------------------------------------------------------------------------------------


def test_missing_required_column_is_named_with_the_file() -> None:
    tables = world()
    tables["products"] = RawTable(
        "products", tables["products"].frame.drop(columns="billing"), "products.csv"
    )

    (violation,) = problems(tables)

    assert (violation.check, violation.column, violation.source) == (
        "missing_column",
        "billing",
        "products.csv",
    )
    assert "found: product_id, family, list_price" in violation.expected


def test_extra_columns_are_ignored_and_duplicates_reported() -> None:
    extra = world(products={"notes": ["anything"]})
    assert problems(extra) == []

    frame = pd.DataFrame(
        [["P1", "Core", "100", "one_time", "100"]],
        columns=["product_id", "family", "list_price", "billing", "list_price"],
        dtype=STRING,
    )
    tables = {**world(), "products": RawTable("products", frame, "products.csv")}
    assert found(tables) == {("products", "", "list_price", "duplicate_column")}


def test_unknown_table_is_reported() -> None:
    tables = {**world(), "opportunities": raw("opportunities", {"x": ["1"]})}

    assert found(tables) == {("opportunities", "", "", "unknown_table")}


# --- types ----------------------------------------------------------------------------------------


def test_numbers_from_text() -> None:
    good = ["100", "1.5", "+3", "1e3", " 7 ", ".5", "0"]
    bad = ["1,000", "abc", "nan", "inf", "$5", "1e999"]
    tables = world(
        products={
            "product_id": [f"P{i}" for i in range(len(good + bad))],
            "family": ["f"] * len(good + bad),
            "list_price": good + bad,
            "billing": ["one_time"] * len(good + bad),
        },
        deals=None,
        deal_history=None,
    )

    rows = {(v.location, v.check) for v in problems(tables)}

    assert rows == {(f"row {len(good) + i + 1}", "type") for i in range(len(bad))}
    prices = validate(world(products={"list_price": ["+1e3"]}), as_of=AS_OF).products.list_price
    assert prices.tolist() == [1000.0]


def test_whole_numbers() -> None:
    tables = world(accounts={"employees": ["3.0", "3.5"]})

    assert found(tables) == {("accounts", "row 2", "employees", "type")}
    assert problems(tables)[0].expected.startswith("a whole number")
    ok = validate(world(accounts={"employees": ["3.0", "+4"]}), as_of=AS_OF)
    assert ok.accounts.employees.tolist() == [3, 4]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-05", "2024-01-05 00:00"),
        ("2024-01-05 10:00", "2024-01-05 10:00"),
        ("2024-01-05T10:00:30", "2024-01-05 10:00:30"),
        ("2024-01-05T10:00:00.123456Z", "2024-01-05 10:00:00.123456"),
        ("2024-01-05T10:00:00+02:00", "2024-01-05 08:00"),
        ("2024-01-05 10:00:00-0500", "2024-01-05 15:00"),
    ],
)
def test_timestamps_in_iso_8601_become_naive_utc(text: str, expected: str) -> None:
    tables = validate(world(accounts={"created_at": [text, "2022-02-01"]}), as_of=AS_OF)

    assert tables.accounts.created_at.iloc[0] == pd.Timestamp(expected)


@pytest.mark.parametrize(
    "text", ["31/12/2023", "2023-13-01", "2023-02-30", "2023-01-05T10", "yesterday", "2023-1-5"]
)
def test_malformed_timestamps(text: str) -> None:
    (violation,) = problems(world(accounts={"created_at": [text, "2022-02-01"]}))

    assert (violation.location, violation.column, violation.check) == (
        "row 1",
        "created_at",
        "type",
    )
    assert violation.value == text
    assert "2024-03-31T14:05:00Z" in violation.expected


def test_dates_months_and_quarters() -> None:
    tables = world(
        deals={"expected_close": ["2024-03-31 00:00:00", "2024-03-31 10:00", "2024-3-31"]},
        revenue={
            "account_id": ["A1"] * 4,
            "product_id": ["P1"] * 4,
            "period": ["2024-03", "2024-04-01", "2024-05-15", "2024-13"],
            "kind": ["one_time"] * 4,
            "amount": ["1"] * 4,
        },
        targets={
            "level": ["company", "company"],
            "owner": ["company", "company"],
            "period": ["2024Q2", "2024Q5"],
            "amount": ["1", "1"],
        },
    )

    assert found(tables) == {
        ("deals", "row 2", "expected_close", "type"),
        ("deals", "row 3", "expected_close", "type"),
        ("revenue", "row 3", "period", "type"),
        ("revenue", "row 4", "period", "type"),
        ("targets", "row 2", "period", "type"),
    }
    ok = world(revenue={"period": ["2024-03", "2024-04-01"], "account_id": ["A1", "A1"]})
    ok["revenue"] = raw(
        "revenue",
        {
            "account_id": ["A1", "A1"],
            "product_id": ["P1", "P1"],
            "period": ["2024-03", "2024-04-01"],
            "kind": ["one_time", "one_time"],
            "amount": ["1", "2"],
        },
    )
    periods = validate(ok, as_of=AS_OF).revenue.period
    assert periods.tolist() == [pd.Timestamp("2024-03-01"), pd.Timestamp("2024-04-01")]


def test_enums_need_an_exact_allowed_value() -> None:
    tables = world(products={"billing": ["One_Time"]})

    (violation,) = problems(tables)

    assert violation.check == "allowed"
    assert violation.expected == "one of one_time, subscription"


def test_required_cells() -> None:
    tables = world(products={"family": ["   "]}, deals={"account_id": ["A1", "A2", ""]})

    assert found(tables) == {("products", "row 1", "family", "required")}


def test_ids_are_one_line_without_padding() -> None:
    tables = world(products={"product_id": ["P1 "]})

    assert ("products", "row 1", "product_id", "type") in found(tables)
    # The padded id also no longer matches the deals' references.
    assert ("deals", "row 1", "product_id", "foreign_key") in found(tables)
    assert found(world(accounts={"account_id": ["A\n1", "A2"]})) >= {
        ("accounts", "row 1", "account_id", "type")
    }
    assert (
        problems(
            world(
                products={"product_id": ["P 1"], "family": ["Core"]}, deals=None, deal_history=None
            )
        )
        == []
    )


def test_whole_number_ids_written_as_floats_lose_the_point_zero() -> None:
    """Spark (and pandas beside blanks) writes integer ids as 17850.0: read as 17850, in every
    table whose column is so written, so they still join; a column with any other id is kept."""
    floats = {
        "accounts": {"account_id": ["17850.0", "13047.0"]},
        "deals": {"account_id": ["17850.0", "13047.0", ""]},
    }
    tables = validate(world(**floats), as_of=AS_OF)
    assert list(tables.accounts["account_id"]) == ["17850", "13047"]
    assert list(tables.deals["account_id"].dropna()) == ["17850", "13047"]
    typed = validate(world(products={"product_id": [7.0]}, deals={"product_id": [7.0] * 3}),
                     as_of=AS_OF)  # fmt: skip
    assert list(typed.deals["product_id"]) == ["7"] * 3
    mixed = {"accounts": {"account_id": ["A1", "2.0"]}, "deals": {"account_id": ["A1", "2.0", ""]}}
    assert list(validate(world(**mixed), as_of=AS_OF).accounts["account_id"]) == ["A1", "2.0"]


@pytest.mark.parametrize("text", ["=SUM(A1)", "@SUM(A1)", "+A1", "-A1", "\tx", "=1"])
def test_spreadsheet_formulas_in_text(text: str) -> None:
    (violation,) = problems(world(products={"family": [text]}))

    assert (violation.column, violation.check) == ("family", "formula")
    assert "spreadsheet formula" in violation.expected


def test_a_leading_minus_before_a_digit_is_not_a_formula() -> None:
    assert problems(world(products={"family": ["-5 units"]})) == []
    # A negative number is a bound problem, not a formula.
    assert found(world(products={"list_price": ["-5"]})) == {
        ("products", "row 1", "list_price", "minimum")
    }


def test_typed_values_from_parquet_or_sql() -> None:
    tables = world(
        products={
            "product_id": [1, 2, 3],
            "family": ["a", "b", "c"],
            "list_price": [1.5, np.nan, 3.0],
            "billing": ["one_time"] * 3,
        },
        accounts={
            "created_at": pd.to_datetime(["2022-01-01 02:00", "2022-02-01 00:00"]).tz_localize(
                "Europe/Paris"
            ),
            "employees": [3.0, np.nan],
        },
        reps={"hired_at": [dt.date(2020, 1, 1), dt.date(2021, 1, 1), None]},
        deals=None,
        deal_history=None,
    )

    assert found(tables) == {
        ("products", "row 2", "list_price", "required"),
        ("reps", "row 3", "hired_at", "required"),
    }
    ok = world(
        products={"product_id": [1], "list_price": [1.5]},
        accounts={"created_at": pd.to_datetime(["2022-01-01 02:00", "2022-02-01 00:00"], utc=True)},
        deals=None,
        deal_history=None,
    )
    result = validate(ok, as_of=AS_OF)
    assert result.products.product_id.tolist() == ["1"]
    assert result.accounts.created_at.dtype == "datetime64[ns]"
    assert found(world(accounts={"employees": [3.5, 1.0]})) == {
        ("accounts", "row 1", "employees", "type")
    }


# --- bounds, keys and references ----------------------------------------------------------------


def test_bounds() -> None:
    tables = world(deals={"discount": ["0", "1", "1.01"], "amount": ["0", "-0.01", "5"]})

    assert found(tables) == {
        ("deals", "row 3", "discount", "maximum"),
        ("deals", "row 2", "amount", "minimum"),
    }


def test_duplicate_keys_name_the_first_occurrence() -> None:
    tables = world(
        products={
            "product_id": ["P1", "P2", "P1", "P1"],
            "family": ["a", "b", "c", "d"],
            "list_price": ["1"] * 4,
            "billing": ["one_time"] * 4,
        }
    )

    violations = problems(tables)

    assert [(v.location, v.check) for v in violations] == [("row 3", "unique"), ("row 4", "unique")]
    assert violations[0].expected.endswith("already at row 1")


def test_composite_keys_compare_parsed_values() -> None:
    # The same instant written two ways is the same key.
    tables = world(
        deal_history={
            "deal_id": ["D1", "D1", "D2", "D3"],
            "changed_at": [
                "2024-01-01 10:00",
                "2024-01-01T10:00:00Z",
                "2024-04-01 12:00",
                "2024-03-02",
            ],
            "stage": ["closed_won", "closed_won", "closed_lost", "proposal"],
        }
    )

    assert found(tables) == {("deal_history", "row 2", "deal_id, changed_at", "unique")}


def test_foreign_keys_and_a_missing_referenced_table() -> None:
    tables = world(deals={"rep_id": ["R1", "R9", "R2"]})
    (violation,) = problems(tables)
    assert (violation.location, violation.column, violation.check) == (
        "row 2",
        "rep_id",
        "foreign_key",
    )
    assert violation.expected == "a reps row with rep_id = R9"

    # an export may leave products (reps, accounts) out: their features are then off
    assert problems(world(products=None)) == []
    without_deals = world(deals=None)
    assert problems(without_deals)
    assert all("(is deals missing from the import?)" in v.expected for v in problems(without_deals))


def test_target_owner_resolves_per_level() -> None:
    tables = world(
        targets={
            "level": ["rep", "rep", "team", "team", "region", "region", "company", "company"],
            "owner": ["R1", "East", "East", "R1", "NA", "EMEA", "company", "Acme"],
            "period": ["2024Q1"] * 8,
            "amount": ["1"] * 8,
        }
    )

    rows = {v.location for v in problems(tables)}

    assert rows == {"row 2", "row 4", "row 6", "row 8"}


# --- rules across rows --------------------------------------------------------------------------


def test_manager_cycles_are_reported_once_per_cycle() -> None:
    tables = world(
        reps={
            "rep_id": ["E1", "R1", "R2", "R3", "R4"],
            "manager_id": ["", "R2", "R1", "R3", "R1"],
            "role": ["executive", "rep", "rep", "rep", "rep"],
            "team": ["Top", "East", "West", "West", "West"],
            "region": ["Global", "NA", "NA", "NA", "NA"],
            "hired_at": ["2020-01-01"] * 5,
        }
    )

    cycles = [v for v in problems(tables) if v.check == "cycle"]

    assert sorted(v.expected.split("; ")[1] for v in cycles) == [
        "R1 → R2 → R1 is a cycle",
        "R3 → R3 is a cycle",
    ]


def test_left_before_hired() -> None:
    tables = world(reps={"left_at": ["", "2020-12-31", "2021-01-01"]})

    assert found(tables) == {("reps", "row 2", "left_at", "time_order")}


def test_activity_needs_a_deal_or_an_account() -> None:
    tables = world(
        activities={
            "activity_id": ["T1", "T2", "T3"],
            "deal_id": ["D1", "", ""],
            "account_id": ["", "A1", ""],
            "rep_id": ["R1"] * 3,
            "kind": ["call"] * 3,
            "at": ["2024-01-02"] * 3,
        }
    )

    assert found(tables) == {("activities", "row 3", "deal_id", "required")}


def test_deal_state_consistency() -> None:
    tables = world(
        deals={
            "stage": ["closed_won", "closed_won", "proposal"],
            "closed_at": ["", "2024-04-01 12:00", "2024-03-05"],
            "outcome": ["won", "lost", "open"],
        },
        deal_history=None,
    )

    assert found(tables) == {
        ("deals", "row 1", "closed_at", "consistency"),  # won without closed_at
        ("deals", "row 2", "outcome", "consistency"),  # lost with stage closed_won
        ("deals", "row 3", "closed_at", "consistency"),  # open with closed_at
    }


def test_closed_before_created() -> None:
    tables = world(deals={"closed_at": ["2023-12-31", "2024-04-01 12:00", ""]}, deal_history=None)

    assert found(tables) == {("deals", "row 1", "closed_at", "time_order")}


def test_history_lies_within_the_deals_life_and_ends_at_its_stage() -> None:
    tables = world(
        deal_history={
            "deal_id": ["D1", "D1", "D2", "D3", "D3"],
            "changed_at": [
                "2024-01-01 10:00",  # equal to created_at: fine
                "2024-03-01 12:00",
                "2024-04-01 12:01",  # after D2 closed
                "2024-02-01",  # before D3 was created
                "2024-03-02",
            ],
            "stage": ["prospecting", "closed_won", "closed_lost", "proposal", "negotiation"],
            "amount": ["1"] * 5,
            "expected_close": [""] * 5,
        }
    )

    assert found(tables) == {
        ("deal_history", "row 3", "changed_at", "time_order"),
        ("deal_history", "row 4", "changed_at", "time_order"),
        ("deal_history", "row 5", "stage", "consistency"),
    }


def test_nothing_after_the_as_of() -> None:
    tables = world(
        deals={"created_at": ["2024-01-01 10:00", "2024-02-01 10:00", "2024-07-01"]},
        deal_history=None,
    )

    (violation,) = problems(tables)

    assert (violation.location, violation.column, violation.check) == (
        "row 3",
        "created_at",
        "future",
    )
    assert "as-of 2024-06-30" in violation.expected
    # An as-of with a time zone is converted to UTC.
    assert problems(tables, pd.Timestamp("2024-07-01 02:00", tz="Europe/Paris")) == []


# --- reporting ----------------------------------------------------------------------------------


def test_violation_reads_as_one_line() -> None:
    violation = Violation(
        "deals", "deals.csv", "line 17", "amount", "-5", "a number >= 0", "minimum"
    )

    assert str(violation) == (
        "deals.csv line 17, column amount: '-5' — expected a number >= 0 (deals, minimum)"
    )


def test_values_are_cut_in_messages() -> None:
    (violation,) = problems(world(products={"billing": ["x" * 500]}))

    assert len(violation.value) == violations.VALUE_WIDTH


def test_summary_counts_everything_and_lists_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(violations, "MAX_PER_GROUP", 3)
    n = 10
    tables = world(
        products={
            "product_id": [f"P{i}" for i in range(n)],
            "family": ["f"] * n,
            "list_price": ["x"] * n,
            "billing": ["nope"] * n,
        },
        deals=None,
        deal_history=None,
    )

    with pytest.raises(ValidationError) as caught:
        validate(tables, as_of=AS_OF)

    error = caught.value
    assert len(error.violations) == 6
    assert error.counts == {
        ("products", "list_price", "type"): n,
        ("products", "billing", "allowed"): n,
    }
    summary = error.summary(4)
    assert summary.startswith("20 problems in 1 table; nothing was written.")
    assert "products.list_price (type): 10" in summary
    assert "4 of 20, one of each kind first:" in summary
    assert "16 more" in summary


def test_errors_merge() -> None:
    one = ValidationError([Violation("deals", "a", "", "x", "", "y", "type")])
    two = ValidationError([], {("reps", "x", "type"): 7})

    merged = ValidationError.merge([one, two])

    assert merged.total == 8
    assert len(merged.violations) == 1


def test_quarantine_leaves_out_a_repeated_deal_row_alone() -> None:
    deals = {k: [*v, v[0]] for k, v in WORLD["deals"].items()}  # D1 again, on row 4
    checked = check(world(deals=deals), as_of=AS_OF, bad_rows="quarantine")
    assert list(checked.tables.deals["deal_id"]) == ["D1", "D2", "D3"]
    assert (checked.tables.deal_history["deal_id"] == "D1").sum() == 2  # D1 keeps its history
    [note] = checked.set_aside
    assert (note.location, note.check) == ("row 4", "quarantined")


def test_quarantine_leaves_out_a_repeated_deal_row_with_the_attributes_it_carried() -> None:
    """An export that repeats a deal's row repeats its attribute columns too (one attribute row
    per column): the repeats go, the first row and its attributes stay."""
    deals = {k: [*v, v[0]] for k, v in WORLD["deals"].items()}  # D1 again, on row 4
    attributes = {
        "deal_id": ["D1", "D2", "D3", "D1"],
        "name": ["lead_source", "lead_source", "lead_source", "lead_source"],
        "value": ["web", "event", "web", "web"],
        "known_at": ["created"] * 4,
    }
    refused = world(deals=deals, deal_attributes=attributes)
    with pytest.raises(ValidationError) as caught:
        check(refused, as_of=AS_OF)
    assert "`--bad-rows quarantine` imports everything else" in caught.value.summary(10)
    checked = check(refused, as_of=AS_OF, bad_rows="quarantine")
    assert list(checked.tables.deals["deal_id"]) == ["D1", "D2", "D3"]
    kept = checked.tables.deal_attributes
    assert sorted(kept["deal_id"]) == ["D1", "D2", "D3"]
    assert sorted((n.table, n.location) for n in checked.set_aside) == [
        ("deal_attributes", "row 4"),
        ("deals", "row 4"),
    ]
    assert all(n.check == "quarantined" for n in checked.set_aside)


@pytest.mark.parametrize(
    ("attributes", "why"),
    [
        # the mapping's to fix: every attribute name is not an id
        ({"name": ["Lead Source"] * 3}, "name"),
        # two different values for one deal whose row is not repeated: which one is meant?
        (
            {"deal_id": ["D1", "D2", "D3", "D1"], "value": ["web", "event", "web", "event"]},
            "unique",
        ),
    ],
)
def test_attribute_rows_are_set_aside_only_as_repeats_of_a_repeated_deal(attributes, why) -> None:
    base = {
        "deal_id": ["D1", "D2", "D3"],
        "name": ["lead_source"] * 3,
        "value": ["web", "event", "web"],
        "known_at": ["created"] * 3,
    }
    n = len(attributes.get("deal_id", base["deal_id"]))
    table = {k: (v + v[:1])[:n] if len(v) < n else v for k, v in base.items()} | attributes
    with pytest.raises(ValidationError) as caught:
        check(world(deal_attributes=table), as_of=AS_OF, bad_rows="quarantine")
    assert any(v.table == "deal_attributes" for v in caught.value.violations)
    assert why in {v.check for v in caught.value.violations} | {
        v.column for v in caught.value.violations
    }
    assert "--bad-rows quarantine" not in caught.value.summary(10)


def test_a_history_row_after_the_close_is_quarantined_with_its_deal_and_the_hint_says_so() -> None:
    history = {k: list(v) for k, v in WORLD["deal_history"].items()}
    history["changed_at"][1] = "2024-03-05 12:00"  # D1's closing row after D1 closed
    with pytest.raises(ValidationError) as refused:
        check(world(deal_history=history), as_of=AS_OF)
    assert "`--bad-rows quarantine` imports everything else" in refused.value.summary(10)
    assert "--bad-rows repair" not in refused.value.hint  # it would break the history: not offered
    checked = check(world(deal_history=history), as_of=AS_OF, bad_rows="quarantine")
    assert list(checked.tables.deals["deal_id"]) == ["D2", "D3"]
    assert "D1" not in set(checked.tables.deal_history["deal_id"])
    assert {n.table for n in checked.set_aside} == {"deal_history"}


def test_a_value_missing_from_the_value_map_is_never_quarantined() -> None:
    deals = {k: list(v) for k, v in WORLD["deals"].items()}
    deals["stage"][0] = "Closed Won"  # a label the mapping did not translate
    with pytest.raises(ValidationError) as refused:
        check(world(deals=deals), as_of=AS_OF, bad_rows="quarantine")
    assert refused.value.hint == ""
    assert ("deals", "stage", "allowed") in refused.value.counts
