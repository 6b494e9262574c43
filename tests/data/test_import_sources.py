"""Importing sources: a mapped CRM export, SQL databases and the public-dataset adapters.

Every reader must produce raw tables that `validate` accepts, and keep enough of the source
(file, line, table or query) that a wrong value is reported where the user can fix it.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from forecast.data.schema import TABLES
from forecast.data.sources.mapping import read_mapped
from forecast.data.sources.maven import read_maven_crm
from forecast.data.sources.sql import read_sql, read_sql_spec
from forecast.data.sources.telco import read_telco_churn, telco_features
from forecast.data.tables import CrmTables
from forecast.data.validate import check, validate
from forecast.data.violations import ValidationError, Violation
from forecast.data.world import make_crm

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "crm-export"


def _report(err: ValidationError) -> str:
    """Everything a user would read about the error."""
    return "\n".join([str(err), *(str(v) for v in err.violations)])


def _only(err: ValidationError, **fields: object) -> list[Violation]:
    """The violations whose attributes equal `fields`."""
    return [v for v in err.violations if all(getattr(v, k) == x for k, x in fields.items())]


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A private copy of the worked example, free to corrupt."""
    return Path(shutil.copytree(EXAMPLE, tmp_path / "crm-export"))


def _replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should occur once in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


# --- mapped export -----------------------------------------------------------------------------


def test_worked_example_validates() -> None:
    raw, as_of = read_mapped(EXAMPLE, EXAMPLE / "mapping.yaml")
    tables = validate(raw, as_of=as_of)

    assert as_of == pd.Timestamp("2024-06-30")
    assert {name: len(tables[name]) for name in raw} == {
        "reps": 7,
        "accounts": 6,
        "products": 4,
        "deals": 9,
        "deal_history": 23,
        "activities": 9,
    }
    deals = tables.deals.set_index("deal_id")
    # 11.400,00 in dd.mm.yyyy / decimal-comma notation, stage and outcome translated.
    assert deals.loc["OPP-1001", "amount"] == 11_400.0
    assert deals.loc["OPP-1001", "created_at"] == pd.Timestamp("2024-01-15")
    assert deals.loc["OPP-1001", "closed_at"] == pd.Timestamp("2024-03-27 11:00")
    assert deals.loc["OPP-1001", ["stage", "outcome"]].tolist() == ["closed_won", "won"]
    assert deals.loc["OPP-1003", ["stage", "outcome"]].tolist() == ["negotiation", "open"]
    assert pd.isna(deals.loc["OPP-1009", "account_id"])
    assert tables.accounts.set_index("account_id").loc["Nordlicht Logistik AG", "employees"] == 2400
    assert set(tables.reps["region"]) == {"DACH"}
    assert tables.reps.set_index("rep_id").loc["Petra Hoffmann", "role"] == "executive"


def test_the_store_keeps_what_the_mapping_translated(tmp_path: Path) -> None:
    """A CRM calling the service later sends its own names; the store says how they read."""
    from forecast.data.ingest import import_raw
    from forecast.data.store import read_store

    raw, as_of = read_mapped(EXAMPLE, EXAMPLE / "mapping.yaml")
    store = tmp_path / "store"
    first = import_raw(raw, as_of=as_of, source="example", imported_at=as_of, store=store)
    kept = read_store(store).translations
    assert kept["deals"]["stage"]["Value Proposition"] == "proposal"
    assert kept["deal_history"]["stage"] == kept["deals"]["stage"]
    assert kept["activities"]["kind"]["Sent Quote"] == "proposal"
    assert kept["products"]["billing"] == {"Annual subscription": "subscription",
                                          "One-off": "one_time"}  # fmt: skip
    again = import_raw(raw, as_of=as_of, source="example", imported_at=as_of, store=store)
    assert not again.write.changed
    # a new name for a value the export does not hold is still a new version: it is kept
    renamed = {**raw, "deals": dataclasses.replace(
        raw["deals"], translated={**raw["deals"].translated, "stage": {
            **raw["deals"].translated["stage"], "Verbal Yes": "negotiation"}})}  # fmt: skip
    later = import_raw(renamed, as_of=as_of, source="example", imported_at=as_of, store=store)
    assert later.write.changed and later.write.version != first.write.version
    assert read_store(store).translations["deals"]["stage"]["Verbal Yes"] == "negotiation"


def test_mapped_values_keep_their_line_numbers() -> None:
    raw, _ = read_mapped(EXAMPLE, EXAMPLE / "mapping.yaml")
    deals = raw["deals"]
    assert deals.source.endswith("Opportunities.csv")
    position = deals.frame.index[deals.frame["deal_id"] == "OPP-1004"][0]
    assert deals.location(position) == "line 5"


@pytest.mark.parametrize(
    ("old", "new", "column", "line"),
    [
        # a number that is not one
        (";6.500,00;01.04.2024", ";sechs;01.04.2024", "amount", 5),
        # a date that does not exist stays as written, so validate can name it
        (";12.000,00;18.04.2024;", ";12.000,00;31.02.2024;", "created_at", 6),
        # a stage the mapping does not translate
        (";SVC-TRN;Prospecting;", ";SVC-TRN;Verbal Commit;", "stage", 8),
    ],
)
def test_bad_value_in_export_names_file_and_line(
    example: Path, old: str, new: str, column: str, line: int
) -> None:
    _replace_in(example / "Opportunities.csv", old, new)
    raw, as_of = read_mapped(example, example / "mapping.yaml")
    with pytest.raises(ValidationError) as caught:
        validate(raw, as_of=as_of)

    found = _only(caught.value, table="deals", column=column, location=f"line {line}")
    assert found, _report(caught.value)
    assert found[0].source.endswith("Opportunities.csv")
    assert "Opportunities.csv" in _report(caught.value)
    assert f"line {line}" in _report(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        (
            "created_at: Created Date\n      amount: Amount (EUR)",
            "created_at: Created Date\n      amount: Amount",
            "tables.deals.columns.amount",
            ["'Amount'", "a column of Opportunities.csv", "did you mean 'Amount (EUR)'?", "Owner"],
        ),
        (
            "      expected_close: Close Date\n      stage: Stage",
            "      expected_close: Close Date\n      stagee: Stage",
            "tables.deals.columns.stagee",
            ["'stagee'", "a column of deals", "did you mean 'stage'?"],
        ),
        (
            "  activities:\n",
            "  activitys:\n",
            "tables.activitys",
            ["a canonical table", "did you mean 'activities'?"],
        ),
        (
            "    file: Tasks.csv",
            "    file: Task.csv",
            "tables.activities.file",
            ["'Task.csv'", "a file that exists in"],
        ),
        (
            "      role: Title\n",
            "",
            "tables.reps.columns.role",
            ["(not mapped)", "the required column 'role' of reps", "Users.csv", "a constant"],
        ),
        (
            '  decimal: ","',
            '  decimal: ",,"',
            "defaults.decimal",
            ["one character"],
        ),
        (
            "      outcome: from_stage",
            "      outcome: from_status",
            "tables.deals.derive.outcome",
            ["from_stage"],
        ),
        (
            "    date_formats:\n      closed_at:",
            "    date_format:\n      closed_at:",
            "tables.deals.date_format",
            ["string"],
        ),
        (
            "  reps:\n    file: Users.csv",
            "  reps:\n    file: Users.csv\n    delimter: ';'",
            "tables.reps.delimter",
            ["a known key", "did you mean 'delimiter'?"],
        ),
        ("tables:\n  reps:", "tables:\n  reps: [", "(file)", ["YAML"]),
    ],
)
def test_mapping_file_problems_are_clear(
    example: Path, old: str, new: str, key: str, words: list[str]
) -> None:
    mapping = example / "mapping.yaml"
    _replace_in(mapping, old, new)
    with pytest.raises(ValidationError) as caught:
        read_mapped(example, mapping)

    found = _only(caught.value, table="mapping", column=key)
    assert found, _report(caught.value)
    assert found[0].source == str(mapping)
    assert found[0].location.startswith("line ")
    text = str(found[0])
    for word in words:
        assert word in text, text


def test_mapping_problems_are_all_reported_with_their_lines(example: Path) -> None:
    mapping = example / "mapping.yaml"
    _replace_in(mapping, "      team: Sales Team", "      team: Team")
    _replace_in(mapping, "      industry: Industry", "      industry: Branche")
    _replace_in(mapping, "      kind: Type", "      knd: Type")
    with pytest.raises(ValidationError) as caught:
        read_mapped(example, mapping)

    lines = mapping.read_text(encoding="utf-8").splitlines()
    wrong = {v.column: v for v in caught.value.violations}
    expected = {
        "tables.reps.columns.team": "team: Team",
        "tables.accounts.columns.industry": "industry: Branche",
        "tables.activities.columns.knd": "knd: Type",
    }
    assert set(wrong) == set(expected)
    for key, text in expected.items():
        line = int(wrong[key].location.removeprefix("line "))
        assert text in lines[line - 1]


def test_mapping_options_encoding_yes_no_zones_and_months(tmp_path: Path) -> None:
    """Canonical headers need no entry; Yes/No stay text; %z times become UTC; months YYYY-MM."""
    (tmp_path / "kunden.csv").write_bytes(
        "account_id;Branche;Key Account;Angelegt\n"
        "K1;Bäckerei;Yes;05.01.2024 10:00 +0100\n"
        "K2;Metall;No;30.06.2024 23:30 +0200\n".encode("cp1252")
    )
    (tmp_path / "products.csv").write_text(
        "product_id,family,list_price,billing\nP1,Software,1200,subscription\n"
    )
    (tmp_path / "umsatz.csv").write_text("account_id,product_id,Monat,Betrag\nK1,P1,06/2024,100\n")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "tables:\n"
        "  accounts:\n"
        "    file: kunden.csv\n"
        "    delimiter: ';'\n"
        "    encoding: cp1252\n"
        "    date_format: '%d.%m.%Y %H:%M %z'\n"
        "    columns: {industry: Branche, segment: Key Account, created_at: Angelegt}\n"
        "    constants: {region: Nord}\n"
        "    values: {segment: {Yes: enterprise, No: smb}}\n"
        "  products: {file: products.csv}\n"
        "  revenue:\n"
        "    file: umsatz.csv\n"
        "    date_format: '%m/%Y'\n"
        "    columns: {period: Monat, amount: Betrag}\n"
        "    constants: {kind: recurring}\n",
        encoding="utf-8",
    )
    raw, as_of = read_mapped(tmp_path, mapping)
    assert as_of is None
    assert raw["accounts"].frame["created_at"].tolist() == [
        "2024-01-05T09:00:00+00:00",
        "2024-06-30T21:30:00+00:00",
    ]
    tables = validate(raw, as_of=pd.Timestamp("2024-07-01"))
    accounts = tables.accounts.set_index("account_id")
    assert accounts["segment"].tolist() == ["enterprise", "smb"]
    assert accounts.loc["K1", "industry"] == "Bäckerei"
    assert tables.revenue["period"].tolist() == [pd.Timestamp("2024-06-01")]


def test_mapping_file_next_to_another_export(tmp_path: Path, example: Path) -> None:
    """Files are looked up in the export folder first, then beside the mapping."""
    mapping = tmp_path / "mappings" / "crm.yaml"
    mapping.parent.mkdir()
    shutil.move(example / "mapping.yaml", mapping)
    raw, _ = read_mapped(example, mapping)
    assert raw["deals"].source == str(example / "Opportunities.csv")


def test_an_empty_export_file_is_named_with_the_exports_own_columns(example: Path) -> None:
    (example / "Opportunities.csv").write_bytes(b"")
    with pytest.raises(ValidationError) as caught:
        read_mapped(example, example / "mapping.yaml")
    (empty,) = [v for v in caught.value.violations if v.check == "empty"]
    assert empty.source.endswith("Opportunities.csv")
    assert empty.expected.startswith("a header line with the columns Opportunity ID, ")
    assert "deal_id" not in empty.expected


def test_a_dash_leaves_a_column_out_without_a_preset(example: Path) -> None:
    """`amount: "-"` (the leak guard's suggested fix) leaves the deals' amounts out, as under a
    preset; the history's amounts stay mapped."""
    mapping = example / "mapping.yaml"
    _replace_in(
        mapping,
        "      created_at: Created Date\n      amount: Amount (EUR)",
        '      created_at: Created Date\n      amount: "-"',
    )
    raw, as_of = read_mapped(example, mapping)
    assert "amount" not in raw["deals"].frame.columns
    assert "amount" in raw["deal_history"].frame.columns
    tables = validate(raw, as_of=as_of)
    assert tables.deals["amount"].isna().all()


# --- SQL ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> CrmTables:
    """A small generated world: every table filled, valid by construction."""
    return make_crm(n_deals=150, seed=7).tables


def _for_sql(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Columns typed as a database would hold them: text as str, `date` columns as DATE."""
    out = frame.copy()
    for col in TABLES[name].columns:
        if col.type == "date":
            out[col.name] = out[col.name].dt.date.astype(object).where(out[col.name].notna(), None)
        elif col.type in ("id", "text", "enum", "quarter"):
            out[col.name] = out[col.name].astype(object).where(out[col.name].notna(), None)
    return out


def _write_world(conn: sa.Connection, world: CrmTables, names: dict[str, str], schema=None) -> None:
    for name, frame in world.items():
        _for_sql(frame, name).to_sql(names.get(name, name), conn, schema=schema, index=False)


def _assert_same_tables(read: CrmTables, world: CrmTables) -> None:
    for name, frame in world.items():
        key = list(TABLES[name].key)
        got = read[name].sort_values(key, ignore_index=True)
        want = frame.sort_values(key, ignore_index=True)
        pd.testing.assert_frame_equal(got, want, check_exact=False, obj=name)


def test_sqlite_tables_and_queries(tmp_path: Path, world: CrmTables) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _write_world(conn, world, {"deals": "crm_deals", "reps": "crm_users"})
    engine.dispose()

    raw = read_sql(
        url,
        {
            # a query; `%` and `:x` are plain text to the driver, not placeholders
            "deals": "select * from crm_deals where deal_id like '%' and ':x' = ':x'",
            "reps": "crm_users",  # another table name
        },  # the rest: tables of the canonical name
    )
    assert set(raw) == set(TABLES)
    assert raw["deals"].source == f"{url}: deals (query)"
    assert raw["reps"].source == f"{url}: reps (table crm_users)"
    assert raw["deals"].location(0) == "row 1"
    _assert_same_tables(validate(raw, as_of=world.as_of), world)


def test_sql_missing_table_or_bad_query_is_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(ValidationError) as caught:
        read_sql(url, {"deals": "select * from opportunities", "reps": "crm_users"})

    deals = _only(caught.value, table="deals")
    reps = _only(caught.value, table="reps")
    assert deals and "no such table: opportunities" in str(deals[0]), _report(caught.value)
    assert deals[0].source == f"{url}: deals (query)"
    assert reps and "crm_users" in str(reps[0]), _report(caught.value)


def test_sql_database_without_canonical_tables_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table opportunity (id text)"))
    engine.dispose()
    with pytest.raises(ValidationError) as caught:
        read_sql(url)
    assert [v.check for v in caught.value.violations] == ["empty"]
    assert "none was found" in _report(caught.value)


def test_sql_unknown_table_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        read_sql(f"sqlite:///{tmp_path / 'x.db'}", {"opportunities": "select 1"})
    assert "opportunities" in _report(caught.value)


def test_sql_never_shows_the_password() -> None:
    # Port 9 (discard) refuses at once: the connection error must still hide the password.
    url = "postgresql+psycopg://scott:tiger-secret@127.0.0.1:9/crm?connect_timeout=2"
    with pytest.raises(ValidationError) as caught:
        read_sql(url)
    text = _report(caught.value)
    assert "tiger-secret" not in text
    assert "scott:***@127.0.0.1:9/crm" in text


def test_sql_spec_reads_url_from_environment(
    tmp_path: Path, world: CrmTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "crm.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        _write_world(conn, world, {"deals": "crm_deals"})
    engine.dispose()
    spec = tmp_path / "sql.yaml"
    spec.write_text(
        "url: sqlite:///${CRM_DB_PATH}\n"
        "tables:\n"
        "  deals: |\n"
        "    select deal_id, account_id, rep_id, product_id, created_at, amount,\n"
        "           expected_close, stage, closed_at, outcome, discount\n"
        "    from crm_deals\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("CRM_DB_PATH", str(db))
    raw = read_sql_spec(spec)
    assert raw["deals"].source == f"sqlite:///{db}: deals (query)"
    assert len(raw["deals"].frame) == len(world.deals)

    monkeypatch.delenv("CRM_DB_PATH")
    with pytest.raises(ValidationError) as caught:
        read_sql_spec(spec)
    assert "CRM_DB_PATH" in _report(caught.value)
    assert caught.value.violations[0].location == "line 1"


@pytest.mark.postgres
def test_postgres_schema_via_queries(postgres_url: str, world: CrmTables) -> None:
    schema = f"forecast_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'create schema "{schema}"'))
            _write_world(conn, world, {}, schema=schema)
        sources = {name: f'select * from "{schema}"."{name}"' for name in TABLES}
        # `%`, `::` casts and a literal `:x` reach the database untouched
        sources["deals"] += " where deal_id like '%' and ':x'::text <> '' and amount::float >= 0"
        sources["reps"] = f"{schema}.reps"  # a schema-qualified table name works too
        raw = read_sql(postgres_url, sources)
        assert raw["deals"].source.endswith(": deals (query)")
        _assert_same_tables(validate(raw, as_of=world.as_of), world)

        with pytest.raises(ValidationError) as caught:
            read_sql(postgres_url, {"deals": f'select * from "{schema}".missing'})
        assert "does not exist" in str(_only(caught.value, table="deals")[0])
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop schema if exists "{schema}" cascade'))
        engine.dispose()


# --- public datasets ----------------------------------------------------------------------------


@functools.cache
def _maven(folder: Path) -> tuple[dict, CrmTables]:
    raw, as_of = read_maven_crm(folder)
    return raw, validate(raw, as_of=as_of)


@functools.cache
def _telco(folder: Path) -> tuple[dict, CrmTables]:
    raw, as_of = read_telco_churn(folder)
    return raw, validate(raw, as_of=as_of)


@pytest.fixture
def maven(shared_data: Path) -> tuple[dict, CrmTables]:
    """Read and validated once per session: the tests only look."""
    return _maven(shared_data / "maven-crm")


def test_maven_validates_with_documented_counts(maven: tuple[dict, CrmTables]) -> None:
    _, tables = maven
    assert tables.as_of == pd.Timestamp("2017-12-31")
    deals = tables.deals
    assert len(deals) == 8_800  # nothing dropped: Prospecting rows get created_at = as_of
    assert deals["outcome"].value_counts().to_dict() == {"won": 4_238, "lost": 2_473, "open": 2_089}
    closed = deals[deals["outcome"] != "open"]
    assert round((closed["outcome"] == "won").mean(), 3) == 0.632
    assert deals["account_id"].isna().sum() == 1_425
    assert deals["product_id"].isin(tables.products["product_id"]).all()
    assert (deals["product_id"] == "GTX Pro").sum() == 1_480  # GTXPro in the pipeline
    assert len(tables.deal_history) == 8_800 + 6_711  # creation rows + closing rows
    assert len(tables.reps) == 35 + 6 + 3  # agents, managers, regional heads
    assert "technolgy" not in set(tables.accounts["industry"])
    assert tables.accounts["segment"].value_counts().to_dict() == {
        "mid_market": 40,
        "enterprise": 27,
        "smb": 18,
    }


def test_maven_amounts_and_history(maven: tuple[dict, CrmTables]) -> None:
    _, tables = maven
    price = tables.products.set_index("product_id")["list_price"]
    deals = tables.deals.assign(price=lambda d: d["product_id"].map(price))
    lost = deals[deals["outcome"] == "lost"]
    assert (lost["amount"] == lost["price"]).all()  # close_value 0 replaced by list price
    prospects = deals[deals["stage"] == "prospecting"]
    assert (prospects["created_at"] == tables.as_of).all()
    first = tables.deal_history.sort_values("changed_at").groupby("deal_id").first()
    assert set(first["stage"]) == {"prospecting", "qualification"}
    # written from each deal's final state, not recorded: said so, as for any deals-only export
    # (no funnel, stage features or stage coaching from it)
    from forecast.data.derive import history_is_derived
    from forecast.features.deal_schema import unavailable_features

    assert history_is_derived(tables.deal_history)
    off = unavailable_features(tables)
    assert "stage" in off
    # hire and account dates the export lacks stand at one date: no tenure counted from it
    assert off["rep_tenure_days"] == "every rep has the same hire date (hire dates unknown)"
    assert "account_tenure_days" in off


def test_maven_keeps_source_lines(maven: tuple[dict, CrmTables]) -> None:
    raw, _ = maven
    # what it translated, kept with the store: the CRM may send Engaging and GTXPro
    assert raw["deals"].translated["stage"]["Engaging"] == "qualification"
    assert raw["deals"].translated["product_id"] == {"GTXPro": "GTX Pro"}
    assert raw["deal_history"].translated["stage"]["Won"] == "closed_won"
    deals = raw["deals"]
    assert deals.source.endswith("sales_pipeline.csv")
    assert deals.location(0) == "line 2"
    assert deals.frame.loc[0, "deal_id"] == "1C1I7A6R"


def test_adapters_refuse_a_folder_that_is_not_their_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        read_maven_crm(tmp_path)
    assert "sales_teams.csv of the maven-crm dataset" in _report(caught.value)

    (tmp_path / "Telco-Customer-Churn.csv").write_text("customerID,tenure\nA,1\n")
    with pytest.raises(ValidationError) as caught:
        read_telco_churn(tmp_path)
    missing = {v.column for v in caught.value.violations if v.check == "missing_column"}
    assert {"Churn", "MonthlyCharges", "Contract"} <= missing


@pytest.fixture
def telco(shared_data: Path) -> tuple[dict, CrmTables, Path]:
    folder = shared_data / "ibm-telco-churn"
    return (*_telco(folder), folder)


def test_telco_validates_with_revenue_that_stops_at_churn(
    telco: tuple[dict, CrmTables, Path],
) -> None:
    _, tables, _ = telco
    assert tables.as_of == pd.Timestamp("2020-01-01")
    assert len(tables.accounts) == 7_043
    last = tables.revenue.groupby("account_id")["period"].max()
    # Retained customers bill through 2019-12; the 1,869 churned ones stop after 2019-11.
    assert last.value_counts().to_dict() == {
        pd.Timestamp("2019-12-01"): 7_043 - 1_869 - 11,
        pd.Timestamp("2019-11-01"): 1_869,
    }
    assert len(tables.revenue) == 227_990  # one row per month of tenure
    assert tables.revenue["product_id"].isin(tables.products["product_id"]).all()


def test_telco_blank_total_charges(telco: tuple[dict, CrmTables, Path]) -> None:
    _, tables, folder = telco
    features, _ = telco_features(folder)
    blank = features.index[features["tenure"] == 0]
    assert len(blank) == 11
    assert (features.loc[blank, "TotalCharges"] == 0.0).all()
    assert features["TotalCharges"].notna().all()
    # Joined in as_of's month: known as accounts, nothing billed yet.
    assert not tables.revenue["account_id"].isin(blank).any()
    created = tables.accounts.set_index("account_id").loc[blank, "created_at"]
    assert (created == pd.Timestamp("2020-01-01")).all()


def test_telco_features_frame(telco: tuple[dict, CrmTables, Path]) -> None:
    _, _, folder = telco
    features, label = telco_features(folder)
    assert features.shape == (7_043, 19)
    assert label.name == "churn"
    assert round(label.mean(), 3) == 0.265
    assert features.index.equals(label.index)
    assert set(features["SeniorCitizen"].unique()) == {0, 1}
    assert set(features["Partner"].unique()) == {0, 1}
    assert features["TotalCharges"].dtype == "float64"


def test_a_deals_only_query_imports_with_its_history_derived(tmp_path: Path) -> None:
    """The SQL path, like a mapping, takes one row per deal: the history is derived."""
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "create table opportunity (id text, opened text, closed text, stage text, "
                "source text)"
            )
        )
        conn.execute(
            sa.text(
                "insert into opportunity values "
                "('O1', '2024-01-02 09:00', '2024-02-01 10:00', 'Won', 'Web'), "
                "('O2', '2024-01-03 09:00', null, 'Open', 'Event')"
            )
        )
    engine.dispose()
    deals = (
        "select id as deal_id, opened as created_at, closed as closed_at, "
        "case stage when 'Won' then 'closed_won' else 'prospecting' end as stage, "
        "case stage when 'Won' then 'won' else 'open' end as outcome, 100.0 as amount "
        "from opportunity"
    )
    attributes = (
        "select id as deal_id, 'lead_source' as name, source as value, "
        "'created' as known_at from opportunity"
    )
    raw = read_sql(url, {"deals": deals, "deal_attributes": attributes})
    checked = check(raw, as_of=pd.Timestamp("2024-06-30"))
    assert checked.derived == ("deal_history",)
    history = checked.tables.deal_history
    assert history[["deal_id", "stage", "origin"]].values.tolist() == [
        ["O1", "prospecting", "derived"],
        ["O1", "closed_won", "derived"],
        ["O2", "prospecting", "derived"],
    ]
    assert checked.tables.deal_attributes["value"].tolist() == ["Web", "Event"]


def test_the_doctor_refuses_telco_churn_as_training_does(telco: tuple[dict, CrmTables, Path]):
    """The adapter's calendar puts every stop in the export's last month, so no out-of-time
    slice before it holds a churned account: the doctor says so with training's own words,
    not "yes" and then a refusal at `forecast train churn`."""
    from forecast.data.doctor import diagnose
    from forecast.training.churn_task import ChurnHooks, ChurnParams, prepare
    from forecast.training.task import NotEnoughDataError

    _, tables, _ = telco
    found = diagnose(tables)
    with pytest.raises(NotEnoughDataError) as refused:
        prepare(tables, ChurnParams(), ChurnHooks())
    assert found.trainable["churn"] == f"no: {refused.value}"
    assert "not both outcomes" in found.trainable["churn"]
    assert found.blocked  # nothing this export is made for can be trained: the doctor exits 1
