"""Real-time inference server that follows SageMaker's bring-your-own-container contract.

The same server runs in the container (`serve`, port 8080 or `SAGEMAKER_BIND_TO_PORT`, model in
/opt/ml/model) and on a laptop. Endpoints:

* `GET /ping`: 200 with an empty body once the model is loaded, else 503 with the reason.
* `POST /invocations` (application/json), either style:
  `{"sessions": [["sku", ...], ...], "k": 20}` → `{"recommendations": [[{"sku", "score"}, ...]]}`
  `{"instances": [["sku", ...] | {"skus": [...]}, ...], "k": 20}` → `{"predictions": [...]}`
* `GET /openapi.json`: the OpenAPI description of both (openapi.json beside this module), with the
  limits this server runs with.

The HTTP layer is thin: `invoke()` (parse → predict → format) is a pure function that unit tests
call without a socket. The model loads in a background thread so the port opens at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

from .errors import ProjectError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path("/opt/ml/model")
DEFAULT_PORT = 8080
LINGER_S = 5.0  # longest time a refused body is read and dropped (see `_Handler._linger`)


class Recommender(Protocol):
    """What the server needs from a model (see `model.load_recommender`)."""

    def recommend(
        self, sessions: Sequence[Sequence[str]], k: int
    ) -> list[list[tuple[str, float]]]: ...


Loader = Callable[[Path], Recommender]


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for; each error message names the limit it hit."""

    max_body_bytes: int = 1_000_000
    max_sessions: int = 256
    max_session_length: int = 200
    max_k: int = 100
    default_k: int = 20
    read_timeout_s: float = 30.0  # a started request must arrive within this
    idle_timeout_s: float = 300.0  # keep-alive connections idle longer than this are closed


OPENAPI_FILE = "openapi.json"

# Where each limit sits in openapi.json: the served copy shows the server's own limits, and a test
# checks that the file holds the defaults of `Limits`, so the description cannot drift.
OPENAPI_LIMITS: dict[str, tuple[tuple[str, ...], ...]] = {
    "max_body_bytes": (("paths", "/invocations", "post", "requestBody", "x-max-body-bytes"),),
    "max_sessions": (
        ("components", "schemas", "SessionsRequest", "properties", "sessions", "maxItems"),
        ("components", "schemas", "InstancesRequest", "properties", "instances", "maxItems"),
    ),
    "max_session_length": (("components", "schemas", "Session", "maxItems"),),
    "max_k": (("components", "schemas", "K", "maximum"),),
    "default_k": (("components", "schemas", "K", "default"),),
}


@cache
def _openapi_text() -> str:
    return resources.files(__package__).joinpath(OPENAPI_FILE).read_text()


def openapi_document(limits: Limits) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the endpoints, showing `limits`."""
    document = json.loads(_openapi_text())
    for name, locations in OPENAPI_LIMITS.items():
        for *parents, key in locations:
            node = document
            for part in parents:
                node = node[part]
            node[key] = getattr(limits, name)
    return document


class ServingError(ProjectError):
    """The server cannot start (e.g. the port is taken); the message says what to do."""


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
    _check_size(len(body), limits)
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


def format_response(request: Request, recommendations: list[list[tuple[str, float]]]) -> bytes:
    """Serialise the predictor's answer in the style of the request (one list per session)."""
    if len(recommendations) != len(request.sessions):
        raise ValueError(
            f"predictor answered {len(recommendations)} lists for {len(request.sessions)} sessions"
        )
    answer = [
        [{"sku": sku, "score": float(score)} for sku, score in recs] for recs in recommendations
    ]
    return json.dumps({_ANSWER_KEY[request.style]: answer}, allow_nan=False).encode()


def invoke(
    body: bytes,
    content_type: str,
    predictor: Recommender | None,
    limits: Limits,
    not_ready: str = "",
) -> Response:
    """One /invocations call without HTTP: 200, 4xx for bad input, 503 if no model, 500 on bugs."""
    try:
        request = parse_request(body, content_type, limits)
    except RequestError as exc:
        return error_response(exc.status, str(exc))
    if predictor is None:
        return error_response(HTTPStatus.SERVICE_UNAVAILABLE, not_ready or "model is not loaded")
    try:
        return Response(
            HTTPStatus.OK,
            format_response(request, predictor.recommend(request.sessions, request.k)),
        )
    except Exception:
        # The client gets no trace (it may leak internals); the log gets the full one.
        logger.exception("prediction failed for %d session(s)", len(request.sessions))
        return error_response(
            HTTPStatus.INTERNAL_SERVER_ERROR, "prediction failed inside the server: see its log"
        )


def error_response(status: HTTPStatus, message: str, **extra: str) -> Response:
    return Response(status, json.dumps({"error": message, **extra}).encode())


def _check_size(size: int, limits: Limits) -> None:
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


# --- model loading --------------------------------------------------------------------------


def _default_loader(model_dir: Path) -> Recommender:
    from .modeling.export import load_recommender  # TensorFlow loads in the loader thread

    return load_recommender(model_dir)


class ModelSlot:
    """Holds the model as it loads in the background; `problem` says why it is not ready."""

    def __init__(self, model_dir: Path, loader: Loader) -> None:
        self.model_dir = model_dir
        self._loader = loader
        self.predictor: Recommender | None = None
        self.state: Literal["loading", "ready", "failed"] = "loading"
        self.problem = f"model is loading from {model_dir}"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def load(self) -> None:
        started = time.perf_counter()
        if not self.model_dir.is_dir() or not any(self.model_dir.iterdir()):
            state = "does not exist" if not self.model_dir.exists() else "is empty"
            self._fail(
                f"model directory {self.model_dir} {state}: unpack model.tar.gz there "
                "or point --model-dir / MODEL_DIR at an exported model"
            )
            return
        try:
            predictor = self._loader(self.model_dir)
            predictor.recommend([[""]], 1)  # warm-up: traces the graph and proves the model runs
        except Exception as exc:
            logger.debug("model load traceback", exc_info=True)
            self._fail(
                f"could not load the model in {self.model_dir} ({type(exc).__name__}: "
                f"{str(exc)[:300]}): re-export it or unpack a valid model.tar.gz there"
            )
            return
        self.predictor = predictor
        self.state = "ready"
        logger.info("model loaded from %s in %.1f s", self.model_dir, time.perf_counter() - started)

    def _fail(self, reason: str) -> None:
        self.problem = reason
        self.state = "failed"
        logger.error("%s", reason)


# --- HTTP layer -----------------------------------------------------------------------------


class InferenceServer(ThreadingHTTPServer):
    """Threaded HTTP/1.1 server that drains in-flight requests when it stops."""

    daemon_threads = True  # a stuck request must not keep the process alive past the drain
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], model: ModelSlot, limits: Limits, log_requests: bool
    ) -> None:
        super().__init__(address, _Handler)
        self.model = model
        self.limits = limits
        self.log_requests = log_requests
        self.stopping = threading.Event()
        # Idle keep-alive connections wait on this pipe too: one byte wakes them all on stop.
        self._wake_r, self._wake_w = os.pipe()
        self._open = 0
        self._open_changed = threading.Condition()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def request_stop(self) -> None:
        """Stop taking requests (safe in a signal handler); `serve_forever` returns soon after."""
        if not self.stopping.is_set():
            self.stopping.set()
            os.write(self._wake_w, b"x")
            threading.Thread(target=self.shutdown, daemon=True).start()

    def drain(self, grace_s: float) -> bool:
        """Wait for open connections to finish (at most `grace_s`); True if all did."""
        with self._open_changed:
            return self._open_changed.wait_for(lambda: self._open == 0, timeout=grace_s)

    def stop(self, grace_s: float = 20.0) -> bool:
        """Stop from another thread than the one in `serve_forever`; True if all requests ended."""
        self.request_stop()
        self.shutdown()
        return self.close(grace_s)

    def close(self, grace_s: float = 20.0) -> bool:
        """After `serve_forever` returned: refuse new connections at once, let open ones finish
        (at most `grace_s`), release the rest; True if all requests ended."""
        self.server_close()  # closes the listener
        drained = self.drain(grace_s)
        if drained:  # else a stuck handler may still poll the pipe: leave it to process exit
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
        return drained

    def _connection_opened(self, delta: int) -> None:
        with self._open_changed:
            self._open += delta
            self._open_changed.notify_all()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: SageMaker reuses connections
    server_version = "recommender"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls
    server: InferenceServer

    def setup(self) -> None:
        self.timeout = self.server.limits.read_timeout_s
        super().setup()

    def handle(self) -> None:
        self.server._connection_opened(+1)
        self.input_left_unread = False
        try:
            self.close_connection = False
            while not self.close_connection and self._next_request_arrived():
                self.handle_one_request()
            if self.input_left_unread:
                self._linger()
        finally:
            self.server._connection_opened(-1)

    def _linger(self) -> None:
        """Close our side, then read and drop what the client still sends (at most LINGER_S).

        A client that is still sending a refused body (e.g. one over max_body_bytes) would
        otherwise get a TCP reset from our close and never read the error we answered with."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            deadline = time.monotonic() + LINGER_S
            while time.monotonic() < deadline and self.connection.recv(65536):
                pass
        except OSError:
            pass  # the client closed or went quiet: nothing left to protect

    def _next_request_arrived(self) -> bool:
        """Wait for the next request; False when the server stops or the connection idles out."""
        self.connection.settimeout(0)  # peek without blocking: a pipelined request may be buffered
        try:
            if self.rfile.peek(1):
                return True
        finally:
            self.connection.settimeout(self.timeout)
        poller = select.poll()
        poller.register(self.connection, select.POLLIN)
        poller.register(self.server._wake_r, select.POLLIN)
        events = poller.poll(self.server.limits.idle_timeout_s * 1000)
        return any(fd == self.connection.fileno() for fd, _ in events)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_GET  # other methods go through `send_error` (405)

    def _dispatch(self) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        route = _ROUTES.get(path)
        try:
            body = self._read_body()  # always, so an unread body never corrupts the next request
        except RequestError as exc:
            self.close_connection = True  # what is left of the body is unread: drop the connection
            self.input_left_unread = True
            response = error_response(exc.status, str(exc))
        else:
            if route is None:
                response = error_response(
                    HTTPStatus.NOT_FOUND,
                    f"no such path {path}: use /ping, /invocations or /openapi.json",
                )
            elif self.command != route[0]:
                response = error_response(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{path} accepts {route[0]} only, not {self.command}",
                )
            else:
                response = route[1](self, body)
        self._send(response)
        if self.server.log_requests and path != "/ping":  # health checks would flood the log
            ms = (time.perf_counter() - started) * 1000
            logger.info("%s %s %d %.1f ms", self.command, path, response.status, ms)

    def _ping(self, body: bytes) -> Response:
        model = self.server.model
        if model.predictor is None:
            # "state" tells a deployer whether waiting can help (loading) or not (failed).
            return error_response(HTTPStatus.SERVICE_UNAVAILABLE, model.problem, state=model.state)
        return Response(HTTPStatus.OK, b"")

    def _openapi(self, body: bytes) -> Response:
        return Response(HTTPStatus.OK, json.dumps(openapi_document(self.server.limits)).encode())

    def _invocations(self, body: bytes) -> Response:
        model = self.server.model
        content_type = self.headers.get("Content-Type", "")
        return invoke(body, content_type, model.predictor, self.server.limits, model.problem)

    def _read_body(self) -> bytes:
        """Read the body, checking Content-Length first so an oversized body is never read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with Content-Length")
        declared = self.headers.get("Content-Length", "0").strip()
        length = int(declared) if declared.isascii() and declared.isdecimal() else -1
        if length < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "Content-Length must be an integer >= 0")
        limits = self.server.limits
        _check_size(length, limits)
        try:
            return self.rfile.read(length)
        except TimeoutError:
            raise RequestError(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the body did not arrive within read_timeout_s={limits.read_timeout_s}",
            ) from None

    def handle_expect_100(self) -> bool:
        """Refuse an oversized body before the client sends it: no 100 Continue, just the 413."""
        declared = self.headers.get("Content-Length", "0").strip()
        if declared.isdecimal() and int(declared) > self.server.limits.max_body_bytes:
            return True  # `_read_body` answers 413 and closes the connection
        return super().handle_expect_100()

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        if response.body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.body)))
        if response.status == HTTPStatus.METHOD_NOT_ALLOWED:
            route = _ROUTES.get(self.path.split("?", 1)[0])
            self.send_header("Allow", route[0] if route else "GET, POST")
        if self.close_connection or self.server.stopping.is_set():
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed HTTP (bad request line, other methods): JSON like every other error."""
        self.close_connection = True  # the request was not read to its end
        self.input_left_unread = True
        if code == HTTPStatus.NOT_IMPLEMENTED:  # the base class's answer to a method with no do_X
            code, message = (
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"method {self.command} is not supported: use GET /ping or POST /invocations",
            )
        self._send(error_response(HTTPStatus(code), message or HTTPStatus(code).phrase))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """`_dispatch` logs requests (with timing) when asked to; the default line is dropped."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)


_ROUTES: dict[str, tuple[str, Callable[[_Handler, bytes], Response]]] = {
    "/ping": ("GET", _Handler._ping),
    "/invocations": ("POST", _Handler._invocations),
    "/openapi.json": ("GET", _Handler._openapi),
}


def create_server(
    model_dir: Path,
    host: str,
    port: int,
    limits: Limits | None = None,
    *,
    loader: Loader | None = None,
    log_requests: bool = False,
) -> InferenceServer:
    """Bind the port at once and start loading the model in the background (port 0: any free)."""
    model = ModelSlot(Path(model_dir), loader or _default_loader)
    try:
        server = InferenceServer((host, port), model, limits or Limits(), log_requests)
    except OSError as exc:
        raise ServingError(
            f"cannot listen on {host}:{port} ({exc.strerror}): stop whatever uses the port or "
            "choose another (--port or SAGEMAKER_BIND_TO_PORT; SERVING_PORT for the local endpoint)"
        ) from None
    model.start()
    return server


def command(model_dir: Path, host: str, port: int) -> list[str]:
    """The command line that starts this server as its own process."""
    module = [sys.executable, "-m", __name__, "--model-dir", str(model_dir)]
    return [*module, "--host", host, "--port", str(port)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults follow the container contract (env vars, then built-ins)."""
    parser = argparse.ArgumentParser(description="Serve the recommender (SageMaker contract).")
    # SageMaker starts the container as `<image> serve`: accept and ignore that word.
    parser.add_argument("command", nargs="?", choices=["serve"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("MODEL_DIR", DEFAULT_MODEL_DIR)),
        help="exported model folder (default: $MODEL_DIR or /opt/ml/model)",
    )
    parser.add_argument(
        "--host", default="0.0.0.0", help="interface (default: all, as in a container)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=os.environ.get("SAGEMAKER_BIND_TO_PORT", str(DEFAULT_PORT)),  # type= checks it
        help="port (default: $SAGEMAKER_BIND_TO_PORT or 8080)",
    )
    parser.add_argument(
        "--log-requests",
        action="store_true",
        help="log one line per request (health checks excepted)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Container `serve` command: run until SIGTERM/SIGINT, then drain and exit 0."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        server = create_server(args.model_dir, args.host, args.port, log_requests=args.log_requests)
    except ServingError as exc:
        logger.error("%s", exc)
        return 2
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.request_stop())
    logger.info("listening on %s, model dir %s", server.url, args.model_dir)
    server.serve_forever()
    drained = server.close(grace_s=20.0)  # SageMaker sends SIGKILL 30 s after SIGTERM
    logger.info("stopped (%s)", "drained" if drained else "requests still running were dropped")
    # Skip the interpreter's teardown: TensorFlow's takes seconds (over 10 on a busy machine) and
    # SageMaker kills the container 30 s after SIGTERM; nothing is left to clean up.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
