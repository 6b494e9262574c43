"""`forecast keys create`: the key works once printed, and only its hash is stored."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from forecast.keys import api_keys, engine_for, verify_key
from forecast.settings import get_settings
from service.cli_keys import keys_app

runner = CliRunner()


def test_create_prints_a_working_key_stored_only_as_a_hash():
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
