"""`forecast keys create`: the key works once printed, and only its hash is stored."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from forecast.settings import get_settings
from service.cli_keys import keys_app
from service.keys import api_keys, engine_for, list_keys, verify_key

runner = CliRunner()


@pytest.fixture
def crm():
    """A small stored CRM: rep keys are checked against its people."""
    import pandas as pd

    from forecast.data.ingest import generate

    generate(300, seed=0, imported_at=pd.Timestamp("2026-11-15"))


def test_create_prints_a_working_key_stored_only_as_a_hash(crm):
    created = runner.invoke(keys_app, ["create", "--role", "rep", "--rep-id", "R0001"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    engine = engine_for(get_settings().service_database_url)
    principal = verify_key(engine, key)
    assert principal is not None and (principal.role, principal.rep_id) == ("rep", "R0001")
    with engine.connect() as conn:
        stored = [str(v) for v in conn.execute(sa.select(api_keys)).one()]
    assert not any(key.split("_", 2)[2] in v for v in stored)
    assert verify_key(engine, key[:-1] + ("x" if key[-1] != "x" else "y")) is None


def test_revoked_keys_stop_working():
    key = runner.invoke(keys_app, ["create", "--role", "admin"]).stdout.strip()
    assert runner.invoke(keys_app, ["revoke", key.split("_")[1]]).exit_code == 0
    assert verify_key(engine_for(get_settings().service_database_url), key) is None


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--role", "boss"], "unknown role"),
        (["--role", "rep"], "--rep-id"),
        (["--role", "manager"], "--rep-id"),
    ],
)
def test_bad_requests_say_what_is_wrong(args, says):
    created = runner.invoke(keys_app, ["create", *args])
    assert created.exit_code == 2 and says in created.output


def test_a_rep_key_for_nobody_in_the_crm_is_refused_with_the_closest_ids(crm):
    created = runner.invoke(keys_app, ["create", "--role", "rep", "--rep-id", "R0O01"])
    assert created.exit_code == 2
    assert "no rep 'R0O01' in the stored CRM" in created.output
    assert "did you mean R0001" in created.output
    assert list_keys(engine_for(get_settings().service_database_url)) == []


def test_a_rep_key_before_any_data_is_refused_saying_why():
    created = runner.invoke(keys_app, ["create", "--role", "manager", "--rep-id", "R0001"])
    assert created.exit_code == 2 and "import or generate it first" in created.output


def test_keys_list_shows_every_key_and_never_its_secret(crm):
    admin = runner.invoke(keys_app, ["create", "--role", "admin", "--label", "ops"]).stdout.strip()
    rep = runner.invoke(keys_app, ["create", "--role", "rep", "--rep-id", "R0001"]).stdout.strip()
    runner.invoke(keys_app, ["revoke", rep.split("_")[1]])
    listed = runner.invoke(keys_app, ["list"])
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(admin.split("_")[1]) and "admin" in lines[0] and "ops" in lines[0]
    assert "rep R0001" in lines[1] and "revoked" in lines[1]
    for key in (admin, rep):
        assert key.split("_", 2)[2] not in listed.stdout
    as_json = json.loads(runner.invoke(keys_app, ["list", "--json"]).stdout)
    assert [k["role"] for k in as_json] == ["admin", "rep"]
    assert set(as_json[0]) == {"key_id", "role", "rep_id", "label", "created_at", "revoked_at"}
