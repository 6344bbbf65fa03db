"""The ASGI app (FastAPI): thin `GET /ping` and `POST /invocations` handlers over the contract.

The model loads in a background thread when the app starts (/ping answers 503 until it is
ready); requests reach it through the micro-batcher. `GET /openapi.json` is generated from the
contract's pydantic models with the limits of this app.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Container
from contextlib import asynccontextmanager
from dataclasses import asdict
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import contract
from .batching import MicroBatcher
from .contract import Limits, admit, answer, api_models, error_response, prediction_failed
from .loading import Loader, ModelSlot, Readiness, default_loader

logger = logging.getLogger(__name__)

JSON = "application/json"
# A refused body up to this size is read and dropped before the 413: a client that sends its
# whole body before reading would otherwise get a TCP reset instead of the answer. Larger bodies
# get the 413 at once (the client must read while it sends, as curl and browsers do).
DRAIN_MAX_BYTES = 16_000_000
DESCRIPTION = (
    "SageMaker bring-your-own-container contract: the same server runs locally and in the "
    "container. Every error is a JSON object whose `error` names what to fix and, for a limit, "
    "the limit (e.g. `max_k=100`). `x-limits` lists the limits of the server that serves this "
    "document."
)


def to_http(response: contract.Response, *, close: bool = False) -> Response:
    headers = {"Connection": "close"} if close else None
    media_type = JSON if response.body else None
    return Response(response.body, int(response.status), headers, media_type)


def error(status: HTTPStatus, message: str, *, close: bool = False, **extra: str) -> Response:
    return to_http(error_response(status, message, **extra), close=close)


class Endpoint:
    """The state behind the handlers: the limits, the model slot, the batcher, drain counters."""

    def __init__(self, slot: ModelSlot, limits: Limits, max_batch: int, wait_s: float) -> None:
        self.slot, self.limits = slot, limits
        self.batcher = MicroBatcher(self.predict, max_batch, wait_s)
        self.in_flight = 0
        self.dropped = 0  # requests cancelled before their answer (a drain that timed out)

    async def ping(self) -> Response:
        if problem := self.slot.not_ready():
            # "state" tells a deployer whether waiting can help (loading) or not (failed).
            state = "loading" if self.slot.state == "ready" else self.slot.state  # other workers
            return error(HTTPStatus.SERVICE_UNAVAILABLE, problem, state=state)
        return Response(status_code=200)

    async def invocations(self, request: Request) -> Response:
        self.in_flight += 1
        try:
            return await self._invocations(request)
        except asyncio.CancelledError:
            self.dropped += 1
            raise
        finally:
            self.in_flight -= 1

    async def _invocations(self, request: Request) -> Response:
        limits, headers = self.limits, request.headers
        if "chunked" in headers.get("transfer-encoding", "").lower():
            message = "send the body with Content-Length"
            return error(HTTPStatus.LENGTH_REQUIRED, message, close=True)
        declared = int(headers.get("content-length", "0"))  # else the parser answered 400
        with self.batcher.incoming():
            try:
                async with asyncio.timeout(limits.read_timeout_s):
                    if declared > limits.max_body_bytes:
                        return await self._refuse_size(request, declared)
                    body = await request.body()
            except TimeoutError:
                message = f"the body did not arrive within read_timeout_s={limits.read_timeout_s}"
                return error(HTTPStatus.REQUEST_TIMEOUT, message, close=True)
            except ClientDisconnect:  # the protocol logs the one line about it
                return Response(status_code=400)  # nobody reads it
            ready, content_type = self.slot.predictor is not None, headers.get("content-type", "")
            admitted = admit(body, content_type, limits, ready, self.slot.problem)
        if isinstance(admitted, contract.Response):
            return to_http(admitted)
        try:
            recommendations = await self.batcher.recommend(admitted.sessions, admitted.k)
            return to_http(answer(admitted, recommendations, self.vocabulary()))
        except Exception:
            return to_http(prediction_failed(admitted))

    async def _refuse_size(self, request: Request, declared: int) -> Response:
        """413 from Content-Length alone; the body is never parsed (see DRAIN_MAX_BYTES)."""
        waiting = request.headers.get("expect", "").lower() == "100-continue"
        if declared <= DRAIN_MAX_BYTES and not waiting:  # no 100 Continue: the body never comes
            async for _ in request.stream():
                pass
        try:
            contract.check_size(declared, self.limits)
        except contract.RequestError as exc:
            return error(exc.status, str(exc), close=True)
        raise AssertionError("declared is over max_body_bytes")

    def predict(self, sessions: list[list[str]], k: int) -> list[list[tuple[str, float]]]:
        assert self.slot.predictor is not None  # the handler answers 503 before
        return self.slot.predictor.recommend(sessions, k)

    def vocabulary(self) -> Container[str]:
        assert self.slot.predictor is not None  # the handler answers 503 before
        return self.slot.predictor.vocabulary


def create_app(
    model_dir: Path,
    limits: Limits | None = None,
    *,
    loader: Loader | None = None,
    max_batch: int = 256,
    batch_wait_ms: float = 2.0,
    log_requests: bool = False,
    readiness: Readiness | None = None,
) -> FastAPI:
    """The endpoint's app; the model starts loading (in a thread) when the app starts up.

    `readiness`: shared by the worker processes of one server (see `Readiness`)."""
    limits = limits or Limits()
    slot = ModelSlot(Path(model_dir), loader or default_loader, readiness)
    endpoint = Endpoint(slot, limits, max_batch, batch_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        slot.start()
        yield {"limits": limits}  # the lifespan state: the HTTP protocol reads its limits here
        endpoint.batcher.close()
        dropped = endpoint.dropped + endpoint.in_flight
        logger.info("stopped (%s)", f"{dropped} request(s) dropped" if dropped else "drained")

    app = FastAPI(
        title="Session recommender endpoint",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # the docs pages load scripts from a CDN; the document is enough
        redoc_url=None,
    )
    app.state.endpoint = endpoint
    models = api_models(limits)
    app.add_api_route(
        "/ping",
        endpoint.ping,
        methods=["GET"],
        summary="Health check: 200 with an empty body once the model is loaded.",
        response_class=Response,
        responses={
            200: {"description": "The model is loaded; the body is empty.", "content": None},
            503: {"model": models.not_ready, "description": "Not ready: `state` says why."},
        },
    )
    app.add_api_route(
        "/invocations",
        endpoint.invocations,
        methods=["POST"],
        summary="Top-k next-item recommendations for each session.",
        response_class=Response,
        responses=_invocation_responses(models),
        openapi_extra={"requestBody": _request_body(limits)},
    )
    app.add_exception_handler(HTTPException, _http_error)
    app.openapi = lambda: _openapi_document(app, limits, models)  # type: ignore[method-assign]
    if log_requests:
        app.add_middleware(RequestLog)
    return app


def _request_body(limits: Limits) -> dict[str, Any]:
    refs = [{"$ref": f"#/components/schemas/{name}Request"} for name in ("Sessions", "Instances")]
    return {
        "required": True,
        "description": "UTF-8 JSON with a Content-Length (no chunked transfer encoding).",
        "x-max-body-bytes": limits.max_body_bytes,
        "content": {JSON: {"schema": {"oneOf": refs}}},
    }


def _invocation_responses(models: contract.ApiModels) -> dict[int | str, dict[str, Any]]:
    refs = [{"$ref": f"#/components/schemas/{name}Response"} for name in ("Sessions", "Instances")]
    errors = {
        400: "The body is empty or not UTF-8 JSON, or the HTTP request is malformed.",
        408: "The head or the body did not arrive within `read_timeout_s`.",
        411: "The body came chunked: send it with Content-Length.",
        413: "The body is over `max_body_bytes`.",
        415: "The content type is not `application/json` (UTF-8).",
        422: "The JSON does not follow the request schema; `error` says where and names the limit.",
        500: "The model failed on a valid request (the server log has the details).",
        503: "The model is not loaded (yet, see GET /ping), or `max_connections` are open.",
    }
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "One list per session, best first, in the style of the request.",
            "content": {JSON: {"schema": {"oneOf": refs}}},
        }
    }
    return responses | {
        status: {"model": models.error, "description": text} for status, text in errors.items()
    }


def _openapi_document(app: FastAPI, limits: Limits, models: contract.ApiModels) -> dict[str, Any]:
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        document["info"]["x-limits"] = asdict(limits)
        pairs = [(models.sessions_request, "validation"), (models.instances_request, "validation")]
        pairs += [(models.sessions_response, "serialization")]
        pairs += [(models.instances_response, "serialization")]
        _, schemas = models_json_schema(pairs, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
        document.setdefault("components", {}).setdefault("schemas", {}).update(schemas["$defs"])
        app.openapi_schema = document
    return app.openapi_schema


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (404, 405) as JSON like every other error."""
    assert isinstance(exc, HTTPException)
    path, method = request.url.path, request.method
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {method} is not supported on {path}: it accepts {allowed}"
        response = error(HTTPStatus.METHOD_NOT_ALLOWED, message)
        response.headers["Allow"] = allowed
        return response
    if exc.status_code == HTTPStatus.NOT_FOUND:
        message = f"no such path {path}: use /ping, /invocations or /openapi.json"
        return error(HTTPStatus.NOT_FOUND, message)
    return error(HTTPStatus(exc.status_code), str(exc.detail))


class RequestLog:
    """One log line per request (health checks excepted: they would flood the log)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/ping":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_and_note)
        ms = (time.perf_counter() - started) * 1000
        logger.info("%s %s %d %.1f ms", scope["method"], scope["path"], status, ms)
