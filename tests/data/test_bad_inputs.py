"""Malformed exports are refused with a precise message, and the store is left byte-identical.

Each case starts from the valid world in `conftest.py`, imports it, corrupts one file, imports
again and checks the error names the file or table, line, column and value.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forecast.data.sources.files import read_csv, read_folder
from forecast.data.store import read_store, write_store
from forecast.data.tables import STRING
from forecast.data.validate import validate
from forecast.data.violations import ValidationError

Corrupt = Callable[[Path], None]
AS_OF = pd.Timestamp("2024-06-30")  # the valid world's as-of (conftest.AS_OF)
FIRST_IMPORT = pd.Timestamp("2024-07-01 06:00")
SECOND_IMPORT = pd.Timestamp("2024-07-02 06:00")


def import_folder(folder: Path, store: Path, imported_at: pd.Timestamp):
    """The import path under test: read the folder, validate, write the store."""
    return write_store(
        validate(read_folder(folder), as_of=AS_OF),
        source=str(folder),
        imported_at=imported_at,
        store=store,
    )


def snapshot(store: Path) -> dict[str, object]:
    """Every file's bytes and every link's target under `store`."""
    state: dict[str, object] = {}
    for folder, dirs, files in os.walk(store):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(store))
            if path.is_symlink():
                state[key] = ("link", str(path.readlink()))
            elif path.is_file():
                state[key] = path.read_bytes()
    return state


# --- corruptions ---------------------------------------------------------------------------------


def edit(table: str, old: str, new: str) -> Corrupt:
    """Replace the first `old` in `<table>.csv` by `new`."""

    def apply(folder: Path) -> None:
        path = folder / f"{table}.csv"
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {table}.csv"
        path.write_text(text.replace(old, new, 1), encoding="utf-8", newline="")

    return apply


def append(table: str, line: str) -> Corrupt:
    def apply(folder: Path) -> None:
        with (folder / f"{table}.csv").open("a", encoding="utf-8", newline="") as handle:
            handle.write(line)

    return apply


def write_bytes(table: str, data: bytes, suffix: str = ".csv") -> Corrupt:
    def apply(folder: Path) -> None:
        (folder / f"{table}{suffix}").write_bytes(data)

    return apply


def rewrite(table: str, change: Callable[[list[list[str]]], list[list[str]]]) -> Corrupt:
    """Parse `<table>.csv`, change its records (header first) and write it back."""

    def apply(folder: Path) -> None:
        path = folder / f"{table}.csv"
        records = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(change(records))
        path.write_text(out.getvalue(), encoding="utf-8", newline="")

    return apply


def drop_column(table: str, name: str) -> Corrupt:
    def change(records: list[list[str]]) -> list[list[str]]:
        i = records[0].index(name)
        return [r[:i] + r[i + 1 :] for r in records]

    return rewrite(table, change)


def add_column(table: str, name: str, value: str) -> Corrupt:
    return rewrite(
        table, lambda records: [records[0] + [name]] + [[*r, value] for r in records[1:]]
    )


def header_only(table: str) -> Corrupt:
    def apply(folder: Path) -> None:
        path = folder / f"{table}.csv"
        path.write_bytes(path.read_bytes().splitlines(keepends=True)[0])

    return apply


def transcode(table: str, encoding: str, old: str = "", new: str = "") -> Corrupt:
    """Save `<table>.csv` in another encoding, after replacing `old` by `new`."""

    def apply(folder: Path) -> None:
        path = folder / f"{table}.csv"
        path.write_bytes(path.read_text(encoding="utf-8").replace(old, new, 1).encode(encoding))

    return apply


def delimit(table: str, delimiter: str) -> Corrupt:
    def apply(folder: Path) -> None:
        path = folder / f"{table}.csv"
        path.write_text(path.read_text(encoding="utf-8").replace(",", delimiter), encoding="utf-8")

    return apply


def also_parquet(table: str) -> Corrupt:
    def apply(folder: Path) -> None:
        pq.write_table(pa.table({"deal_id": ["D1"]}), folder / f"{table}.parquet")

    return apply


def nothing_to_learn(folder: Path) -> None:
    """Every table a model learns from (and those naming its rows) a header without rows."""
    for table in ("deals", "deal_history", "deal_attributes", "activities", "revenue", "orders"):
        if (folder / f"{table}.csv").exists():
            header_only(table)(folder)


CASES = [
    # an export whose deals, orders and recurring revenue are all empty would replace a store
    # that had them
    pytest.param(
        nothing_to_learn,
        ["deals.csv", "'no rows'", "deals, orders or recurring revenue", "empty_export"],
        id="header-only-deals-orders-revenue",
    ),
    # files and encodings
    pytest.param(
        transcode("accounts", "latin-1", "Acme", "Café"),
        ["accounts.csv", "line 2", "UTF-8", "0xe9"],
        id="latin1-bytes",
    ),
    pytest.param(
        transcode("accounts", "utf-16"),
        ["accounts.csv", "UTF-16", "save it as UTF-8"],
        id="utf16-with-bom",
    ),
    pytest.param(
        delimit("deals", ";"),
        ["deals.csv", "line 1", "';'-separated", "comma-separated"],
        id="semicolon-delimiter",
    ),
    pytest.param(
        delimit("signals", "\t"),
        ["signals.csv", "'\\t'-separated"],
        id="tab-delimiter",
    ),
    pytest.param(
        write_bytes("deals", b""), ["deals.csv", "the file is empty", "deal_id"], id="empty-file"
    ),
    pytest.param(
        append("signals", 'S4,A1,2024-06-02T00:00:00Z,usage,"0.'),
        ["signals.csv", "line 5", "never closed", "truncated"],
        id="truncated-last-line",
    ),
    pytest.param(
        edit("products", "P2,Setup,Services,3000,one_time", "P2,Setup,Services,3000,one_time,x"),
        ["products.csv", "line 3", "5 fields like the header", "has 6"],
        id="too-many-fields",
    ),
    pytest.param(
        edit("activities", "T3,,A2,R2,email,2024-03-01T10:00:00Z", "T3,,A2,R2,email"),
        ["activities.csv", "line 4", "6 fields like the header", "has 5"],
        id="too-few-fields",
    ),
    pytest.param(
        also_parquet("deals"), ["deals.csv", "deals.parquet", "remove one"], id="csv-and-parquet"
    ),
    # header
    pytest.param(
        add_column("deals", "amount", "1"),
        ["deals.csv", "column amount", "appears 2 times", "duplicate_column"],
        id="duplicate-header",
    ),
    pytest.param(
        drop_column("deals", "created_at"),
        ["deals.csv", "column created_at", "missing_column", "found: deal_id"],
        id="missing-required-header",
    ),
    pytest.param(
        add_column("products", "", ""),
        ["products.csv", "line 1", "header column 6 is empty"],
        id="empty-header-name",
    ),
    pytest.param(
        header_only("deals"),
        ["deal_history.csv line 2", "column deal_id", "'D1'", "is deals missing from the import?"],
        id="header-only-deals-breaks-history",
    ),
    # types
    pytest.param(
        edit("deals", "2024-01-05T10:00:00Z,12000,", "2024-01-05T10:00:00Z,abc,"),
        ["deals.csv line 2", "column amount", "'abc'", "a number like"],
        id="amount-not-a-number",
    ),
    pytest.param(
        edit("deals", "D2,A2,R2,P2,2024-02-01T09:00:00Z", "D2,A2,R2,P2,31/12/2024"),
        ["deals.csv line 3", "column created_at", "'31/12/2024'", "a timestamp like 2024-03-31"],
        id="created-at-day-first",
    ),
    pytest.param(
        edit("accounts", "smb,40,", "smb,3.5,"),
        ["accounts.csv line 3", "column employees", "'3.5'", "a whole number"],
        id="employees-fraction",
    ),
    pytest.param(
        edit("deals", "2024-03-31,closed_won", "2024-02-30,closed_won"),
        ["deals.csv line 2", "column expected_close", "'2024-02-30'", "a date like"],
        id="impossible-date",
    ),
    pytest.param(
        edit("targets", "company,company,2024Q2", "company,company,2024Q5"),
        ["targets.csv line 5", "column period", "'2024Q5'", "a quarter like 2024Q1"],
        id="bad-quarter",
    ),
    pytest.param(
        edit("products", "P1,Core,Platform,12000,", "P1,Core,Platform,,"),
        ["products.csv line 2", "column list_price", "may not be empty"],
        id="required-cell-empty",
    ),
    pytest.param(
        edit("deals", "D3,A1,R1,P2", '"D\n3",A1,R1,P2'),
        ["deals.csv line 4", "column deal_id", "'D\\n3'", "on one line"],
        id="newline-inside-id",
    ),
    pytest.param(
        edit("accounts", "A2,Beta", " A2,Beta"),
        ["accounts.csv line 3", "column account_id", "' A2'", "without leading or trailing"],
        id="padded-id",
    ),
    # formulas
    pytest.param(
        edit("accounts", "A2,Beta,", 'A2,"=HYPERLINK(""http://x.example"",""Beta"")",'),
        ["accounts.csv line 3", "column name", "=HYPERLINK", "formula"],
        id="formula-hyperlink",
    ),
    pytest.param(
        edit("deal_history", "Demo done", "@SUM(A1)"),
        ["deal_history.csv line 9", "column next_step", "'@SUM(A1)'", "formula"],
        id="formula-at-sum",
    ),
    # bounds and allowed values
    pytest.param(
        edit("deals", "2024-04-01T08:00:00Z,2500,", "2024-04-01T08:00:00Z,-5,"),
        ["deals.csv line 4", "column amount", "'-5'", "a number >= 0"],
        id="negative-amount",
    ),
    pytest.param(
        edit("deals", ",won,0.1", ",won,1.5"),
        ["deals.csv line 2", "column discount", "'1.5'", "a number <= 1"],
        id="discount-above-one",
    ),
    pytest.param(
        edit("deals", ",proposal,,open,", ",Proposal Sent,,open,"),
        [
            "deals.csv line 4",
            "column stage",
            "'Proposal Sent'",
            "one of prospecting, qualification",
        ],
        id="unknown-stage",
    ),
    pytest.param(
        edit("deals", ",prospecting,,open,", ",prospecting,,pending,"),
        ["deals.csv line 5", "column outcome", "'pending'", "one of open, won, lost"],
        id="unknown-outcome",
    ),
    # keys
    pytest.param(
        append(
            "deals", "D1,A1,R1,P1,2024-01-05T10:00:00Z,1,2024-03-31,closed_won,2024-03-20,won,\n"
        ),
        ["deals.csv line 6", "column deal_id", "'D1'", "already at line 2"],
        id="duplicate-deal-id",
    ),
    pytest.param(
        append("deal_history", "D3,2024-05-01 08:00:00,proposal,2500,2024-07-31,\n"),
        ["deal_history.csv line 10", "column deal_id, changed_at", "D3", "already at line 9"],
        id="duplicate-history-key",
    ),
    pytest.param(
        append("signals", "S1,A1,2024-05-01T00:00:00Z,satisfaction,8\n"),
        ["signals.csv line 5", "column signal_id", "'S1'", "already at line 2"],
        id="exact-duplicate-row",
    ),
    # foreign keys
    pytest.param(
        edit("deals", ",R1,P1,2024-05-10", ",R9,P1,2024-05-10"),
        ["deals.csv line 5", "column rep_id", "'R9'", "a reps row with rep_id = R9"],
        id="fk-deals-rep",
    ),
    pytest.param(
        edit("deals", "D2,A2,", "D2,A9,"),
        ["deals.csv line 3", "column account_id", "'A9'", "an accounts row with account_id = A9"],
        id="fk-deals-account",
    ),
    pytest.param(
        edit("deals", "R1,P2,2024-04-01", "R1,P9,2024-04-01"),
        ["deals.csv line 4", "column product_id", "'P9'", "products row with product_id = P9"],
        id="fk-deals-product",
    ),
    pytest.param(
        edit("deal_history", "D3,2024-04-01T08:00:00Z", "D9,2024-04-01T08:00:00Z"),
        ["deal_history.csv line 8", "column deal_id", "'D9'", "deals row with deal_id = D9"],
        id="fk-history-deal",
    ),
    pytest.param(
        edit("activities", "T4,D3,", "T4,D8,"),
        ["activities.csv line 5", "column deal_id", "'D8'", "deals row with deal_id = D8"],
        id="fk-activities-deal",
    ),
    pytest.param(
        edit("revenue", "A2,P2,2024-05", "A7,P2,2024-05"),
        ["revenue.csv line 5", "column account_id", "'A7'", "an accounts row with account_id = A7"],
        id="fk-revenue-account",
    ),
    pytest.param(
        edit("signals", "S2,A2,", "S2,A5,"),
        ["signals.csv line 3", "column account_id", "'A5'", "accounts row with account_id = A5"],
        id="fk-signals-account",
    ),
    pytest.param(
        edit("reps", "R2,Rita Rep,M1", "R2,Rita Rep,M9"),
        ["reps.csv line 5", "column manager_id", "'M9'", "reps row with rep_id = M9"],
        id="fk-reps-manager",
    ),
    pytest.param(
        edit("accounts", "enterprise,5000,R1", "enterprise,5000,R7"),
        ["accounts.csv line 2", "column owner_rep_id", "'R7'", "reps row with rep_id = R7"],
        id="fk-accounts-owner-rep",
    ),
    pytest.param(
        edit("targets", "team,East,", "team,West,"),
        ["targets.csv line 3", "column owner", "'West'", "reps row with team = West (level team)"],
        id="target-owner-unknown-team",
    ),
    pytest.param(
        edit("targets", "rep,R1,", "rep,R5,"),
        ["targets.csv line 2", "column owner", "'R5'", "rep_id = R5 (level rep)"],
        id="target-owner-unknown-rep",
    ),
    # rules across rows
    pytest.param(
        edit("reps", "E1,Eve Exec,,", "E1,Eve Exec,R1,"),
        ["reps.csv line 2", "column manager_id", "E1 → R1 → M1 → E1 is a cycle"],
        id="manager-cycle",
    ),
    pytest.param(
        edit("reps", "2021-06-01,2024-05-31", "2021-06-01,2020-05-31"),
        ["reps.csv line 5", "column left_at", "'2020-05-31'", "on or after hired_at 2021-06-01"],
        id="left-before-hired",
    ),
    pytest.param(
        edit("deals", "2024-04-15T11:00:00Z,lost", "2024-01-15T11:00:00Z,lost"),
        ["deals.csv line 3", "column closed_at", "on or after created_at 2024-02-01 09:00:00"],
        id="closed-before-created",
    ),
    pytest.param(
        edit("deals", ",closed_won,2024-03-20T15:00:00Z,won,", ",closed_won,,won,"),
        ["deals.csv line 2", "column closed_at", "outcome 'won' needs closed_at"],
        id="won-without-closed-at",
    ),
    pytest.param(
        edit("deals", ",proposal,,open,", ",proposal,2024-05-15,open,"),
        ["deals.csv line 4", "column closed_at", "'2024-05-15'", "empty while the deal is open"],
        id="open-with-closed-at",
    ),
    pytest.param(
        edit(
            "deals", "closed_lost,2024-04-15T11:00:00Z,lost", "closed_lost,2024-04-15T11:00:00Z,won"
        ),
        ["deals.csv line 3", "column outcome", "'won'", "'lost' to match stage 'closed_lost'"],
        id="stage-outcome-mismatch",
    ),
    pytest.param(
        edit("deal_history", "D3,2024-04-01T08:00:00Z", "D3,2024-03-01T08:00:00Z"),
        ["deal_history.csv line 8", "column changed_at", "after the deal's created_at 2024-04-01"],
        id="history-before-deal-created",
    ),
    pytest.param(
        edit("deal_history", "D1,2024-02-10T10:00:00Z", "D1,2024-04-10T10:00:00Z"),
        ["deal_history.csv line 3", "column changed_at", "before the deal's closed_at 2024-03-20"],
        id="history-after-deal-closed",
    ),
    pytest.param(
        edit("deals", ",proposal,,open,", ",negotiation,,open,"),
        ["deal_history.csv line 9", "column stage", "'proposal'", "current stage 'negotiation'"],
        id="history-latest-stage-differs",
    ),
    pytest.param(
        edit("activities", "T2,D1,,R1", "T2,,,R1"),
        ["activities.csv line 3", "a deal_id or an account_id"],
        id="activity-without-deal-or-account",
    ),
    # time
    pytest.param(
        edit("activities", "2024-04-10T10:00:00Z", "2024-07-15T10:00:00Z"),
        [
            "activities.csv line 5",
            "column at",
            "'2024-07-15T10:00:00Z'",
            "as-of 2024-06-30",
            "future",
        ],
        id="activity-in-the-future",
    ),
    pytest.param(
        append("revenue", "A2,P2,2024-07,one_time,100,\n"),
        ["revenue.csv line 6", "column period", "'2024-07'", "as-of 2024-06-30"],
        id="revenue-month-in-the-future",
    ),
    pytest.param(
        edit("deals", "2024-03-20T15:00:00Z,won", "2024-08-20T15:00:00Z,won"),
        ["deals.csv line 2", "column closed_at", "as-of 2024-06-30"],
        id="closed-in-the-future",
    ),
]


@pytest.mark.parametrize(("corrupt", "fragments"), CASES)
def test_bad_export_is_refused_and_the_store_is_untouched(
    valid_folder: Path, tmp_path: Path, corrupt: Corrupt, fragments: list[str]
) -> None:
    store = tmp_path / "store"
    import_folder(valid_folder, store, FIRST_IMPORT)
    before = snapshot(store)

    corrupt(valid_folder)
    with pytest.raises(ValidationError) as caught:
        import_folder(valid_folder, store, SECOND_IMPORT)

    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from:\n{message}"
    assert "nothing was written" in message
    assert snapshot(store) == before


def test_every_problem_of_a_file_is_reported(valid_folder: Path) -> None:
    edit("deals", "2024-01-05T10:00:00Z,12000,", "2024-01-05T10:00:00Z,abc,")(valid_folder)
    edit(
        "deals",
        "2024-02-01T09:00:00Z,3000,2024-04-30,closed_lost",
        "2024-02-01T09:00:00Z,3000,2024-04-30,lost",
    )(valid_folder)
    edit("deals", ",won,0.1", ",won,1.5")(valid_folder)

    with pytest.raises(ValidationError) as caught:
        validate(read_folder(valid_folder), as_of=AS_OF)

    found = {(v.location, v.column, v.check) for v in caught.value.violations}
    assert found == {
        ("line 2", "amount", "type"),
        ("line 3", "stage", "allowed"),
        ("line 2", "discount", "maximum"),
    }
    assert caught.value.total == 3
    assert str(caught.value).startswith("3 problems in 1 table; nothing was written.")


def test_problems_of_all_files_are_collected_before_raising(valid_folder: Path) -> None:
    write_bytes("deals", b"")(valid_folder)
    transcode("accounts", "utf-16")(valid_folder)

    with pytest.raises(ValidationError) as caught:
        read_folder(valid_folder)

    assert {v.table for v in caught.value.violations} == {"deals", "accounts"}


def test_summary_lists_the_first_few_but_counts_all(valid_folder: Path) -> None:
    rows = [f"S{i},A1,2024-05-01T00:00:00Z,usage,x{i}" for i in range(5000)]
    header = (valid_folder / "signals.csv").read_text().splitlines()[0]
    write_bytes("signals", ("\n".join([header, *rows]) + "\n").encode())(valid_folder)

    with pytest.raises(ValidationError) as caught:
        validate(read_folder(valid_folder), as_of=AS_OF)

    error = caught.value
    assert error.total == 5000
    assert len(error.violations) == 1000  # kept in full per (table, column, check)
    message = str(error)
    assert message.startswith("5000 problems in 1 table")
    assert "20 of 5000, one of each kind first" in message
    assert (
        sum(line.startswith("  ") and "signals.csv line" in line for line in message.splitlines())
        == 20
    )
    assert "signals.csv line 2, column value: 'x0'" in message
    assert "4980 more" in message


def test_the_first_few_shown_hold_one_of_each_kind(valid_folder: Path) -> None:
    """5,000 bad signal values found first must not hide the one bad account id after them."""
    rows = [f"S{i},A1,2024-05-01T00:00:00Z,usage,x{i}" for i in range(5000)]
    rows.append("S5000,NO-SUCH-ACCOUNT,2024-05-01T00:00:00Z,usage,1")
    header = (valid_folder / "signals.csv").read_text().splitlines()[0]
    write_bytes("signals", ("\n".join([header, *rows]) + "\n").encode())(valid_folder)

    with pytest.raises(ValidationError) as caught:
        validate(read_folder(valid_folder), as_of=AS_OF)

    shown = caught.value.examples(20)
    assert len(shown) == 20
    assert [v.check for v in shown].count("foreign_key") == 1
    assert "'NO-SUCH-ACCOUNT'" in caught.value.summary(20)
    assert [v.location for v in shown][:2] == ["line 2", "line 3"]  # still in the order found


def test_valid_folder_round_trips_through_the_store(valid_folder: Path, tmp_path: Path) -> None:
    tables = validate(read_folder(valid_folder), as_of=AS_OF)
    written = write_store(tables, source="test", imported_at=FIRST_IMPORT, store=tmp_path / "s")

    back = read_store(tmp_path / "s")

    assert written.changed
    assert written.rows["deal_history"] == 7
    assert back.as_of == AS_OF
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(back[name], frame, check_exact=True)


def test_a_parquet_folder_reads_like_the_csv_folder(valid_folder: Path, tmp_path: Path) -> None:
    tables = validate(read_folder(valid_folder), as_of=AS_OF)
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    for name, frame in tables.items():
        frame.to_parquet(parquet / f"{name}.parquet", index=False)

    again = validate(read_folder(parquet), as_of=AS_OF)

    for name, frame in tables.items():
        pd.testing.assert_frame_equal(again[name], frame, check_exact=True)


def test_header_only_file_is_an_empty_table(valid_folder: Path) -> None:
    header_only("signals")(valid_folder)

    tables = validate(read_folder(valid_folder), as_of=AS_OF)

    assert tables.signals.empty
    assert list(tables.signals.columns) == ["signal_id", "account_id", "at", "kind", "value"]


def test_unknown_files_are_skipped_with_a_warning(
    valid_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (valid_folder / "notes.txt").write_text("hello")
    (valid_folder / "opportunities.csv").write_text("a,b\n1,2\n")

    with caplog.at_level(logging.WARNING):
        raw = read_folder(valid_folder)

    assert set(raw) == {path.stem for path in valid_folder.glob("*.csv")} - {"opportunities"}
    assert "notes.txt" in caplog.text
    assert "opportunities.csv" in caplog.text


def test_a_folder_without_canonical_files_names_the_expected_files(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Opportunities.csv").write_text("a\n1\n")

    with pytest.raises(ValidationError) as caught:
        read_folder(folder)

    assert "deals.csv" in str(caught.value)
    assert "deal_history.csv" in str(caught.value)


def test_a_utf8_bom_crlf_and_extra_columns_are_accepted(valid_folder: Path) -> None:
    path = valid_folder / "products.csv"
    text = path.read_text(encoding="utf-8").replace("billing\n", "billing,notes\n")
    text = text.replace("one_time\n", "one_time,extra\n").replace(
        "subscription\n", "subscription,\n"
    )
    text = text.replace("\n", "\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())

    tables = validate(read_folder(valid_folder), as_of=AS_OF)

    assert tables.products.product_id.tolist() == ["P1", "P2"]
    assert tables.products.billing.tolist() == ["subscription", "one_time"]
    assert "notes" not in tables.products.columns


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        pytest.param(b"a,b\n1,2\n3,4\n", [2, 3], id="plain"),
        pytest.param(b"a,b\n1,2\n3,4", [2, 3], id="no-final-newline"),
        pytest.param(b'a,b\n1,"x\ny"\n3,4\n', [2, 4], id="quoted-newline"),
        pytest.param(b'a,b\r\n1,"x\r\ny\r\nz"\r\n3,4\r\n', [2, 5], id="crlf-quoted-crlf"),
        pytest.param(b"a,b\n\n1,2\n\n\n3,4\n", [3, 6], id="blank-lines"),
        pytest.param(b'a,b\n1,"x\ny"\n\n3,4\n', [2, 5], id="quoted-newline-and-blank-line"),
        pytest.param(b"a,b\r1,2\r3,4\r", [2, 3], id="carriage-returns"),
        pytest.param(b"a,b\n", [], id="header-only"),
    ],
)
def test_read_csv_keeps_the_line_each_record_starts_on(
    tmp_path: Path, data: bytes, lines: list[int]
) -> None:
    path = tmp_path / "signals.csv"
    path.write_bytes(data)

    table = read_csv(path, "signals")

    assert table.lines is not None
    assert table.lines.tolist() == lines
    assert list(table.frame.columns) == ["a", "b"]
    assert (table.frame.dtypes == STRING).all()


def test_read_csv_honours_a_declared_encoding_and_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    path.write_bytes("product_id;name\nP1;Café\nP2;\n".encode("cp1252"))

    table = read_csv(path, "products", delimiter=";", encoding="cp1252")

    assert table.frame["name"].tolist() == ["Café", ""]
    assert table.source == str(path)
    utf16 = tmp_path / "reps.csv"
    utf16.write_bytes("rep_id,name\nR1,Zoë\n".encode("utf-16"))
    assert read_csv(utf16, "reps", encoding="utf-16").frame["name"].tolist() == ["Zoë"]


def test_a_cell_larger_than_the_read_block_is_read_whole(tmp_path: Path) -> None:
    """Arrow reads CSV in 1 MiB blocks; a 3 MB cell (a pasted email, say) straddles two. It
    once failed with "straddling object straddles two block boundaries" and no line."""
    long = "x" * 3_000_000
    path = tmp_path / "products.csv"
    path.write_text(f'product_id,name\nP1,"{long}"\nP2,short\n', encoding="utf-8")
    table = read_csv(path, "products")
    assert list(table.frame["product_id"]) == ["P1", "P2"]
    assert len(table.frame["name"].iloc[0]) == 3_000_000


def test_a_table_in_several_files_is_one_table_each_row_located_in_its_file(
    valid_folder: Path,
) -> None:
    lines = (valid_folder / "deals.csv").read_text().splitlines()
    (valid_folder / "deals.csv").unlink()
    chunks = valid_folder / "deals"
    chunks.mkdir()
    (chunks / "deals-1.csv").write_text("\n".join(lines[:3]) + "\n")
    (chunks / "deals-2.csv").write_text("\n".join([lines[0], *lines[3:]]) + "\n")
    whole = validate(read_folder(valid_folder), as_of=AS_OF)
    assert list(whole.deals["deal_id"]) == ["D1", "D2", "D3", "D4"]

    edit_chunk = (chunks / "deals-2.csv").read_text().replace(",2500,", ",-5,")
    (chunks / "deals-2.csv").write_text(edit_chunk)
    with pytest.raises(ValidationError) as caught:
        validate(read_folder(valid_folder), as_of=AS_OF)
    [violation] = caught.value.violations
    assert str(violation).startswith(f"{chunks} deals-2.csv line 2, column amount: '-5'")

    (valid_folder / "deals.csv").write_text("\n".join(lines) + "\n")  # a file and a folder
    with pytest.raises(ValidationError, match=r"one file for deals, found deals and deals\.csv"):
        read_folder(valid_folder)
