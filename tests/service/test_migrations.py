"""The service's database is made and kept by Alembic migrations (`service/migrations`): a new
database gets every table, one made before migrations (by `create_all`) is taken over with its
rows, on SQLite and on PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service import in_step, predlog, sessions  # noqa: F401 (their tables join the shared metadata)
from service.keys import list_keys, metadata, upgrade_database
from service.notify import outbox  # noqa: F401 (its tables too)
from service.predlog import Prediction, log_predictions, predictions_for

HEAD = "0003"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database(request, tmp_path: Path) -> Iterator[sa.Engine]:
    """A database with nothing in it: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'service.db'}")
        yield engine
        engine.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"migrate_{secrets.token_hex(4)}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    engine = sa.create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _version(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _differences(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata)


def test_a_new_database_gets_every_table_as_the_code_declares_them(empty_database):
    upgrade_database(empty_database)
    assert _version(empty_database) == HEAD
    assert _differences(empty_database) == []
    upgrade_database(empty_database)  # at the head: nothing to do
    assert _version(empty_database) == HEAD


def test_a_database_made_before_migrations_is_taken_over_with_its_rows(empty_database):
    metadata.create_all(empty_database)  # what the service did before migrations
    with empty_database.begin() as conn:  # rows written then (create_key would migrate first)
        conn.execute(
            sa.insert(metadata.tables["api_keys"]).values(
                key_id="k1", salt="00", digest="d", role="admin", rep_id=None, label="before",
                created_at=datetime(2026, 11, 1, tzinfo=UTC), revoked_at=None,
            )
        )  # fmt: skip
    log_predictions(
        empty_database,
        request_id="before-1",
        caller="k1",
        model="deal-win",
        model_version="3",
        predictions=[Prediction("D-1", {"amount": 1.0}, {"probability": 0.4})],
    )
    assert _version(empty_database) is None
    upgrade_database(empty_database)
    assert _version(empty_database) == HEAD
    assert _differences(empty_database) == []
    assert [k["label"] for k in list_keys(empty_database)] == ["before"]
    [row] = predictions_for(empty_database, "before-1")
    assert row["subject"] == "D-1" and row["output"]["probability"] == 0.4
