"""Run the endpoint: uvicorn (h11) with a few protocol hardenings, signals, the `serve` command.

What each defence is (tests/test_serving.py tries each as an attacker would):

* conflicting or malformed Content-Length, bad header lines, unfinished heads over 16 KiB: h11
  refuses them; `Protocol.send_400_response` answers a JSON 400 instead of uvicorn's plain text;
* a request head trickling in (slowloris): `Protocol` gives the head `read_timeout_s` (408);
  the body gets `read_timeout_s` in the app (408); an idle keep-alive connection is closed after
  `idle_timeout_s` (uvicorn's `timeout_keep_alive`, armed here for new connections too);
* more than `max_connections` open connections per worker: their requests get a JSON 503 naming
  the limit and the connection is closed (uvicorn's `limit_concurrency` answers plain text and also
  counts tasks);
* a client that leaves before its answer: one log line (`Protocol.connection_lost`), no trace;
* SIGTERM: uvicorn stops listening, closes idle connections, lets in-flight requests finish (at
  most `GRACE_S`), then the app logs "stopped (drained)".

Several workers (`--workers`, SERVING_WORKERS) are spawned processes serving one listening socket,
each with its own model and batcher; `_supervise` passes signals on to them. /ping answers 200 only
once every worker has its model (`Readiness`): any worker may answer the next request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ProjectError
from ..settings import get_settings
from .app import create_app
from .contract import Limits
from .loading import Loader, Readiness

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path("/opt/ml/model")
DEFAULT_PORT = 8080
GRACE_S = 20  # SageMaker sends SIGKILL 30 s after SIGTERM
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class ServingError(ProjectError):
    """The server cannot start (e.g. the port is taken); the message says what to do."""


class Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with the defences listed in the module docstring."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.access_log = False  # the app logs requests when asked (--log-requests)
        self.limits: Limits = self.app_state.get("limits") or Limits()
        self._head_timer: asyncio.TimerHandle | None = None
        # uvicorn arms the idle timer only after a response: a silent new connection stays open.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        if len(self.connections) > self.limits.max_connections:
            limit = self.limits.max_connections
            logger.warning("max_connections=%d are open: a new one gets 503", limit)
            self.app = _over_capacity(self.limits.max_connections)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiting_for_head = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting_for_head and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.read_timeout_s, self._head_late)
        elif not waiting_for_head and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            limit = self.limits.read_timeout_s
            message = f"the request head did not arrive within read_timeout_s={limit}"
            self._send_raw(408, "Request Timeout", message)

    def send_400_response(self, msg: str) -> None:
        message = (
            "the request is not valid HTTP/1.1 (e.g. a Content-Length that is not one integer, "
            "conflicting Content-Length headers, a bad header line, or a head over 16 KiB)"
        )
        self._send_raw(400, "Bad Request", message)

    def _send_raw(self, status: int, reason: str, message: str) -> None:
        """An error answer outside h11's state machine (it has no request to answer), then close."""
        body = json.dumps({"error": message}).encode()
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        self.transport.write(head.encode() + body)
        self.transport.close()

    def shutdown(self) -> None:
        """Stopping: an answer still being made also tells the client the connection closes.

        uvicorn closes such a connection after the answer but only says so in the answer when the
        request asked for it; marking the request so makes the client not reuse the connection."""
        self.server_state.stopping = True  # type: ignore[attr-defined]
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.scope["headers"].append((b"connection", b"close"))
        super().shutdown()

    def on_response_complete(self) -> None:
        """Stopping: close after each answer, on every connection of this worker.

        uvicorn's own `shutdown` only covers the connections open when it ran; with several
        workers some kept being served until the 20 s grace ran out (bench_endpoint.py)."""
        super().on_response_complete()
        if getattr(self.server_state, "stopping", False) and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        if self.cycle is not None and not self.cycle.response_complete:
            scope = self.cycle.scope
            logger.info(
                "client %s left before its answer to %s %s",
                "{}:{}".format(*self.client) if self.client else "?",
                scope["method"],
                scope["path"],
            )
        super().connection_lost(exc)


def _over_capacity(max_connections: int) -> Any:
    body = json.dumps(
        {"error": f"the server has max_connections={max_connections} open: retry later"}
    ).encode()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def uvicorn_config(app: FastAPI, limits: Limits) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=Protocol,
        lifespan="on",
        access_log=False,  # the app logs requests when asked (--log-requests)
        log_config=None,  # the process's own logging (see `main`)
        timeout_keep_alive=int(limits.idle_timeout_s),
        timeout_graceful_shutdown=GRACE_S,
    )


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it a response's head and body (two writes) wait ~40 ms on the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServingError(
            f"cannot listen on {host}:{port} ({exc.strerror}): stop whatever uses the port or "
            "choose another (--port or SAGEMAKER_BIND_TO_PORT; SERVING_PORT for the local endpoint)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)  # worker processes serve on it
    return sock


class InferenceServer:
    """One worker in this process: `serve()` blocks (in any thread), `stop()` drains and ends it."""

    def __init__(self, app: FastAPI, limits: Limits, sock: socket.socket) -> None:
        self.app, self.socket = app, sock
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        self._server = uvicorn.Server(uvicorn_config(app, limits))

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://{host}:{port}"

    def serve(self) -> None:
        """Serve until `stop()` or SIGTERM/SIGINT (signals only in the main thread)."""
        self._server.run(sockets=[self.socket])

    def stop(self) -> None:
        self._server.should_exit = True


def create_server(
    model_dir: Path,
    host: str,
    port: int,
    limits: Limits | None = None,
    *,
    loader: Loader | None = None,
    log_requests: bool = False,
    max_batch: int = 256,
    batch_wait_ms: float = 2.0,
) -> InferenceServer:
    """Bind the port at once; the model starts loading when `serve()` starts the app."""
    limits = limits or Limits()
    sock = bind(host, port)
    app = create_app(
        Path(model_dir),
        limits,
        loader=loader,
        log_requests=log_requests,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
    )
    return InferenceServer(app, limits, sock)


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
        "--workers",
        type=int,
        help="worker processes (default: SERVING_WORKERS, else one per core for `serve`, else 1)",
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
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = get_settings()
    workers = args.workers or settings.serving_workers
    # In the container SageMaker runs the `serve` console script (the Dockerfile's CMD), perhaps
    # with `serve` as its argument: one worker per core there; locally (python -m, cli) one.
    in_container = args.command == "serve" or Path(sys.argv[0]).name == "serve"
    workers = workers or ((os.cpu_count() or 1) if in_container else 1)
    app_args = {
        "model_dir": args.model_dir,
        "log_requests": args.log_requests,
        "max_batch": settings.serving_max_batch,
        "batch_wait_ms": settings.serving_batch_wait_ms,
    }
    try:
        sock = bind(args.host, args.port)
    except ServingError as exc:
        logger.error("%s", exc)
        return 2
    logger.info(
        "listening on http://%s:%d, model dir %s, %d worker(s)",
        args.host,
        sock.getsockname()[1],
        args.model_dir,
        workers,
    )
    if workers == 1:
        _serve(sock, app_args)
    else:
        _supervise(sock, app_args, workers)
    _exit_now()


def _exit_now() -> None:
    """Skip the interpreter's teardown: TensorFlow's takes seconds (over 10 on a busy machine) and
    SageMaker kills the container 30 s after SIGTERM; nothing is left to clean up."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve(sock: socket.socket, app_args: dict[str, Any]) -> None:
    """One worker: the app on uvicorn in this process until SIGTERM/SIGINT, then drain."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)  # again in a spawned worker
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again under the handler it found:
    # make that one a no-op so that the drained worker exits 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    app = create_app(**app_args)
    InferenceServer(app, Limits(), sock).serve()


def _worker(sock: socket.socket, app_args: dict[str, Any]) -> None:
    _serve(sock, app_args)
    _exit_now()


def _supervise(sock: socket.socket, app_args: dict[str, Any], workers: int) -> None:
    """Worker processes sharing the listening socket; SIGTERM/SIGINT are passed on to them.

    uvicorn's own supervisor restarts a worker that answers its health ping late, which under
    load dropped requests, and passed SIGTERM on seconds late. Here a worker that dies stops all
    (SageMaker replaces an unhealthy container), and a signal reaches the workers at once."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    spawn = multiprocessing.get_context("spawn")  # no fork: TensorFlow's threads do not survive it
    app_args = {**app_args, "readiness": Readiness(workers, spawn)}
    processes = [
        spawn.Process(target=_worker, args=(sock, app_args), name=f"worker-{i}")
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    while not stop.wait(0.5):
        if dead := [p for p in processes if not p.is_alive()]:
            logger.error("%s exited with %s: stopping the others", dead[0].name, dead[0].exitcode)
            break
    sock.close()
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(GRACE_S + 5)
        if process.is_alive():
            process.kill()


if __name__ == "__main__":
    raise SystemExit(main())
