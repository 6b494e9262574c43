"""The FastAPI app: `create_app()` builds it; champions load in `lifespan`, never at import.

Run it with `python -m service.serve` (see `service/serve.py`: readiness drops at SIGTERM), or
any ASGI server: `uvicorn service.app:create_app --factory --host 127.0.0.1 --port 8000`.
"""

from __future__ import annotations

import gc
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forecast.settings import Settings, disable_telemetry, get_settings
from service.metrics import CONTENT_TYPE
from service.pages import install_dashboard
from service.routes import router
from service.schemas import METRICS_EXAMPLE, HealthOut, ReadyOut
from service.state import UNAVAILABLE, ServiceConfig, ServiceState, status_of
from service.text_check import unusable_text

log = logging.getLogger(__name__)

ECHO_BYTES = 1000  # a 422 repeats the offending input up to this size, then only describes it
ERRORS_SHOWN = 50  # and names at most this many problems


def _text(value: object) -> object:
    """Text as UTF-8 can carry it (a lone surrogate becomes ?); other values as they are."""
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value


def _echo(value: object) -> object:
    """The input a 422 names, when it is small and valid JSON; otherwise what it was."""
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):  # NaN, infinity, a lone surrogate: not JSON, not echoed
        return f"({type(value).__name__} not echoed: it is not valid JSON)"
    if len(encoded) <= ECHO_BYTES:
        return value
    size = f"{len(value):,} items, " if isinstance(value, list | dict) else ""
    return f"({type(value).__name__} of {size}{len(encoded):,} bytes, not echoed)"


def validation_problem(err: RequestValidationError) -> dict[str, object]:
    """FastAPI's 422 body (each error's loc, msg, type, input), with the input capped and the
    text made renderable: a large batch is named, not sent back whole."""
    errors = err.errors()
    shown = []
    for error in errors[:ERRORS_SHOWN]:
        described = jsonable_encoder({k: v for k, v in error.items() if k != "input"})
        described["loc"] = [_text(part) for part in described.get("loc", ())]
        described["msg"] = _text(described.get("msg", ""))
        if not _renders(described.get("ctx")):
            described.pop("ctx", None)
        if "input" in error:
            described["input"] = _echo(error["input"])
        shown.append(described)
    if len(errors) > ERRORS_SHOWN:
        shown.append({"loc": [], "msg": f"and {len(errors) - ERRORS_SHOWN:,} more problems",
                      "type": "too_many_errors"})  # fmt: skip
    return {"detail": shown}


def _renders(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):
        return False
    return True


class RequestMiddleware:
    """Request id, body size limit (413), metrics and the audit log, for every request."""

    def __init__(self, app: ASGIApp, state: ServiceState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        self.state.metrics.started()
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                # queued before the answer leaves; the log writer batches it (see LogWriter)
                self._audit(scope, request_id, status)
            await send(message)

        try:
            body = await self._body(scope, receive)
            unusable = None if body is None else _unusable(scope, body)
            if body is None:
                await _problem(413, self._too_large(), send_with_id)
            elif unusable is not None:
                where, message = unusable
                problem = [{"type": "value_error", "loc": list(where), "msg": message}]
                await _problem(422, problem, send_with_id)
            else:
                await self.app(scope, _replay(body, receive), send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.state.metrics.observe(
                scope["method"], template, status, time.perf_counter() - start
            )

    def _too_large(self) -> str:
        return f"request body over the limit of {self.state.config.max_body_bytes} bytes"

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (declared or streamed)."""
        limit = self.state.config.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _audit(self, scope: Scope, request_id: str, status: int) -> None:
        caller = scope.get("state", {}).get("caller")
        if caller is None:
            return
        self.state.logs.read(
            request_id=request_id,
            caller=caller.key_id,
            role=caller.role,
            method=scope["method"],
            path=scope["path"],
            status=status,
        )


def _replay(body: bytes, then: Receive | None = None) -> Receive:
    """The body already read, then the connection's own messages: a streamed response listens
    for the real disconnect, and must not be told the client left when it has not."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


def _unusable(scope: Scope, body: bytes) -> tuple[tuple[str | int, ...], str] | None:
    headers = dict(scope.get("headers", []))
    content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
    return unusable_text(scope["path"], scope.get("query_string", b""), body, content_type)


async def _problem(status: int, detail: object, send: Send) -> None:
    response = JSONResponse({"detail": detail}, status_code=status)
    await response({"type": "http"}, _replay(b""), send)


def create_app(settings: Settings | None = None, config: ServiceConfig | None = None) -> FastAPI:
    """The service. Nothing is loaded until it starts (see `lifespan`).

    Args:
        settings: where the service database is (default: the process settings). The MLflow
            registry and the CRM store are read through the process settings.
        config: HTTP limits.
    """
    state = ServiceState(settings or get_settings(), config or ServiceConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        disable_telemetry()
        await run_in_threadpool(state.start)
        if problems := state.readiness_problems():
            log.warning("service started without: %s", "; ".join(problems))
        state.start_polling()
        state.warm_scenarios()
        # what start-up loaded lives as long as the process: out of the collector's sight, a
        # full collection no longer walks it in the middle of a request (the p99)
        gc.collect()
        gc.freeze()
        yield
        # uvicorn runs this after draining; `service.serve` drops readiness at the signal itself
        await run_in_threadpool(state.stop)

    app = FastAPI(
        title="forecast",
        version="1",
        summary="Deal win probabilities with reasons and coaching, scoped by the org tree.",
        lifespan=lifespan,
    )
    app.state.service = state
    app.add_middleware(RequestMiddleware, state=state)
    app.include_router(router)

    async def unavailable(request: Request, err: Exception) -> JSONResponse:
        detail, headers = state.unavailable(err)
        return JSONResponse({"detail": detail}, status_code=status_of(err), headers=headers)

    for error in UNAVAILABLE:
        app.add_exception_handler(error, unavailable)

    async def invalid_request(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)  # registered for it only
        return JSONResponse(validation_problem(err), status_code=422)

    app.add_exception_handler(RequestValidationError, invalid_request)
    # the managers' pages under /dashboard (service/pages.py); after the handlers above, so
    # the pages answer a missing model or store with a page, the API still with JSON
    install_dashboard(app)

    @app.get("/healthz", tags=["health"], summary="The process answers", response_model=HealthOut)
    async def healthz() -> dict[str, str]:  # async: answered on the loop, no thread to wait for
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Every champion is loaded",
        response_model=ReadyOut,
        responses={503: {"model": ReadyOut, "description": "Not ready: the problems say why."}},
    )
    async def readyz() -> JSONResponse:  # async: answered even while every thread is busy
        problems = state.readiness_problems()
        # the database is asked at most every 2 s: a thread only then, and its connection
        # attempt bounded (see `engine_for`)
        if state.database_check_due():
            database = await run_in_threadpool(state.database_problem)
        else:
            database = state.database_problem()
        if database is not None:
            problems.append(database)
        if not state.ready:
            problems = ["starting or shutting down", *problems]
        body = {
            "ready": not problems,
            "models": state.versions(),
            "problems": problems,
            "refused": sorted(state.refused.values()),  # newer versions refused; old ones serve
            "unsupported": state.unsupported(),  # not waited for: the data cannot train them
            "store": state.store_version,
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"example": METRICS_EXAMPLE}}}},
    )
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(state.metrics.render(state.versions()), media_type=CONTENT_TYPE)

    return app
