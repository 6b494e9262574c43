"""With no champion and no data yet, the service starts and says what is missing."""

from __future__ import annotations

import pytest

from service.app import create_app
from service.state import ServiceConfig
from tests.service.conftest import OPERATIONS, home_env, serve


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    config = ServiceConfig(max_body_bytes=2000)
    with home_env(tmp_path_factory.mktemp("bare-home")), serve(create_app(config=config)) as api:
        yield api


def test_starts_and_says_which_model_is_missing_and_how_to_train_it(bare):
    assert bare.get("/healthz").status == 200
    ready = bare.get("/readyz")
    assert ready.status == 503
    assert "deal-win" in ready.detail and "forecast train win" in ready.detail
    scored = bare.post("/v1/deals:scoreFeatures", {"deals": [{}]}, key=bare.key("crm"))
    assert scored.status == 503
    assert "deal-win" in scored.body["detail"] and "forecast train win" in scored.body["detail"]
    assert "account-churn" in ready.detail and "forecast train churn" in ready.detail
    models = bare.get("/v1/models", key=bare.key("admin")).body["models"]
    assert [(m["name"], m["version"], m["status"]) for m in models] == [
        ("account-churn", None, "missing"),
        ("deal-win", None, "missing"),
    ]
    assert models[1]["detail"] == scored.body["detail"]


def test_without_the_org_tree_reads_fail_closed(bare):
    answer = bare.get("/v1/deals/D1", key=bare.key("manager", rep_id="M01"))
    assert answer.status == 503 and "org tree" in answer.body["detail"]


@pytest.mark.parametrize("key", [None, "", "nonsense", "fk_abc_def", "fk_0000_secret"])
def test_a_missing_or_bad_key_is_401(bare, key):
    answer = bare.post("/v1/deals:scoreFeatures", {"deals": [{}]}, key=key)
    assert answer.status == 401 and "X-API-Key" in answer.body["detail"]


def test_an_oversized_body_is_413_before_anything_else(bare):
    big = {"deals": [{"stage": "x" * 3000}]}
    answer = bare.post("/v1/deals:scoreFeatures", big)
    assert answer.status == 413 and "2000 bytes" in answer.body["detail"]


def test_metrics_count_requests_latency_errors_and_versions(bare):
    bare.get("/healthz")
    bare.post("/v1/deals:scoreFeatures", {"deals": [{}]}, key=bare.key("crm"))
    text = bare.get("/metrics").body
    assert 'forecast_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="/v1/deals:scoreFeatures",status="503"' in text
    assert 'forecast_http_errors_total{method="POST",route="/v1/deals:scoreFeatures"} ' in text
    assert "forecast_http_request_duration_seconds_bucket{" in text
    assert 'forecast_model_version{model="deal-win"} 0' in text


def _resolved(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _has_example(schema: dict, content: dict) -> bool:
    return bool(
        content.get("example")
        or content.get("examples")
        or _resolved(schema, content.get("schema", {})).get("examples")
    )


def test_every_operation_is_documented_with_examples_and_its_problems(bare):
    schema = bare.get("/openapi.json").body
    operations = [(p, m, op) for p, ops in schema["paths"].items() for m, op in ops.items()]
    assert {f"{m.upper()} {p}" for p, m, _ in operations} >= OPERATIONS
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert op.get("summary"), where
        ok = op["responses"]["200"]["content"]
        assert ok and all(_has_example(schema, c) for c in ok.values()), f"{where}: answer example"
        body = op.get("requestBody", {}).get("content", {})
        assert all(_has_example(schema, c) for c in body.values()), f"{where}: request example"
        parameters = op.get("parameters", [])
        for parameter in parameters:
            assert parameter.get("examples"), f"{where}: example of {parameter['name']}"
        if not path.startswith("/v1/"):
            continue
        expected = {"401", "403", "503"}
        expected |= {"422"} if parameters or body else set()
        expected |= {"413"} if body else set()
        expected |= {"404"} if any(p["in"] == "path" for p in parameters) else set()
        assert expected <= set(op["responses"]), f"{where}: {sorted(op['responses'])}"
    assert {"APIKeyHeader", "HTTPBearer"} == set(schema["components"]["securitySchemes"])


def test_account_scoring_without_a_churn_champion_says_how_to_train_one(bare):
    answer = bare.post("/v1/accounts:score", {"accounts": [{}]}, key=bare.key("crm"))
    assert answer.status == 503
    assert "account-churn" in answer.body["detail"]
    assert "forecast train churn" in answer.body["detail"]


def test_a_streamed_response_passes_the_middleware_whole(tmp_path):
    from fastapi.responses import StreamingResponse

    app = create_app()

    def stream() -> StreamingResponse:
        return StreamingResponse(iter([b"x" * 65536] * 16), media_type="application/octet-stream")

    app.add_api_route("/stream", stream)
    with home_env(tmp_path), serve(app) as api:
        answer = api.get("/stream")
    assert answer.status == 200 and len(answer.body) == 16 * 65536
