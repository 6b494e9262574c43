"""No 500 on any input and an honest /readyz: text no log can hold is a 422 naming where it is;
with the service database away, callers get 503 with Retry-After (never a 500), /readyz says so,
the rows of what was answered wait in the spool and reach the database when it returns."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from deploy.tcp_proxy import CuttableProxy
from service.app import create_app
from service.keys import engine_for
from service.predlog import audit_log
from tests.service.conftest import home_env, serve
from tests.service.test_dashboard_access import _request


def _raw(api, method: str, path: str, body: bytes, key: str, content_type: str):
    request = urllib.request.Request(
        api.base + path, body, {"X-API-Key": key, "Content-Type": content_type}, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/deals/%00", b"", '"path"'),
        ("/v1/models?x=%00", b"", '"query"'),
        ("/v1/deals:score", rb'{"deals": [{"deal_id": "a\u0000b"}]}', '"deals",0,"deal_id"'),
        ("/v1/deals:score", rb'{"deals": [{"deal_id": "\ud800"}]}', '"deals",0,"deal_id"'),
        ("/v1/forecast/2026Q4:scenario", rb'{"remove": ["x", "\udfff"]}', '"remove",1'),
    ],
)
def test_text_no_log_can_hold_is_a_422_naming_where(api, path, body, where):
    key = api.key("admin")
    method = "POST" if body else "GET"
    status, text = _raw(api, method, path, body or None, key, "application/json")
    assert status == 422, text
    assert where in text.replace(" ", "") and ("NUL" in text or "surrogate" in text)


def test_a_paired_surrogate_escape_is_ordinary_text(api):
    body = (
        rb'{"deals": [{"deal_id": "\ud83d\ude00", "stage": "proposal", "amount": 10,'
        rb' "created_at": "2026-10-01T09:00:00Z", "expected_close": "2026-12-18"}]}'
    )
    status, text = _raw(api, "POST", "/v1/deals:score", body, api.key("crm"), "application/json")
    assert status == 200, text


def test_a_form_holding_a_nul_is_a_422(api):
    status, text = _raw(
        api,
        "POST",
        "/dashboard/sign-in",
        b"api_key=fk_%00",
        "",
        "application/x-www-form-urlencoded",
    )
    assert status == 422 and "NUL" in text


@pytest.mark.postgres
def test_with_the_database_away_callers_get_503_and_nothing_answered_is_lost(
    trained_home, postgres_url
):
    real = urlsplit(postgres_url)
    proxy = CuttableProxy((real.hostname or "127.0.0.1", real.port or 5432))
    env = {"FORECAST_DATABASE_URL": proxy.url(postgres_url)}
    with home_env(trained_home, **env), serve(create_app()) as api:
        used, unused = api.key("admin"), api.key("manager", rep_id="R0001")
        assert api.get("/v1/models", used).status == 200  # remembered for key_cache_seconds
        proxy.cut()
        try:
            away = api.get("/v1/models", unused)
            assert away.status == 503 and away.headers["retry-after"] == "5", away.detail
            assert "database cannot be reached" in away.body["detail"]
            ready = api.get("/readyz")
            assert ready.status == 503
            assert any("database" in p for p in ready.body["problems"]), ready.body
            assert api.get("/v1/models", used).status == 200, "a remembered key still serves"
            form = f"api_key={unused}"
            signing_in = _request(api, "POST", "/dashboard/sign-in", form=form)
            assert signing_in.status == 503
        finally:
            proxy.restore()
        deadline = time.monotonic() + 20
        while api.get("/readyz").status != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert api.get("/readyz").status == 200
        assert api.get("/v1/models", unused).status == 200
        api.state.logs.flush(timeout=30)
    caller = used.split("_")[1]
    with engine_for(postgres_url).connect() as conn:
        audited = conn.execute(
            sa.select(audit_log.c.status).where(audit_log.c.caller == caller)
        ).scalars()
        assert list(audited) == [200, 200], "the read answered during the outage is logged"


@pytest.mark.parametrize("days", ["true", "1.5", "400", '"60"'])
def test_a_slip_is_whole_days_within_a_year_as_the_schema_says(api, days):
    body = f'{{"slip": {{"D-1": {days}}}}}'.encode()
    path = "/v1/forecast/2026Q4:scenario"
    status, text = _raw(api, "POST", path, body, api.key("admin"), "application/json")
    assert status == 422 and '"slip"' in text, text
    schema = json.loads(urllib.request.urlopen(api.base + "/openapi.json").read())
    days_schema = schema["components"]["schemas"]["ScenarioIn"]["properties"]["slip"]
    assert days_schema["additionalProperties"] == {"type": "integer", "minimum": -366,
                                                   "maximum": 366}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/forecast/2026Q4:scenario",
            {"add": [{"deal_id": "N1", "rep_id": "R0001", "amount": 1.0, "stage": "proposal",
                      "expected_close": "0001-01-01"}]},
            "expected_close",
        ),
        ("/v1/deals:scoreFeatures", {"as_of": "0001-01-01T00:00:00Z", "deals": [{}]}, "as_of"),
    ],
)  # fmt: skip
def test_a_date_out_of_the_stores_range_is_a_422_naming_it(api, path, body, field):
    answer = api.post(path, body, api.key("admin"))
    assert answer.status == 422, answer.detail
    assert field in answer.detail and "must fall between 1900-01-01 and 2200-01-01" in answer.detail


def test_options_on_a_scenario_names_the_method_it_takes(api):
    request = urllib.request.Request(api.base + "/v1/forecast/2026Q4:scenario", method="OPTIONS")
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("OPTIONS is not served")
    except urllib.error.HTTPError as err:
        assert err.code == 405 and err.headers["allow"] == "POST"
