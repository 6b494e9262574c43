"""The prediction log, audit log and keys on PostgreSQL (FORECAST_DATABASE_URL)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from service.app import create_app
from service.keys import engine_for
from service.predlog import audit_log, predictions_for
from tests.service.conftest import home_env, serve


@pytest.mark.postgres
def test_scores_and_reads_are_logged_in_postgresql(trained_home, postgres_url):
    with home_env(trained_home, FORECAST_DATABASE_URL=postgres_url), serve(create_app()) as api:
        assert api.state.engine.dialect.name == "postgresql"
        key = api.key("crm")
        answer = api.post("/v1/deals:scoreFeatures", {"deals": [{"deal_id": "PG-1"}, {}]}, key)
        assert answer.status == 200, answer.detail
        assert api.get("/v1/deals/ANY", key).status == 403
    engine = engine_for(postgres_url)
    rows = predictions_for(engine, answer.body["request_id"])
    assert [r["subject"] for r in rows] == ["PG-1", None]
    assert rows[0]["output"]["grade"] == answer.body["scores"][0]["grade"]
    caller = key.split("_")[1]
    with engine.connect() as conn:
        audited = conn.execute(sa.select(audit_log).where(audit_log.c.caller == caller)).all()
    assert [(r.path, r.status) for r in audited] == [
        ("/v1/deals:scoreFeatures", 200),
        ("/v1/deals/ANY", 403),
    ]


@pytest.mark.postgres
def test_a_row_postgresql_refuses_is_set_aside_and_never_blocks_the_next(postgres_url, tmp_path):
    from service.keys import ensure_tables
    from service.logsink import RowSink
    from service.predlog import LOG_TABLES, read_row

    engine = engine_for(postgres_url)
    ensure_tables(engine)
    sink = RowSink(engine, LOG_TABLES, tmp_path)
    request_id = uuid.uuid4().hex  # the test database is shared between runs

    def row(path: str) -> tuple[str, dict]:
        read = read_row(request_id=request_id, caller="k", role="admin", method="GET", path="/",
                        status=404)  # fmt: skip
        read["path"] = path  # read_row escapes a NUL: as if one got past it
        return ("audit_log", read)

    sink.write([row("/v1/deals/\x00"), *(row(f"/v1/deals/D{i}") for i in range(5))])
    with engine.connect() as conn:
        paths = conn.execute(
            sa.select(audit_log.c.path).where(audit_log.c.request_id == request_id)
        ).scalars()
        assert sorted(paths) == [f"/v1/deals/D{i}" for i in range(5)]
    refused = (tmp_path / "refused.jsonl").read_text()
    assert "NUL" in refused and "\\u0000" in refused
