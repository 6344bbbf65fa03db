"""The endpoint's contract, without HTTP: limits, request and response models, parse → predict →
format.

`invoke()` is one /invocations call as a pure function (body and content type in, status and body
out), so unit tests need no socket. The pydantic models describe the same rules for the OpenAPI
document (`api_models(limits)`); the hand-written parser enforces them with messages that name the
field and the limit (a fuzz test checks that both accept exactly the same bodies).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from typing import Annotated, Any, Literal, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ProjectError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for; each error message names the limit it hit."""

    max_body_bytes: int = 1_000_000
    max_sessions: int = 256
    max_session_length: int = 200
    max_k: int = 100
    default_k: int = 20
    read_timeout_s: float = 30.0  # a request's head, then its body, must each arrive within this
    idle_timeout_s: float = 300.0  # keep-alive connections idle longer than this are closed
    max_connections: int = 512  # open connections per worker; more get 503 naming this


class Predictor(Protocol):
    """What the server needs of a model (the serving export is one)."""

    @property
    def vocabulary(self) -> Container[str]:
        """The SKUs the model knows; the others in a session are read as unknown."""
        ...

    def recommend(self, sessions: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        """Top-k (sku, score) pairs, best first, for each session (SKUs in time order)."""
        ...


# --- request and response models (the OpenAPI document is generated from these) ----------------


class ApiModels(NamedTuple):
    """The models of one server's contract; their constraints are that server's `Limits`."""

    sessions_request: type[BaseModel]
    instances_request: type[BaseModel]
    sessions_response: type[BaseModel]
    instances_response: type[BaseModel]
    error: type[BaseModel]
    not_ready: type[BaseModel]


class Recommendation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str
    score: float = Field(description="Probability of being next.")


Recommendations = list[list[Recommendation]]
UnknownSkus = list[Annotated[int, Field(ge=0)]]
_UNKNOWN_SKUS = Field(
    description="Per session, in the same order: how many of its SKUs the model does not know "
    "(0 when none). The recommendations ignore them: a session of unknown SKUs only gets the "
    "model's generic picks."
)


class SessionsResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recommendations: Recommendations = Field(
        description="One list per session, best first, in the order of the request's sessions."
    )
    unknown_skus: UnknownSkus = _UNKNOWN_SKUS


class InstancesResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    predictions: Recommendations = Field(
        description="One list per instance, best first, in the order of the request's instances."
    )
    unknown_skus: UnknownSkus = _UNKNOWN_SKUS


class Error(BaseModel):
    error: str = Field(min_length=1, description="What to fix; for a limit, its name and value.")


class NotReady(Error):
    state: Literal["loading", "failed"] = Field(
        description="loading: waiting helps; failed: the model cannot load (error says why)."
    )


def api_models(limits: Limits) -> ApiModels:
    """Request and response models whose constraints are `limits` (for the OpenAPI document)."""
    session = Annotated[
        list[Annotated[str, Field(description="A product id; unknown SKUs are allowed.")]],
        Field(
            min_length=1,
            max_length=limits.max_session_length,
            description="SKUs a shopper viewed, oldest first (`max_session_length`).",
        ),
    ]
    k_field = Field(
        limits.default_k,
        description="Recommendations per session (`max_k`; `default_k` when left out or null); "
        "fewer if the catalogue is smaller.",
    )
    k_type = Annotated[int, Field(ge=1, le=limits.max_k)] | None

    class SessionsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        sessions: list[session] = Field(  # type: ignore[valid-type]
            min_length=1, max_length=limits.max_sessions, description="Sessions (`max_sessions`)."
        )
        k: k_type = k_field  # type: ignore[valid-type]

    class InstanceObject(BaseModel):
        skus: session  # type: ignore[valid-type]

    class InstancesRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        instances: list[session | InstanceObject] = Field(  # type: ignore[valid-type]
            min_length=1, max_length=limits.max_sessions, description="Sessions (`max_sessions`)."
        )
        k: k_type = k_field  # type: ignore[valid-type]

    return ApiModels(
        SessionsRequest, InstancesRequest, SessionsResponse, InstancesResponse, Error, NotReady
    )


class RequestError(ProjectError):
    """A bad request; `status` is the 4xx code and the message tells the client what to fix."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """A validated invocation: which payload style it used, its sessions and k."""

    style: Literal["sessions", "instances"]
    sessions: list[list[str]]
    k: int


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: bytes


# --- pure core: parse → predict → format ---------------------------------------------------

_ANSWER_KEY = {"sessions": "recommendations", "instances": "predictions"}
_EXAMPLE = '{"sessions": [["sku-1", "sku-2"]], "k": 20}'


def parse_request(body: bytes, content_type: str, limits: Limits) -> Request:
    """Validate an /invocations body; raises `RequestError` naming what to fix."""
    _check_content_type(content_type)
    check_size(len(body), limits)
    if not body.strip():
        raise RequestError(HTTPStatus.BAD_REQUEST, f"request body is empty: send e.g. {_EXAMPLE}")
    try:
        payload = json.loads(body.decode("utf-8"))  # decoded first: json.loads would guess UTF-16
    except (ValueError, RecursionError) as exc:  # also: a 5,000-digit number, [[[[... nested deep
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"body is not valid UTF-8 JSON ({reason}): send e.g. {_EXAMPLE}"
        ) from None
    if not isinstance(payload, dict):
        raise _shape_error(f"the body must be a JSON object, got {_json_type(payload)}")
    styles = [key for key in _ANSWER_KEY if key in payload]
    if len(styles) != 1:
        raise _shape_error('the body must have exactly one of "sessions" or "instances"')
    unknown = sorted(set(payload) - {*styles, "k"})
    if unknown:
        raise _shape_error(f'unknown field(s) {unknown}: allowed are "{styles[0]}" and "k"')
    style: Literal["sessions", "instances"] = styles[0]  # type: ignore[assignment]
    sessions = _parse_sessions(payload[style], style, limits)
    return Request(style=style, sessions=sessions, k=_parse_k(payload.get("k"), limits))


def format_response(
    request: Request, recommendations: list[list[tuple[str, float]]], vocabulary: Container[str]
) -> bytes:
    """Serialise the predictor's answer in the style of the request (one list per session), with
    how many SKUs of each session are not in the model's `vocabulary`."""
    if len(recommendations) != len(request.sessions):
        raise ValueError(
            f"predictor answered {len(recommendations)} lists for {len(request.sessions)} sessions"
        )
    answer = [
        [{"sku": sku, "score": float(score)} for sku, score in recs] for recs in recommendations
    ]
    unknown = [sum(sku not in vocabulary for sku in session) for session in request.sessions]
    body = {_ANSWER_KEY[request.style]: answer, "unknown_skus": unknown}
    return json.dumps(body, allow_nan=False).encode()


Predict = Callable[[list[list[str]], int], list[list[tuple[str, float]]]]


def invoke(
    body: bytes,
    content_type: str,
    predictor: Predictor | None,
    limits: Limits,
    not_ready: str = "",
) -> Response:
    """One /invocations call without HTTP: 200, 4xx for bad input, 503 if no model, 500 on bugs."""
    admitted = admit(body, content_type, limits, predictor is not None, not_ready)
    if isinstance(admitted, Response):
        return admitted
    assert predictor is not None  # admit answered 503 otherwise
    try:
        recommendations = predictor.recommend(admitted.sessions, admitted.k)
        return answer(admitted, recommendations, predictor.vocabulary)
    except Exception:
        return prediction_failed(admitted)


def admit(
    body: bytes, content_type: str, limits: Limits, ready: bool, not_ready: str = ""
) -> Request | Response:
    """The request to predict for, or the response that refuses it (bad input first, then 503)."""
    try:
        request = parse_request(body, content_type, limits)
    except RequestError as exc:
        return error_response(exc.status, str(exc))
    if not ready:
        return error_response(HTTPStatus.SERVICE_UNAVAILABLE, not_ready or "model is not loaded")
    return request


def answer(
    request: Request, recommendations: list[list[tuple[str, float]]], vocabulary: Container[str]
) -> Response:
    return Response(HTTPStatus.OK, format_response(request, recommendations, vocabulary))


def prediction_failed(request: Request) -> Response:
    """Call in an `except` block: the client gets no trace (it may leak internals), the log does."""
    logger.exception("prediction failed for %d session(s)", len(request.sessions))
    return error_response(
        HTTPStatus.INTERNAL_SERVER_ERROR, "prediction failed inside the server: see its log"
    )


def error_response(status: HTTPStatus, message: str, **extra: str) -> Response:
    return Response(status, json.dumps({"error": message, **extra}).encode())


def check_size(size: int, limits: Limits) -> None:
    if size > limits.max_body_bytes:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"body is {size} bytes, over max_body_bytes={limits.max_body_bytes}: "
            "send fewer sessions per request",
        )


def _check_content_type(content_type: str) -> None:
    header = Message()
    header["Content-Type"] = content_type
    charset = (header.get_content_charset() or "utf-8").lower()
    is_json = content_type and header.get_content_type() == "application/json"
    if not is_json or charset not in {"utf-8", "utf8"}:
        raise RequestError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"content type {content_type or '(none)'!r} is not supported: "
            "send Content-Type: application/json (UTF-8)",
        )


def _parse_sessions(value: Any, style: str, limits: Limits) -> list[list[str]]:
    if not isinstance(value, list):
        raise _shape_error(f'"{style}" must be a list of sessions, got {_json_type(value)}')
    if not value:
        raise _shape_error(f'"{style}" is empty: send at least one session')
    if len(value) > limits.max_sessions:
        raise _shape_error(
            f'"{style}" has {len(value)} sessions, over max_sessions={limits.max_sessions}: '
            "split them across requests"
        )
    return [_parse_session(item, f"{style}[{i}]", style, limits) for i, item in enumerate(value)]


def _parse_session(item: Any, where: str, style: str, limits: Limits) -> list[str]:
    if style == "instances" and isinstance(item, dict):
        if "skus" not in item:
            raise _shape_error(
                f'{where} is an object without "skus": send {{"skus": ["sku", ...]}}'
            )
        item, where = item["skus"], f"{where}.skus"
    if not isinstance(item, list):
        raise _shape_error(f"{where} must be a list of SKU strings, got {_json_type(item)}")
    if not item:
        raise _shape_error(f"{where} is empty: a session needs at least one SKU")
    if len(item) > limits.max_session_length:
        raise _shape_error(
            f"{where} has {len(item)} SKUs, over max_session_length={limits.max_session_length}: "
            "send only the most recent ones"
        )
    for j, sku in enumerate(item):
        if not isinstance(sku, str):
            raise _shape_error(f"{where}[{j}] is {_json_type(sku)}: SKUs must be strings")
        if not sku.isascii() and not _is_unicode_text(sku):
            raise _shape_error(
                f"{where}[{j}] holds a lone surrogate escape (e.g. \\ud800): SKUs must be text"
            )
    return item


def _is_unicode_text(text: str) -> bool:
    """False for strings that JSON escapes can make but UTF-8 cannot encode (lone surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _parse_k(value: Any, limits: Limits) -> int:
    if value is None:
        return limits.default_k
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 5.0 is an integer to JSON Schema and to JavaScript clients
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limits.max_k:
        raise _shape_error(f'"k" must be an integer from 1 to max_k={limits.max_k}, got {value!r}')
    return value


def _shape_error(message: str) -> RequestError:
    return RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, message)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    names |= {int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
